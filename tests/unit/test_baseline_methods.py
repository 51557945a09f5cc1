"""The baseline domain (services/baseline/domain): interval usage per account, candidate days, the
CSRL 3-of-5 and 10-of-10 methods with their day-of adjustment, and how one account performed in one
event (SETTLEABLE, INSUFFICIENT_DATA, INELIGIBLE, or waiting for usage). Pure logic: no Kafka.

Usage histories are built with a simple profile: ``peak`` kWh an hour from 14:00 to 18:00 and
``base`` kWh an hour otherwise, so an event from 14:00 to 18:00 reads 4 × peak on every day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

import orjson
import pytest

from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE, local_day_bounds
from gridflex.codec import RecordCodec, SchemaRegistry
from gridflex.programs import AdjustmentKind, DayOfAdjustment, ProgramCatalogue
from services.baseline.domain import methods
from services.baseline.domain.methods import METHODS, MethodResult, adjust, candidate_days, highest_days_average, rounded
from services.baseline.domain.performance import (
    INELIGIBLE,
    INSUFFICIENT_DATA,
    SETTLEABLE,
    DispatchedEvent,
    Performance,
    dispatched_days,
    evaluate,
    hour_around,
    look_back,
    needed_days,
    participation,
)
from services.baseline.domain.usage import AccountUsage, IntervalRefused, Window

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
CSRL = PROGRAMS["sce-sep-2025"].baseline  # csrl-3-of-5, 45 search days, 7 days' data deadline
LEGACY_CSRL = PROGRAMS["sce-sep-legacy"].baseline
TEN_OF_TEN = PROGRAMS["ohm-hours"].baseline  # average-10-of-10, RATIO over the 2 hours before, at most ±20 %
EVERY_PROVIDER: frozenset[str] = frozenset()

PEAK_HOURS = range(14, 18)  # the profile's peak: clock hours 14:00-18:00 (hours since local midnight)
BASE = "0.5"
EVENT_DAY = date(2025, 7, 16)  # a Wednesday
# The five candidate days of a 14:00-18:00 event on EVENT_DAY (2025-07-04, a Friday holiday, is
# further back) → peak kWh an hour; the event window reads 4 × that: 10.0, 5.0, 12.4, 3.0, 8.0.
PLAIN_WEEK = {date(2025, 7, 15): "2.5", date(2025, 7, 14): "1.25", date(2025, 7, 11): "3.1",
              date(2025, 7, 10): "0.75", date(2025, 7, 9): "2.0"}
PLAIN_WEEK_DAYS = tuple(PLAIN_WEEK)
EVENT_DAY_PEAK = "1.5"  # the event window reads 6.0 kWh on the event day
# Three highest: 12.4 + 10.0 + 8.0 = 30.4; / 3 = 10.1333… → 10.133333333 (half-up, nine places).
PLAIN_WEEK_BASELINE = Decimal("10.133333333")


def local(day: date, hour: int = 0, minute: int = 0) -> datetime:
    """A Los Angeles wall-clock time on ``day`` (hour 24 and above run into the following days), in UTC."""
    day += timedelta(days=hour // 24)
    return datetime(day.year, day.month, day.day, hour % 24, minute, tzinfo=LOCAL_ZONE).astimezone(timezone.utc)


def facts(**changes) -> dict:
    """The baseline's facts of a customer account in service since 2019, without Net Energy Metering."""
    return {"service_start": "2019-01-01", "service_end": None, "net_metering_since": None, **changes}


def enrollments() -> dict:
    """Enrolled in the current and legacy Smart Energy Program (EnergyHub) and in OhmHours (OhmConnect)."""
    return {"sce-sep-2025": [["energyhub", "T-1", "2025-01-01", None]],
            "sce-sep-legacy": [["energyhub", "T-1", "2019-06-01", "2025-01-01"]],
            "ohm-hours": [["ohmconnect", "T-1", "2020-01-01", None]]}


# -- building usage ---------------------------------------------------------------------------------

def interval(day: date, slot: int, kwh, meter="M1", seconds=3600, revision=0) -> dict:
    """The MeterInterval of slot ``slot`` of a local day (``slot × seconds`` after local midnight)."""
    return {"meter_id": meter, "interval_start": local_day_bounds(day)[0] + timedelta(seconds=slot * seconds),
            "interval_seconds": seconds, "local_date": day, "kwh": Decimal(kwh), "revision": revision}


def slots_of(day: date, seconds=3600) -> int:
    start, end = local_day_bounds(day)
    return int((end - start).total_seconds()) // seconds


def record_day(usage: AccountUsage, day: date, kwh_of_slot: Callable[[int], Decimal], *, meter="M1", seconds=3600,
               skip=()) -> None:
    """Record every interval of a local day but the ``skip`` slots."""
    for slot in range(slots_of(day, seconds)):
        if slot not in skip:
            assert usage.record_interval(interval(day, slot, kwh_of_slot(slot), meter, seconds)) == day.isoformat()


def fill_day(usage: AccountUsage, day: date, peak, *, base=BASE, meter="M1", seconds=3600, skip=()) -> None:
    """A day of the profile: ``peak`` kWh an hour in PEAK_HOURS, ``base`` otherwise, spread over the intervals."""
    per_hour = {hour: Decimal(peak if hour in PEAK_HOURS else base) for hour in range(25)}
    share = Decimal(seconds) / 3600
    record_day(usage, day, lambda slot: per_hour[slot * seconds // 3600] * share, meter=meter, seconds=seconds,
               skip=skip)


def history(peaks: dict[date, str], *, account_facts=None, programs=None, **fill) -> AccountUsage:
    """An enrolled account with one day of the profile per ``peaks`` entry (day → peak kWh an hour)."""
    usage = AccountUsage(facts() if account_facts is None else account_facts,
                         enrollments() if programs is None else programs)
    for day, peak in peaks.items():
        fill_day(usage, day, peak, **fill)
    return usage


def plain_week(**fill) -> AccountUsage:
    return history({**PLAIN_WEEK, EVENT_DAY: EVENT_DAY_PEAK}, **fill)


# -- events -----------------------------------------------------------------------------------------

def event(day=EVENT_DAY, start=14, end=18, *, program_id="sce-sep-2025", targets=EVERY_PROVIDER,
          event_id="EV-1") -> DispatchedEvent:
    """An ended event from ``start`` to ``end`` o'clock local time (``end`` ≥ 24 runs past midnight)."""
    return DispatchedEvent(event_id, program_id, local(day, start), local(day, end), frozenset(targets), ended=True)


def settle(ev: DispatchedEvent, usage: AccountUsage, rules=CSRL, others=(), days_after=7) -> Performance | None:
    """The event evaluated ``days_after`` days after it ended (7: the data deadline), among every
    dispatched event (the event itself included, as the service keeps them)."""
    return evaluate(ev, rules, usage, [ev, *others], ev.end + timedelta(days=days_after))


def settleable(baseline: str, actual: str, reduction: str, days=PLAIN_WEEK_DAYS) -> Performance:
    return Performance(SETTLEABLE, tuple(days), Decimal(baseline), Decimal(actual), Decimal(reduction))


# -- CSRL 3-of-5 on a plain week --------------------------------------------------------------------

def test_csrl_takes_the_five_most_recent_weekdays_before_the_event_day():
    # Wed 16 July 2025: back over the weekend of 12-13 July to Wednesday 9 July.
    assert candidate_days(EVENT_DAY, 5, 45, frozenset()) == PLAIN_WEEK_DAYS


def test_csrl_averages_the_three_highest_candidate_days_and_the_reduction_is_baseline_minus_actual():
    # Windows 10.0, 5.0, 12.4, 3.0, 8.0 → (12.4 + 10.0 + 8.0) / 3 = 10.133333333; actual 4 × 1.5 = 6.0;
    # reduction 10.133333333 − 6.000000000 = 4.133333333.
    result = settle(event(), plain_week())
    assert result == settleable("10.133333333", "6.000000000", "4.133333333")
    assert result.reason is None and result.missing == ()
    assert result.baseline_kwh.as_tuple().exponent == -9  # nine decimal places, as EventPerformance carries


def test_the_reduction_is_never_negative():
    # Event day 4 × 3.0 = 12.0 kWh, above the 10.133333333 baseline: no reduction, not a negative one.
    usage = history({**PLAIN_WEEK, EVENT_DAY: "3.0"})
    result = settle(event(), usage)
    assert result == settleable("10.133333333", "12.000000000", "0")
    assert result.reduction_kwh.as_tuple().exponent == -9


def test_highest_days_average_says_which_days_it_averaged():
    day_kwh = [Decimal("10.0"), Decimal("5.0"), Decimal("12.4"), Decimal("3.0"), Decimal("8.0")]
    assert highest_days_average(day_kwh, CSRL) == MethodResult(Decimal("30.4") / 3, (0, 2, 4))


def test_of_equal_days_the_more_recent_counts():
    # 7 and 7 are the two highest; of the three 5s, index 0 (the most recent) is the third.
    day_kwh = [Decimal(5), Decimal(7), Decimal(5), Decimal(7), Decimal(5)]
    assert highest_days_average(day_kwh, CSRL) == MethodResult(Decimal(19) / 3, (0, 1, 3))


def test_the_10_of_10_method_averages_every_candidate_day():
    day_kwh = [Decimal(n) for n in range(1, 11)]  # 1 + … + 10 = 55; / 10 = 5.5
    assert highest_days_average(day_kwh, TEN_OF_TEN) == MethodResult(Decimal("5.5"), tuple(range(10)))


def test_every_program_names_a_registered_method_and_an_unknown_one_is_refused():
    assert {"csrl-3-of-5", "average-10-of-10"} <= set(METHODS)
    for program in PROGRAMS:
        assert methods.method(program.baseline) is METHODS[program.baseline.method]
    with pytest.raises(ValueError, match="baseline method 'csrl-4-of-5' is not one of"):
        methods.method(CSRL.model_copy(update={"method": "csrl-4-of-5"}))


def test_results_are_rounded_half_up_to_nine_places():
    assert rounded(Decimal("0.0000000005")) == Decimal("0.000000001")
    assert rounded(Decimal("0.00000000049")) == Decimal("0")
    assert rounded(Decimal("30.4") / 3) == PLAIN_WEEK_BASELINE
    assert rounded(Decimal(2)).as_tuple().exponent == -9


# -- holidays in the look-back ----------------------------------------------------------------------

@pytest.mark.parametrize(("event_day", "expected"), [
    # 4 July 2021 is a Sunday: observed Monday 5 July, which is skipped.
    (date(2021, 7, 7), (date(2021, 7, 6), date(2021, 7, 2), date(2021, 7, 1), date(2021, 6, 30), date(2021, 6, 29))),
    # 4 July 2020 is a Saturday: not moved, so Friday 3 July is a candidate.
    (date(2020, 7, 8), (date(2020, 7, 7), date(2020, 7, 6), date(2020, 7, 3), date(2020, 7, 2), date(2020, 7, 1))),
    # Christmas 2022 and New Year 2023 are Sundays: Mondays 26 December and 2 January are skipped.
    (date(2023, 1, 4), (date(2023, 1, 3), date(2022, 12, 30), date(2022, 12, 29), date(2022, 12, 28),
                        date(2022, 12, 27))),
    # New Year 2022 is a Saturday: Friday 31 December 2021 is a candidate.
    (date(2022, 1, 4), (date(2022, 1, 3), date(2021, 12, 31), date(2021, 12, 30), date(2021, 12, 29),
                        date(2021, 12, 28))),
], ids=["sunday-holiday-observed-monday", "saturday-holiday-not-moved", "christmas-and-new-year-on-sundays",
        "new-year-on-saturday"])
def test_candidate_days_skip_observed_holidays(event_day, expected):
    assert candidate_days(event_day, 5, 45, frozenset()) == expected


def test_a_sunday_holiday_observed_on_monday_is_not_a_candidate_in_the_csrl():
    # Monday 5 July 2021 (observed Independence Day) used 36 kWh: it would be the highest day if it counted.
    # Candidates 6, 2, 1 July, 30 and 29 June: 4.0, 8.0, 12.0, 6.0, 10.0 → (12 + 10 + 8) / 3 = 10.0;
    # actual 4 × 1.0 = 4.0; reduction 6.0.
    usage = history({date(2021, 7, 6): "1.0", date(2021, 7, 5): "9.0", date(2021, 7, 2): "2.0",
                     date(2021, 7, 1): "3.0", date(2021, 6, 30): "1.5", date(2021, 6, 29): "2.5",
                     date(2021, 7, 7): "1.0"})
    days = (date(2021, 7, 6), date(2021, 7, 2), date(2021, 7, 1), date(2021, 6, 30), date(2021, 6, 29))
    result = settle(event(date(2021, 7, 7), program_id="sce-sep-legacy"), usage, LEGACY_CSRL)
    assert result == settleable("10.000000000", "4.000000000", "6.000000000", days)


def test_a_saturday_holiday_leaves_the_friday_before_a_candidate_in_the_csrl():
    # Friday 3 July 2020 counts (12.0); Tuesday 30 June (36.0) is the sixth weekday back and does not.
    # Candidates 7, 6, 3, 2, 1 July: 4.0, 6.0, 12.0, 8.0, 10.0 → (12 + 10 + 8) / 3 = 10.0; actual 4.0.
    usage = history({date(2020, 7, 7): "1.0", date(2020, 7, 6): "1.5", date(2020, 7, 3): "3.0",
                     date(2020, 7, 2): "2.0", date(2020, 7, 1): "2.5", date(2020, 6, 30): "9.0",
                     date(2020, 7, 8): "1.0"})
    days = (date(2020, 7, 7), date(2020, 7, 6), date(2020, 7, 3), date(2020, 7, 2), date(2020, 7, 1))
    result = settle(event(date(2020, 7, 8), program_id="sce-sep-legacy"), usage, LEGACY_CSRL)
    assert result == settleable("10.000000000", "4.000000000", "6.000000000", days)


# -- earlier event days -----------------------------------------------------------------------------

EARLIER_EVENTS = [
    # OhmHours on Monday 14 July, OhmConnect targeted: the account is enrolled, so it was dispatched.
    event(date(2025, 7, 14), 17, 19, program_id="ohm-hours", targets={"ohmconnect"}, event_id="EV-OHM"),
    # Save Power Days on Friday 11 July: the account is not enrolled in it.
    event(date(2025, 7, 11), program_id="sce-save-power-days", event_id="EV-SPD"),
    # The Smart Energy Program on Thursday 10 July, but only for Resideo thermostats: not this account's.
    event(date(2025, 7, 10), targets={"resideo"}, event_id="EV-RESIDEO"),
]


def test_only_days_an_earlier_event_reached_the_account_are_dispatched_days():
    usage = history({})
    assert dispatched_days(usage, EARLIER_EVENTS, date(2025, 6, 1), EVENT_DAY) == {date(2025, 7, 14)}
    # Enrolled in OhmHours only from 15 July: the 14 July event did not reach it either.
    usage.programs["ohm-hours"] = [["ohmconnect", "T-1", "2025-07-15", None]]
    assert dispatched_days(usage, EARLIER_EVENTS, date(2025, 6, 1), EVENT_DAY) == frozenset()


def test_an_event_across_midnight_excludes_both_days_and_one_ending_at_midnight_only_the_first():
    usage = history({})
    across = event(date(2025, 7, 10), 22, 26)  # Thursday 22:00 to Friday 02:00
    at_midnight = event(date(2025, 7, 8), 22, 24)  # Tuesday 22:00 to Wednesday 00:00
    assert across.days() == (date(2025, 7, 10), date(2025, 7, 11))
    assert at_midnight.days() == (date(2025, 7, 8),)
    assert dispatched_days(usage, [across, at_midnight], date(2025, 6, 1), EVENT_DAY) == {
        date(2025, 7, 10), date(2025, 7, 11), date(2025, 7, 8)}
    # Only days inside [since, before) count.
    assert dispatched_days(usage, [across], date(2025, 7, 11), EVENT_DAY) == {date(2025, 7, 11)}


def test_an_earlier_event_day_is_not_a_candidate_but_other_programs_events_are_irrelevant():
    # 14 July is skipped, 11 and 10 July stay: candidates 15, 11, 10, 9, 8 July. Tuesday 8 July reads 16.0.
    # Windows 10.0, 12.4, 3.0, 8.0, 16.0 → (16.0 + 12.4 + 10.0) / 3 = 12.8; actual 6.0; reduction 6.8.
    usage = history({**PLAIN_WEEK, date(2025, 7, 8): "4.0", EVENT_DAY: EVENT_DAY_PEAK})
    ev = event()
    days = (date(2025, 7, 15), date(2025, 7, 11), date(2025, 7, 10), date(2025, 7, 9), date(2025, 7, 8))
    assert look_back(ev, CSRL, usage, [ev, *EARLIER_EVENTS]) == days
    assert settle(ev, usage, others=EARLIER_EVENTS) == settleable("12.800000000", "6.000000000", "6.800000000", days)


def test_two_events_on_one_day_each_use_their_own_clock_hours_on_the_same_candidate_days():
    # 14:00-16:00 reads 2 × peak: 5.0, 2.5, 6.2, 1.5, 4.0 → (6.2 + 5.0 + 4.0) / 3 = 5.0666… → 5.066666667;
    # actual 2 × 1.5 = 3.0; reduction 2.066666667.
    # 17:00-19:00 reads peak + base: 3.0, 1.75, 3.6, 1.25, 2.5 → (3.6 + 3.0 + 2.5) / 3 = 3.0333… → 3.033333333;
    # actual 1.5 + 0.5 = 2.0; reduction 1.033333333.
    usage = plain_week()
    first, second = event(start=14, end=16, event_id="EV-1"), event(start=17, end=19, event_id="EV-2")
    assert settle(first, usage, others=[second]) == settleable("5.066666667", "3.000000000", "2.066666667")
    assert settle(second, usage, others=[first]) == settleable("3.033333333", "2.000000000", "1.033333333")


# -- clock hours, DST and midnight ------------------------------------------------------------------

FALL_BACK, SPRING_FORWARD = date(2025, 11, 2), date(2025, 3, 9)  # 25 and 23 hours, both Sundays


def slot_numbered(day: date, seconds=3600) -> AccountUsage:
    """A day whose interval in slot n used n kWh, so a window's sum tells which slots it read."""
    usage = AccountUsage(facts(), enrollments())
    record_day(usage, day, Decimal, seconds=seconds)
    return usage


def test_dst_days_have_23_or_25_hourly_slots():
    assert slots_of(FALL_BACK) == 25 and slots_of(SPRING_FORWARD) == 23
    fall, spring = slot_numbered(FALL_BACK), slot_numbered(SPRING_FORWARD)
    assert fall.window(*local_day_bounds(FALL_BACK)) == Window(Decimal(300), 0, 25)  # 0 + 1 + … + 24
    assert spring.window(*local_day_bounds(SPRING_FORWARD)) == Window(Decimal(253), 0, 23)  # 0 + … + 22
    # One slot past the end of the day is not an interval of it.
    for usage, day, past in ((fall, FALL_BACK, 25), (spring, SPRING_FORWARD, 23)):
        refused = usage.record_interval(interval(day, past, "1"))
        assert isinstance(refused, IntervalRefused) and refused.reason_code == "MISALIGNED_INTERVAL"


def test_a_window_across_the_dst_change_holds_the_real_hours_of_those_clock_hours():
    # 00:00-04:00 on the fall-back day is 5 hours (01:00 twice): slots 0-4 → 0 + 1 + 2 + 3 + 4 = 10.
    assert slot_numbered(FALL_BACK).window(local(FALL_BACK, 0), local(FALL_BACK, 4)) == Window(Decimal(10), 0, 5)
    # 00:00-04:00 on the spring-forward day is 3 hours (no 02:00): slots 0-2 → 0 + 1 + 2 = 3.
    assert slot_numbered(SPRING_FORWARD).window(local(SPRING_FORWARD, 0), local(SPRING_FORWARD, 4)) == Window(
        Decimal(3), 0, 3)


def test_the_afternoon_of_a_dst_day_is_shifted_by_an_hour_in_its_slots():
    # 14:00-18:00 after falling back starts 15 hours after midnight: slots 15-18 → 15 + 16 + 17 + 18 = 66.
    assert slot_numbered(FALL_BACK).window(local(FALL_BACK, 14), local(FALL_BACK, 18)) == Window(Decimal(66), 0, 4)
    # After springing forward it starts 13 hours after midnight: slots 13-16 → 13 + 14 + 15 + 16 = 58.
    assert slot_numbered(SPRING_FORWARD).window(local(SPRING_FORWARD, 14), local(SPRING_FORWARD, 18)) == Window(
        Decimal(58), 0, 4)


def test_fifteen_minute_dst_days_have_100_or_92_slots():
    fall, spring = slot_numbered(FALL_BACK, 900), slot_numbered(SPRING_FORWARD, 900)
    assert len(fall.meters["M1"][FALL_BACK.isoformat()][2]) == 100
    assert len(spring.meters["M1"][SPRING_FORWARD.isoformat()][2]) == 92
    # 00:00-04:00: 20 quarter hours on the fall-back day (0 + … + 19 = 190), 12 on the spring-forward day (66).
    assert fall.window(local(FALL_BACK, 0), local(FALL_BACK, 4)) == Window(Decimal(190), 0, 20)
    assert spring.window(local(SPRING_FORWARD, 0), local(SPRING_FORWARD, 4)) == Window(Decimal(66), 0, 12)


@pytest.mark.parametrize(("day", "candidates", "actual", "reduction"), [
    # Fall back: 5 hours at 0.3 = 1.5 against a baseline of 4 clock hours at 0.5 = 2.0 → reduction 0.5.
    (FALL_BACK, (date(2025, 10, 31), date(2025, 10, 30), date(2025, 10, 29), date(2025, 10, 28), date(2025, 10, 27)),
     "1.500000000", "0.500000000"),
    # Spring forward: 3 hours at 0.3 = 0.9 against 2.0 → reduction 1.1.
    (SPRING_FORWARD, (date(2025, 3, 7), date(2025, 3, 6), date(2025, 3, 5), date(2025, 3, 4), date(2025, 3, 3)),
     "0.900000000", "1.100000000"),
], ids=["fall-back", "spring-forward"])
def test_an_event_over_the_dst_change_compares_its_real_hours_with_the_same_clock_hours(day, candidates, actual,
                                                                                       reduction):
    usage = history(dict.fromkeys(candidates, "9.0"))  # the 14:00-18:00 peak is outside 00:00-04:00
    fill_day(usage, day, "0.3", base="0.3")
    assert settle(event(day, 0, 4), usage) == settleable("2.000000000", actual, reduction, candidates)


def test_a_candidate_window_keeps_the_local_clock_hours_across_a_dst_change():
    # Monday 3 November is PST; Friday 31 October PDT: 14:00 there is 21:00 UTC, not 22:00 as on the event day.
    ev = event(date(2025, 11, 3))
    assert ev.clock_window(date(2025, 10, 31)) == (local(date(2025, 10, 31), 14), local(date(2025, 10, 31), 18))
    assert ev.clock_window(date(2025, 10, 31))[0] == datetime(2025, 10, 31, 21, tzinfo=timezone.utc)
    assert ev.clock_window(date(2025, 10, 31))[0] != ev.start - timedelta(days=3)


def test_an_event_across_midnight_reads_the_following_morning_on_every_candidate_day():
    # 23:00-01:00: a candidate's window is its last hour and the first hour of the day after (weekends too).
    # Base 0.5 everywhere but 0.3 on 16 and 17 July: candidates read 1.0 except 15 July (0.5 + 0.3 = 0.8);
    # baseline (1.0 + 1.0 + 1.0) / 3 = 1.0; actual 0.3 + 0.3 = 0.6; reduction 0.4.
    usage = history(dict.fromkeys([date(2025, 7, 8) + timedelta(days=n) for n in range(8)], "2.0"))
    fill_day(usage, EVENT_DAY, "2.0", base="0.3")
    fill_day(usage, date(2025, 7, 17), "2.0", base="0.3")
    ev = event(start=23, end=25)
    assert ev.clock_window(date(2025, 7, 11)) == (local(date(2025, 7, 11), 23), local(date(2025, 7, 12), 1))
    assert settle(ev, usage) == settleable("1.000000000", "0.600000000", "0.400000000")


# -- 15-minute data ---------------------------------------------------------------------------------

def test_fifteen_minute_data_gives_the_hourly_result():
    quarter_hourly = plain_week(seconds=900)
    assert len(quarter_hourly.meters["M1"]["2025-07-15"][2]) == 96
    assert quarter_hourly.window(local(EVENT_DAY, 14), local(EVENT_DAY, 18)) == Window(Decimal("6.0"), 0, 16)
    result = settle(event(), quarter_hourly)
    assert result == settle(event(), plain_week()) == settleable("10.133333333", "6.000000000", "4.133333333")
    assert result.digest() == settle(event(), plain_week()).digest()


def test_a_quarter_hour_is_one_slot_and_a_misaligned_start_is_refused():
    usage = AccountUsage()
    assert usage.record_interval(interval(EVENT_DAY, 95, "0.1", seconds=900)) == "2025-07-16"
    half_past = interval(EVENT_DAY, 3, "0.1") | {"interval_start": local(EVENT_DAY, 3, 30)}
    refused = usage.record_interval(half_past)
    assert isinstance(refused, IntervalRefused) and refused.reason_code == "MISALIGNED_INTERVAL"
    other_day = interval(EVENT_DAY, 3, "0.1") | {"local_date": date(2025, 7, 15)}
    assert usage.record_interval(other_day).reason_code == "MISALIGNED_INTERVAL"
    assert usage.record_interval(interval(EVENT_DAY, 96, "0.1", seconds=900)).reason_code == "MISALIGNED_INTERVAL"


def test_a_meter_keeps_one_interval_length_a_day():
    usage = AccountUsage()
    usage.record_interval(interval(EVENT_DAY, 0, "0.1", seconds=900))
    refused = usage.record_interval(interval(EVENT_DAY, 1, "0.4", seconds=3600))
    assert refused == IntervalRefused("INTERVAL_LENGTH_CHANGED",
                                      "meter M1 reported 900 s intervals on 2025-07-16; this one is 3600 s")
    # Another day may have another length.
    assert usage.record_interval(interval(date(2025, 7, 17), 1, "0.4")) == "2025-07-17"


# -- missing usage and the data deadline ------------------------------------------------------------

def week_missing_one_interval() -> AccountUsage:
    """The plain week without the 15:00-16:00 interval of Thursday 10 July."""
    usage = history({day: peak for day, peak in PLAIN_WEEK.items() if day != date(2025, 7, 10)}
                    | {EVENT_DAY: EVENT_DAY_PEAK})
    fill_day(usage, date(2025, 7, 10), PLAIN_WEEK[date(2025, 7, 10)], skip={15})
    return usage


def test_missing_usage_waits_until_the_data_deadline():
    usage, ev = week_missing_one_interval(), event()
    waiting = evaluate(ev, CSRL, usage, [ev], ev.end + timedelta(days=1))
    assert waiting.status is None and waiting.baseline_kwh is None and waiting.reason is None
    assert waiting.candidate_days == PLAIN_WEEK_DAYS
    assert waiting.missing == ("2025-07-10 14:00–18:00: 1 of 4 intervals",)
    assert waiting.actual_kwh == Decimal("6.000000000")
    just_before = evaluate(ev, CSRL, usage, [ev], ev.deadline(CSRL) - timedelta(microseconds=1))
    assert just_before.status is None


def test_usage_still_missing_at_the_deadline_is_insufficient_data():
    usage, ev = week_missing_one_interval(), event()
    assert ev.deadline(CSRL) == ev.end + timedelta(days=7)
    result = evaluate(ev, CSRL, usage, [ev], ev.deadline(CSRL))
    assert result.status == INSUFFICIENT_DATA
    assert result.reason == "MISSING_USAGE: 2025-07-10 14:00–18:00: 1 of 4 intervals"
    assert result.baseline_kwh is None and result.reduction_kwh is None
    assert result.candidate_days == PLAIN_WEEK_DAYS


def test_the_late_interval_makes_the_result_settleable_again():
    usage, ev = week_missing_one_interval(), event()
    assert settle(ev, usage, days_after=30).status == INSUFFICIENT_DATA
    assert usage.record_interval(interval(date(2025, 7, 10), 15, "0.75")) == "2025-07-10"
    assert settle(ev, usage, days_after=30) == settleable("10.133333333", "6.000000000", "4.133333333")


def test_an_event_day_not_reported_yet_is_missing_whole():
    # The meter's last reported day is 15 July: nothing is expected of it on the event day, so the
    # window has no usage at all (counted in hours).
    usage = history(PLAIN_WEEK)
    result = settle(event(), usage)
    assert result.status == INSUFFICIENT_DATA and result.actual_kwh is None
    assert result.reason == "MISSING_USAGE: event day 2025-07-16 14:00–18:00: 4 of 4 intervals"


def test_a_candidate_day_without_any_interval_inside_the_meters_span_is_missing():
    usage = history({day: peak for day, peak in PLAIN_WEEK.items() if day != date(2025, 7, 14)}
                    | {EVENT_DAY: EVENT_DAY_PEAK}, seconds=900)
    assert usage.window(local(date(2025, 7, 14), 14), local(date(2025, 7, 14), 18)) == Window(None, 16, 16)
    assert settle(event(), usage, days_after=1).missing == ("2025-07-14 14:00–18:00: 16 of 16 intervals",)


def test_an_account_without_its_customer_record_waits_then_is_insufficient_data():
    usage = plain_week()
    usage.facts = None
    waiting = settle(event(), usage, days_after=1)
    assert waiting.status is None and waiting.missing == ("the customer account record",)
    result = settle(event(), usage)
    assert result.status == INSUFFICIENT_DATA and result.reason.startswith("NO_CUSTOMER_ACCOUNT: ")


# -- service and Net Energy Metering in the look-back -----------------------------------------------

@pytest.mark.parametrize(("changes", "reason"), [
    # The look-back runs from the earliest candidate day (9 July) to the event day (16 July).
    ({"net_metering_since": "2025-07-10"}, "NET_METERING_ACTIVATED: Net Energy Metering from 2025-07-10, "
                                           "inside the look-back 2025-07-09 to 2025-07-16"),
    ({"net_metering_since": "2025-07-09"}, "NET_METERING_ACTIVATED: "),
    ({"net_metering_since": "2025-07-16"}, "NET_METERING_ACTIVATED: "),
    ({"service_start": "2025-07-09"}, "SERVICE_TURNED_ON: service started 2025-07-09, inside the look-back "
                                      "2025-07-09 to 2025-07-16"),
    ({"service_start": "2025-07-14"}, "SERVICE_TURNED_ON: "),
    ({"service_end": "2025-07-16"}, "SERVICE_ENDED: "),
], ids=["nem-inside", "nem-on-first-candidate-day", "nem-on-event-day", "service-on-first-candidate-day",
        "service-on-inside", "service-ended-on-event-day"])
def test_service_or_net_metering_changing_inside_the_look_back_is_ineligible(changes, reason):
    result = settle(event(), plain_week(account_facts=facts(**changes)))
    assert result.status == INELIGIBLE and result.reason.startswith(reason)
    assert result.baseline_kwh is None and result.candidate_days == PLAIN_WEEK_DAYS


@pytest.mark.parametrize("changes", [
    {"net_metering_since": "2019-05-01"},  # long before
    {"net_metering_since": "2025-07-08"},  # the day before the earliest candidate day
    {"net_metering_since": "2025-07-17"},  # after the event
    {"service_start": "2025-07-08"},
    {"service_end": "2025-07-17"},
], ids=["nem-long-before", "nem-just-before", "nem-after", "service-started-before", "service-ends-after"])
def test_service_and_net_metering_outside_the_look_back_are_fine(changes):
    assert settle(event(), plain_week(account_facts=facts(**changes))) == settleable(
        "10.133333333", "6.000000000", "4.133333333")


def test_customer_account_facts_are_kept_as_iso_days_and_report_a_change():
    usage = AccountUsage()
    account = {"service_account_id": "SA-1", "service_start": date(2019, 1, 1), "service_end": None,
               "net_metering_since": date(2025, 7, 10), "rate_schedule": "D"}
    assert usage.set_facts(account) is True
    assert usage.facts == {"service_start": "2019-01-01", "service_end": None, "net_metering_since": "2025-07-10"}
    assert usage.set_facts(account | {"rate_schedule": "TOU-D"}) is False  # nothing the baseline reads
    assert usage.set_facts(account | {"service_end": date(2026, 1, 1)}) is True
    assert usage.facts["service_end"] == "2026-01-01"


# -- too few candidate days -------------------------------------------------------------------------

def test_fewer_than_five_weekdays_in_the_search_range_is_insufficient_data():
    # Six days back from 16 July: 15, 14, (13, 12 weekend), 11, 10 → four weekdays.
    narrow = CSRL.model_copy(update={"search_days": 6})
    result = settle(event(), plain_week(), narrow)
    assert result.status == INSUFFICIENT_DATA
    assert result.reason == ("FEWER_CANDIDATE_DAYS: 4 eligible weekdays in the 6 days before 2025-07-16; "
                             "the method needs 5")
    assert result.candidate_days == PLAIN_WEEK_DAYS[:4]
    # A seventh day reaches Wednesday 9 July: five.
    assert settle(event(), plain_week(), CSRL.model_copy(update={"search_days": 7})).status == SETTLEABLE


def test_events_on_almost_every_weekday_leave_too_few_candidates_even_before_the_deadline():
    # Dispatched every day of the 45 days before 16 July (1 June onwards) but Tuesday 3 and Wednesday 4 June.
    dispatched = [event(date(2025, 6, 1) + timedelta(days=n), event_id=f"EV-{n}") for n in range(45)
                  if date(2025, 6, 1) + timedelta(days=n) not in (date(2025, 6, 3), date(2025, 6, 4))]
    result = settle(event(), plain_week(), others=dispatched, days_after=0)
    assert result.status == INSUFFICIENT_DATA
    assert result.reason == ("FEWER_CANDIDATE_DAYS: 2 eligible weekdays in the 45 days before 2025-07-16; "
                             "the method needs 5")
    assert result.candidate_days == (date(2025, 6, 4), date(2025, 6, 3))


# -- revisions --------------------------------------------------------------------------------------

def one_hour(usage: AccountUsage, slot: int = 15, day: date = EVENT_DAY) -> Decimal | None:
    return usage.window(local(day, slot), local(day, slot + 1)).kwh


def test_a_higher_revision_replaces_an_interval_and_an_equal_or_lower_one_is_ignored():
    usage = AccountUsage()
    assert usage.record_interval(interval(EVENT_DAY, 15, "1.5")) == "2025-07-16"
    assert usage.record_interval(interval(EVENT_DAY, 15, "9")) is None  # re-delivered revision 0
    assert one_hour(usage) == Decimal("1.5")
    assert usage.record_interval(interval(EVENT_DAY, 15, "1.234567891", revision=2)) == "2025-07-16"
    assert one_hour(usage) == Decimal("1.234567891")
    assert usage.record_interval(interval(EVENT_DAY, 15, "7", revision=2)) is None
    assert usage.record_interval(interval(EVENT_DAY, 15, "7", revision=1)) is None
    assert usage.record_interval(interval(EVENT_DAY, 15, "7", revision=0)) is None
    assert one_hour(usage) == Decimal("1.234567891")
    assert usage.record_interval(interval(EVENT_DAY, 15, "0.25", revision=3)) == "2025-07-16"
    assert one_hour(usage) == Decimal("0.25")


def test_finer_decimal_places_rescale_the_day_exactly():
    usage = AccountUsage()
    usage.record_interval(interval(EVENT_DAY, 14, "1.5"))
    usage.record_interval(interval(EVENT_DAY, 15, "1.234567891"))  # nine places: the day's scale grows
    usage.record_interval(interval(EVENT_DAY, 16, "100"))
    usage.record_interval(interval(EVENT_DAY, 17, "0.000000001"))
    # 1.5 + 1.234567891 + 100 + 0.000000001 = 102.734567892, exactly.
    assert usage.window(local(EVENT_DAY, 14), local(EVENT_DAY, 18)) == Window(Decimal("102.734567892"), 0, 4)
    assert one_hour(usage, 14) == Decimal("1.5")


def test_usage_state_round_trips_through_json_with_its_revisions():
    usage = plain_week()
    usage.record_interval(interval(EVENT_DAY, 15, "0.123456789", revision=4))
    restored = AccountUsage.from_state(orjson.loads(orjson.dumps(usage.to_state())))
    assert restored.to_state() == usage.to_state()
    assert one_hour(restored) == Decimal("0.123456789")
    assert restored.record_interval(interval(EVENT_DAY, 15, "5", revision=4)) is None
    assert settle(event(), restored) == settle(event(), usage)
    assert AccountUsage.from_state(None).to_state() == {"facts": None, "programs": {}, "meters": {}}


def test_a_revised_candidate_interval_revises_the_baseline_and_its_digest():
    # Friday 11 July 15:00-16:00 revised from 3.1 to 4.6: its window 12.4 → 13.9;
    # (13.9 + 10.0 + 8.0) / 3 = 10.6333… → 10.633333333; reduction 10.633333333 − 6.0 = 4.633333333.
    usage = plain_week()
    before = settle(event(), usage)
    assert usage.record_interval(interval(date(2025, 7, 11), 15, "4.6", revision=1)) == "2025-07-11"
    after = settle(event(), usage)
    assert after == settleable("10.633333333", "6.000000000", "4.633333333")
    assert after.digest() != before.digest()


# -- meters -----------------------------------------------------------------------------------------

def test_two_meters_on_one_account_add_up():
    # A second meter with 15-minute data: 0.25 an hour at peak → 1.0 more in every 14:00-18:00 window.
    # Windows 11.0, 6.0, 13.4, 4.0, 9.0 → (13.4 + 11.0 + 9.0) / 3 = 11.1333… → 11.133333333;
    # actual 6.0 + 1.0 = 7.0; reduction 4.133333333.
    usage = plain_week()
    for day in (*PLAIN_WEEK, EVENT_DAY):
        fill_day(usage, day, "0.25", base="0.1", meter="M2", seconds=900)
    assert usage.window(local(EVENT_DAY, 14), local(EVENT_DAY, 18)) == Window(Decimal("7.0"), 0, 4 + 16)
    assert settle(event(), usage) == settleable("11.133333333", "7.000000000", "4.133333333")


def test_a_meter_is_expected_only_from_its_first_to_its_last_reported_day():
    # The old meter reported until Friday 11 July, the new one from Monday 14 July: neither is awaited
    # outside its days, so the result is the one-meter plain week.
    usage = history({})
    for day, peak in (*PLAIN_WEEK.items(), (EVENT_DAY, EVENT_DAY_PEAK)):
        fill_day(usage, day, peak, meter="M-OLD" if day <= date(2025, 7, 11) else "M-NEW")
    assert settle(event(), usage) == settleable("10.133333333", "6.000000000", "4.133333333")
    # A day before any meter reported has no usage: the whole window is missing.
    assert usage.window(local(date(2025, 7, 1), 14), local(date(2025, 7, 1), 18)) == Window(None, 4, 4)
    # One late reading of the old meter on the event day: it is now expected on 14-16 July too.
    usage.record_interval(interval(EVENT_DAY, 0, "0.5", meter="M-OLD"))
    assert usage.window(local(date(2025, 7, 15), 14), local(date(2025, 7, 15), 18)) == Window(None, 4, 8)
    assert settle(event(), usage, days_after=1).missing == (
        "2025-07-15 14:00–18:00: 4 of 8 intervals", "2025-07-14 14:00–18:00: 4 of 8 intervals",
        "event day 2025-07-16 14:00–18:00: 4 of 8 intervals")


def test_the_hour_before_and_after_an_event():
    usage = plain_week()
    usage.record_interval(interval(EVENT_DAY, 13, "1.7", revision=1))
    assert hour_around(event(), usage) == (Decimal("1.700000000"), Decimal("0.500000000"))
    assert hour_around(event(date(2025, 7, 17)), usage) == (None, None)  # not reported


# -- 10-of-10 with a day-of adjustment --------------------------------------------------------------

# The ten candidate days of an OhmHours event on 16 July (Friday 4 July, a holiday, is skipped; it
# would be the highest) and their peak kWh an hour: 20.0 in all → 2.0 an hour → 8.0 over 14:00-18:00.
TEN_DAYS = {date(2025, 7, 15): "2.0", date(2025, 7, 14): "1.0", date(2025, 7, 11): "3.0", date(2025, 7, 10): "2.5",
            date(2025, 7, 9): "1.5", date(2025, 7, 8): "2.0", date(2025, 7, 7): "2.0", date(2025, 7, 3): "1.0",
            date(2025, 7, 2): "3.0", date(2025, 7, 1): "2.0"}


@pytest.mark.parametrize(("event_day_base", "baseline", "reduction"), [
    # Every candidate day used 2 × 0.5 = 1.0 from 12:00 to 14:00; the event day 2 × base. Actual 4 × 1.0 = 4.0.
    ("0.55", "8.800000000", "4.800000000"),  # 1.1 / 1.0 = 1.1 → 8.0 × 1.1 = 8.8
    ("0.45", "7.200000000", "3.200000000"),  # 0.9 → 7.2
    ("0.6", "9.600000000", "5.600000000"),  # 1.2: the cap itself → 9.6
    ("0.75", "9.600000000", "5.600000000"),  # 1.5 → capped at 1.2 → 9.6
    ("0.25", "6.400000000", "2.400000000"),  # 0.5 → capped at 0.8 → 6.4
], ids=["up", "down", "at-the-cap", "capped-up", "capped-down"])
def test_ten_of_ten_with_a_ratio_day_of_adjustment(event_day_base, baseline, reduction):
    ev = event(program_id="ohm-hours", targets={"ohmconnect"})
    usage = history({**TEN_DAYS, date(2025, 7, 4): "9.0"})
    fill_day(usage, EVENT_DAY, "1.0", base=event_day_base)
    assert settle(ev, usage, TEN_OF_TEN) == settleable(baseline, "4.000000000", reduction, TEN_DAYS)


def test_the_day_of_adjustment_compares_with_the_days_the_method_used_only():
    # The CSRL with OhmHours' RATIO adjustment: the days used (15, 11, 9 July) read 1.0 from 12:00 to 14:00;
    # the unused ones (14, 10 July) 4.0, which must not count. Event day 1.1 → ratio 1.1:
    # 30.4 / 3 × 1.1 = 11.1466… → 11.146666667; actual 6.0; reduction 5.146666667.
    # (Averaging all five days, 2.2, would give 0.5, capped at 0.8.)
    rules = CSRL.model_copy(update={"day_of_adjustment": TEN_OF_TEN.day_of_adjustment})
    usage = history({day: PLAIN_WEEK[day] for day in (date(2025, 7, 15), date(2025, 7, 11), date(2025, 7, 9))})
    for day in (date(2025, 7, 14), date(2025, 7, 10)):
        fill_day(usage, day, PLAIN_WEEK[day], base="2.0")
    fill_day(usage, EVENT_DAY, EVENT_DAY_PEAK, base="0.55")
    assert settle(event(), usage, rules) == settleable("11.146666667", "6.000000000", "5.146666667")


def test_missing_usage_in_the_adjustment_hours_is_missing_usage():
    usage = history(TEN_DAYS)
    fill_day(usage, EVENT_DAY, "1.0", skip={12})
    result = settle(event(program_id="ohm-hours"), usage, TEN_OF_TEN)
    assert result.status == INSUFFICIENT_DATA
    assert result.reason == "MISSING_USAGE: 2025-07-16 (day-of adjustment) 12:00–14:00: 1 of 2 intervals"


RATIO = DayOfAdjustment(kind=AdjustmentKind.RATIO, hours_before=2, max_change="0.20")
ADDITIVE = DayOfAdjustment(kind=AdjustmentKind.ADDITIVE, hours_before=2, max_change="0.20")
FOUR_HOURS = Decimal(4)


def test_a_ratio_adjustment_scales_the_baseline_within_its_cap():
    assert adjust(Decimal(8), Decimal("1.1"), Decimal("1.0"), FOUR_HOURS, RATIO) == Decimal("8.8")
    assert adjust(Decimal(8), Decimal("3"), Decimal("1.0"), FOUR_HOURS, RATIO) == Decimal("9.6")  # 3.0 → 1.2
    assert adjust(Decimal(8), Decimal("0"), Decimal("1.0"), FOUR_HOURS, RATIO) == Decimal("6.4")  # 0 → 0.8
    # The baseline days used nothing in those hours: no ratio, no change.
    assert adjust(Decimal(8), Decimal("1.5"), Decimal(0), FOUR_HOURS, RATIO) == Decimal(8)


def test_an_additive_adjustment_adds_the_hourly_difference_for_each_event_hour_within_its_cap():
    # (1.4 − 1.0) / 2 hours × 4 event hours = 0.8; the cap is 8 × 0.20 = 1.6.
    assert adjust(Decimal(8), Decimal("1.4"), Decimal("1.0"), FOUR_HOURS, ADDITIVE) == Decimal("8.8")
    assert adjust(Decimal(8), Decimal("0.6"), Decimal("1.0"), FOUR_HOURS, ADDITIVE) == Decimal("7.2")
    # (3.0 − 1.0) / 2 × 4 = 4.0 → capped at +1.6; (0 − 1.0) / 2 × 4 = −2.0 → capped at −1.6.
    assert adjust(Decimal(8), Decimal("3.0"), Decimal("1.0"), FOUR_HOURS, ADDITIVE) == Decimal("9.6")
    assert adjust(Decimal(8), Decimal("0"), Decimal("1.0"), FOUR_HOURS, ADDITIVE) == Decimal("6.4")
    # A cap of the whole baseline takes it to zero at most, never below.
    whole = ADDITIVE.model_copy(update={"max_change": Decimal(1)})
    assert adjust(Decimal(1), Decimal("0"), Decimal("10"), FOUR_HOURS, whole) == Decimal(0)


# -- who an event concerns --------------------------------------------------------------------------

def test_an_enrollment_that_ended_on_the_event_day_is_ineligible():
    ended = {"sce-sep-2025": [["energyhub", "T-1", "2025-01-01", "2025-07-16"]]}
    usage = plain_week(programs=ended)
    assert participation(usage, event()) == "ENDED"
    result = settle(event(), usage)
    assert result.status == INELIGIBLE
    assert result.reason == "NOT_ENROLLED_AT_START: the enrollment in sce-sep-2025 ended on 2025-07-16"
    assert result.candidate_days == PLAIN_WEEK_DAYS and result.baseline_kwh is None
    # Ending the day after, it was in effect at the start.
    usage.programs = {"sce-sep-2025": [["energyhub", "T-1", "2025-01-01", "2025-07-17"]]}
    assert participation(usage, event()) == "IN_EFFECT"
    assert settle(event(), usage).status == SETTLEABLE


@pytest.mark.parametrize(("programs", "targets"), [
    ({}, EVERY_PROVIDER),  # enrolled in nothing
    ({"ohm-hours": [["ohmconnect", "T-1", "2020-01-01", None]]}, EVERY_PROVIDER),  # in another program only
    ({"sce-sep-2025": [["energyhub", "T-1", "2025-01-01", None]]}, {"resideo"}),  # provider not targeted
    ({"sce-sep-2025": [["energyhub", "T-1", "2025-01-01", "2025-07-16"]]}, {"resideo"}),  # ended, not targeted
    ({"sce-sep-2025": [["energyhub", "T-1", "2025-01-01", "2025-07-15"]]}, EVERY_PROVIDER),  # ended the day before
    ({"sce-sep-2025": [["energyhub", "T-1", "2025-07-17", None]]}, EVERY_PROVIDER),  # in effect only later
], ids=["not-enrolled", "other-program", "provider-not-targeted", "ended-provider-not-targeted", "ended-before",
        "starts-after"])
def test_an_event_that_did_not_reach_the_account_does_not_concern_it(programs, targets):
    usage = plain_week(programs=programs)
    assert participation(usage, event(targets=targets)) is None
    assert settle(event(targets=targets), usage) is None


# -- the result record ------------------------------------------------------------------------------

CODEC = RecordCodec(SchemaRegistry.from_directory(REPO_ROOT / "schemas"), "gridflex.results.EventPerformance")


def test_equal_results_have_equal_digests_and_what_is_awaited_is_not_part_of_a_result():
    first, second = settle(event(), plain_week()), settle(event(), plain_week())
    assert first is not second and first.digest() == second.digest()
    waiting_one = Performance(None, PLAIN_WEEK_DAYS, missing=("2025-07-10 14:00–18:00: 1 of 4 intervals",))
    waiting_two = Performance(None, PLAIN_WEEK_DAYS, missing=("2025-07-11 14:00–18:00: 4 of 4 intervals",))
    assert waiting_one == waiting_two and waiting_one.digest() == waiting_two.digest()


@pytest.mark.parametrize("changed", [
    settleable("10.133333334", "6.000000000", "4.133333333"),  # the baseline
    settleable("10.133333333", "6.000000001", "4.133333333"),  # the actual
    settleable("10.133333333", "6.000000000", "4.133333333", (*PLAIN_WEEK_DAYS[:4], date(2025, 7, 8))),  # a day
    Performance(INELIGIBLE, PLAIN_WEEK_DAYS, reason="NET_METERING_ACTIVATED: …"),
], ids=["baseline", "actual", "days", "status"])
def test_a_different_result_has_a_different_digest(changed):
    assert changed.digest() != settleable("10.133333333", "6.000000000", "4.133333333").digest()


def test_the_record_is_an_event_performance():
    result = settle(event(), plain_week())
    record = result.record(event(), "SA-1", "csrl-3-of-5", 2)
    assert record == {
        "event_id": "EV-1", "program_id": "sce-sep-2025", "service_account_id": "SA-1", "method": "csrl-3-of-5",
        "baseline_kwh": Decimal("10.133333333"), "actual_kwh": Decimal("6.000000000"),
        "reduction_kwh": Decimal("4.133333333"), "candidate_days": sorted(PLAIN_WEEK_DAYS),  # oldest first
        "status": SETTLEABLE, "reason": None, "revision": 2,
    }
    assert CODEC.decode(CODEC.encode(record)) == record


def test_an_ineligible_record_without_kwh_encodes_too():
    usage = plain_week(account_facts=facts(net_metering_since="2025-07-10"))
    record = settle(event(), usage).record(event(), "SA-1", "csrl-3-of-5", 0)
    assert record["baseline_kwh"] is record["actual_kwh"] is record["reduction_kwh"] is None
    assert CODEC.decode(CODEC.encode(record)) == record


# -- what is kept ----------------------------------------------------------------------------------

def test_expire_drops_days_before_the_bound_except_pinned_ones():
    usage = history(dict.fromkeys([date(2025, 7, 1) + timedelta(days=n) for n in range(10)], "1.0"))
    fill_day(usage, date(2025, 7, 2), "1.0", meter="M-OLD")
    # Before 5 July: 1, 3, 4 July of M1 and 2 July of M-OLD go; 2 July of M1 is pinned... and of M-OLD too.
    assert usage.expire(date(2025, 7, 5), {"2025-07-02"}) == 3
    assert sorted(usage.meters["M1"]) == ["2025-07-02", *(f"2025-07-{n:02}" for n in range(5, 11))]
    assert list(usage.meters["M-OLD"]) == ["2025-07-02"]
    assert usage.expire(date(2025, 7, 5), set()) == 2  # both meters' 2 July
    assert "M-OLD" not in usage.meters  # a meter left without days is forgotten
    assert usage.expire(date(2025, 7, 5), set()) == 0
    # Expired days are no longer expected of the meter: there is no usage at all for them.
    assert usage.window(local(date(2025, 7, 3), 14), local(date(2025, 7, 3), 18)) == Window(None, 4, 4)
    assert usage.window(local(date(2025, 7, 5), 14), local(date(2025, 7, 5), 18)) == Window(Decimal("4.0"), 0, 4)


def test_the_days_a_result_needs_have_a_days_margin_either_side():
    assert needed_days(event(), (date(2025, 7, 2),)) == {
        "2025-07-01", "2025-07-02", "2025-07-03", "2025-07-15", "2025-07-16", "2025-07-17"}
    # An event across midnight spans two days (16-17 July), and so does each candidate window (2-3 July):
    # those days and a day either side are kept; days far from them are not.
    across = needed_days(event(start=23, end=25), (date(2025, 7, 2),))
    assert {"2025-07-01", "2025-07-02", "2025-07-03", "2025-07-04",
            "2025-07-15", "2025-07-16", "2025-07-17", "2025-07-18"} <= across
    assert not across & {f"2025-07-{n:02}" for n in (*range(5, 15), *range(20, 32))} and "2025-06-30" not in across


def test_pinning_the_needed_days_keeps_a_result_computable_after_expiry():
    usage, ev = plain_week(), event()
    expected = settle(ev, usage)
    usage.expire(EVENT_DAY + timedelta(days=1), needed_days(ev, expected.candidate_days))
    assert settle(ev, usage) == expected
    assert ev.window_closes(CSRL) == ev.end + timedelta(days=60)
