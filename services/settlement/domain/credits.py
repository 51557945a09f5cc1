"""What a program pays, before caps (pure): energy credits per event, capacity credits per bill
period, sign-up bonuses and rebates (PROGRAMS.md).

Amounts are exact decimals, rounded half-up to the cent once per line (here); caps are applied
afterwards, in posting order (:mod:`services.settlement.domain.postings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from gridflex.calendar import bill_period
from gridflex.money import round_to_cents
from gridflex.programs import Program

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Cap:
    """A limit on what lines of one kind may add up to within a scope (a year, a bill period)."""

    name: str  # per_year, per_bill_period
    limit: Decimal
    scope: tuple  # (service_account_id, program_id, credit_type, "year", 2025) or (..., "period", first_day)


@dataclass(frozen=True)
class Earned:
    """What one cause earns before caps, with every input a statement shows."""

    cause_key: str  # energy/<event>/<account>, capacity/<program>/<account>/<first day>, incentive/<claim>
    revision: int
    service_account_id: str
    program_id: str
    provider_id: str
    credit_type: str  # CAPACITY, ENERGY, REWARD, SIGNUP_BONUS, REBATE
    amount: Decimal  # rounded to the cent, never negative
    cap_year: int
    caps: tuple[Cap, ...] = ()
    event_id: str | None = None
    bill_period: tuple[date, date] | None = None  # fixed (capacity, bonus); None: the period of the posting day
    cap_period_start: date | None = None
    status: str = "SETTLEABLE"
    reason: str | None = None
    detail: dict = field(default_factory=dict)


def year_cap(account: str, program: str, credit_type: str, limit: Decimal | None, year: int) -> tuple[Cap, ...]:
    return () if limit is None else (Cap("per_year", limit, (account, program, credit_type, "year", year)),)


# -- energy ---------------------------------------------------------------------------------------


def energy_credit(program: Program, performance: dict, provider_id: str, event_day: date) -> Earned:
    """An event's energy credit (or reward) for one account: reduction × the program's rate when
    the performance is SETTLEABLE; nothing otherwise, or when the program pays no energy credit."""
    terms = program.credits.energy
    account = performance["service_account_id"]
    credit_type = terms.credit_type if terms is not None else "ENERGY"
    reduction = performance["reduction_kwh"]
    detail = {
        "rule": f"{program.id}: energy credit per kWh reduced below the baseline ({performance['method']})",
        "method": performance["method"],
        "baseline_kwh": _text(performance["baseline_kwh"]),
        "actual_kwh": _text(performance["actual_kwh"]),
        "reduction_kwh": _text(reduction),
        "candidate_days": [day.isoformat() for day in performance["candidate_days"]],
        "performance_revision": performance["revision"],
        "event_day": event_day.isoformat(),
    }
    amount = ZERO
    if terms is None:
        detail["rule"] = f"{program.id} pays no energy credit; the performance is reported only"
    elif performance["status"] == "SETTLEABLE" and reduction is not None:
        amount = round_to_cents(reduction * terms.per_kwh)
        detail["rate_per_kwh"] = str(terms.per_kwh)
        detail["computed"] = f"{reduction} kWh × ${terms.per_kwh} = ${reduction * terms.per_kwh} → ${amount}"
    return Earned(
        cause_key=f"energy/{performance['event_id']}/{account}", revision=performance["revision"],
        service_account_id=account, program_id=program.id, provider_id=provider_id, credit_type=credit_type,
        amount=amount, cap_year=event_day.year,
        caps=year_cap(account, program.id, credit_type, terms.cap_per_year if terms else None, event_day.year),
        event_id=performance["event_id"], status=performance["status"], reason=performance["reason"], detail=detail,
    )


# -- capacity -------------------------------------------------------------------------------------


def in_effect(period: dict, day: date) -> bool:
    """PROGRAMS.md: effective on or before the day, and not ended on or before it."""
    return period["effective_from"] <= day and (period["effective_to"] is None or day < period["effective_to"])


def capacity_credit(
    program: Program, account: str, periods: list[dict], first: date, last: date,
    period: tuple[date, date], revision: int = 0,
) -> Earned | None:
    """The capacity credit for the days ``first``..``last`` of one bill period: the program's
    rate per summer-season day on which any of the account's thermostats is enrolled (one
    account earns once, however many thermostats); zero when no such day falls in the range.
    None when the program pays no capacity credit."""
    terms = program.credits.capacity
    if terms is None:
        return None
    days = []
    provider = None
    day = first
    while day <= last:
        if program.credits.season.contains(day) and program.open_on(day):
            enrolled = [p for p in periods if in_effect(p, day)]
            if enrolled:
                days.append(day)
                provider = provider or min(enrolled, key=lambda p: p["effective_from"])["provider_id"]
        day += timedelta(days=1)
    year = days[0].year if days else first.year
    provider = provider or (periods[0]["provider_id"] if periods else "")
    raw = terms.per_season_day * len(days)
    amount = round_to_cents(raw)
    caps = []
    if terms.cap_per_bill_period is not None:
        caps.append(Cap("per_bill_period", terms.cap_per_bill_period, (account, program.id, "CAPACITY", "period", period[0])))
    caps += year_cap(account, program.id, "CAPACITY", terms.cap_per_year, year)
    return Earned(
        cause_key=f"capacity/{program.id}/{account}/{first.isoformat()}", revision=revision,
        service_account_id=account, program_id=program.id, provider_id=provider, credit_type="CAPACITY",
        amount=amount, cap_year=year, caps=tuple(caps), bill_period=period, cap_period_start=period[0],
        detail={
            "rule": f"{program.id}: capacity credit per summer-season day enrolled (per service account)",
            "rate_per_season_day": str(terms.per_season_day),
            "first_day": first.isoformat(), "last_day": last.isoformat(),
            "season_days_enrolled": len(days),
            "computed": f"{len(days)} days × ${terms.per_season_day} = ${raw} → ${amount}",
        },
    )


def capacity_range(period: tuple[date, date], last_credited: date | None) -> tuple[date, date] | None:
    """The days of a closing bill period not credited yet: after a change of bill cycle day the
    new period may start inside one already credited."""
    first = period[0] if last_credited is None else max(period[0], last_credited + timedelta(days=1))
    return (first, period[1]) if first <= period[1] else None


def cycle_days_closing(day: date) -> list[int]:
    """The bill cycle days whose bill period ends on ``day`` (PROGRAMS.md: a month without the
    cycle day uses its last day, so on a short month's last day several cycle days start)."""
    following = day + timedelta(days=1)
    month_end = (date(following.year + following.month // 12, following.month % 12 + 1, 1) - timedelta(days=1)).day
    if following.day < month_end:
        return [following.day]
    return list(range(following.day, 32))


# -- bonuses and rebates --------------------------------------------------------------------------


def incentive_credit(incentive: dict, cycle_day: int | None) -> Earned:
    """A granted sign-up bonus or rebate, posted at the close of the bill period in which the
    enrollment took effect (its ``post_on``), on that period's statement."""
    post_on = incentive["post_on"]
    cycle = cycle_day if cycle_day is not None else (post_on + timedelta(days=1)).day
    period = bill_period(post_on, cycle)
    kind = incentive["kind"]
    return Earned(
        cause_key=f"incentive/{incentive['claim_id']}", revision=0,
        service_account_id=incentive["service_account_id"], program_id=incentive["program_id"],
        provider_id=incentive["provider_id"], credit_type=kind,
        amount=round_to_cents(Decimal(incentive["amount_cents"]) / 100), cap_year=post_on.year, bill_period=period,
        status="POSTED",
        detail={
            "rule": f"{incentive['program_id']}: {'sign-up bonus' if kind == 'SIGNUP_BONUS' else 'rebate'}, "
                    "posted at the close of the bill period in which the enrollment took effect",
            "claim_id": incentive["claim_id"], "thermostat_serial": incentive["thermostat_serial"],
            "enrollment_effective": incentive["effective_date"].isoformat(), "post_on": post_on.isoformat(),
        },
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
