"""The tariff calendar and money rounding, with PROGRAMS.md's own rules."""

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from gridflex.calendar import add_business_days, holidays, is_business_day, local_date, local_day_bounds
from gridflex.money import round_to_cents, to_cents


def test_the_eight_holidays_of_2025():
    assert holidays(2025) == {
        date(2025, 1, 1), date(2025, 2, 17), date(2025, 5, 26), date(2025, 7, 4),
        date(2025, 9, 1), date(2025, 11, 11), date(2025, 11, 27), date(2025, 12, 25),
    }


def test_a_sunday_holiday_is_observed_the_monday_after():
    # Independence Day 2027 falls on a Sunday.
    assert date(2027, 7, 4) not in holidays(2027)
    assert date(2027, 7, 5) in holidays(2027)


def test_a_saturday_holiday_is_not_moved():
    # Independence Day 2026 falls on a Saturday: no Friday holiday (unlike the `holidays` package).
    assert date(2026, 7, 4) in holidays(2026)
    assert is_business_day(date(2026, 7, 3))


def test_business_days_skip_weekends_and_holidays():
    # A request on Wednesday 2025-11-26: Thanksgiving (Thu) and the weekend do not count.
    assert add_business_days(date(2025, 11, 26), 3) == date(2025, 12, 2)
    # Friday 2025-12-19 + 3 business days crosses Christmas (Thu 12-25).
    assert add_business_days(date(2025, 12, 19), 3) == date(2025, 12, 24)
    assert add_business_days(date(2025, 12, 22), 3) == date(2025, 12, 26)


def test_local_days_follow_los_angeles_time_across_dst():
    # 2025-03-09 has 23 hours, 2025-11-02 has 25.
    start, end = local_day_bounds(date(2025, 3, 9))
    assert (end - start).total_seconds() == 23 * 3600
    start, end = local_day_bounds(date(2025, 11, 2))
    assert (end - start).total_seconds() == 25 * 3600
    # 06:59 UTC on July 1 is still June 30 in California.
    assert local_date(datetime(2025, 7, 1, 6, 59, tzinfo=timezone.utc)) == date(2025, 6, 30)


@pytest.mark.parametrize(
    "amount, cents",
    [("0.40984", 41), ("0.005", 1), ("0.0049", 0), ("12.495", 1250), ("-0.005", -1), ("50", 5000)],
)
def test_money_rounds_half_up_to_the_cent(amount, cents):
    assert to_cents(Decimal(amount)) == cents
    assert round_to_cents(Decimal(amount)) == Decimal(cents) / 100


def test_money_refuses_floats():
    with pytest.raises(TypeError):
        round_to_cents(0.1)
