"""VEN reports → ThermostatState and DispatchAck records; who may see what (scopes, targets,
pages); enrolled thermostats as resources."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from gridflex import REPO_ROOT
from gridflex.programs import ProgramCatalogue
from services.vtn import spec
from services.vtn.domain import Invalid, access
from services.vtn.domain.access import Caller, ScopeRefused
from services.vtn.domain.objects import program_object, provider_thermostats, resource_object, ven_object
from services.vtn.domain.reports import report_telemetry

AT = datetime(2025, 7, 15, 22, 5, tzinfo=timezone.utc)
ENERGYHUB = Caller("energyhub", "VEN", frozenset(access.VEN_SCOPES))
UTILITY = Caller("utility-dispatch", "BL", frozenset(access.BL_SCOPES))


def interval(*payloads, start="2025-07-15T22:05:00Z") -> dict:
    return {"id": 0, "intervalPeriod": {"start": start}, "payloads": [{"type": t, "values": [v]} for t, v in payloads]}


def report(*resources, descriptors=None) -> dict:
    return {"eventID": "evt-1", "clientName": "energyhub-ven", "payloadDescriptors": descriptors,
            "resources": list(resources)}


def test_an_operating_state_becomes_a_thermostat_state_and_an_ack_a_dispatch_ack():
    body = report({"resourceName": "T-100", "intervals": [
        interval(("OPERATING_STATE", "RUNNING_CURTAILED"), ("X_GRIDFLEX_HVAC_MODE", "COOL"), ("SETPOINT", 78),
                 ("X_GRIDFLEX_INDOOR_TEMPERATURE", 76.5), ("X_GRIDFLEX_DISPATCH_ACK", "ACCEPTED"),
                 ("USAGE", 1.2)),
        interval(("OPERATING_STATE", "IDLE_OPTED_OUT"), ("X_GRIDFLEX_HVAC_MODE", "COOL"), start="2025-07-15T23:00:00Z"),
    ]}, {"resourceName": "AGGREGATED_REPORT", "intervals": [interval(("USAGE", 9.5))]})
    assert spec.problems("reportRequest", body) == []
    telemetry = report_telemetry(body, "evt-1", {"T-100": "SA-1"})
    assert telemetry.states == [
        {"thermostat_serial": "T-100", "service_account_id": "SA-1", "observed_at": AT, "online": True,
         "hvac_mode": "COOL", "cool_setpoint_f": 78.0, "indoor_temp_f": 76.5, "event_id": "evt-1", "override": False},
        {"thermostat_serial": "T-100", "service_account_id": "SA-1",
         "observed_at": datetime(2025, 7, 15, 23, tzinfo=timezone.utc), "online": True, "hvac_mode": "COOL",
         "cool_setpoint_f": None, "indoor_temp_f": None, "event_id": "evt-1", "override": True},
    ]
    assert telemetry.acks == [{"event_id": "evt-1", "thermostat_serial": "T-100", "status": "ACCEPTED", "at": AT}]


def test_celsius_is_converted_and_an_offline_thermostat_is_an_error_state():
    body = report({"resourceName": "T-100", "intervals": [
        interval(("OPERATING_STATE", "SGD_ERROR_CONDITION"), ("X_GRIDFLEX_HVAC_MODE", "OFF"), ("SETPOINT", 25))]},
        descriptors=[{"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": "SETPOINT", "units": "CELSIUS"}])
    [state] = report_telemetry(body, "evt-1", {"T-100": "SA-1"}).states
    assert (state["online"], state["cool_setpoint_f"], state["hvac_mode"]) == (False, 77.0, "OFF")


def test_a_report_on_another_providers_thermostat_or_a_half_state_is_refused_with_every_reason():
    body = report({"resourceName": "T-999", "intervals": [interval(("OPERATING_STATE", "NORMAL"))]},
                  {"resourceName": "T-100", "intervals": [
                      interval(("SETPOINT", 78)),
                      interval(("OPERATING_STATE", "AGGREGATED_REPORT")),
                      interval(("X_GRIDFLEX_DISPATCH_ACK", "MAYBE"), start=None)]})
    with pytest.raises(Invalid) as refused:
        report_telemetry(body, "evt-1", {"T-100": "SA-1"})
    assert refused.value.problems == [
        "resources[0]: 'T-999' is not a thermostat you have enrolled",
        "resources[1].intervals[0]: SETPOINT, X_GRIDFLEX_INDOOR_TEMPERATURE and X_GRIDFLEX_HVAC_MODE describe a "
        "thermostat's state; give its OPERATING_STATE in the same interval",
        "resources[1].intervals[1]: OPERATING_STATE 'AGGREGATED_REPORT' is not a thermostat's state (NORMAL, "
        "IDLE_NORMAL, RUNNING_NORMAL, RUNNING_CURTAILED, IDLE_CURTAILED, RUNNING_HEIGHTENED, IDLE_HEIGHTENED, "
        "RUNNING_OPTED_OUT, IDLE_OPTED_OUT, ERROR, SGD_ERROR_CONDITION)",
        "resources[1].intervals[1]: X_GRIDFLEX_HVAC_MODE must be one of OFF, COOL, HEAT, AUTO, ECO with "
        "OPERATING_STATE (got None)",
        "resources[1].intervals[2].intervalPeriod.start must be an RFC 3339 date-time string (the instant the "
        "thermostat was observed)",
    ]


def test_reads_need_their_scope_or_read_all_and_writes_their_own():
    ENERGYHUB.require("read_targets")
    UTILITY.require("read_ven_objects")  # read_all
    with pytest.raises(ScopeRefused, match="needs the write_events scope"):
        ENERGYHUB.require("write_events")
    with pytest.raises(ScopeRefused, match="needs the write_reports scope"):
        UTILITY.require("write_reports")
    assert access.requested_scopes("VEN", "read_targets write_reports") == ("read_targets", "write_reports")
    assert access.requested_scopes("BL", None) == access.BL_SCOPES
    with pytest.raises(Invalid, match="scope write_events is not granted to VEN clients"):
        access.requested_scopes("VEN", "read_targets write_events")


def test_a_ven_sees_untargeted_objects_and_those_targeting_it_with_only_its_own_target_shown():
    both = ["energyhub", "resideo"]
    assert access.visible_targets(ENERGYHUB, both, []) == (True, ("energyhub",))
    assert access.visible_targets(ENERGYHUB, ["resideo"], []) == (False, ())
    assert access.visible_targets(ENERGYHUB, ["resideo"], ["resideo"]) == (False, ())  # not granted to it
    assert access.visible_targets(ENERGYHUB, None, []) == (True, ())
    assert access.visible_targets(UTILITY, both, []) == (True, None)
    assert access.visible_targets(UTILITY, both, ["ohmconnect"]) == (False, None)


def test_pages_are_bounded_as_the_spec_says():
    assert access.page({}) == (0, 50)
    assert access.page({"skip": "10", "limit": "5"}) == (10, 5)
    with pytest.raises(Invalid) as refused:
        access.page({"skip": "-1", "limit": "51"})
    assert refused.value.problems == ["skip -1 must be 0 or more", "limit 51 must be between 0 and 50"]


def test_programs_vens_and_enrolled_thermostats_are_valid_openadr_objects():
    programs = ProgramCatalogue.load(REPO_ROOT / "programs")
    for program in programs:
        assert spec.problems("program", program_object(program)) == [], program.id
    sep = program_object(programs["sce-sep-2025"])
    assert (sep["id"], sep["targets"], sep["intervalPeriod"]) == (
        "sce-sep-2025", ["energyhub", "resideo"], {"start": "2025-01-01T08:00:00.000Z"})
    assert spec.problems("ven", ven_object("energyhub", AT, AT)) == []

    periods = [
        {"program_id": "sce-sep-2025", "provider_id": "energyhub", "thermostat_serial": "T-1",
         "effective_from": "2025-07-01", "effective_to": None},
        {"program_id": "sce-save-power-days", "provider_id": "energyhub", "thermostat_serial": "T-1",
         "effective_from": "2025-06-01", "effective_to": None},
        {"program_id": "sce-sep-2025", "provider_id": "energyhub", "thermostat_serial": "T-gone",
         "effective_from": "2025-06-01", "effective_to": "2025-07-15"},
        {"program_id": "sce-sep-2025", "provider_id": "energyhub", "thermostat_serial": "T-later",
         "effective_from": "2025-07-16", "effective_to": None},
        {"program_id": "sce-sep-2025", "provider_id": "resideo", "thermostat_serial": "T-other",
         "effective_from": "2025-07-01", "effective_to": None},
        {"program_id": "sce-sep-2025", "provider_id": "energyhub", "thermostat_serial": "T/2 b",
         "effective_from": "2025-07-01", "effective_to": None},
    ]
    thermostats = provider_thermostats("energyhub", [("SA-1", periods)], date(2025, 7, 15))
    assert [(t["thermostat_serial"], sorted(t["programs"])) for t in thermostats] == [
        ("T-1", ["sce-save-power-days", "sce-sep-2025"]), ("T/2 b", ["sce-sep-2025"])]
    resources = [resource_object("energyhub", t) for t in thermostats]
    assert [r["id"] for r in resources][0] == "T-1" and resources[1]["id"].startswith("t-")
    assert all(spec.problems("resource", r) == [] for r in resources)
