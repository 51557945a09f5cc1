"""Settlement service: its wiring.

- ``gridflex.event-performance.v1`` → energy credits (or rewards) per event and account, capped
  per year in posting order; a revision posts a reversal and the new line
- ``utility.customer-accounts.v1``, ``gridflex.enrollment.state.v1`` and
  ``gridflex.enrollment.incentives.v1`` (co-partitioned by service account) → each account's
  bill cycle and enrollments; bonuses and rebates pending until their bill period closes,
  cancelled or reversed; capacity credits revised when an enrollment change reaches a closed
  period inside the settlement window
- the clock: each bill period closes at the end of its last local day → capacity credits, the
  bonuses and rebates due, one statement per account
- the event lifecycle (mirrored): each event's local day (its year's caps)
- anything refused → ``gridflex.dead-letters.v1`` with its reason

Postgres is settlement's only store: each batch's lines, results and input positions are
written in one transaction (services/settlement/ledger.py), so replays, duplicates, restarts and
rebalances never post twice. The HTTP API (api.py) reads the ledger.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from gridflex.batch import Batch, InputRecord
from gridflex.calendar import local_date
from gridflex.codec import Undecodable
from gridflex.programs import ProgramCatalogue
from gridflex.streaming import ServiceRuntime
from gridflex.topics import CUSTOMER_ACCOUNTS, ENROLLMENT_STATE, EVENT_LIFECYCLE, EVENT_PERFORMANCE, INCENTIVES
from services.settlement import api, settling
from services.settlement.ledger import Ledger, day_closes_at
from services.settlement.settings import SettlementSettings

log = structlog.get_logger(__name__)

SERVICE = "settlement"
LINES = Counter("gridflex_settlement_lines", "Ledger lines posted", ["program", "credit_type", "kind"])
CREDITS = Counter("gridflex_settlement_credits_dollars", "Customer credit posted, in dollars: credits, and reversals "
                  "(as positive amounts; net = credit - reversal)", ["program", "credit_type", "kind"])
CAPS = Counter("gridflex_settlement_caps_applied", "Lines reduced by a cap", ["program", "cap"])
RESULTS = Counter("gridflex_settlement_results", "Causes settled (event results, capacity periods, incentives)",
                  ["program", "credit_type", "status"])
WAITING = Gauge("gridflex_settlement_performances_waiting",
                "Event performances kept until settlement knows their account (bill cycle, enrollment) and event")
LAST_CLOSED = Gauge("gridflex_settlement_last_closed_day_timestamp_seconds",
                    "End of the last local day whose bill periods are closed")
STATEMENTS = Counter("gridflex_settlement_statements", "Bill statements closed (one per account and period with lines)")
CLOSE_SECONDS = Histogram("gridflex_settlement_close_seconds", "Time to close one day's bill periods",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
INCENTIVE_DECISIONS = Counter("gridflex_settlement_incentive_decisions", "Incentive decisions applied", ["outcome"])

CLOSE_EVERY_S = 1.0

settings = SettlementSettings()
programs = ProgramCatalogue.load(settings.programs_dir)
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app
ledger = Ledger(settings.database_url)


class EventDays:
    """Each dispatched event's local day (from the lifecycle mirror)."""

    def __init__(self):
        self.days: dict[str, date] = {}

    def apply(self, event_id: str, step: dict) -> None:
        if step["status"] != "REJECTED":
            self.days[event_id] = local_date(step["start"])


event_days = EventDays()
lifecycle_mirror = runtime.mirror(EVENT_LIFECYCLE, event_days.apply)


def _consumer(name: str) -> str:
    return f"{SERVICE}-{name}{settings.topic_suffix}"


# -- event performance → energy credits ------------------------------------------------------------


def performance_refusal(record: InputRecord) -> tuple[str, str] | None:
    """Why a performance record cannot be settled, if it cannot."""
    performance = record.value
    if isinstance(performance, Undecodable):
        return performance.reason_code, performance.reason
    key = f"{performance['event_id']}/{performance['service_account_id']}"
    if record.key is None or record.key.decode(errors="replace") != key:
        return "KEY_MISMATCH", f"the key must be {key!r} (event_id/service_account_id)"
    if performance["program_id"] not in programs:
        return "UNKNOWN_PROGRAM", f"program {performance['program_id']!r} is not in the catalogue"
    for field in ("baseline_kwh", "actual_kwh", "reduction_kwh"):
        if performance[field] is not None and performance[field] < 0:
            return "NEGATIVE_VALUE", f"{field} is negative ({performance[field]})"
    if performance["status"] == "SETTLEABLE" and performance["reduction_kwh"] is None:
        return "MISSING_REDUCTION", "a SETTLEABLE performance must give reduction_kwh"
    return None


async def settle_performance(batch: Batch) -> None:
    if not batch.records:
        return
    await lifecycle_mirror.ready.wait()
    consumer = _consumer("performance")

    async def write(connection) -> settling.Outcome:
        batch.outputs.clear()  # a retried transaction queues its dead letters again
        accepted = []
        for record in await ledger.unapplied(connection, consumer, batch.records):
            refusal = performance_refusal(record)
            if refusal is None:
                accepted.append(record.value)
            else:
                batch.dead_letter(record, *refusal)
        outcome = await settling.settle_performances(ledger, connection, accepted, event_days.days, programs, batch.now)
        await batch.deliver()  # before the positions commit: a crash may repeat a dead letter, never lose one
        await ledger.store_positions(connection, consumer, batch.positions())
        return outcome

    observe(await ledger.write(write))


# -- accounts, enrollments, incentive decisions ------------------------------------------------------


def account_refusal(record: InputRecord) -> tuple[str, str] | None:
    value = record.value
    if isinstance(value, Undecodable):
        return value.reason_code, value.reason
    if record.key is None or record.key.decode(errors="replace") != value["service_account_id"]:
        return "KEY_MISMATCH", f"the key must be the service_account_id {value['service_account_id']!r}"
    if "outcome" in value and value["program_id"] not in programs:
        return "UNKNOWN_PROGRAM", f"program {value['program_id']!r} is not in the catalogue"
    return None


async def apply_accounts(batch: Batch) -> None:
    if not batch.records:
        return
    await lifecycle_mirror.ready.wait()
    consumer = _consumer("accounts")
    accounts_topic, enrollments_topic = runtime.topic_name(CUSTOMER_ACCOUNTS), runtime.topic_name(ENROLLMENT_STATE)

    async def write(connection) -> settling.Outcome:
        batch.outputs.clear()
        by_topic: dict[str, list[dict]] = {accounts_topic: [], enrollments_topic: [], "decisions": []}
        decision_records = []
        for record in await ledger.unapplied(connection, consumer, batch.records):
            if record.raw is None:
                continue  # a tombstone on a compacted topic: settlement keeps what it knew of the account
            refusal = account_refusal(record)
            if refusal is not None:
                batch.dead_letter(record, *refusal)
                continue
            if record.topic in by_topic:
                by_topic[record.topic].append(record.value)
            else:
                by_topic["decisions"].append(record.value)
                decision_records.append(record)
        outcome = await settling.apply_account_records(
            ledger, connection, by_topic[accounts_topic], by_topic[enrollments_topic], by_topic["decisions"],
            programs, batch.now)
        for refusal in outcome.refused:
            batch.dead_letter(decision_records[refusal.index], refusal.reason_code, refusal.reason)
        await batch.deliver()
        await ledger.store_positions(connection, consumer, batch.positions())
        return outcome

    outcome = await ledger.write(write)
    observe(outcome)
    for key, count in outcome.counts.items():
        if key.startswith("incentives_"):
            INCENTIVE_DECISIONS.labels(key.removeprefix("incentives_").upper()).inc(count)


runtime.batch_pipeline(EVENT_PERFORMANCE, settle_performance, state_name="performance",
                       positions=lambda assigned: ledger.stored_positions(_consumer("performance"), assigned))
runtime.batch_pipeline([CUSTOMER_ACCOUNTS, ENROLLMENT_STATE, INCENTIVES], apply_accounts, state_name="accounts",
                       positions=lambda assigned: ledger.stored_positions(_consumer("accounts"), assigned))


# -- closing bill periods ---------------------------------------------------------------------------


async def close_due_days() -> None:
    """Close each local day that has ended, one transaction per day, in order."""
    now = runtime.now()
    while True:
        async def close_next(connection) -> tuple[date, settling.Outcome | None] | None:
            last = await connection.fetchval("SELECT last_closed_day FROM settlement_closes FOR UPDATE")
            if last is None:
                first = settings.first_open_day or local_date(now)
                await connection.execute("INSERT INTO settlement_closes (last_closed_day) VALUES ($1)"
                                         " ON CONFLICT DO NOTHING", first - timedelta(days=1))
                return first - timedelta(days=1), None
            day = last + timedelta(days=1)
            if day_closes_at(day) > now:
                return None
            return day, await settling.close_day(ledger, connection, day, programs, now)

        with CLOSE_SECONDS.time():
            closed = await ledger.write(close_next)
        if closed is None:
            return
        day, outcome = closed
        LAST_CLOSED.set(day_closes_at(day).timestamp())
        if outcome is not None:
            observe(outcome)
            STATEMENTS.inc(outcome.counts["statements"])
            if outcome.context.settled:
                log.info("bill periods closed", day=day.isoformat(), **dict(outcome.counts))


async def settle_waiting() -> None:
    """Performances kept until their account and event were known: settle those known now."""
    await lifecycle_mirror.ready.wait()
    while True:
        outcome = await ledger.write(lambda connection: settling.settle_waiting(
            ledger, connection, event_days.days, programs, runtime.now()))
        if outcome is None:
            break
        observe(outcome)
        log.info("performances no longer waiting", count=outcome.counts["no_longer_waiting"])
    pool = await ledger.pool()
    WAITING.set(await pool.fetchval(  # status spelled out: the partial index settlement_results_waiting
        f"SELECT count(*) FROM settlement_results WHERE status = '{settling.WAITING}'"))


@app.task
async def close_bill_periods() -> None:
    """Every second: close the days that have ended; settle what waited for its account."""
    await runtime.clock.wait_started()
    while True:
        await close_due_days()
        await settle_waiting()
        await asyncio.sleep(CLOSE_EVERY_S)


def observe(outcome: settling.Outcome) -> None:
    for settled in outcome.context.settled if outcome.context else []:
        earned = settled.earned
        RESULTS.labels(earned.program_id, earned.credit_type, earned.status).inc()
        for line in settled.lines:
            kind = "reversal" if line.reverses_line_id is not None else "credit"
            LINES.labels(line.program_id, line.credit_type, kind).inc()
            CREDITS.labels(line.program_id, line.credit_type, kind).inc(abs(line.amount_cents) / 100)
        for cap in settled.caps_applied:
            CAPS.labels(earned.program_id, cap["cap"]).inc()


api.add_routes(runtime, ledger, programs)


@app.on_before_shutdown.connect
async def close_ledger(app: Any, **kwargs: Any) -> None:
    await ledger.close()
