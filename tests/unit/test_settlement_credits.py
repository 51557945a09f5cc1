"""The settlement domain (services/settlement/domain): what programs pay (capacity credits per bill
period, energy credits and rewards per event, sign-up bonuses and rebates) and how earnings become
ledger lines (caps in posting order, revisions as a reversal plus a new line, re-deliveries as
nothing). Pure logic: no broker, no database; the tests play the ledger adapter's part (line ids).

Money follows PROGRAMS.md: exact decimals, each line rounded half-up to the cent once, caps applied
in posting order (the line reaching a cap is reduced to what is left; later lines are not posted).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gridflex import REPO_ROOT
from gridflex.calendar import bill_period
from gridflex.programs import ProgramCatalogue
from services.settlement.domain.credits import (
    Cap,
    capacity_credit,
    capacity_range,
    cycle_days_closing,
    energy_credit,
    in_effect,
    incentive_credit,
)
from services.settlement.domain.postings import CapUsage, LineDraft, PostedLine, Prior, settle, withdraw
from services.settlement.ledger import PostingContext

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
SEP = PROGRAMS["sce-sep-2025"]  # $0.40984 a season day, ≤ $12.50 a bill period, ≤ $50.00 a year; no energy credit
LEGACY = PROGRAMS["sce-sep-legacy"]  # $0.3275 a season day, ≤ $40.00 a year; $0.07/kWh; open until 2024-12-31
SAVE_POWER_DAYS = PROGRAMS["sce-save-power-days"]  # $1.25/kWh, ≤ $60.00 a year; no capacity credit
OHM = PROGRAMS["ohm-hours"]  # a REWARD of $0.50/kWh, no cap

ACCOUNT = "SA-1001"
SETTLEABLE, INSUFFICIENT_DATA, INELIGIBLE = "SETTLEABLE", "INSUFFICIENT_DATA", "INELIGIBLE"


def enrolled(start: date, end: date | None = None, *, provider="energyhub", serial="T-1", program=SEP,
             request="R-1") -> dict:
    """An EnrollmentPeriod as enrollment states it: in effect from ``start``, up to the day before ``end``."""
    return {"program_id": program.id, "provider_id": provider, "thermostat_serial": serial, "request_id": request,
            "effective_from": start, "effective_to": end, "end_reason": None if end is None else "DISENROLLED"}


def month(year: int, number: int) -> tuple[date, date]:
    """A calendar month: the bill period of cycle day 1."""
    return bill_period(date(year, number, 1), 1)


def close(program, periods, period, usage, last_credited=None, revision=0):
    """Close one bill period: credit the days not credited yet, then settle them."""
    first, last = capacity_range(period, last_credited)
    earned = capacity_credit(program, ACCOUNT, periods, first, last, period, revision)
    return earned, settle(earned, None, usage, period)


def assert_nothing_earned(earned, settled=None):
    """A capacity credit of no season day in effect: a zero Earned (a revision to it reverses the line in
    effect), which posts no line."""
    assert (earned.amount, earned.detail["season_days_enrolled"]) == (Decimal("0.00"), 0)
    assert earned.detail["computed"].startswith("0 days × ")
    if settled is not None:
        assert (settled.lines, settled.paid_cents, settled.caps_applied) == ([], 0, [])


def year_scope(program, credit_type, year) -> tuple:
    return (ACCOUNT, program.id, credit_type, "year", year)


def period_scope(program, first_day) -> tuple:
    return (ACCOUNT, program.id, "CAPACITY", "period", first_day)


def cap_hit(cap: str, limit: str, already: str, earned: str, left: str) -> dict:
    return {"cap": cap, "limit": limit, "already_paid": already, "reduced_from": earned, "reduced_to": left}


def performance(event_id: str, reduction: str | None, *, program=SAVE_POWER_DAYS, status=SETTLEABLE, revision=0,
                reason=None, method="csrl-3-of-5") -> dict:
    """An EventPerformance of ACCOUNT: a 12 kWh baseline, and ``reduction`` kWh below it."""
    reduced = None if reduction is None else Decimal(reduction)
    return {"event_id": event_id, "program_id": program.id, "service_account_id": ACCOUNT, "method": method,
            "baseline_kwh": None if reduced is None else Decimal("12.000000000"),
            "actual_kwh": None if reduced is None else Decimal("12.000000000") - reduced,
            "reduction_kwh": reduced,
            "candidate_days": [date(2025, 7, 1), date(2025, 7, 2), date(2025, 7, 3), date(2025, 7, 7),
                               date(2025, 7, 8)],
            "status": status, "reason": reason, "revision": revision}


def posted(line: LineDraft, line_id: int) -> PostedLine:
    """What the ledger adapter does when it writes a line: gives it an id, and remembers it for the cause."""
    line.line_id = line_id
    return PostedLine(line_id, line.amount_cents, line.cap_year, line.cap_period_start, line.provider_id,
                      line.credit_type)


JULY = month(2025, 7)
AUGUST = month(2025, 8)
SEPTEMBER = month(2025, 9)


# -- capacity: a full summer on calendar months (bill cycle day 1) ---------------------------------

def test_a_full_summer_on_calendar_months_pays_49_60_with_july_and_august_capped_at_12_50():
    usage = CapUsage()  # one account's cap usage, shared by every period in posting order
    periods = [enrolled(date(2025, 3, 3))]
    # June: 30 days × $0.40984 = $12.29520 → $12.30, under both caps.
    earned, june = close(SEP, periods, month(2025, 6), usage)
    assert earned.amount == Decimal("12.30")
    assert earned.detail["computed"] == "30 days × $0.40984 = $12.29520 → $12.30"
    assert earned.detail["season_days_enrolled"] == 30
    assert june.paid_cents == 1230 and june.caps_applied == []
    # July: 31 days × $0.40984 = $12.70504 → $12.71, reduced to the $12.50 per-period cap.
    earned, july = close(SEP, periods, JULY, usage)
    assert earned.amount == Decimal("12.71")
    assert july.paid_cents == 1250
    assert july.caps_applied == [cap_hit("per_bill_period", "12.50", "0.00", "12.71", "12.50")]
    assert july.credit.cause["caps_applied"] == july.caps_applied and july.credit.cause["earned"] == "12.71"
    # August: 31 days again → $12.71 → $12.50.
    _, august = close(SEP, periods, AUGUST, usage)
    assert august.paid_cents == 1250
    assert august.caps_applied == [cap_hit("per_bill_period", "12.50", "0.00", "12.71", "12.50")]
    # September: 30 days → $12.30.
    _, september = close(SEP, periods, SEPTEMBER, usage)
    assert september.paid_cents == 1230 and september.caps_applied == []
    # $12.30 + $12.50 + $12.50 + $12.30 = $49.60, under the $50.00 year cap.
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 4960
    assert [usage.used_cents[period_scope(SEP, date(2025, m, 1))] for m in (6, 7, 8, 9)] == [1230, 1250, 1250, 1230]


def test_a_capacity_line_carries_its_bill_period_its_caps_and_a_key_per_period():
    usage = CapUsage()
    earned, july = close(SEP, [enrolled(date(2025, 3, 3))], JULY, usage)
    # Two caps: the July bill period's, then calendar 2025's.
    assert earned.caps == (
        Cap("per_bill_period", Decimal("12.50"), period_scope(SEP, date(2025, 7, 1))),
        Cap("per_year", Decimal("50.00"), year_scope(SEP, "CAPACITY", 2025)),
    )
    assert earned.cause_key == "capacity/sce-sep-2025/SA-1001/2025-07-01"
    assert (earned.credit_type, earned.provider_id, earned.cap_year) == ("CAPACITY", "energyhub", 2025)
    assert (earned.bill_period, earned.cap_period_start) == (JULY, date(2025, 7, 1))
    # The line is on the July statement whatever the posting period, and has no id until written.
    line = july.credit
    assert line.idempotency_key == "capacity/sce-sep-2025/SA-1001/2025-07-01#r0"
    assert (line.bill_period, line.cap_year, line.cap_period_start) == (JULY, 2025, date(2025, 7, 1))
    assert (line.amount_cents, line.reverses_line_id, line.line_id, line.event_id) == (1250, None, None, None)
    assert july.lines == [line]


def test_the_months_outside_the_summer_season_earn_no_capacity_credit():
    periods = [enrolled(date(2025, 1, 6))]
    # Enrolled all year on calendar months: only June to September earn.
    usage = CapUsage()
    closed = {m: close(SEP, periods, month(2025, m), usage) for m in range(1, 13)}
    assert {m for m, (earned, _) in closed.items() if earned.amount > 0} == {6, 7, 8, 9}
    # May and October (and the rest of the year): a zero credit, no line.
    for number in (1, 2, 3, 4, 5, 10, 11, 12):
        assert_nothing_earned(*closed[number])
    assert closed[5][0].cap_year == 2025 and closed[5][0].provider_id == "energyhub"
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 4960
    # The season's edges: 31 May earns nothing, 1 June and 30 September a day each, 1 October nothing.
    one_day = Decimal("0.41")  # $0.40984 → $0.41
    assert_nothing_earned(capacity_credit(SEP, ACCOUNT, periods, date(2025, 5, 31), date(2025, 5, 31), month(2025, 5)))
    assert capacity_credit(SEP, ACCOUNT, periods, date(2025, 5, 31), date(2025, 6, 1), month(2025, 5)).amount == one_day
    assert capacity_credit(SEP, ACCOUNT, periods, date(2025, 9, 30), date(2025, 10, 1), SEPTEMBER).amount == one_day
    assert_nothing_earned(capacity_credit(SEP, ACCOUNT, periods, date(2025, 10, 1), date(2025, 10, 31), month(2025, 10)))


def test_no_capacity_credit_without_an_enrollment_in_effect_or_from_a_program_without_one():
    # Not enrolled: a zero credit, naming no provider.
    none_at_all = capacity_credit(SEP, ACCOUNT, [], *JULY, JULY)
    assert_nothing_earned(none_at_all)
    assert none_at_all.provider_id == ""
    # Enrolled only from October: a zero credit in the summer.
    assert_nothing_earned(capacity_credit(SEP, ACCOUNT, [enrolled(date(2025, 10, 1))], *JULY, JULY))
    # Save Power Days and OhmHours pay no capacity credit at all: no Earned.
    periods = [enrolled(date(2025, 1, 6), program=SAVE_POWER_DAYS)]
    assert capacity_credit(SAVE_POWER_DAYS, ACCOUNT, periods, *JULY, JULY) is None
    assert capacity_credit(OHM, ACCOUNT, [enrolled(date(2025, 1, 6), program=OHM)], *JULY, JULY) is None
    # The current terms start 2025-01-01: the summer of 2024 earns nothing under them.
    july_2024 = month(2024, 7)
    assert_nothing_earned(capacity_credit(SEP, ACCOUNT, [enrolled(date(2024, 3, 4))], *july_2024, july_2024))


# -- capacity: bill cycle day 15 -------------------------------------------------------------------

def test_a_full_summer_on_bill_cycle_day_15_pays_each_period_its_season_days():
    usage = CapUsage()
    periods = [enrolled(date(2025, 3, 3))]
    expected = [
        # 15 May – 14 June: 14 season days (1–14 June) × $0.40984 = $5.73776 → $5.74.
        ((date(2025, 5, 15), date(2025, 6, 14)), 14, "5.74", 574, []),
        # 15 June – 14 July: 30 days → $12.29520 → $12.30.
        ((date(2025, 6, 15), date(2025, 7, 14)), 30, "12.30", 1230, []),
        # 15 July – 14 August: 31 days → $12.70504 → $12.71, capped to $12.50.
        ((date(2025, 7, 15), date(2025, 8, 14)), 31, "12.71", 1250,
         [cap_hit("per_bill_period", "12.50", "0.00", "12.71", "12.50")]),
        # 15 August – 14 September: 31 days → $12.71 → $12.50.
        ((date(2025, 8, 15), date(2025, 9, 14)), 31, "12.71", 1250,
         [cap_hit("per_bill_period", "12.50", "0.00", "12.71", "12.50")]),
        # 15 September – 14 October: 16 season days (15–30 September) → $6.55744 → $6.56.
        ((date(2025, 9, 15), date(2025, 10, 14)), 16, "6.56", 656, []),
    ]
    for period, days, amount, paid, caps in expected:
        assert bill_period(period[1], 15) == period  # the seeds' calendar agrees with the table
        earned, result = close(SEP, periods, period, usage)
        assert (earned.detail["season_days_enrolled"], earned.amount) == (days, Decimal(amount)), period
        assert (result.paid_cents, result.caps_applied) == (paid, caps), period
        assert result.credit.bill_period == period and result.credit.cap_period_start == period[0]
    # $5.74 + $12.30 + $12.50 + $12.50 + $6.56 = $49.60.
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 4960
    # The periods before and after the season earn nothing.
    for outside in [(date(2025, 4, 15), date(2025, 5, 14)), (date(2025, 10, 15), date(2025, 11, 14))]:
        assert_nothing_earned(*close(SEP, periods, outside, usage))


def test_after_a_change_of_bill_cycle_day_only_the_days_not_credited_yet_earn():
    usage = CapUsage()
    periods = [enrolled(date(2025, 3, 3))]
    # June closes on cycle day 1 (30 days, $12.30); then the cycle day becomes 15.
    _, june = close(SEP, periods, month(2025, 6), usage)
    assert june.paid_cents == 1230
    # The period 15 June – 14 July closes: 15–30 June were credited, so only 1–14 July earn:
    # 14 × $0.40984 = $5.73776 → $5.74, counted toward the cap of the period starting 15 June.
    period = (date(2025, 6, 15), date(2025, 7, 14))
    earned, result = close(SEP, periods, period, usage, last_credited=date(2025, 6, 30))
    assert (earned.detail["first_day"], earned.detail["last_day"]) == ("2025-07-01", "2025-07-14")
    assert earned.cause_key == "capacity/sce-sep-2025/SA-1001/2025-07-01"
    assert result.paid_cents == 574 and result.credit.bill_period == period
    assert usage.used_cents[period_scope(SEP, date(2025, 6, 15))] == 574
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 1804


def test_capacity_range_leaves_out_days_already_credited():
    period = (date(2025, 6, 15), date(2025, 7, 14))
    # Nothing credited yet, or only before the period: the whole period.
    assert capacity_range(period, None) == period
    assert capacity_range(period, date(2025, 5, 31)) == period
    assert capacity_range(period, date(2025, 6, 14)) == period
    # Credited into the period: from the day after.
    assert capacity_range(period, date(2025, 6, 15)) == (date(2025, 6, 16), date(2025, 7, 14))
    assert capacity_range(period, date(2025, 6, 30)) == (date(2025, 7, 1), date(2025, 7, 14))
    assert capacity_range(period, date(2025, 7, 13)) == (date(2025, 7, 14), date(2025, 7, 14))
    # Credited to its last day or beyond: nothing left.
    assert capacity_range(period, date(2025, 7, 14)) is None
    assert capacity_range(period, date(2025, 7, 31)) is None


# -- capacity: the yearly cap -------------------------------------------------------------------------

def test_the_line_reaching_the_year_cap_is_reduced_to_what_is_left_and_later_lines_are_not_posted():
    # $45.00 of capacity credits already posted in 2025 (loaded from the ledger).
    usage = CapUsage({year_scope(SEP, "CAPACITY", 2025): 4500})
    periods = [enrolled(date(2025, 3, 3))]
    # June earns $12.30; $5.00 is left under the $50.00 year cap.
    _, june = close(SEP, periods, month(2025, 6), usage)
    assert june.paid_cents == 500 and june.credit.amount_cents == 500
    assert june.caps_applied == [cap_hit("per_year", "50.00", "45.00", "12.30", "5.00")]
    assert june.credit.cause["earned"] == "12.30"
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 5000
    # July earns $12.71: the period cap takes it to $12.50, the year cap to nothing. No line.
    earned, july = close(SEP, periods, JULY, usage)
    assert earned.amount == Decimal("12.71")
    assert july.lines == [] and july.paid_cents == 0 and july.credit is None
    assert july.caps_applied == [cap_hit("per_bill_period", "12.50", "0.00", "12.71", "12.50"),
                                 cap_hit("per_year", "50.00", "50.00", "12.50", "0.00")]
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 5000
    assert usage.used_cents[period_scope(SEP, date(2025, 7, 1))] == 0


def test_a_line_that_exactly_reaches_the_year_cap_is_paid_in_full_and_the_next_one_is_not():
    usage = CapUsage({year_scope(SEP, "CAPACITY", 2025): 3770})
    periods = [enrolled(date(2025, 3, 3))]
    # $37.70 + $12.30 = $50.00: June is paid whole, no cap applied.
    _, june = close(SEP, periods, month(2025, 6), usage)
    assert (june.paid_cents, june.caps_applied) == (1230, [])
    # September's $12.30 finds nothing left.
    _, september = close(SEP, periods, SEPTEMBER, usage)
    assert (september.paid_cents, september.lines) == (0, [])
    assert september.caps_applied == [cap_hit("per_year", "50.00", "50.00", "12.30", "0.00")]


def test_the_year_cap_starts_again_the_next_calendar_year():
    # 2025 is full; June 2026 is paid whole.
    usage = CapUsage({year_scope(SEP, "CAPACITY", 2025): 5000})
    earned, june = close(SEP, [enrolled(date(2025, 3, 3))], month(2026, 6), usage)
    assert earned.cap_year == 2026 and earned.caps[1].scope == year_scope(SEP, "CAPACITY", 2026)
    assert (june.paid_cents, june.caps_applied) == (1230, [])


# -- capacity: the earlier terms -----------------------------------------------------------------------

def test_a_full_legacy_summer_in_2024_pays_39_96_with_no_period_cap():
    usage = CapUsage()
    periods = [enrolled(date(2023, 5, 1), date(2025, 1, 1), program=LEGACY, provider="nest-labs")]
    # June 30 × $0.3275 = $9.825 → $9.83 (half-up); July 31 × $0.3275 = $10.1525 → $10.15;
    # August $10.15; September $9.83. No per-period cap in these terms.
    expected = {6: ("9.83", 983), 7: ("10.15", 1015), 8: ("10.15", 1015), 9: ("9.83", 983)}
    for number, (amount, cents) in expected.items():
        earned, result = close(LEGACY, periods, month(2024, number), usage)
        assert earned.amount == Decimal(amount) and earned.provider_id == "nest-labs"
        assert earned.caps == (Cap("per_year", Decimal("40.00"), year_scope(LEGACY, "CAPACITY", 2024)),)
        assert (result.paid_cents, result.caps_applied) == (cents, [])
    assert close(LEGACY, periods, month(2024, 6), CapUsage())[0].detail["computed"] == (
        "30 days × $0.3275 = $9.8250 → $9.83")
    # $9.83 + $10.15 + $10.15 + $9.83 = $39.96, under the $40.00 year cap.
    assert usage.used_cents[year_scope(LEGACY, "CAPACITY", 2024)] == 3996
    # The earlier terms end 2024-12-31: the summer of 2025 earns nothing under them.
    assert_nothing_earned(*close(LEGACY, periods, JULY, CapUsage()))


def test_the_legacy_year_cap_reduces_the_line_that_reaches_it():
    # $35.00 already posted in 2024: September's $9.83 posts $5.00.
    usage = CapUsage({year_scope(LEGACY, "CAPACITY", 2024): 3500})
    _, september = close(LEGACY, [enrolled(date(2023, 5, 1), program=LEGACY)], month(2024, 9), usage)
    assert september.paid_cents == 500
    assert september.caps_applied == [cap_hit("per_year", "40.00", "35.00", "9.83", "5.00")]


# -- capacity: days in effect, per account -------------------------------------------------------------

def test_an_enrollment_is_in_effect_from_its_effective_date_up_to_the_day_before_it_ends():
    period = enrolled(date(2025, 7, 10), date(2025, 8, 20))
    assert not in_effect(period, date(2025, 7, 9))
    assert in_effect(period, date(2025, 7, 10))
    assert in_effect(period, date(2025, 8, 19))
    assert not in_effect(period, date(2025, 8, 20))  # the disenrollment's effective date is not a day in effect
    assert in_effect(enrolled(date(2025, 7, 10)), date(2030, 1, 1))


def test_mid_season_enrollment_and_disenrollment_pay_only_the_days_in_effect():
    usage = CapUsage()
    periods = [enrolled(date(2025, 7, 10), date(2025, 8, 20))]
    # June: not yet enrolled.
    assert_nothing_earned(*close(SEP, periods, month(2025, 6), usage))
    # July: 10–31 July, 22 days × $0.40984 = $9.01648 → $9.02.
    earned, july = close(SEP, periods, JULY, usage)
    assert earned.detail["season_days_enrolled"] == 22 and july.paid_cents == 902
    # August: 1–19 August (20 August is the first day not in effect), 19 days → $7.78696 → $7.79.
    earned, august = close(SEP, periods, AUGUST, usage)
    assert earned.detail["season_days_enrolled"] == 19 and august.paid_cents == 779
    # September: disenrolled.
    assert_nothing_earned(*close(SEP, periods, SEPTEMBER, usage))
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 1681


def test_an_enrollment_ending_the_day_it_starts_is_never_in_effect():
    assert_nothing_earned(capacity_credit(SEP, ACCOUNT, [enrolled(date(2025, 7, 10), date(2025, 7, 10))], *JULY,
                                          JULY))


def test_two_thermostats_on_one_account_earn_each_day_once():
    # T-1 (EnergyHub) all summer, T-2 (Resideo) from 10 June: June still counts 30 days, $12.30.
    periods = [enrolled(date(2025, 3, 3)),
               enrolled(date(2025, 6, 10), provider="resideo", serial="T-2", request="R-2")]
    earned = capacity_credit(SEP, ACCOUNT, periods, *month(2025, 6), month(2025, 6))
    assert earned.detail["season_days_enrolled"] == 30 and earned.amount == Decimal("12.30")
    assert earned.provider_id == "energyhub"  # the enrollment in effect the longest on the first day
    # Both enrolled for the whole of July: 31 days, not 62.
    both = [enrolled(date(2025, 3, 3)), enrolled(date(2025, 3, 3), provider="resideo", serial="T-2", request="R-2")]
    assert capacity_credit(SEP, ACCOUNT, both, *JULY, JULY).detail["season_days_enrolled"] == 31


def test_two_thermostats_with_a_gap_between_them_earn_the_days_either_is_in_effect():
    # T-1 from 1 to 10 June (ends 11 June), T-2 from 21 June: 10 + 10 = 20 days × $0.40984 = $8.1968 → $8.20.
    periods = [enrolled(date(2025, 6, 1), date(2025, 6, 11)),
               enrolled(date(2025, 6, 21), provider="resideo", serial="T-2", request="R-2")]
    june = capacity_credit(SEP, ACCOUNT, periods, *month(2025, 6), month(2025, 6))
    assert june.detail["season_days_enrolled"] == 20 and june.amount == Decimal("8.20")
    assert june.provider_id == "energyhub"
    # Overlapping 5–15 June as well: still one count per day (30 days, $12.30).
    overlapping = [enrolled(date(2025, 6, 1), date(2025, 6, 16)),
                   enrolled(date(2025, 6, 5), provider="resideo", serial="T-2", request="R-2")]
    assert capacity_credit(SEP, ACCOUNT, overlapping, *month(2025, 6), month(2025, 6)).amount == Decimal("12.30")
    # July: only T-2 is in effect, so the credit names Resideo.
    assert capacity_credit(SEP, ACCOUNT, periods, *JULY, JULY).provider_id == "resideo"


# -- which bill periods close on a day -----------------------------------------------------------------

@pytest.mark.parametrize(("day", "cycle_days"), [
    (date(2025, 2, 27), [28, 29, 30, 31]),  # 28 Feb 2025 is February's last day: cycle days 28-31 start then
    (date(2024, 2, 28), [29, 30, 31]),  # 2024 is a leap year: 29 February stands in for 29-31
    (date(2024, 2, 29), [1]),
    (date(2025, 2, 28), [1]),
    (date(2025, 4, 29), [30, 31]),  # April has no 31st
    (date(2025, 1, 30), [31]),
    (date(2025, 6, 14), [15]),
    (date(2025, 12, 31), [1]),  # across the year end
    (date(2025, 11, 30), [1]),
])
def test_cycle_days_closing_names_the_bill_cycle_days_whose_period_ends_that_day(day, cycle_days):
    assert cycle_days_closing(day) == cycle_days


def test_cycle_days_closing_agrees_with_the_bill_period_calendar_on_every_day_of_two_years():
    # 2024 (a leap year) and 2025, every day, every cycle day 1-31.
    day, closes = date(2024, 1, 1), {c: 0 for c in range(1, 32)}
    while day <= date(2025, 12, 31):
        closing = cycle_days_closing(day)
        for cycle_day in range(1, 32):
            assert (bill_period(day, cycle_day)[1] == day) == (cycle_day in closing), (day, cycle_day)
            closes[cycle_day] += cycle_day in closing
        day += timedelta(days=1)
    # Every cycle day's period closes exactly once a month.
    assert closes == {c: 24 for c in range(1, 32)}


# -- energy credits ----------------------------------------------------------------------------------

def test_a_save_power_days_energy_credit_is_the_reduction_times_1_25():
    # 7.2 kWh × $1.25 = $9.000 → $9.00.
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-4", "7.2"), "nest-labs", date(2025, 8, 19))
    assert earned.amount == Decimal("9.00")
    assert (earned.credit_type, earned.provider_id, earned.cap_year, earned.event_id) == (
        "ENERGY", "nest-labs", 2025, "EV-4")
    assert earned.cause_key == "energy/EV-4/SA-1001" and earned.revision == 0
    assert earned.caps == (Cap("per_year", Decimal("60.00"), year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)),)
    assert earned.bill_period is None and earned.cap_period_start is None  # the period of the posting day
    assert earned.detail["computed"] == "7.2 kWh × $1.25 = $9.000 → $9.00"
    assert earned.detail["rate_per_kwh"] == "1.25"
    assert (earned.detail["baseline_kwh"], earned.detail["actual_kwh"], earned.detail["reduction_kwh"]) == (
        "12.000000000", "4.800000000", "7.2")
    assert earned.detail["candidate_days"][0] == "2025-07-01" and earned.detail["event_day"] == "2025-08-19"


@pytest.mark.parametrize(("reduction", "amount"), [
    ("1.234", "1.54"),  # $1.5425 → $1.54
    ("1.236", "1.55"),  # $1.545 → $1.55: half-up (banker's rounding would give $1.54)
    ("1.228", "1.54"),  # $1.535 → $1.54
    ("0.004", "0.01"),  # $0.005 → $0.01
    ("0.003", "0.00"),  # $0.00375 → $0.00
    ("4.133333333", "5.17"),  # the baseline's nine places: $5.16666666625 → $5.17
])
def test_energy_credits_round_half_up_to_the_cent_once(reduction, amount):
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-1", reduction), "nest-labs", date(2025, 7, 8))
    assert earned.amount == Decimal(amount)
    assert earned.amount.as_tuple().exponent == -2


def test_a_season_of_save_power_days_reaches_the_60_dollar_cap_mid_event():
    usage = CapUsage()
    lines = []
    # Three events pay $20.00 (16 kWh), $15.00 (12 kWh) and $20.00 (16 kWh): $55.00 in all.
    for event_id, kwh, day, cents in [("EV-1", "16", date(2025, 7, 8), 2000), ("EV-2", "12", date(2025, 7, 22), 1500),
                                      ("EV-3", "16", date(2025, 8, 5), 2000)]:
        result = settle(energy_credit(SAVE_POWER_DAYS, performance(event_id, kwh), "nest-labs", day), None,
                        usage, bill_period(day, 1))
        assert (result.paid_cents, result.caps_applied) == (cents, [])
        lines += result.lines
    assert usage.used_cents[year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)] == 5500
    # EV-4 earns 7.2 kWh × $1.25 = $9.00; $5.00 is left under the cap, and that is what posts.
    ev4 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-4", "7.2"), "nest-labs", date(2025, 8, 19)), None,
                 usage, AUGUST)
    assert ev4.paid_cents == 500 and ev4.credit.amount_cents == 500
    assert ev4.caps_applied == [cap_hit("per_year", "60.00", "55.00", "9.00", "5.00")]
    assert ev4.credit.cause["earned"] == "9.00" and ev4.credit.cause["caps_applied"] == ev4.caps_applied
    assert (ev4.credit.idempotency_key, ev4.credit.bill_period, ev4.credit.cap_period_start) == (
        "energy/EV-4/SA-1001#r0", AUGUST, None)
    # EV-5 earns $3.75 and posts nothing.
    ev5 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-5", "3"), "nest-labs", date(2025, 9, 2)), None,
                 usage, SEPTEMBER)
    assert (ev5.lines, ev5.paid_cents, ev5.credit) == ([], 0, None)
    assert ev5.caps_applied == [cap_hit("per_year", "60.00", "60.00", "3.75", "0.00")]
    assert sum(line.amount_cents for line in lines + ev4.lines) == 6000
    # A 2026 event is under a new year's cap: paid in full.
    ev6 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-6", "3"), "nest-labs", date(2026, 6, 9)), None,
                 usage, month(2026, 6))
    assert (ev6.paid_cents, ev6.caps_applied, ev6.credit.cap_year) == (375, [], 2026)


def test_ohm_hours_pays_a_reward_at_its_own_rate_without_a_cap():
    # 4.133333333 kWh × $0.50 = $2.0666666665 → $2.07, a REWARD.
    earned = energy_credit(OHM, performance("OHM-1", "4.133333333", program=OHM, method="average-10-of-10"),
                           "ohmconnect", date(2025, 7, 16))
    assert (earned.amount, earned.credit_type, earned.caps) == (Decimal("2.07"), "REWARD", ())
    assert earned.detail["rate_per_kwh"] == "0.50"
    # Settled with thousands of dollars already paid: no cap reduces it.
    usage = CapUsage({year_scope(OHM, "REWARD", 2025): 500_000})
    result = settle(earned, None, usage, JULY)
    assert (result.paid_cents, result.caps_applied) == (207, [])
    assert (result.credit.credit_type, result.credit.provider_id, result.credit.bill_period) == (
        "REWARD", "ohmconnect", JULY)


def test_the_earlier_terms_pay_7_cents_a_kwh_without_a_cap():
    # 6.0 kWh × $0.07 = $0.42.
    earned = energy_credit(LEGACY, performance("EV-L", "6.0", program=LEGACY), "venstar", date(2024, 8, 6))
    assert (earned.amount, earned.credit_type, earned.caps, earned.cap_year) == (Decimal("0.42"), "ENERGY", (), 2024)


def test_the_current_smart_energy_terms_pay_no_energy_credit():
    # The performance is reported (SETTLEABLE, 7.2 kWh), but these terms pay nothing for it.
    earned = energy_credit(SEP, performance("EV-SEP", "7.2", program=SEP), "energyhub", date(2025, 8, 19))
    assert (earned.amount, earned.credit_type, earned.caps, earned.status) == (Decimal("0"), "ENERGY", (), SETTLEABLE)
    assert earned.detail["rule"] == "sce-sep-2025 pays no energy credit; the performance is reported only"
    assert earned.detail["reduction_kwh"] == "7.2" and "computed" not in earned.detail
    result = settle(earned, None, CapUsage(), AUGUST)
    assert (result.lines, result.paid_cents, result.caps_applied) == ([], 0, [])


@pytest.mark.parametrize(("status", "reduction", "reason"), [
    (INSUFFICIENT_DATA, None, "usage missing for 2025-07-03"),
    (INELIGIBLE, "5.0", "net metering activated in the look-back"),
])
def test_a_performance_that_is_not_settleable_earns_nothing(status, reduction, reason):
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-X", reduction, status=status, reason=reason),
                           "nest-labs", date(2025, 8, 19))
    assert earned.amount == Decimal("0") and (earned.status, earned.reason) == (status, reason)
    assert "computed" not in earned.detail
    result = settle(earned, None, CapUsage(), AUGUST)
    assert (result.lines, result.paid_cents) == ([], 0)


def test_a_settleable_event_without_a_reduction_posts_no_line():
    # Usage above the baseline: reduction 0 → $0.00, nothing to post.
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-0", "0"), "nest-labs", date(2025, 8, 19))
    assert earned.amount == Decimal("0.00")
    assert settle(earned, None, CapUsage(), AUGUST).lines == []


# -- revisions ---------------------------------------------------------------------------------------

def test_a_revision_reverses_the_line_in_effect_and_posts_what_the_revision_earns():
    usage = CapUsage()
    # Revision 0: 7.2 kWh → $9.00, written as line 11.
    first = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-4", "7.2"), "nest-labs", date(2025, 8, 19)), None,
                   usage, AUGUST)
    prior = Prior(0, posted(first.credit, 11))
    assert first.credit.line_id == 11
    # Revision 1 (revised meter data): 6.0 kWh → $7.50, settled in September.
    revised = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-4", "6.0", revision=1), "nest-labs",
                                   date(2025, 8, 19)), prior, usage, SEPTEMBER)
    reversal, credit = revised.lines
    # The reversal: −$9.00 against line 11, on the posting period's statement.
    assert (reversal.amount_cents, reversal.reverses_line_id, reversal.line_id) == (-900, 11, None)
    assert reversal.idempotency_key == "energy/EV-4/SA-1001#r0/reversed"
    assert (reversal.bill_period, reversal.cap_year, reversal.provider_id, reversal.credit_type) == (
        SEPTEMBER, 2025, "nest-labs", "ENERGY")
    assert reversal.cause == {"rule": "reversal of line 11 (revised)", "reverses_line_id": 11, "reversed_revision": 0,
                              "by_revision": 1, "why": "revised"}
    # The new line: $7.50 under revision 1.
    assert (credit.amount_cents, credit.reverses_line_id, credit.idempotency_key) == (
        750, None, "energy/EV-4/SA-1001#r1")
    assert credit.cause["revision"] == 1
    assert revised.credit is credit and revised.paid_cents == 750
    assert usage.used_cents[year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)] == 750


def test_a_redelivered_revision_posts_nothing():
    usage = CapUsage({year_scope(SAVE_POWER_DAYS, "ENERGY", 2025): 900})
    prior = Prior(1, PostedLine(12, 900, 2025, None, "nest-labs", "ENERGY"))
    # The same revision again, or an older one: None, and the cap usage is untouched.
    for revision in (1, 0):
        earned = energy_credit(SAVE_POWER_DAYS, performance("EV-4", "7.2", revision=revision), "nest-labs",
                               date(2025, 8, 19))
        assert settle(earned, prior, usage, SEPTEMBER) is None
    assert usage.used_cents[year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)] == 900


def test_a_revision_to_insufficient_data_posts_only_the_reversal():
    usage = CapUsage({year_scope(SAVE_POWER_DAYS, "ENERGY", 2025): 900})
    prior = Prior(0, PostedLine(11, 900, 2025, None, "nest-labs", "ENERGY"))
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-4", None, status=INSUFFICIENT_DATA, revision=1,
                                                        reason="usage missing"), "nest-labs", date(2025, 8, 19))
    result = settle(earned, prior, usage, SEPTEMBER)
    assert [(line.amount_cents, line.reverses_line_id) for line in result.lines] == [(-900, 11)]
    assert (result.credit, result.paid_cents) == (None, 0)
    assert usage.used_cents[year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)] == 0


def test_a_revision_after_a_revision_that_posted_nothing_posts_a_new_line_only():
    # Revision 0 was INSUFFICIENT_DATA (no line); revision 1 has the data: 2.0 kWh → $2.50.
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-4", "2.0", revision=1), "nest-labs", date(2025, 8, 19))
    result = settle(earned, Prior(0, None), CapUsage(), SEPTEMBER)
    assert [(line.amount_cents, line.idempotency_key) for line in result.lines] == [(250, "energy/EV-4/SA-1001#r1")]


def test_revising_a_capped_line_down_gives_its_amount_back_to_the_year_cap():
    # $55.00 of earlier events, then EV-4 ($9.00) capped to $5.00 as line 24: the $60.00 cap is reached.
    usage = CapUsage({year_scope(SAVE_POWER_DAYS, "ENERGY", 2025): 5500})
    ev4 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-4", "7.2"), "nest-labs", date(2025, 8, 19)), None,
                 usage, AUGUST)
    prior = Prior(0, posted(ev4.credit, 24))
    assert ev4.paid_cents == 500
    # EV-4 revised to 2.0 kWh → $2.50: −$5.00 back to the cap, then $2.50 paid in full.
    revised = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-4", "2.0", revision=1), "nest-labs",
                                   date(2025, 8, 19)), prior, usage, SEPTEMBER)
    assert [line.amount_cents for line in revised.lines] == [-500, 250]
    assert revised.caps_applied == []
    assert usage.used_cents[year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)] == 5750
    # The room freed ($2.50) goes to the next event: EV-5's $3.75 posts $2.50.
    ev5 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-5", "3"), "nest-labs", date(2025, 9, 2)), None,
                 usage, SEPTEMBER)
    assert ev5.paid_cents == 250
    assert ev5.caps_applied == [cap_hit("per_year", "60.00", "57.50", "3.75", "2.50")]


def test_revising_an_earlier_event_down_frees_room_for_later_events():
    usage = CapUsage()
    # EV-1 $20.00 (line 1), EV-2 $15.00 (line 2), EV-3 $20.00 (line 3), EV-4 $9.00 → $5.00 (line 4).
    priors = {}
    for line_id, (event_id, kwh, day) in enumerate([("EV-1", "16", date(2025, 7, 8)), ("EV-2", "12", date(2025, 7, 22)),
                                                    ("EV-3", "16", date(2025, 8, 5)),
                                                    ("EV-4", "7.2", date(2025, 8, 19))], start=1):
        result = settle(energy_credit(SAVE_POWER_DAYS, performance(event_id, kwh), "nest-labs", day), None, usage,
                        bill_period(day, 1))
        priors[event_id] = Prior(0, posted(result.credit, line_id))
    assert [prior.line.amount_cents for prior in priors.values()] == [2000, 1500, 2000, 500]
    # EV-5 ($3.75) finds the cap reached.
    assert settle(energy_credit(SAVE_POWER_DAYS, performance("EV-5", "3"), "nest-labs", date(2025, 9, 2)), None,
                  usage, SEPTEMBER).lines == []
    # EV-2 revised from 12 to 4 kWh: −$15.00 (reversing line 2), +$5.00. $50.00 used now.
    revised = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-2", "4", revision=1), "nest-labs",
                                   date(2025, 7, 22)), priors["EV-2"], usage, SEPTEMBER)
    assert [(line.amount_cents, line.reverses_line_id) for line in revised.lines] == [(-1500, 2), (500, None)]
    assert usage.used_cents[year_scope(SAVE_POWER_DAYS, "ENERGY", 2025)] == 5000
    # EV-6 ($3.75) is paid in full; EV-7 ($10.00) is reduced to the $6.25 left.
    ev6 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-6", "3"), "nest-labs", date(2025, 9, 16)), None,
                 usage, SEPTEMBER)
    ev7 = settle(energy_credit(SAVE_POWER_DAYS, performance("EV-7", "8"), "nest-labs", date(2025, 9, 30)), None,
                 usage, SEPTEMBER)
    assert (ev6.paid_cents, ev6.caps_applied) == (375, [])
    assert ev7.paid_cents == 625
    assert ev7.caps_applied == [cap_hit("per_year", "60.00", "53.75", "10.00", "6.25")]


def test_a_capacity_revision_gives_back_to_both_the_period_and_the_year_caps():
    usage = CapUsage()
    # July, enrolled all month: $12.71 capped to $12.50, line 31.
    earned, july = close(SEP, [enrolled(date(2025, 3, 3))], JULY, usage)
    prior = Prior(0, posted(july.credit, 31))
    # Revision 1: a disenrollment effective 20 July becomes known: 1–19 July, 19 days → $7.79.
    revised_earned = capacity_credit(SEP, ACCOUNT, [enrolled(date(2025, 3, 3), date(2025, 7, 20))], *JULY, JULY,
                                     revision=1)
    assert revised_earned.amount == Decimal("7.79") and revised_earned.cause_key == earned.cause_key
    revised = settle(revised_earned, prior, usage, AUGUST)
    reversal, credit = revised.lines
    assert (reversal.amount_cents, reversal.reverses_line_id, reversal.cap_period_start) == (-1250, 31, date(2025, 7, 1))
    assert reversal.idempotency_key == "capacity/sce-sep-2025/SA-1001/2025-07-01#r0/reversed"
    assert reversal.bill_period == AUGUST  # the reversal is on the statement it posts to
    assert (credit.amount_cents, credit.bill_period, credit.idempotency_key) == (
        779, JULY, "capacity/sce-sep-2025/SA-1001/2025-07-01#r1")
    assert revised.caps_applied == []
    # Both scopes hold only the new line.
    assert usage.used_cents[period_scope(SEP, date(2025, 7, 1))] == 779
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 779


def test_a_capacity_revision_to_no_day_in_effect_posts_only_the_reversal():
    usage = CapUsage()
    # July paid $12.50 as line 31.
    _, july = close(SEP, [enrolled(date(2025, 3, 3))], JULY, usage)
    prior = Prior(0, posted(july.credit, 31))
    # Revision 1: the disenrollment is found to have taken effect on 20 June, before July began.
    revised_earned = capacity_credit(SEP, ACCOUNT, [enrolled(date(2025, 3, 3), date(2025, 6, 20))], *JULY, JULY,
                                     revision=1)
    assert_nothing_earned(revised_earned)
    revised = settle(revised_earned, prior, usage, AUGUST)
    assert [(line.amount_cents, line.reverses_line_id) for line in revised.lines] == [(-1250, 31)]
    assert (revised.credit, revised.paid_cents) == (None, 0)
    assert usage.used_cents[period_scope(SEP, date(2025, 7, 1))] == 0
    assert usage.used_cents[year_scope(SEP, "CAPACITY", 2025)] == 0


# -- sign-up bonuses and rebates -------------------------------------------------------------------------

def incentive(kind="SIGNUP_BONUS", program=SEP, amount_cents=7500, effective=date(2025, 7, 10),
              post_on=date(2025, 7, 14), provider="energyhub") -> dict:
    """A granted claim as settlement keeps it (settlement_incentives)."""
    return {"claim_id": f"{kind}/{program.id}/{ACCOUNT}/{provider}/R-1", "kind": kind, "program_id": program.id,
            "provider_id": provider, "service_account_id": ACCOUNT, "thermostat_serial": "T-1",
            "amount_cents": amount_cents, "effective_date": effective, "post_on": post_on, "status": "PENDING",
            "line_id": None, "fund_remaining": Decimal("1499925.00")}


def test_a_signup_bonus_is_75_dollars_on_the_statement_of_the_period_the_enrollment_took_effect():
    # Effective Thursday 10 July 2025, bill cycle day 15: the period 15 June – 14 July closes on 14 July.
    row = incentive(post_on=bill_period(date(2025, 7, 10), 15)[1])
    assert row["post_on"] == date(2025, 7, 14)
    earned = incentive_credit(row, 15)
    assert (earned.amount, earned.credit_type, earned.bill_period) == (
        Decimal("75.00"), "SIGNUP_BONUS", (date(2025, 6, 15), date(2025, 7, 14)))
    assert earned.cause_key == "incentive/SIGNUP_BONUS/sce-sep-2025/SA-1001/energyhub/R-1"
    assert (earned.revision, earned.cap_year, earned.caps, earned.status) == (0, 2025, (), "POSTED")
    assert earned.detail["rule"].startswith("sce-sep-2025: sign-up bonus, posted at the close of the bill period")
    assert (earned.detail["enrollment_effective"], earned.detail["post_on"]) == ("2025-07-10", "2025-07-14")
    # Posted in whatever run closes the period, it stays on that period's statement; no cap applies.
    result = settle(earned, None, CapUsage(), (date(2025, 7, 15), date(2025, 8, 14)))
    line = result.credit
    assert (line.amount_cents, line.credit_type, line.bill_period, line.line_id) == (
        7500, "SIGNUP_BONUS", (date(2025, 6, 15), date(2025, 7, 14)), None)
    assert line.idempotency_key == "incentive/SIGNUP_BONUS/sce-sep-2025/SA-1001/energyhub/R-1#r0"


def test_a_bonus_on_calendar_months_posts_on_the_month_it_took_effect():
    # Cycle day 1: effective 10 July → posted at the close of July.
    row = incentive(post_on=bill_period(date(2025, 7, 10), 1)[1])
    assert incentive_credit(row, 1).bill_period == JULY
    # Without a known cycle day, the period is the one ending on post_on.
    assert incentive_credit(incentive(), None).bill_period == (date(2025, 6, 15), date(2025, 7, 14))
    assert incentive_credit(row, None).bill_period == JULY


def test_a_rebate_is_its_own_credit_type_at_its_granted_amount():
    # The earlier terms' $150.00 rebate, effective 10 July 2024, calendar months.
    row = incentive("REBATE", LEGACY, 15000, date(2024, 7, 10), date(2024, 7, 31), provider="venstar")
    earned = incentive_credit(row, 1)
    assert (earned.amount, earned.credit_type, earned.bill_period, earned.cap_year) == (
        Decimal("150.00"), "REBATE", month(2024, 7), 2024)
    assert earned.detail["rule"].startswith("sce-sep-legacy: rebate,")
    assert settle(earned, None, CapUsage(), month(2024, 7)).paid_cents == 15000


def test_a_bonus_paid_in_error_is_withdrawn_by_a_reversal_only():
    usage = CapUsage()
    earned = incentive_credit(incentive(), 15)
    bonus = settle(earned, None, usage, (date(2025, 6, 15), date(2025, 7, 14)))
    prior = Prior(0, posted(bonus.credit, 41))
    # Found in error in August: −$75.00 against line 41, on August's statement; nothing new is paid.
    result = withdraw(replace(earned, revision=1), prior, usage, (date(2025, 7, 15), date(2025, 8, 14)),
                      "paid in error")
    assert [(line.amount_cents, line.reverses_line_id, line.credit_type) for line in result.lines] == [
        (-7500, 41, "SIGNUP_BONUS")]
    line = result.lines[0]
    assert line.idempotency_key == "incentive/SIGNUP_BONUS/sce-sep-2025/SA-1001/energyhub/R-1#r0/reversed"
    assert line.bill_period == (date(2025, 7, 15), date(2025, 8, 14))
    assert line.cause["why"] == "paid in error" and line.cause["rule"] == "reversal of line 41 (paid in error)"
    assert (result.paid_cents, result.credit, result.caps_applied) == (0, None, [])
    # The same withdrawal delivered again: nothing.
    assert withdraw(replace(earned, revision=1), Prior(1, None), usage, AUGUST, "paid in error") is None
    # A withdrawal of a cause with no line in effect: no lines.
    assert withdraw(replace(earned, revision=1), Prior(0, None), usage, AUGUST, "paid in error").lines == []


# -- line ids ------------------------------------------------------------------------------------------

def test_lines_have_no_id_until_the_ledger_writes_them_and_a_reversal_names_the_id_it_reverses():
    usage = CapUsage()
    earned = energy_credit(SAVE_POWER_DAYS, performance("EV-1", "4"), "nest-labs", date(2025, 7, 8))
    first = settle(earned, None, usage, JULY)
    assert [line.line_id for line in first.lines] == [None]
    # The adapter writes it as line 7; the revision's reversal points at 7, and neither new line has an id.
    revised = settle(replace(earned, revision=1, amount=Decimal("3.00")), Prior(0, posted(first.credit, 7)), usage,
                     AUGUST)
    assert [(line.line_id, line.reverses_line_id, line.amount_cents) for line in revised.lines] == [
        (None, 7, -500), (None, None, 300)]


# -- what the ledger adapter keeps of each cause -------------------------------------------------------

def test_a_batch_keeps_one_result_per_cause_and_a_line_keeps_the_inputs_of_its_result():
    context = PostingContext({}, CapUsage(), {}, date(2025, 9, 1), datetime(2025, 9, 2, 18, tzinfo=timezone.utc),
                             iter(range(21, 30)))
    # Revision 0 (7.2 kWh → $9.00) and revision 1 (to INSUFFICIENT_DATA) of one cause, in one batch.
    for revision, reduction, status in ((0, "7.2", SETTLEABLE), (1, "0", INSUFFICIENT_DATA)):
        earned = energy_credit(SAVE_POWER_DAYS, performance("EV-9", reduction, revision=revision, status=status),
                               "nest-labs", date(2025, 8, 19))
        # The later revision reverses line 21, read from the batch's own prior.
        settled = settle(earned, context.priors.get(earned.cause_key), context.usage, SEPTEMBER)
        context.record(settled, earned)
        if revision == 0:
            # Its result names the line, whose cause holds the inputs: they are not stored twice.
            result = context.results[earned.cause_key]
            assert (result[1], result[12], result[13], result[14]) == (0, 900, 21, None)
            assert settled.credit.cause["reduction_kwh"] == "7.2"
    # One result for the cause (an upsert or COPY of two rows for one key would fail): the last,
    # without a line, so it keeps its inputs itself.
    [(cause_key, result)] = context.results.items()
    assert cause_key == "energy/EV-9/SA-1001"
    assert (result[1], result[6], result[12], result[13]) == (1, INSUFFICIENT_DATA, 0, None)
    assert '"performance_revision":1' in result[14]
    assert [line.amount_cents for settled in context.settled for line in settled.lines] == [900, -900]
