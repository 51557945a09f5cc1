"""Energy event requests judged against the seeds' program limits (PROGRAMS.md): duration, day,
year, windows, notice, offsets, precool, targets, and the lifecycle of UPDATE and CANCEL."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE
from gridflex.programs import ProgramCatalogue
from services.dispatch.domain import events
from services.dispatch.domain.events import (
    CANCELLED, ENDED, MS_PER_HOUR, MS_PER_MINUTE, REJECTED, SCHEDULED, STARTED, UPDATED, Decision, Event,
)

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
H, MIN = MS_PER_HOUR, MS_PER_MINUTE


def local(year, month, day, hour=0, minute=0, fold=0) -> datetime:
    """A Los Angeles wall-clock time as the UTC instant an event request carries."""
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_ZONE, fold=fold).astimezone(timezone.utc)


# Wednesday 2025-07-16 (a business day); requests are issued the morning before unless a test says otherwise.
DAY = date(2025, 7, 16)
ISSUED = local(2025, 7, 15, 9)


class Ledger:
    """The time each program has used, per local day and per calendar year (test double of HourLedger)."""

    def __init__(self):
        self.days: dict[tuple[str, str], int] = {}
        self.years: dict[tuple[str, int], int] = {}

    def day_ms(self, program_id: str, day: date) -> int:
        return self.days.get((program_id, day.isoformat()), 0)

    def year_ms(self, program_id: str, year: int) -> int:
        return self.years.get((program_id, year), 0)

    def add(self, program_id: str, changes: dict[str, int]) -> None:
        for day, delta in changes.items():
            self.days[program_id, day] = self.days.get((program_id, day), 0) + delta
            self.years[program_id, int(day[:4])] = self.years.get((program_id, int(day[:4])), 0) + delta


def request(start: datetime, end: datetime, *, action="SCHEDULE", event_id="EV-1", program_id="sce-sep-2025",
            issued_at: datetime = ISSUED, offset=4, precool=False, targets=(), reason="GRID_STRESS") -> dict:
    return {
        "event_id": event_id, "program_id": program_id, "action": action, "reason": reason, "start": start,
        "end": end, "issued_at": issued_at, "setpoint_offset_f": offset, "precool": precool,
        "targets": list(targets),
    }


def judge(req: dict, event: Event | None = None, ledger: Ledger | None = None, now: datetime | None = None
          ) -> Decision:
    return events.decide(req, PROGRAMS, event, ledger if ledger is not None else Ledger(),
                         now if now is not None else req["issued_at"])


def accept(req: dict, ledger: Ledger, event: Event | None = None, now: datetime | None = None) -> Event:
    """Decide a request that must be accepted and count its time, as the dispatch service does."""
    decision = judge(req, event, ledger, now)
    assert decision.accepted, decision.failures
    ledger.add(decision.event.program_id, decision.ledger_changes())
    return decision.event


def codes(decision: Decision) -> list[str]:
    return [failure.code for failure in decision.failures]


# -- counting time per local day ----------------------------------------------------------------

def test_time_is_counted_on_each_local_day_an_event_touches():
    # 22:00-02:00 in Los Angeles: two hours on each side of local midnight (05:00-09:00 UTC, one UTC day).
    assert events.ms_by_local_day(local(2025, 7, 15, 22), local(2025, 7, 16, 2)) == {
        "2025-07-15": 2 * H, "2025-07-16": 2 * H}
    assert events.ms_by_local_day(local(2025, 7, 16, 14), local(2025, 7, 16, 14)) == {}


def test_the_fall_back_day_counts_real_elapsed_time():
    # 2025-11-02: 01:00 PDT (08:00 UTC) to 03:00 PST (11:00 UTC) is three real hours.
    start, end = local(2025, 11, 2, 1), local(2025, 11, 2, 3)
    assert end - start == timedelta(hours=3)
    assert events.ms_by_local_day(start, end) == {"2025-11-02": 3 * H}
    # Across midnight into the fall-back day: 23:00 Nov 1 to 02:00 PST Nov 2 is 1 h + 3 h.
    assert events.ms_by_local_day(local(2025, 11, 1, 23), local(2025, 11, 2, 2)) == {
        "2025-11-01": 1 * H, "2025-11-02": 3 * H}
    # The whole local day has 25 hours.
    assert events.ms_by_local_day(local(2025, 11, 2), local(2025, 11, 3)) == {"2025-11-02": 25 * H}


def test_the_spring_forward_day_has_23_hours():
    assert events.ms_by_local_day(local(2025, 3, 9), local(2025, 3, 9, 4)) == {"2025-03-09": 3 * H}
    assert events.ms_by_local_day(local(2025, 3, 9), local(2025, 3, 10)) == {"2025-03-09": 23 * H}


# -- sce-sep-2025: 6 h per event ------------------------------------------------------------------

def test_a_six_hour_event_is_accepted_and_counts_six_hours():
    decision = judge(request(local(2025, 7, 16, 12), local(2025, 7, 16, 18)))
    assert decision.status == SCHEDULED and decision.failures == []
    assert decision.event.revision == 1 and decision.event.counted == {"2025-07-16": 6 * H}
    assert decision.ledger_changes() == {"2025-07-16": 6 * H}


def test_six_hours_and_one_minute_is_too_long():
    decision = judge(request(local(2025, 7, 16, 12), local(2025, 7, 16, 18, 1)))
    assert decision.status == REJECTED and decision.event is None
    # The event alone is also over the day's 6 h.
    assert codes(decision) == ["DURATION", "DAY_LIMIT"]
    assert decision.failures[0].message == "the event lasts 6 h 1 min; sce-sep-2025 events last 1 min to 6 h"
    assert decision.ledger_changes() == {}


def test_the_duration_rule_uses_real_elapsed_time_on_dst_days():
    # Fall back: 00:00-05:00 on the wall clock is 6 real hours (accepted); to 05:01 is too long.
    assert judge(request(local(2025, 11, 2, 0), local(2025, 11, 2, 5))).accepted
    assert "DURATION" in codes(judge(request(local(2025, 11, 2, 0), local(2025, 11, 2, 5, 1))))
    # Spring forward: 00:00-07:00 on the wall clock is 6 real hours.
    decision = judge(request(local(2025, 3, 9, 0), local(2025, 3, 9, 7), issued_at=local(2025, 3, 8, 9)))
    assert decision.accepted and decision.event.counted == {"2025-03-09": 6 * H}


def test_a_01_to_03_event_on_the_fall_back_day_counts_three_hours():
    decision = judge(request(local(2025, 11, 2, 1), local(2025, 11, 2, 3)))
    assert decision.accepted and decision.event.counted == {"2025-11-02": 3 * H}
    # Three real hours already: another 3 h 1 min that day breaks the 6 h day.
    ledger = Ledger()
    ledger.add("sce-sep-2025", decision.ledger_changes())
    later = judge(request(local(2025, 11, 2, 10), local(2025, 11, 2, 13, 1), event_id="EV-2"), ledger=ledger)
    assert codes(later) == ["DAY_LIMIT"]


# -- sce-sep-2025: 6 h per day --------------------------------------------------------------------

def test_two_three_hour_events_fill_the_day_and_one_more_minute_is_refused():
    ledger = Ledger()
    accept(request(local(2025, 7, 16, 10), local(2025, 7, 16, 13), event_id="EV-1"), ledger)
    accept(request(local(2025, 7, 16, 15), local(2025, 7, 16, 18), event_id="EV-2"), ledger)
    assert ledger.day_ms("sce-sep-2025", DAY) == 6 * H
    decision = judge(request(local(2025, 7, 16, 19), local(2025, 7, 16, 19, 1), event_id="EV-3"), ledger=ledger)
    assert codes(decision) == ["DAY_LIMIT"]
    assert decision.failures[0].message == ("sce-sep-2025 allows 6 h of events per day; 2025-07-16 already has 6 h, "
                                            "and this event adds 1 min")
    # The next local day is a fresh day.
    assert judge(request(local(2025, 7, 17, 10), local(2025, 7, 17, 11), event_id="EV-3"), ledger=ledger).accepted


def test_an_update_is_not_counted_twice_against_the_day():
    ledger = Ledger()
    first = accept(request(local(2025, 7, 16, 10), local(2025, 7, 16, 13), event_id="EV-1"), ledger)
    accept(request(local(2025, 7, 16, 15), local(2025, 7, 16, 18), event_id="EV-2"), ledger)
    # Same three hours, moved and with a milder offset: accepted, the ledger does not move.
    moved = request(local(2025, 7, 16, 11), local(2025, 7, 16, 14), action="UPDATE", event_id="EV-1", offset=2)
    decision = judge(moved, first, ledger)
    assert decision.status == UPDATED and decision.event.revision == 2
    assert decision.event.setpoint_offset_f == 2 and decision.ledger_changes() == {}
    # One more minute on the same event is over the day.
    longer = request(local(2025, 7, 16, 10), local(2025, 7, 16, 13, 1), action="UPDATE", event_id="EV-1")
    assert codes(judge(longer, first, ledger)) == ["DAY_LIMIT"]
    # Shorter gives time back.
    shorter = request(local(2025, 7, 16, 10), local(2025, 7, 16, 12), action="UPDATE", event_id="EV-1")
    assert judge(shorter, first, ledger).ledger_changes() == {"2025-07-16": -1 * H}


def test_an_update_moving_to_another_day_moves_its_time():
    ledger = Ledger()
    first = accept(request(local(2025, 7, 16, 10), local(2025, 7, 16, 13)), ledger)
    decision = judge(request(local(2025, 7, 17, 10), local(2025, 7, 17, 13), action="UPDATE"), first, ledger)
    assert decision.ledger_changes() == {"2025-07-16": -3 * H, "2025-07-17": 3 * H}


# -- sce-sep-2025: 180 h per calendar year --------------------------------------------------------

def test_reaching_exactly_180_hours_is_accepted_and_going_over_is_refused():
    ledger = Ledger()
    ledger.add("sce-sep-2025", {"2025-06-30": 178 * H})  # earlier events of the year
    assert judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16)), ledger=ledger).accepted
    decision = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16, 1)), ledger=ledger)
    assert codes(decision) == ["YEAR_LIMIT"]
    assert decision.failures[0].message == ("sce-sep-2025 allows 180 h of events per calendar year; 2025 has 178 h "
                                            "used, 2 h left, and this event needs 2 h 1 min")


def test_an_update_is_not_counted_twice_against_the_year():
    ledger = Ledger()
    ledger.add("sce-sep-2025", {"2025-06-30": 178 * H})
    event = accept(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16)), ledger)
    assert ledger.year_ms("sce-sep-2025", 2025) == 180 * H
    same_length = request(local(2025, 7, 16, 15), local(2025, 7, 16, 17), action="UPDATE")
    assert judge(same_length, event, ledger).accepted
    longer = request(local(2025, 7, 16, 15), local(2025, 7, 16, 17, 1), action="UPDATE")
    assert codes(judge(longer, event, ledger)) == ["YEAR_LIMIT"]


def test_an_event_across_new_years_eve_counts_on_each_year():
    # 22:00 Dec 31 to 02:00 Jan 1 local: two hours in 2025, two in 2026.
    start, end = local(2025, 12, 31, 22), local(2026, 1, 1, 2)
    ledger = Ledger()
    ledger.add("sce-sep-2025", {"2025-06-30": 178 * H})
    decision = judge(request(start, end, issued_at=local(2025, 12, 30, 9)), ledger=ledger)
    assert decision.accepted and decision.event.counted == {"2025-12-31": 2 * H, "2026-01-01": 2 * H}
    # 179 h used in 2025: the 2 h on Dec 31 break 2025's limit.
    full_2025 = Ledger()
    full_2025.add("sce-sep-2025", {"2025-06-30": 179 * H})
    rejected = judge(request(start, end, issued_at=local(2025, 12, 30, 9)), ledger=full_2025)
    assert codes(rejected) == ["YEAR_LIMIT"] and "2025 has 179 h used" in rejected.failures[0].message
    # 179 h already counted in 2026 (another event): the 2 h on Jan 1 break 2026's.
    full_2026 = Ledger()
    full_2026.add("sce-sep-2025", {"2026-06-30": 179 * H})
    rejected = judge(request(start, end, issued_at=local(2025, 12, 30, 9)), ledger=full_2026)
    assert codes(rejected) == ["YEAR_LIMIT"] and "2026 has 179 h used" in rejected.failures[0].message


# -- sce-sep-legacy: business days, 11:00-20:00, 1 to 4 h, 4 h per day ------------------------------
# These terms run until 2024-12-31, so their events are in 2024 (Wednesday July 10).

LEGACY_ISSUED = local(2024, 7, 9, 9)


def legacy(start: datetime, end: datetime, issued_at: datetime = LEGACY_ISSUED, **fields) -> dict:
    return request(start, end, program_id="sce-sep-legacy", issued_at=issued_at, **fields)


def test_legacy_events_fill_the_window_from_11_to_20_on_a_weekday():
    assert judge(legacy(local(2024, 7, 10, 11), local(2024, 7, 10, 15))).accepted
    assert judge(legacy(local(2024, 7, 10, 16), local(2024, 7, 10, 20))).accepted


@pytest.mark.parametrize(("start", "end"), [
    (local(2024, 7, 10, 10, 59), local(2024, 7, 10, 12)),  # starts before 11:00
    (local(2024, 7, 10, 17), local(2024, 7, 10, 20, 1)),  # ends after 20:00
    (local(2024, 7, 10, 21), local(2024, 7, 11, 0, 30)),  # after 20:00 and past midnight
])
def test_legacy_events_outside_11_to_20_are_refused(start, end):
    decision = judge(legacy(start, end))
    assert codes(decision) == ["OUTSIDE_WINDOW"]
    assert "sce-sep-legacy events lie between 11:00 and 20:00 local time" in decision.failures[0].message


@pytest.mark.parametrize("day", [date(2024, 7, 13), date(2024, 7, 14), date(2024, 7, 4), date(2024, 12, 25)],
                         ids=["saturday", "sunday", "independence-day", "christmas"])
def test_legacy_events_run_on_business_days_only(day):
    day_before = day - timedelta(days=1)
    decision = judge(legacy(local(day.year, day.month, day.day, 14), local(day.year, day.month, day.day, 16),
                            issued_at=local(day_before.year, day_before.month, day_before.day, 9)))
    assert codes(decision) == ["DAY_NOT_ALLOWED"]
    assert f"{day} ({day:%A}) is not one" in decision.failures[0].message


def test_a_legacy_event_on_independence_day_2025_is_refused_for_the_day_and_the_terms():
    # 2025-07-04 is a holiday, and these terms ended on 2024-12-31: both rules are reported.
    decision = judge(legacy(local(2025, 7, 4, 14), local(2025, 7, 4, 16)), now=local(2025, 7, 3, 9))
    assert codes(decision) == ["PROGRAM_NOT_IN_EFFECT", "DAY_NOT_ALLOWED"]


def test_legacy_events_last_one_to_four_hours():
    assert judge(legacy(local(2024, 7, 10, 12), local(2024, 7, 10, 13))).accepted
    assert judge(legacy(local(2024, 7, 10, 12), local(2024, 7, 10, 16))).accepted
    assert codes(judge(legacy(local(2024, 7, 10, 12), local(2024, 7, 10, 12, 59)))) == ["DURATION"]
    assert codes(judge(legacy(local(2024, 7, 10, 12), local(2024, 7, 10, 16, 1)))) == ["DURATION", "DAY_LIMIT"]


def test_legacy_days_hold_four_hours_of_events():
    ledger = Ledger()
    accept(legacy(local(2024, 7, 10, 11), local(2024, 7, 10, 13), event_id="EV-1"), ledger)
    accept(legacy(local(2024, 7, 10, 14), local(2024, 7, 10, 16), event_id="EV-2"), ledger)
    assert codes(judge(legacy(local(2024, 7, 10, 17), local(2024, 7, 10, 18), event_id="EV-3"), ledger=ledger)) == [
        "DAY_LIMIT"]


def test_legacy_terms_have_no_yearly_limit():
    ledger = Ledger()
    ledger.add("sce-sep-legacy", {"2024-06-30": 1000 * H})
    assert judge(legacy(local(2024, 7, 10, 12), local(2024, 7, 10, 16)), ledger=ledger).accepted


# -- program dates -------------------------------------------------------------------------------

def test_a_program_is_refused_outside_its_effective_dates():
    # The current terms start on 2025-01-01.
    decision = judge(request(local(2024, 12, 31, 14), local(2024, 12, 31, 16), issued_at=local(2024, 12, 30, 9)))
    assert codes(decision) == ["PROGRAM_NOT_IN_EFFECT"]
    assert decision.failures[0].message == ("sce-sep-2025 runs from 2025-01-01 to no end date; "
                                            "the event is on 2024-12-31")
    # The earlier terms' last day is still theirs; the next is not.
    assert judge(legacy(local(2024, 12, 31, 14), local(2024, 12, 31, 16)), now=local(2024, 12, 30, 9)).accepted
    assert "PROGRAM_NOT_IN_EFFECT" in codes(judge(legacy(local(2025, 1, 2, 14), local(2025, 1, 2, 16)),
                                                  now=local(2025, 1, 1, 9)))


def test_an_unknown_program_is_refused():
    decision = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), program_id="sce-nope"))
    assert decision.status == REJECTED and codes(decision) == ["UNKNOWN_PROGRAM"]


# -- notice ------------------------------------------------------------------------------------------

def test_twenty_minutes_notice_is_enough_and_nineteen_is_not():
    start = local(2025, 7, 16, 14)
    assert judge(request(start, start + timedelta(hours=2), issued_at=start - timedelta(minutes=20))).accepted
    decision = judge(request(start, start + timedelta(hours=2), issued_at=start - timedelta(minutes=19)))
    assert codes(decision) == ["NOTICE"]
    assert "sce-sep-2025 notifies providers at least 20 min before the start; this event starts 19 min after" in (
        decision.failures[0].message)


def test_notice_counts_from_when_the_request_reached_us_if_that_is_later():
    start = local(2025, 7, 16, 14)
    # Issued the day before, but received 19 minutes before the start.
    late = judge(request(start, start + timedelta(hours=2)), now=start - timedelta(minutes=19))
    assert codes(late) == ["NOTICE"]
    assert judge(request(start, start + timedelta(hours=2)), now=start - timedelta(minutes=20)).accepted
    # Received early, but issued (dated) 19 minutes before the start.
    early = judge(request(start, start + timedelta(hours=2), issued_at=start - timedelta(minutes=19)),
                  now=start - timedelta(hours=3))
    assert codes(early) == ["NOTICE"]


def test_a_schedule_received_after_the_start_lacks_notice():
    start = local(2025, 7, 16, 14)
    assert codes(judge(request(start, start + timedelta(hours=2)), now=start + timedelta(minutes=1))) == ["NOTICE"]


# -- Save Power Days: announced the day before, 14:00-18:00 ---------------------------------------

def save_power_day(issued_at: datetime, start=None, end=None, **fields) -> dict:
    return request(start or local(2025, 7, 16, 14), end or local(2025, 7, 16, 18), program_id="sce-save-power-days",
                   issued_at=issued_at, **fields)


def test_save_power_days_are_announced_the_local_day_before():
    # 2025-07-16T06:00Z is 23:00 on July 15 in Los Angeles: the day before.
    assert judge(save_power_day(datetime(2025, 7, 16, 6, tzinfo=timezone.utc))).accepted
    # 2025-07-16T07:00Z is midnight July 16 in Los Angeles: the same day.
    decision = judge(save_power_day(datetime(2025, 7, 16, 7, tzinfo=timezone.utc)))
    assert codes(decision) == ["NOT_DAY_AHEAD"]
    assert decision.failures[0].message.endswith("issued or received on 2025-07-16 for 2025-07-16")
    # A request issued the day before but received on the day is late too.
    received_late = judge(save_power_day(local(2025, 7, 15, 9)), now=local(2025, 7, 16, 8))
    assert codes(received_late) == ["NOT_DAY_AHEAD"]


def test_save_power_days_lie_between_14_and_18():
    issued = local(2025, 7, 15, 9)
    assert codes(judge(save_power_day(issued, local(2025, 7, 16, 13, 59), local(2025, 7, 16, 15)))) == [
        "OUTSIDE_WINDOW"]
    assert codes(judge(save_power_day(issued, local(2025, 7, 16, 15), local(2025, 7, 16, 18, 1)))) == [
        "OUTSIDE_WINDOW"]
    # Any day, holidays and weekends included; precool is allowed.
    assert judge(save_power_day(local(2025, 7, 3, 9), local(2025, 7, 4, 14), local(2025, 7, 4, 16),
                                precool=True)).accepted


# -- OhmHours: 1 to 4 h, announced the day before -------------------------------------------------

def test_ohm_hours_last_one_to_four_hours_announced_the_day_before():
    def ohm(start, end, issued_at=ISSUED):
        return request(start, end, program_id="ohm-hours", issued_at=issued_at, targets=["ohmconnect"])

    assert judge(ohm(local(2025, 7, 16, 17), local(2025, 7, 16, 18))).accepted
    assert judge(ohm(local(2025, 7, 19, 17), local(2025, 7, 19, 21))).accepted  # Saturday: any day
    assert codes(judge(ohm(local(2025, 7, 16, 17), local(2025, 7, 16, 17, 59)))) == ["DURATION"]
    assert codes(judge(ohm(local(2025, 7, 16, 17), local(2025, 7, 16, 21, 1)))) == ["DURATION", "DAY_LIMIT"]
    assert codes(judge(ohm(local(2025, 7, 16, 17), local(2025, 7, 16, 18), issued_at=local(2025, 7, 16, 8)))) == [
        "NOT_DAY_AHEAD"]


# -- setpoint offset, precool, targets, window order ----------------------------------------------

@pytest.mark.parametrize("offset", [1, 2, 3, 4])
def test_setpoint_offsets_of_one_to_four_degrees_are_accepted(offset):
    decision = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), offset=offset))
    assert decision.accepted and decision.event.setpoint_offset_f == offset


@pytest.mark.parametrize("offset", [0, 5, -2])
def test_setpoint_offsets_outside_one_to_four_degrees_are_refused(offset):
    decision = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), offset=offset))
    assert codes(decision) == ["SETPOINT_OFFSET"]
    assert decision.failures[0].message == f"setpoint offset {offset} °F is not between 1 and 4 °F"


def test_precool_is_refused_on_programs_without_it():
    decision = judge(legacy(local(2024, 7, 10, 14), local(2024, 7, 10, 16), precool=True))
    assert codes(decision) == ["PRECOOL_NOT_ALLOWED"]
    assert judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), precool=True)).accepted


def test_targets_are_the_programs_providers_or_empty_for_all():
    assert judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), targets=["resideo"])).accepted
    decision = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), targets=["nest-labs", "energyhub"]))
    assert codes(decision) == ["UNKNOWN_TARGET"]
    assert decision.failures[0].message == "nest-labs is not among sce-sep-2025's providers (energyhub, resideo)"
    accepted = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), targets=["resideo", "energyhub"]))
    assert accepted.event.targets == ["energyhub", "resideo"]


@pytest.mark.parametrize("minutes", [0, -30])
def test_an_event_must_start_before_it_ends(minutes):
    start = local(2025, 7, 16, 14)
    decision = judge(request(start, start + timedelta(minutes=minutes)))
    assert codes(decision) == ["START_NOT_BEFORE_END"]


def test_a_rejection_lists_every_rule_the_request_breaks():
    # Legacy terms, Saturday 2024-07-13, 10:00-15:00 (5 h) issued 5 minutes ahead, offset 0, precool,
    # and a provider that is not one of the legacy terms'.
    req = legacy(local(2024, 7, 13, 10), local(2024, 7, 13, 15), issued_at=local(2024, 7, 13, 9, 55), offset=0,
                 precool=True, targets=["resideo"])
    decision = judge(req)
    assert decision.status == REJECTED
    assert codes(decision) == ["SETPOINT_OFFSET", "PRECOOL_NOT_ALLOWED", "UNKNOWN_TARGET", "DURATION",
                               "DAY_NOT_ALLOWED", "OUTSIDE_WINDOW", "DAY_LIMIT", "NOTICE"]
    # An inverted window still reports the rules that do not need one.
    inverted = judge(request(local(2025, 7, 16, 16), local(2025, 7, 16, 14), offset=5, targets=["simple"]))
    assert codes(inverted) == ["SETPOINT_OFFSET", "UNKNOWN_TARGET", "START_NOT_BEFORE_END"]


# -- SCHEDULE of an existing id, UPDATE ------------------------------------------------------------

def test_scheduling_an_existing_event_id_is_refused():
    ledger = Ledger()
    event = accept(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16)), ledger)
    decision = judge(request(local(2025, 7, 16, 17), local(2025, 7, 16, 18)), event, ledger)
    assert codes(decision) == ["DUPLICATE_EVENT_ID"]
    assert decision.event is event and decision.ledger_changes() == {}


def test_updating_or_cancelling_an_unknown_event_is_refused():
    for action in ("UPDATE", "CANCEL"):
        decision = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), action=action))
        assert codes(decision) == ["UNKNOWN_EVENT"] and decision.event is None
        assert decision.failures[0].message == f"no event 'EV-1' was scheduled: nothing to {action.lower()}"


def test_an_update_cannot_change_the_targets_or_the_program():
    ledger = Ledger()
    event = accept(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), targets=["energyhub"]), ledger)
    retarget = request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), action="UPDATE", targets=["resideo"])
    assert codes(judge(retarget, event, ledger)) == ["TARGETS_CHANGED"]
    all_providers = request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), action="UPDATE")
    assert codes(judge(all_providers, event, ledger)) == ["TARGETS_CHANGED"]
    reordered = judge(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), action="UPDATE",
                              targets=["energyhub", "energyhub"]), event, ledger)
    assert reordered.accepted  # the same set of providers
    reprogram = request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), action="UPDATE",
                        program_id="sce-save-power-days", targets=["energyhub"])
    decision = judge(reprogram, event, ledger)
    assert codes(decision) == ["PROGRAM_CHANGED"] and decision.event is event


def test_an_update_is_judged_against_every_limit_of_its_new_window():
    ledger = Ledger()
    event = accept(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16)), ledger)
    decision = judge(request(local(2025, 7, 16, 12), local(2025, 7, 16, 18, 30), action="UPDATE", offset=5),
                     event, ledger)
    assert codes(decision) == ["SETPOINT_OFFSET", "DURATION", "DAY_LIMIT"]
    assert decision.event is event  # left as it stands


def test_an_update_that_moves_the_start_needs_notice_and_one_that_does_not_is_not_judged_on_it():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=2)), ledger)
    ten_before = start - timedelta(minutes=10)
    # Stretching the end ten minutes before the start: no new notice needed.
    stretch = request(start, start + timedelta(hours=3), action="UPDATE", issued_at=ten_before)
    assert judge(stretch, event, ledger, now=ten_before).accepted
    # Moving the start ten minutes before the old start: the new start needs 20 minutes.
    moved = request(start + timedelta(minutes=5), start + timedelta(hours=2), action="UPDATE", issued_at=ten_before)
    assert codes(judge(moved, event, ledger, now=ten_before)) == ["NOTICE"]


def test_an_update_cannot_move_the_start_of_an_event_that_started():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=2)), ledger)
    event.started = True
    now = start + timedelta(minutes=30)
    moved = request(start + timedelta(hours=1), start + timedelta(hours=3), action="UPDATE", issued_at=now)
    decision = judge(moved, event, ledger, now=now)
    assert codes(decision) == ["EVENT_STARTED"]
    # Extending the end of the running event is fine, and it stays started.
    extended = judge(request(start, start + timedelta(hours=3), action="UPDATE", issued_at=now), event, ledger, now)
    assert extended.status == UPDATED and extended.event.started and extended.event.revision == 2
    assert extended.ledger_changes() == {"2025-07-16": 1 * H}


def test_an_ended_event_cannot_be_updated():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=2)), ledger)
    now = start + timedelta(hours=2)
    decision = judge(request(start, start + timedelta(hours=3), action="UPDATE", issued_at=now), event, ledger, now)
    assert codes(decision) == ["EVENT_ENDED"]


def test_an_update_of_a_running_event_cannot_end_it_before_now_so_time_used_is_never_given_back():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=4)), ledger)
    event.started = True
    now = start + timedelta(hours=2)  # 16:00: two hours used
    decision = judge(request(start, start + timedelta(hours=1), action="UPDATE", issued_at=now), event, ledger, now)
    assert [failure.code for failure in decision.failures] == ["END_IN_PAST"]
    shorter = judge(request(start, now + timedelta(minutes=30), action="UPDATE", issued_at=now), event, ledger, now)
    assert shorter.accepted and shorter.ledger_changes() == {"2025-07-16": -int(1.5 * H)}


# -- CANCEL ------------------------------------------------------------------------------------------

def test_cancelling_before_the_start_gives_back_every_hour():
    ledger = Ledger()
    event = accept(request(local(2025, 7, 16, 12), local(2025, 7, 16, 18)), ledger)
    cancel = request(local(2025, 7, 16, 12), local(2025, 7, 16, 18), action="CANCEL", issued_at=local(2025, 7, 16, 9))
    decision = judge(cancel, event, ledger)
    assert decision.status == CANCELLED and decision.event.cancelled and decision.event.revision == 2
    assert decision.event.end == local(2025, 7, 16, 18) and decision.event.counted == {}
    assert decision.ledger_changes() == {"2025-07-16": -6 * H}
    assert event.counted == {"2025-07-16": 6 * H}  # the event as it stood is not changed in place
    ledger.add("sce-sep-2025", decision.ledger_changes())
    assert ledger.day_ms("sce-sep-2025", DAY) == 0 and ledger.year_ms("sce-sep-2025", 2025) == 0
    # The day is free again.
    assert judge(request(local(2025, 7, 16, 12), local(2025, 7, 16, 18), event_id="EV-2"), ledger=ledger).accepted


def test_cancelling_an_event_in_progress_keeps_the_time_used_and_ends_it_now():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=3)), ledger)
    event.started = True
    now = start + timedelta(minutes=90)
    decision = judge(request(start, start + timedelta(hours=3), action="CANCEL", issued_at=now), event, ledger, now)
    assert decision.status == CANCELLED and decision.event.end == now and decision.event.start == start
    assert decision.event.counted == {"2025-07-16": 90 * MIN}
    assert decision.ledger_changes() == {"2025-07-16": -90 * MIN}
    assert events.due_timers(decision.event) == []


def test_cancelling_across_midnight_keeps_each_days_used_time():
    start, end = local(2025, 7, 15, 22), local(2025, 7, 16, 2)
    ledger = Ledger()
    event = accept(request(start, end, issued_at=local(2025, 7, 14, 9)), ledger)
    now = local(2025, 7, 16, 0, 30)
    decision = judge(request(start, end, action="CANCEL", issued_at=now), event, ledger, now)
    assert decision.event.counted == {"2025-07-15": 2 * H, "2025-07-16": 30 * MIN}
    assert decision.ledger_changes() == {"2025-07-16": -90 * MIN}


def test_a_cancel_needs_no_notice_and_no_window_checks():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=2)), ledger)
    # A minute before the start, with whatever window the request carries.
    now = start - timedelta(minutes=1)
    decision = judge(request(start, start, action="CANCEL", offset=0, issued_at=now), event, ledger, now)
    assert decision.status == CANCELLED


def test_an_ended_or_cancelled_event_cannot_be_cancelled():
    start = local(2025, 7, 16, 14)
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=2)), ledger)
    after = start + timedelta(hours=2, minutes=1)
    ended = judge(request(start, start + timedelta(hours=2), action="CANCEL", issued_at=after), event, ledger, after)
    assert codes(ended) == ["EVENT_ENDED"]
    cancel = request(start, start + timedelta(hours=2), action="CANCEL", issued_at=local(2025, 7, 16, 9))
    cancelled = judge(cancel, event, ledger).event
    again = judge(cancel, cancelled, ledger)
    assert codes(again) == ["EVENT_CANCELLED"] and again.event is cancelled
    # Nor updated, nor scheduled again under the same id.
    update = request(start, start + timedelta(hours=1), action="UPDATE", issued_at=local(2025, 7, 16, 9))
    assert codes(judge(update, cancelled, ledger)) == ["EVENT_CANCELLED"]
    assert codes(judge(request(start, start + timedelta(hours=1)), cancelled, ledger)) == ["DUPLICATE_EVENT_ID"]


def test_a_cancel_names_the_events_program():
    ledger = Ledger()
    event = accept(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16)), ledger)
    cancel = request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), action="CANCEL", program_id="ohm-hours")
    assert codes(judge(cancel, event, ledger)) == ["PROGRAM_CHANGED"]


# -- timers, records, identity ----------------------------------------------------------------------

def test_an_event_owes_its_start_and_end_until_they_pass():
    start, end = local(2025, 7, 16, 14), local(2025, 7, 16, 16)
    event = judge(request(start, end)).event
    assert events.due_timers(event) == [(start, STARTED), (end, ENDED)]
    event.started = True
    assert events.due_timers(event) == [(end, ENDED)]
    event.ended = True
    assert events.due_timers(event) == []
    cancelled = judge(request(start, end, action="CANCEL"), judge(request(start, end)).event).event
    assert events.due_timers(cancelled) == []


def test_an_event_survives_its_storage_form():
    ledger = Ledger()
    event = accept(request(local(2025, 7, 16, 14), local(2025, 7, 16, 16), precool=True, targets=["resideo"]), ledger)
    state = event.to_state()
    assert state["start"] == "2025-07-16T21:00:00Z" and state["counted"] == {"2025-07-16": 2 * H}
    assert Event.from_state(state) == event


def test_a_redelivered_request_has_the_same_fingerprint():
    req = request(local(2025, 7, 16, 14), local(2025, 7, 16, 16))
    assert events.fingerprint(req) == events.fingerprint(dict(reversed(list(req.items()))))
    assert len(events.fingerprint(req)) == 32
    assert events.fingerprint(req) != events.fingerprint({**req, "setpoint_offset_f": 3})
    assert events.fingerprint(req) != events.fingerprint({**req, "action": "UPDATE"})


def test_the_lifecycle_record_of_an_accepted_request_is_the_event_as_it_stands():
    start, end = local(2025, 12, 31, 22), local(2026, 1, 1, 2)
    req = request(start, end, issued_at=local(2025, 12, 30, 9), precool=True, targets=["resideo"])
    decision = judge(req)
    decided_at = local(2025, 12, 30, 9, 1)
    record = events.lifecycle_record(SCHEDULED, decision.event, req, decided_at, source_offset=7,
                                     year_used_ms=4 * H, year_limit_ms=180 * H)
    assert record == {
        "event_id": "EV-1", "program_id": "sce-sep-2025", "status": SCHEDULED, "revision": 1,
        "request_action": "SCHEDULE", "reason": "GRID_STRESS", "start": start, "end": end, "setpoint_offset_f": 4,
        "precool": True, "targets": ["resideo"], "issued_at": local(2025, 12, 30, 9), "decided_at": decided_at,
        "failures": [], "counted_ms": 4 * H, "program_year": 2025,  # the local year of the start
        "year_used_ms": 4 * H, "year_limit_ms": 180 * H, "source_offset": 7,
    }


def test_the_lifecycle_record_of_a_rejection_is_the_request_with_the_revision_it_left():
    start = local(2025, 7, 16, 14)
    req = request(start, start + timedelta(hours=7), offset=5)
    decision = judge(req)
    record = events.lifecycle_record(REJECTED, decision.event, req, ISSUED, failures=decision.failures)
    assert (record["revision"], record["setpoint_offset_f"], record["counted_ms"]) == (0, 5, 0)
    assert [f["code"] for f in record["failures"]] == ["SETPOINT_OFFSET", "DURATION", "DAY_LIMIT"]
    assert all(f["message"] for f in record["failures"])
    # A refused UPDATE shows what was asked, with the revision of the event it left unchanged.
    ledger = Ledger()
    event = accept(request(start, start + timedelta(hours=2)), ledger)
    update = request(start, start + timedelta(hours=2), action="UPDATE", targets=["resideo"])
    refused = judge(update, event, ledger)
    record = events.lifecycle_record(REJECTED, refused.event, update, ISSUED, failures=refused.failures)
    assert (record["revision"], record["request_action"], record["targets"]) == (1, "UPDATE", ["resideo"])


def test_the_lifecycle_record_of_a_timer_has_no_request():
    start = local(2025, 7, 16, 14)
    event = judge(request(start, start + timedelta(hours=2))).event
    event.started = True
    record = events.lifecycle_record(STARTED, event, None, start)
    assert (record["status"], record["request_action"], record["issued_at"], record["decided_at"]) == (
        STARTED, None, ISSUED, start)
    assert (record["counted_ms"], record["source_offset"], record["year_limit_ms"]) == (2 * H, None, None)
