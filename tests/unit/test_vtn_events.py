"""OpenADR events ↔ EnergyEventRequests: the thermostat signal convention, with the program
catalogue's own limits (sce-sep-2025 precools 60 min at −2 °F; ohm-hours does not precool)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gridflex import REPO_ROOT
from gridflex.programs import ProgramCatalogue
from services.vtn import spec
from services.vtn.domain import Invalid
from services.vtn.domain.events import (
    StoredEvent,
    cancel_request,
    energy_event_request,
    event_object,
    lifecycle_operation,
    parse_event_request,
)
from services.vtn.domain.timing import format_duration

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
START = datetime(2025, 7, 15, 22, tzinfo=timezone.utc)  # 15:00 in Los Angeles
ISSUED = datetime(2025, 7, 15, 16, tzinfo=timezone.utc)


def request(**changes) -> dict:
    body = {
        "programID": "sce-sep-2025", "eventName": "hot tuesday",
        "intervalPeriod": {"start": "2025-07-15T15:00:00-07:00", "duration": "PT3H"},
        "intervals": [{"id": 0, "payloads": [{"type": "CONTROL_SETPOINT", "values": [4]}]}],
    }
    return {**body, **changes}


def stored(intent, event_id="evt-1", revision=1) -> StoredEvent:
    return StoredEvent(event_id, intent.program_id, revision, intent.reason, intent.start, intent.end,
                       intent.setpoint_offset_f, intent.precool, intent.targets, intent.details, "SCHEDULED",
                       ISSUED, ISSUED)


def problems_of(body: dict) -> list[str]:
    with pytest.raises(Invalid) as refused:
        parse_event_request(body, PROGRAMS)
    return refused.value.problems


def test_the_user_guides_shape_becomes_a_schedule_request_with_the_programs_id_and_window():
    intent = parse_event_request(request(), PROGRAMS)
    record = energy_event_request("evt-1", intent, "SCHEDULE", ISSUED)
    assert record == {
        "event_id": "evt-1", "program_id": "sce-sep-2025", "action": "SCHEDULE", "reason": "GRID_STRESS",
        "start": START, "end": START + timedelta(hours=3), "issued_at": ISSUED, "setpoint_offset_f": 4,
        "precool": False, "targets": [],
    }
    assert intent.details == {"eventName": "hot tuesday"}  # kept by the VTN, not dispatched


def test_a_precool_interval_must_be_the_programs_own_and_end_at_the_start():
    precool = {"id": 0, "intervalPeriod": {"start": "2025-07-15T21:00:00Z", "duration": "PT1H"},
               "payloads": [{"type": "CONTROL_SETPOINT", "values": [-2]}]}
    event = {"id": 1, "intervalPeriod": {"start": "2025-07-15T22:00:00Z", "duration": "PT2H"},
             "payloads": [{"type": "CONTROL_SETPOINT", "values": [3]}, {"type": "SIMPLE", "values": [3]}]}
    intent = parse_event_request(request(intervalPeriod=None, intervals=[precool, event]), PROGRAMS)
    assert (intent.precool, intent.start, intent.end, intent.setpoint_offset_f, intent.reason) == (
        True, START, START + timedelta(hours=2), 3, "EMERGENCY")

    # Precooling 30 min at -3 °F, ending early: sce-sep-2025 precools 60 min at -2 °F.
    short = {**precool, "intervalPeriod": {"start": "2025-07-15T21:00:00Z", "duration": "PT30M"},
             "payloads": [{"type": "CONTROL_SETPOINT", "values": [-3]}]}
    assert problems_of(request(intervalPeriod=None, intervals=[short, event])) == [
        "the precool interval must end when the event starts (2025-07-15T22:00:00.000Z), not at 2025-07-15T21:30:00.000Z",
        "sce-sep-2025 precools for PT1H, not PT30M",
        "sce-sep-2025 precools at -2 °F, not -3 °F",
    ]


def test_an_interval_without_a_start_follows_the_previous_one():
    intervals = [{"id": 0, "intervalPeriod": {"duration": "PT1H"},
                  "payloads": [{"type": "CONTROL_SETPOINT", "values": [-2]}]},
                 {"id": 1, "intervalPeriod": {"duration": "PT2H"},
                  "payloads": [{"type": "CONTROL_SETPOINT", "values": [4]}]}]
    intent = parse_event_request(request(intervalPeriod={"start": "2025-07-15T21:00:00Z"}, intervals=intervals),
                                 PROGRAMS)
    assert (intent.start, intent.end, intent.precool) == (START, START + timedelta(hours=2), True)


def test_a_program_without_precool_is_left_to_dispatch_to_reject():
    intervals = [{"id": 0, "intervalPeriod": {"start": "2025-07-15T21:00:00Z", "duration": "PT5M"},
                  "payloads": [{"type": "CONTROL_SETPOINT", "values": [-1]}]},
                 {"id": 1, "intervalPeriod": {"start": "2025-07-15T22:00:00Z", "duration": "PT2H"},
                  "payloads": [{"type": "CONTROL_SETPOINT", "values": [2]}]}]
    intent = parse_event_request(request(programID="ohm-hours", intervalPeriod=None, intervals=intervals), PROGRAMS)
    assert intent.precool is True  # dispatch answers PRECOOL_NOT_ALLOWED, naming the rule


def test_the_reason_comes_from_the_private_payload_or_the_simple_level_and_they_must_agree():
    def with_payloads(*payloads):
        return request(intervals=[{"id": 0, "payloads": [{"type": "CONTROL_SETPOINT", "values": [4]}, *payloads]}])

    assert parse_event_request(with_payloads({"type": "X_GRIDFLEX_EVENT_REASON", "values": ["TEST"]}),
                               PROGRAMS).reason == "TEST"
    assert parse_event_request(with_payloads({"type": "SIMPLE", "values": [1]}), PROGRAMS).reason == "HIGH_PRICE"
    assert problems_of(with_payloads({"type": "SIMPLE", "values": [2]},
                                     {"type": "X_GRIDFLEX_EVENT_REASON", "values": ["EMERGENCY"]})) == [
        "intervals[0]: SIMPLE level 2 contradicts X_GRIDFLEX_EVENT_REASON EMERGENCY (level 3)"]
    assert problems_of(with_payloads({"type": "SIMPLE", "values": [0]})) == [
        "intervals[0]: SIMPLE level 0 must be 1, 2 or 3 during an event (0 is normal operation)"]


def test_every_problem_of_a_bad_request_is_named():
    problems = problems_of({
        "programID": "no-such-program", "duration": "PT1H", "targets": ["EnergyHub Inc"],
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "CONTROL_SETPOINT",
                                "units": "CELSIUS"}],
        "intervals": [
            {"id": 0, "intervalPeriod": {"start": "0001-01-01T00:00:00Z", "duration": "PT1H"},
             "payloads": [{"type": "CONTROL_SETPOINT", "values": [4]}]},
            {"id": 1, "intervalPeriod": {"start": "2025-07-15T15:00:00", "duration": "P9999Y"},
             "payloads": [{"type": "PRICE", "values": [0.5]}]},
        ],
    })
    assert problems == [
        "programID 'no-such-program' is not a program of this VTN (GET /programs lists them)",
        "duration (repeating the intervals) is not supported: give the event's intervals once",
        "targets ['EnergyHub Inc'] are not provider ids (lower-case letters, digits and '-')",
        "payloadDescriptors: CONTROL_SETPOINT is an offset in FAHRENHEIT, not 'CELSIUS'",
        "intervals[0].intervalPeriod.start '0001-01-01T00:00:00Z' means 'now'; gridflex events need their start "
        "written out",
        "intervals[1].intervalPeriod.start '2025-07-15T15:00:00' has no UTC offset (write e.g. 2025-07-15T19:00:00Z)",
    ]
    assert problems_of(request(intervals=[{"id": 0, "payloads": [{"type": "CONTROL_SETPOINT", "values": [2.5]}]}])) \
        == ["intervals[0]: needs a CONTROL_SETPOINT payload with a whole, non-zero number of °F (positive: raise the "
            "cooling setpoint during the event; negative: precool)"]
    assert problems_of(request(intervalPeriod={"start": "2025-07-15T22:00:00Z", "duration": "P1M"})) == [
        "intervals[0].intervalPeriod.duration 'P1M' counts years or months, which have no fixed length; use D, H, M, S"]


def test_the_event_a_vtn_shows_validates_against_openadr3_and_reads_back_as_the_same_request():
    precool = {"id": 0, "intervalPeriod": {"start": "2025-07-15T21:00:00Z", "duration": "PT1H"},
               "payloads": [{"type": "CONTROL_SETPOINT", "values": [-2]}]}
    event = {"id": 1, "intervalPeriod": {"start": "2025-07-15T22:00:00Z", "duration": "PT3H"},
             "payloads": [{"type": "CONTROL_SETPOINT", "values": [4]},
                          {"type": "X_GRIDFLEX_EVENT_REASON", "values": ["HIGH_PRICE"]}]}
    intent = parse_event_request(request(intervalPeriod=None, intervals=[precool, event], priority=2,
                                         targets=["resideo", "energyhub"]), PROGRAMS)
    shown = event_object(stored(intent), PROGRAMS["sce-sep-2025"])
    assert spec.problems("event", shown) == []
    assert shown["intervals"][0] == {**precool, "intervalPeriod": {"start": "2025-07-15T21:00:00.000Z",
                                                                   "duration": "PT1H"}}
    assert shown["intervals"][1]["payloads"] == [
        {"type": "CONTROL_SETPOINT", "values": [4]}, {"type": "SIMPLE", "values": [1]},
        {"type": "X_GRIDFLEX_EVENT_REASON", "values": ["HIGH_PRICE"]}]
    assert (shown["targets"], shown["priority"], shown["eventName"]) == (["energyhub", "resideo"], 2, "hot tuesday")
    # A business-logic client can PUT back what it read: nothing the providers see changes.
    again = parse_event_request({k: v for k, v in shown.items() if k not in ("id", "objectType")}, PROGRAMS)
    assert again.same_dispatch(stored(intent))
    # A VEN sees only its own target (target hiding).
    assert event_object(stored(intent), PROGRAMS["sce-sep-2025"], ("energyhub",))["targets"] == ["energyhub"]


def test_a_cancel_repeats_the_event_as_it_stands_and_lifecycle_steps_are_operations():
    intent = parse_event_request(request(targets=["energyhub"]), PROGRAMS)
    cancel = cancel_request(stored(intent, revision=3), ISSUED)
    assert (cancel["action"], cancel["targets"], cancel["start"], cancel["program_id"]) == (
        "CANCEL", ["energyhub"], START, "sce-sep-2025")
    assert [lifecycle_operation(s) for s in ("SCHEDULED", "UPDATED", "CANCELLED", "STARTED", "REJECTED")] == [
        "CREATE", "UPDATE", "DELETE", None, None]


@pytest.mark.parametrize("span, text", [(timedelta(hours=3), "PT3H"), (timedelta(minutes=90), "PT1H30M"),
                                        (timedelta(days=1, hours=2), "P1DT2H"), (timedelta(0), "PT0S"),
                                        (timedelta(seconds=1.5), "PT1.5S")])
def test_durations_are_written_in_their_shortest_iso_form(span, text):
    assert format_duration(span) == text
