"""Which thermostats an event reaches and what each is told: enrollments in effect on the event's
day, targeted providers, and the precool hour (never in TOU on-peak hours on business days)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from gridflex import REPO_ROOT, enrollments
from gridflex.calendar import LOCAL_ZONE
from gridflex.programs import Precool, ProgramCatalogue
from services.dispatch.domain import events, fanout
from services.dispatch.domain.fanout import NO_PRECOOL, PrecoolPlan

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
SEP, LEGACY = PROGRAMS["sce-sep-2025"], PROGRAMS["sce-sep-legacy"]
SAVE_POWER_DAYS, OHM_HOURS = PROGRAMS["sce-save-power-days"], PROGRAMS["ohm-hours"]
EVERY_PROVIDER: frozenset[str] = frozenset()


def local(year, month, day, hour=0, minute=0) -> datetime:
    """A Los Angeles wall-clock time as the UTC instant an event carries."""
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_ZONE).astimezone(timezone.utc)


def period(serial: str, provider="energyhub", since=date(2025, 5, 1), until=None, program_id="sce-sep-2025") -> dict:
    """One EnrollmentPeriod record as the enrollment service publishes it."""
    return {"program_id": program_id, "provider_id": provider, "thermostat_serial": serial, "request_id": f"R-{serial}",
            "effective_from": since, "effective_to": until, "end_reason": None if until is None else "DISENROLLED"}


# -- who is reached ----------------------------------------------------------------------------------

def test_an_accounts_periods_are_grouped_by_program_with_iso_days():
    grouped = enrollments.periods_by_program([
        period("T-1"),
        period("T-1", since=date(2025, 1, 10), until=date(2025, 3, 1)),
        period("T-2", provider="nest-labs", since=date(2024, 6, 1), until=date(2025, 1, 1),
               program_id="sce-sep-legacy"),
    ])
    assert grouped == {
        "sce-sep-2025": [["energyhub", "T-1", "2025-05-01", None], ["energyhub", "T-1", "2025-01-10", "2025-03-01"]],
        "sce-sep-legacy": [["nest-labs", "T-2", "2024-06-01", "2025-01-01"]],
    }
    # Days already written as ISO strings (JSON state) stay as they are.
    assert enrollments.periods_by_program([period("T-1", since="2025-05-01", until="2025-06-01")]) == {
        "sce-sep-2025": [["energyhub", "T-1", "2025-05-01", "2025-06-01"]]}
    assert enrollments.periods_by_program([]) == {}


def test_a_thermostat_is_reached_from_its_effective_date_up_to_the_day_before_its_end():
    [periods] = enrollments.periods_by_program([period("T-1", since=date(2025, 7, 10), until=date(2025, 7, 20))]).values()
    assert enrollments.devices_in_effect(periods, "2025-07-09", EVERY_PROVIDER) == []  # not yet in effect
    assert enrollments.devices_in_effect(periods, "2025-07-10", EVERY_PROVIDER) == [("energyhub", "T-1")]
    assert enrollments.devices_in_effect(periods, "2025-07-19", EVERY_PROVIDER) == [("energyhub", "T-1")]
    assert enrollments.devices_in_effect(periods, "2025-07-20", EVERY_PROVIDER) == []  # effective_to: first day out
    open_ended = [["energyhub", "T-1", "2025-07-10", None]]
    assert enrollments.devices_in_effect(open_ended, "2030-01-01", EVERY_PROVIDER) == [("energyhub", "T-1")]


def test_targets_pick_providers_and_no_targets_reach_every_provider():
    periods = [["energyhub", "T-1", "2025-05-01", None], ["resideo", "T-2", "2025-05-01", None]]
    assert enrollments.devices_in_effect(periods, "2025-07-16", EVERY_PROVIDER) == [("energyhub", "T-1"),
                                                                               ("resideo", "T-2")]
    assert enrollments.devices_in_effect(periods, "2025-07-16", frozenset({"resideo"})) == [("resideo", "T-2")]
    assert enrollments.devices_in_effect(periods, "2025-07-16", frozenset({"energyhub", "resideo"})) == [
        ("energyhub", "T-1"), ("resideo", "T-2")]
    assert enrollments.devices_in_effect(periods, "2025-07-16", frozenset({"nest-labs"})) == []


def test_a_thermostat_with_two_periods_is_reached_once():
    # Re-enrolled: the ended period and the current one; on a day both claim, still one instruction.
    re_enrolled = [["energyhub", "T-1", "2025-01-10", "2025-03-01"], ["energyhub", "T-1", "2025-05-01", None]]
    assert enrollments.devices_in_effect(re_enrolled, "2025-07-16", EVERY_PROVIDER) == [("energyhub", "T-1")]
    assert enrollments.devices_in_effect(re_enrolled, "2025-02-01", EVERY_PROVIDER) == [("energyhub", "T-1")]
    assert enrollments.devices_in_effect(re_enrolled, "2025-04-01", EVERY_PROVIDER) == []  # between the two
    overlapping = [["energyhub", "T-1", "2025-05-01", None], ["energyhub", "T-1", "2025-06-01", None]]
    assert enrollments.devices_in_effect(overlapping, "2025-07-16", EVERY_PROVIDER) == [("energyhub", "T-1")]


def test_the_event_day_is_the_local_day_of_its_start():
    assert enrollments.event_day(datetime(2025, 7, 16, 6, tzinfo=timezone.utc)) == "2025-07-15"  # 23:00 in Los Angeles
    assert enrollments.event_day(local(2025, 7, 16, 0)) == "2025-07-16"


def test_an_event_reaches_whoever_is_in_effect_on_its_first_local_day():
    # 23:00 July 15 to 01:00 July 16 local: the first day is July 15, even though it is July 16 in UTC.
    start = local(2025, 7, 15, 23)
    periods = [["energyhub", "T-1", "2025-07-16", None], ["energyhub", "T-2", "2025-05-01", "2025-07-16"]]
    assert enrollments.devices_in_effect(periods, enrollments.event_day(start), EVERY_PROVIDER) == [("energyhub", "T-2")]


# -- precool -----------------------------------------------------------------------------------------

def plans(program, start, precool_requested=True) -> tuple[PrecoolPlan, PrecoolPlan]:
    return fanout.precool_plans(program, start, precool_requested)


def test_an_event_at_17_on_a_business_day_precools_other_rates_but_not_tou():
    start = local(2025, 7, 16, 17)  # Wednesday
    other, tou = plans(SEP, start)
    assert other == PrecoolPlan(local(2025, 7, 16, 16), -2)  # the hour before, 2 °F lower
    assert tou == NO_PRECOOL


@pytest.mark.parametrize("day", [date(2025, 7, 19), date(2025, 7, 20), date(2025, 7, 4), date(2025, 12, 25)],
                         ids=["saturday", "sunday", "independence-day", "christmas"])
def test_tou_accounts_precool_on_peak_hours_of_days_that_are_not_business_days(day):
    start = local(day.year, day.month, day.day, 17)
    assert plans(SEP, start) == (PrecoolPlan(start - timedelta(hours=1), -2),) * 2


def test_an_event_at_14_precools_tou_accounts_from_13():
    other, tou = plans(SEP, local(2025, 7, 16, 14))
    assert other == tou == PrecoolPlan(local(2025, 7, 16, 13), -2)


@pytest.mark.parametrize(("hour", "minute", "tou_precooled"), [
    (16, 0, True),  # precool 15:00-16:00 ends as on-peak starts
    (16, 1, False),  # 15:01-16:01 reaches a minute into on-peak
    (16, 30, False),  # 15:30-16:30
    (21, 0, False),  # 20:00-21:00: the last on-peak hour
    (21, 59, False),  # 20:59-21:59
    (22, 0, True),  # 21:00-22:00 starts as on-peak ends
    (9, 0, True),
])
def test_a_tou_precool_is_dropped_when_it_touches_16_to_21(hour, minute, tou_precooled):
    start = local(2025, 7, 16, hour, minute)
    other, tou = plans(SEP, start)
    assert other == PrecoolPlan(start - timedelta(hours=1), -2)
    assert tou == (other if tou_precooled else NO_PRECOOL)


def test_a_precool_across_local_midnight_is_judged_on_each_day():
    # Precool 23:30 Tuesday to 00:30 Wednesday: neither day's 16:00-21:00 is touched.
    start = local(2025, 7, 16, 0, 30)
    assert fanout.overlaps_on_peak(start - timedelta(hours=1), start, SEP.events.precool) is False


def test_no_precool_without_a_request_or_a_program_that_allows_it():
    start = local(2025, 7, 16, 14)
    assert plans(SEP, start, precool_requested=False) == (NO_PRECOOL, NO_PRECOOL)
    assert plans(LEGACY, local(2024, 7, 10, 14)) == (NO_PRECOOL, NO_PRECOOL)
    assert plans(OHM_HOURS, start) == (NO_PRECOOL, NO_PRECOOL)
    assert NO_PRECOOL == PrecoolPlan(None, 0)


def test_save_power_days_precool_as_the_smart_energy_program_does():
    other, tou = plans(SAVE_POWER_DAYS, local(2025, 7, 16, 14))
    assert other == tou == PrecoolPlan(local(2025, 7, 16, 13), -2)
    other, tou = plans(SAVE_POWER_DAYS, local(2025, 7, 16, 16, 30))
    assert other == PrecoolPlan(local(2025, 7, 16, 15, 30), -2) and tou == NO_PRECOOL


def test_the_precool_hour_is_a_real_hour_on_the_fall_back_day():
    # 02:00 PST on 2025-11-02 (Sunday): the hour before is 01:00 PST, after the repeated hour.
    start = local(2025, 11, 2, 2)
    other, tou = plans(SEP, start)
    assert other.start == start - timedelta(hours=1) == datetime(2025, 11, 2, 9, tzinfo=timezone.utc)
    assert tou == other


def test_a_precool_without_an_on_peak_window_never_overlaps():
    start = local(2025, 7, 16, 17)
    assert fanout.overlaps_on_peak(start - timedelta(hours=1), start, Precool(max_minutes=60, offset_f=2)) is False
    every_day = Precool(max_minutes=60, offset_f=2, tou_on_peak=SEP.events.precool.tou_on_peak,
                        tou_on_peak_business_days_only=False)
    saturday = local(2025, 7, 19, 17)
    assert fanout.overlaps_on_peak(saturday - timedelta(hours=1), saturday, every_day) is True


@pytest.mark.parametrize(("rate", "tou"), [
    ("TOU-D", True), ("TOU-D-T", True), ("TOU-GS-1", True), ("TOU-GS-2-RTP", True),
    ("D", False), ("D-CARE", False), ("D-FERA", False), (None, False), ("", False),
])
def test_tou_rates_are_the_rate_schedules_starting_tou(rate, tou):
    assert fanout.is_tou_rate(rate, SEP) is tou


def test_no_rate_is_tou_for_a_program_without_precool():
    assert fanout.is_tou_rate("TOU-D", LEGACY) is False
    assert fanout.is_tou_rate("TOU-D", OHM_HOURS) is False


# -- instructions ------------------------------------------------------------------------------------

def scheduled(start: datetime, end: datetime, precool=True, targets=()) -> dict:
    """The SCHEDULED lifecycle record of an accepted sce-sep-2025 event."""
    req = {"event_id": "EV-1", "program_id": "sce-sep-2025", "action": "SCHEDULE", "reason": "GRID_STRESS",
           "start": start, "end": end, "issued_at": local(2025, 7, 15, 9), "setpoint_offset_f": 4,
           "precool": precool, "targets": list(targets)}
    decision = events.decide(req, PROGRAMS, None, _EmptyLedger(), req["issued_at"])
    assert decision.accepted, decision.failures
    return events.lifecycle_record(decision.status, decision.event, req, local(2025, 7, 15, 9, 1), source_offset=1)


class _EmptyLedger:
    def day_ms(self, program_id, day):
        return 0

    def year_ms(self, program_id, year):
        return 0


def test_a_schedule_instruction_carries_the_event_and_the_accounts_precool():
    start, end = local(2025, 7, 16, 17), local(2025, 7, 16, 19)
    step = scheduled(start, end)
    other, _ = plans(SEP, start)
    assert fanout.instruction(step, "SCHEDULE", "T-1", "SA-1", other) == {
        "event_id": "EV-1", "program_id": "sce-sep-2025", "action": "SCHEDULE", "thermostat_serial": "T-1",
        "service_account_id": "SA-1", "precool_start": local(2025, 7, 16, 16), "precool_offset_f": -2,
        "start": start, "end": end, "setpoint_offset_f": 4, "issued_at": step["decided_at"],
    }


def test_a_cancel_instruction_never_precools():
    start, end = local(2025, 7, 16, 14), local(2025, 7, 16, 16)
    step = scheduled(start, end)
    other, _ = plans(SEP, start)
    cancel = fanout.instruction(step, "CANCEL", "T-1", "SA-1", other)
    assert (cancel["action"], cancel["precool_start"], cancel["precool_offset_f"]) == ("CANCEL", None, 0)
    update = fanout.instruction(step, "UPDATE", "T-1", "SA-1", other)
    assert (update["precool_start"], update["precool_offset_f"]) == (local(2025, 7, 16, 13), -2)


def test_a_resent_instruction_is_the_same_record():
    step = scheduled(local(2025, 7, 16, 17), local(2025, 7, 16, 19))
    plan = plans(SEP, step["start"])[1]
    assert fanout.instruction(step, "SCHEDULE", "T-1", "SA-1", plan) == fanout.instruction(
        step, "SCHEDULE", "T-1", "SA-1", plan)


def test_a_schedule_fans_out_to_every_account_with_its_own_precool():
    # Three accounts in sce-sep-2025 for a 17:00-19:00 event on Wednesday 2025-07-16 with precool,
    # targeted at EnergyHub.
    step = scheduled(local(2025, 7, 16, 17), local(2025, 7, 16, 19), targets=["energyhub"])
    accounts = {
        "SA-1": ("D", [period("T-1")]),
        "SA-2": ("TOU-D", [period("T-2"), period("T-3", provider="resideo")]),
        "SA-3": ("TOU-D", [period("T-4", until=date(2025, 7, 16))]),  # ended the day of the event
    }
    regular, tou_plan = plans(SEP, step["start"], step["precool"])
    sent = []
    for account_id, (rate, records) in accounts.items():
        plan = tou_plan if fanout.is_tou_rate(rate, SEP) else regular
        for periods in enrollments.periods_by_program(records).values():
            for _provider, serial in enrollments.devices_in_effect(periods, enrollments.event_day(step["start"]),
                                                             frozenset(step["targets"])):
                sent.append(fanout.instruction(step, "SCHEDULE", serial, account_id, plan))
    assert [(i["service_account_id"], i["thermostat_serial"], i["precool_start"]) for i in sent] == [
        ("SA-1", "T-1", local(2025, 7, 16, 16)),  # rate D: precooled from 16:00
        ("SA-2", "T-2", None),  # TOU-D: 16:00-17:00 is on-peak on a business day
    ]
