"""Settling, one transaction at a time: load under locks, call the domain, write (the thin
application layer between the Kafka handlers in app.py and the ledger in Postgres).

- :func:`settle_performances`: event performance → energy credits (or rewards);
- :func:`apply_account_records`: customer accounts, enrollments and incentive decisions →
  settlement's view of each account, bonuses and rebates pending, capacity revisions, and the
  performances that waited for their account;
- :func:`close_day`: the bill periods ending on a day close: capacity credits, bonuses and
  rebates due, one statement per account.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg
import orjson
import structlog

from gridflex.calendar import bill_period, local_date
from gridflex.db import JsonText, json_text
from gridflex.programs import Program, ProgramCatalogue
from services.settlement.domain.credits import (
    Earned,
    capacity_credit,
    capacity_range,
    cycle_days_closing,
    energy_credit,
    in_effect,
    incentive_credit,
)
from services.settlement.domain.postings import Prior, settle, withdraw
from services.settlement.ledger import Ledger, PostingContext

log = structlog.get_logger(__name__)

WAITING = "WAITING"  # for its account (bill cycle, enrollment) or its event (the lifecycle mirror)


@dataclass
class Refusal:
    """An input record settlement cannot accept, for the dead-letter topic."""

    index: int  # of the record in what the caller passed
    reason_code: str
    reason: str


@dataclass
class Outcome:
    """What one transaction did (for metrics and logs)."""

    context: PostingContext | None = None
    refused: list[Refusal] = field(default_factory=list)
    waiting: int = 0
    counts: Tally = field(default_factory=Tally)


# -- performance → energy credits -------------------------------------------------------------------


async def settle_performances(
    ledger: Ledger, connection: asyncpg.Connection, performances: list[dict], event_days: dict[str, date],
    programs: ProgramCatalogue, now: datetime,
) -> Outcome:
    """Settle each performance (in order) to its energy credit, reversal, both or nothing; one
    whose account settlement does not know yet is kept until it arrives."""
    capped = {p["service_account_id"] for p in performances if energy_capped(programs[p["program_id"]])}
    context = await ledger.context(
        connection, capped,
        [f"energy/{p['event_id']}/{p['service_account_id']}" for p in performances], now, 2 * len(performances),
        uncapped=[p["service_account_id"] for p in performances],
    )
    outcome = Outcome(context)
    waiting = []
    for performance in performances:
        account = context.accounts.get(performance["service_account_id"])
        program = programs[performance["program_id"]]
        event_day = event_days.get(performance["event_id"])
        periods = account.periods(program.id) if account else []
        if account is None or account.bill_cycle_day is None or not periods:
            waiting.append((performance, "UNKNOWN_ACCOUNT"))
            continue
        if event_day is None:
            waiting.append((performance, "UNKNOWN_EVENT"))
            continue
        earned = energy_credit(program, performance, provider_on(periods, event_day), event_day)
        settled = settle(earned, context.priors.get(earned.cause_key), context.usage, context.posting_period(account))
        context.record(settled, earned, {key: performance[key] for key in ("baseline_kwh", "actual_kwh", "reduction_kwh")})
    await ledger.post(connection, context)
    if waiting:
        await keep_waiting(connection, waiting, now)
        outcome.waiting = len(waiting)
    return outcome


def energy_capped(program: Program) -> bool:
    """Whether the program caps what its energy credits add up to: then an account's lines are
    posted in order, under its lock (:meth:`Ledger.context`)."""
    terms = program.credits.energy
    return terms is not None and terms.cap_per_year is not None


def provider_on(periods: list[dict], day: date) -> str:
    """The provider whose thermostat was enrolled that day (else the latest): its line."""
    enrolled = [period for period in periods if in_effect(period, day)] or periods
    return max(enrolled, key=lambda period: period["effective_from"])["provider_id"]


async def keep_waiting(connection: asyncpg.Connection, performances: list[tuple[dict, str]], now: datetime) -> None:
    """Keep performances whose account (bill cycle day, enrollment) or event settlement does
    not know yet (reason UNKNOWN_ACCOUNT, UNKNOWN_EVENT); revision -1, so that the performance
    settles as new once both are known (:func:`settle_waiting`)."""
    await connection.executemany(
        "INSERT INTO settlement_results AS stored (cause_key, revision, service_account_id, program_id, credit_type,"
        " event_id, status, reason, detail, updated_at) VALUES ($1, -1, $2, $3, 'ENERGY', $4, $5, $6, $7::jsonb, $8)"
        " ON CONFLICT (cause_key) DO UPDATE SET detail = excluded.detail, reason = excluded.reason,"
        " updated_at = excluded.updated_at WHERE stored.status = $5",
        [(f"energy/{p['event_id']}/{p['service_account_id']}", p["service_account_id"], p["program_id"],
          p["event_id"], WAITING, reason, performance_json(p), now) for p, reason in performances],
    )


def performance_json(performance: dict) -> JsonText:
    """A performance record as JSON (kWh as exact decimal strings) to keep while it waits."""
    return JsonText(json_text({key: str(value) if isinstance(value, Decimal) else value
                               for key, value in performance.items()}))


def performance_from_json(detail: dict) -> dict:
    """A kept performance record, as the codec would have decoded it."""
    performance = dict(detail)
    for key in ("baseline_kwh", "actual_kwh", "reduction_kwh"):
        performance[key] = None if performance[key] is None else Decimal(performance[key])
    performance["candidate_days"] = [date.fromisoformat(day) for day in performance["candidate_days"]]
    return performance


# -- accounts, enrollments, incentive decisions ------------------------------------------------------


async def apply_account_records(
    ledger: Ledger, connection: asyncpg.Connection, customer_accounts: list[dict], enrollments: list[dict],
    decisions: list[dict], programs: ProgramCatalogue, now: datetime,
) -> Outcome:
    """Apply one batch of the account-keyed inputs (each list in log order)."""
    outcome = Outcome()
    await connection.execute("SELECT last_closed_day FROM settlement_closes FOR SHARE")  # lock order: closes first
    cycle_days = {record["service_account_id"]: record["bill_cycle_day"] for record in customer_accounts}
    periods = {record["service_account_id"]: json_text(record["enrollments"]) for record in enrollments}
    touched = sorted(set(cycle_days) | set(periods) | {d["service_account_id"] for d in decisions})
    await connection.execute(
        "INSERT INTO settlement_accounts AS stored (service_account_id, bill_cycle_day, enrollments)"
        " SELECT a, c, coalesce(e::jsonb, '[]') FROM unnest($1::text[], $2::smallint[], $3::text[]) AS t (a, c, e)"
        " ORDER BY a"
        " ON CONFLICT (service_account_id) DO UPDATE SET"
        " bill_cycle_day = coalesce(excluded.bill_cycle_day, stored.bill_cycle_day),"
        " enrollments = CASE WHEN $4::text[] @> ARRAY[excluded.service_account_id] THEN excluded.enrollments"
        " ELSE stored.enrollments END",
        touched, [cycle_days.get(a) for a in touched], [periods.get(a) for a in touched], list(periods),
    )
    closed = await connection.fetchval("SELECT last_closed_day FROM settlement_closes")
    capacity = await _capacity_results(connection, list(periods))
    incentives = await _incentives(connection, [d["claim_id"] for d in decisions if d["outcome"] != "GRANTED"])
    context = await ledger.context(
        connection, touched,
        [row["cause_key"] for row in capacity] + [f"incentive/{claim}" for claim in incentives], now,
        2 * (len(capacity) + len(decisions)) + 16 * len(periods),
    )
    outcome.context = context
    if closed is not None:
        for account_id in periods:
            _reconcile_capacity(context, context.accounts[account_id], capacity, closed, programs, outcome)
    for index, decision in enumerate(decisions):
        refusal = await _decide_incentive(connection, context, decision, incentives, now, outcome)
        if refusal is not None:
            outcome.refused.append(Refusal(index, *refusal))
    await ledger.post(connection, context)
    return outcome


async def settle_waiting(ledger: Ledger, connection: asyncpg.Connection, event_days: dict[str, date],
                         programs: ProgramCatalogue, now: datetime, limit: int = 5000) -> Outcome | None:
    """Settle the kept performances whose account and event settlement now knows (run
    periodically: the account, the event and the performance arrive on different pipelines, in
    any order)."""
    rows = await connection.fetch(  # status spelled out: the partial index settlement_results_waiting
        f"SELECT r.detail::text FROM settlement_results r JOIN settlement_accounts a USING (service_account_id)"
        f" WHERE r.status = '{WAITING}' AND a.bill_cycle_day IS NOT NULL AND a.enrollments <> '[]'::jsonb"
        f" ORDER BY r.updated_at LIMIT $1", limit)
    performances = [performance_from_json(orjson.loads(row["detail"])) for row in rows]
    known = [p for p in performances if p["event_id"] in event_days and p["program_id"] in programs]
    if not known:
        return None
    outcome = await settle_performances(ledger, connection, known, event_days, programs, now)
    outcome.counts["no_longer_waiting"] = len(known) - outcome.waiting
    return outcome


async def _capacity_results(connection, accounts: list[str]) -> list[dict]:
    if not accounts:
        return []
    rows = await connection.fetch(
        "SELECT r.cause_key, r.service_account_id, r.program_id, r.revision, coalesce(r.detail, l.cause)::text AS detail"
        " FROM settlement_results r LEFT JOIN ledger_lines l ON l.line_id = r.line_id"
        " WHERE r.credit_type = 'CAPACITY' AND r.service_account_id = ANY($1::text[])", accounts)
    return [{**dict(row), "detail": orjson.loads(row["detail"])} for row in rows]


def _reconcile_capacity(context: PostingContext, account, results: list[dict], closed: date,
                        programs: ProgramCatalogue, outcome: Outcome) -> None:
    """After an enrollment change, the account's bill periods closed inside each program's
    settlement window are credited again: a period whose enrolled days changed posts the
    difference (reversal and new line); one credited nothing yet (its enrollment arrived after
    the close) is credited now."""
    if account.bill_cycle_day is None:
        return
    today = local_date(context.now)
    for program in programs:
        if program.credits.capacity is None or not account.periods(program.id):
            continue
        credited = {date.fromisoformat(r["detail"]["bill_period_start"]): r for r in results
                    if r["service_account_id"] == account.service_account_id and r["program_id"] == program.id}
        period = bill_period(closed, account.bill_cycle_day)
        if period[1] != closed:
            period = bill_period(period[0] - timedelta(days=1), account.bill_cycle_day)
        while period[1] >= today - timedelta(days=program.baseline.settlement_window_days):
            prior = credited.get(period[0])
            first, last = ((date.fromisoformat(prior["detail"]["first_day"]), date.fromisoformat(prior["detail"]["last_day"]))
                           if prior else period)
            earned = capacity_credit(program, account.service_account_id, account.periods(program.id), first, last,
                                     period, prior["revision"] + 1 if prior else 0)
            days = earned.detail["season_days_enrolled"]
            if days != (prior["detail"]["season_days_enrolled"] if prior else 0):
                earned.detail.update(bill_period_start=period[0].isoformat(), bill_period_end=period[1].isoformat())
                # The credited period is closed (its statement disbursed): the line goes on the
                # current one; its cause and its per-period cap name the period it credits.
                earned = replace(earned, bill_period=None)
                settled = settle(earned, context.priors.get(earned.cause_key), context.usage,
                                 context.posting_period(account))
                context.record(settled, earned)
                outcome.counts["capacity_revised" if prior else "capacity_late"] += 1
            period = bill_period(period[0] - timedelta(days=1), account.bill_cycle_day)


async def _incentives(connection, claim_ids: list[str]) -> dict[str, dict]:
    if not claim_ids:
        return {}
    rows = await connection.fetch("SELECT * FROM settlement_incentives WHERE claim_id = ANY($1::text[]) FOR UPDATE",
                                  claim_ids)
    return {row["claim_id"]: dict(row) for row in rows}


async def _decide_incentive(connection, context: PostingContext, decision: dict, incentives: dict[str, dict],
                            now: datetime, outcome: Outcome) -> tuple[str, str] | None:
    """GRANTED waits for its post day; CANCELLED or REVERSED withdraws it, with a reversing line
    when it was posted already. Returns a refusal (reason code, reason) when it cannot apply."""
    claim = decision["claim_id"]
    if decision["outcome"] == "DENIED":
        return None
    if decision["outcome"] == "GRANTED":
        if decision["post_on"] is None:
            return "NO_POST_DATE", f"granted incentive {claim} has no post_on date"
        await connection.execute(
            "INSERT INTO settlement_incentives (claim_id, kind, program_id, provider_id, service_account_id,"
            " thermostat_serial, amount_cents, effective_date, post_on, status, fund_remaining, decided_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'PENDING', $10, $11) ON CONFLICT DO NOTHING",
            claim, decision["kind"], decision["program_id"], decision["provider_id"], decision["service_account_id"],
            decision["thermostat_serial"], int(decision["amount"] * 100), decision["effective_date"],
            decision["post_on"], decision["fund_remaining"], decision["decided_at"])
        incentives.setdefault(claim, {**decision, "status": "PENDING"})  # a withdrawal later in this batch finds it
        outcome.counts["incentives_granted"] += 1
        return None
    stored = incentives.get(claim)
    if stored is None:
        return "UNKNOWN_CLAIM", f"{decision['outcome'].lower()} incentive {claim} was never granted to settlement"
    status = decision["outcome"]
    if stored["status"] in ("CANCELLED", "REVERSED"):
        return None  # withdrawn already (a re-delivery)
    if stored["status"] == "POSTED":
        account = context.accounts.get(stored["service_account_id"])
        earned = Earned(
            f"incentive/{claim}", 1, stored["service_account_id"], stored["program_id"], stored["provider_id"],
            stored["kind"], Decimal(0), stored["post_on"].year, status=status,
            reason=_withdrawal_reason(decision), detail={"rule": _withdrawal_reason(decision), "claim_id": claim},
        )
        posting_period = context.posting_period(account) if account and account.bill_cycle_day else \
            bill_period(context.posting_day(), (stored["post_on"] + timedelta(days=1)).day)
        settled = withdraw(earned, context.priors.get(earned.cause_key) or Prior(0, None), context.usage,
                           posting_period, _withdrawal_reason(decision))
        context.record(settled, earned)
    await connection.execute(
        "UPDATE settlement_incentives SET status = $2, fund_remaining = coalesce($3, fund_remaining),"
        " decided_at = $4 WHERE claim_id = $1", claim, status, decision["fund_remaining"], decision["decided_at"])
    stored["status"] = status
    outcome.counts[f"incentives_{status.lower()}"] += 1
    return None


def _withdrawal_reason(decision: dict) -> str:
    reasons = "; ".join(failure["message"] for failure in decision["failures"])
    what = "cancelled before posting" if decision["outcome"] == "CANCELLED" else "reversed: paid in error"
    return f"{what} ({reasons})" if reasons else what


# -- closing a day's bill periods ------------------------------------------------------------------


async def close_day(ledger: Ledger, connection: asyncpg.Connection, day: date, programs: ProgramCatalogue,
                    now: datetime) -> Outcome:
    """Close every bill period ending on ``day``: capacity credits for its days, bonuses and
    rebates due, and a statement per account. The caller holds the close lock."""
    cycles = {row["service_account_id"]: row["bill_cycle_day"] for row in await connection.fetch(
        "SELECT service_account_id, bill_cycle_day FROM settlement_accounts WHERE bill_cycle_day = ANY($1::smallint[])"
        " AND enrollments <> '[]'::jsonb", cycle_days_closing(day))}
    due = [dict(row) for row in await connection.fetch(
        "SELECT * FROM settlement_incentives WHERE status = 'PENDING' AND post_on <= $1 ORDER BY post_on, claim_id"
        " FOR UPDATE", day)]
    capacity_programs = [program for program in programs if program.credits.capacity is not None]
    credited = await _last_credited(connection, list(cycles))
    ranges = {}  # (account, program) → the days of the closing period not credited yet
    for account_id, cycle_day in cycles.items():
        period = bill_period(day, cycle_day)
        for program in capacity_programs:
            days = capacity_range(period, credited.get((account_id, program.id)))
            if days is not None:
                ranges[account_id, program.id] = (period, days)
    context = await ledger.context(
        connection, list(cycles) + [i["service_account_id"] for i in due],
        [f"capacity/{p}/{a}/{days[0]}" for (a, p), (_, days) in ranges.items()]
        + [f"incentive/{i['claim_id']}" for i in due], now, len(ranges) + len(due))
    outcome = Outcome(context)
    for (account_id, program_id), (period, days) in ranges.items():
        program = programs[program_id]
        periods = context.accounts[account_id].periods(program_id)
        if not periods:
            continue
        earned = capacity_credit(program, account_id, periods, days[0], days[1], period)
        if earned.detail["season_days_enrolled"] == 0:
            continue
        earned.detail.update(bill_period_start=period[0].isoformat(), bill_period_end=period[1].isoformat())
        context.record(settle(earned, context.priors.get(earned.cause_key), context.usage, period), earned)
        outcome.counts["capacity"] += 1
    for incentive in due:
        account = context.accounts.get(incentive["service_account_id"])
        earned = incentive_credit(incentive, account.bill_cycle_day if account else None)
        if earned.bill_period[1] < day:  # granted after its period closed: on the statement closing now
            earned = replace(earned, bill_period=None)
        cycle_day = account.bill_cycle_day if account and account.bill_cycle_day else (day + timedelta(days=1)).day
        settled = settle(earned, context.priors.get(earned.cause_key), context.usage, bill_period(day, cycle_day))
        context.record(settled, earned)
        credit = settled.credit if settled else None
        await connection.execute("UPDATE settlement_incentives SET status = 'POSTED', line_id = $2 WHERE claim_id = $1",
                                 incentive["claim_id"], credit.line_id if credit else None)
        outcome.counts[incentive["kind"].lower()] += 1
    await ledger.post(connection, context)
    statements = await connection.execute(
        "INSERT INTO bill_statements (service_account_id, bill_period_start, bill_period_end, line_count, total_cents,"
        " closed_at) SELECT service_account_id, bill_period_start, bill_period_end, count(*), sum(amount_cents), $2"
        " FROM ledger_lines WHERE bill_period_end = $1"
        " GROUP BY service_account_id, bill_period_start, bill_period_end ON CONFLICT DO NOTHING", day, now)
    outcome.counts["statements"] = int(statements.split()[-1])
    await connection.execute("UPDATE settlement_closes SET last_closed_day = $1", day)
    return outcome


async def _last_credited(connection, accounts: list[str]) -> dict[tuple[str, str], date]:
    """The last day already credited with capacity, per account and program."""
    rows = await connection.fetch(
        "SELECT r.service_account_id, r.program_id, max((coalesce(r.detail, l.cause)->>'last_day')::date) AS last_day"
        " FROM settlement_results r LEFT JOIN ledger_lines l ON l.line_id = r.line_id"
        " WHERE r.credit_type = 'CAPACITY' AND r.service_account_id = ANY($1::text[]) GROUP BY 1, 2", accounts)
    return {(row["service_account_id"], row["program_id"]): row["last_day"] for row in rows}
