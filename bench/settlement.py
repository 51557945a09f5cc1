"""Settlement ledger: lines posted per second for 1,000,000 lines, against a raw COPY of the same rows.

The issue: "Benchmark (added to `make bench`): ledger lines posted per second for 1,000,000 lines,
against a raw COPY of the same rows into an unconstrained table in the same run; target ≥ 0.5 ×
raw COPY and ≥ 20,000 lines/s. Report both."

How (Postgres only, no Kafka: everything in a schema private to the run, migrated with the
project's migrations, dropped at the end):

1. the fixture, not timed: ``BENCH_SETTLEMENT_RECORDS`` accounts (default 1,000,000) COPYed into
   ``settlement_accounts``, bill cycle days 1-28, each enrolled (energyhub) in Save Power Days
   or ohm-hours, alternately; the days up to 2025-07-14 closed. One event per program on
   2025-07-15, one SETTLEABLE performance (revision 0) per account, delivered in a seeded random
   order of accounts, as records of a 4-partition topic;
2. the measured path is the service's own (``settle_performance`` in services/settlement/app.py
   less its Kafka parts): batches of the services' ``batch_size`` (5,000), each in one transaction
   of ``Ledger.write``: ``Ledger.unapplied`` (the positions locked, records applied already
   dropped), ``settling.settle_performances``, ``Ledger.store_positions``. Reductions are
   0.5-3 kWh (every 50th account on an exact half cent, which half-up rounding takes up), so
   every performance posts exactly one line and no cap is reached (Save Power Days: $1.25/kWh,
   $60 a year; ohm-hours: $0.50/kWh). Only the ``Ledger.write`` calls are timed; each
   statement is timed too (the connection is wrapped: a few clock reads per batch), which
   tells where a batch's time goes. ``/proc`` gives this process's CPU and the Postgres
   backend's. Python's collector is tuned as in every service (``gridflex run``);
3. replays: the first batch again, as re-delivered records (the positions drop them) and as
   the same performances handed straight to ``settle_performances`` (their causes' revision 0
   is settled already): neither may post a line;
4. the raw COPY, in the same run: the same rows read back from ``ledger_lines`` and
   ``ledger_entries`` (not timed) and COPYed (``copy_records_to_table``) into ``raw_lines`` and
   ``raw_entries``, made ``LIKE`` the ledger's tables with nothing included (no index, check,
   trigger or default: only the columns and their NOT NULLs), in batches of the same size, one
   transaction per batch; only the transactions are timed;
5. correctness: N lines, 2N entries, every line's entries balanced, each line's amount, bill
   period and credit type as worked out here apart from the service (reduction × rate in integer
   nano-kWh, rounded half up), the ``customer_credits`` view summing to the expected total, no
   idempotency key twice, one result per cause, the positions at the end of each partition, no
   performance left waiting, and the replays posting nothing.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
import uuid
from array import array
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg

from bench.console import progress
from bench.procstats import MachineCpu, cpu_seconds, peak_rss_mib
from gridflex import REPO_ROOT
from gridflex.batch import InputRecord
from gridflex.db import create_schema, drop_schema, migrate
from gridflex.metrics import tune_garbage_collection
from gridflex.programs import ProgramCatalogue
from gridflex.settings import ServiceSettings
from services.settlement import settling
from services.settlement.ledger import ENTRY_COLUMNS, LINE_COLUMNS, Ledger

DEFAULT_RECORDS = 1_000_000
TARGET_LINES_PER_S = 20_000
TARGET_RATIO = 0.5  # of the raw COPY's lines per second
PROGRESS_EVERY = 100_000
FIXTURE_CHUNK = 100_000
CHECK_CHUNK = 100_000

SPD, OHM = "sce-save-power-days", "ohm-hours"
PROVIDER = "energyhub"
EVENT_DAY = date(2025, 7, 15)
LAST_CLOSED = date(2025, 7, 14)
POSTING_DAY = date(2025, 7, 16)  # local day of NOW, after the last closed day: the lines' bill periods
NOW = datetime(2025, 7, 16, 18, tzinfo=timezone.utc)  # 11:00 in Los Angeles
EVENTS = {SPD: "EVT-BENCH-SETTLEMENT-SPD-2025-07-15", OHM: "EVT-BENCH-SETTLEMENT-OHM-2025-07-15"}
METHODS = {SPD: "csrl-3-of-5", OHM: "average-10-of-10"}
CANDIDATE_DAYS = {SPD: [date(2025, 7, d) for d in (8, 9, 10, 11, 14)],
                  OHM: [date(2025, 7, d) for d in (1, 2, 3, 7, 8, 9, 10, 11, 14)] + [date(2025, 6, 30)]}
# What each program pays, held here apart from the program files (checked against them at start).
RATE_CENTS_PER_KWH = {SPD: 125, OHM: 50}
CREDIT_TYPES = {SPD: "ENERGY", OHM: "REWARD"}
CAP_CENTS_PER_YEAR = {SPD: 6000, OHM: None}
NANO = 10**9
REDUCTION_NANO = (500_000_000, 3_000_000_000)  # 0.5 to 3 kWh: at most $3.75 a line, far below the $60 cap
HALF_CENT_EVERY = 50  # accounts whose credit falls on an exact half cent
HALF_CENT_NANO = {SPD: 1_012_000_000, OHM: 1_010_000_000}  # 1.012 × 1.25 = 1.265; 1.010 × 0.50 = 0.505
FIRST_ACCOUNT = 3_000_000
SEED = 20250715
CONSUMER = "settlement-performance-bench"
TOPIC = "gridflex.event.performance.v1-bench"
PARTITIONS = 4


def run() -> dict:
    records = int(os.environ.get("BENCH_SETTLEMENT_RECORDS", DEFAULT_RECORDS))
    return asyncio.run(benchmark(records))


async def benchmark(records: int) -> dict:
    settings = ServiceSettings()
    load_average = os.getloadavg()
    schema = f"bench_settlement_{uuid.uuid4().hex}"
    url = await create_schema(settings.database_url, schema)
    progress(f"settlement: {records:,} lines in batches of {settings.batch_size:,}, Postgres schema {schema}; "
             f"load average {load_average[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine skews the figures)")
    ledger = Ledger(url)
    try:
        await migrate(url)
        programs = ProgramCatalogue.load(REPO_ROOT / "programs")
        check_program_terms(programs)
        load = Load(records, settings.batch_size)
        fixture = await create_fixture(url, load)
        with service_garbage_collection():
            posting = await post_all(ledger, load, programs)
        replays = await replay_first_batch(ledger, load, programs)
        checks = await check_ledger(url, load)
        sizes = await table_sizes(url, ["ledger_lines", "ledger_entries", "settlement_results", "settlement_accounts"])
        raw = await raw_copy(url, load)
        raw_sizes = await table_sizes(url, ["raw_lines", "raw_entries"])
    finally:
        await ledger.close()
        await drop_schema(settings.database_url, schema)
        progress(f"settlement: dropped the schema {schema}")
    return report(load, load_average, fixture, posting, replays, checks, raw, sizes | raw_sizes)


@contextmanager
def service_garbage_collection():
    """The collector as every service runs it (``gridflex run`` calls
    :func:`gridflex.metrics.tune_garbage_collection` before the worker starts), then as it was:
    the benchmarks that run after this one in the same process measure with their own."""
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    tune_garbage_collection()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks


def check_program_terms(programs: ProgramCatalogue) -> None:
    """The benchmark's own figures must be the program files' (else its expectations are wrong)."""
    for program_id, cents in RATE_CENTS_PER_KWH.items():
        terms = programs[program_id].credits.energy
        cap = None if terms.cap_per_year is None else int(terms.cap_per_year * 100)
        if (int(terms.per_kwh * 100), terms.credit_type, cap) != (cents, CREDIT_TYPES[program_id],
                                                                   CAP_CENTS_PER_YEAR[program_id]):
            raise RuntimeError(f"{program_id}'s energy terms changed ({terms}): update bench/settlement.py")


# -- the load ----------------------------------------------------------------------------------------


class Load:
    """``records`` accounts, one performance each, in a seeded random order of delivery."""

    def __init__(self, records: int, batch_size: int):
        self.records = records
        self.batch_size = batch_size
        generator = random.Random(SEED)
        self.reduction_nano = array("q", (
            HALF_CENT_NANO[self.program(index)] if index % HALF_CENT_EVERY == 7 else generator.randint(*REDUCTION_NANO)
            for index in range(records)))
        order = list(range(records))
        generator.shuffle(order)
        self.order = array("q", order)
        self.batches = (records + batch_size - 1) // batch_size

    @staticmethod
    def program(index: int) -> str:
        return SPD if index % 2 == 0 else OHM

    @staticmethod
    def account_id(index: int) -> str:
        return f"SA-{FIRST_ACCOUNT + index}"

    @staticmethod
    def index_of(account_id: str) -> int:
        return int(account_id.removeprefix("SA-")) - FIRST_ACCOUNT

    @staticmethod
    def cycle_day(index: int) -> int:
        return 1 + index % 28

    def expected_cents(self, index: int) -> int:
        """reduction × rate, rounded half up to the cent, in integers."""
        return (2 * self.reduction_nano[index] * RATE_CENTS_PER_KWH[self.program(index)] + NANO) // (2 * NANO)

    @staticmethod
    def expected_period(index: int) -> tuple[date, date]:
        """The bill period holding the posting day (2025-07-16), for cycle days 1-28."""
        day = Load.cycle_day(index)
        if day <= POSTING_DAY.day:
            return date(2025, 7, day), date(2025, 8, day) - timedelta(days=1)
        return date(2025, 6, day), date(2025, 7, day) - timedelta(days=1)

    def account_rows(self, first: int, last: int):
        for index in range(first, last):
            number = FIRST_ACCOUNT + index
            enrollment = (f'[{{"program_id": "{self.program(index)}", "provider_id": "{PROVIDER}",'
                          f' "thermostat_serial": "T-{number}", "request_id": "REQ-{number}",'
                          f' "effective_from": "2025-05-01", "effective_to": null, "end_reason": null}}]')
            yield self.account_id(index), self.cycle_day(index), enrollment

    def performance(self, index: int) -> dict:
        program = self.program(index)
        reduction = Decimal(self.reduction_nano[index]).scaleb(-9)
        baseline = Decimal(self.reduction_nano[index] + 4_000_000_000 + index % 997 * 1_000_000).scaleb(-9)
        return {
            "event_id": EVENTS[program], "program_id": program, "service_account_id": self.account_id(index),
            "method": METHODS[program], "baseline_kwh": baseline, "actual_kwh": baseline - reduction,
            "reduction_kwh": reduction, "candidate_days": list(CANDIDATE_DAYS[program]), "status": "SETTLEABLE",
            "reason": None, "revision": 0,
        }

    def batch(self, number: int) -> list[InputRecord]:
        """The batch's records as the service's consumer hands them over (position k of the
        delivery order: partition k mod 4, offset k div 4)."""
        records = []
        for position in range(number * self.batch_size, min((number + 1) * self.batch_size, self.records)):
            index = self.order[position]
            value = self.performance(index)
            partition, offset = divmod(position, PARTITIONS)[::-1]
            records.append(InputRecord(TOPIC, partition, offset, 0,
                                       f"{value['event_id']}/{value['service_account_id']}".encode(), None, value))
        return records


async def create_fixture(url: str, load: Load) -> dict:
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        for first in range(0, load.records, FIXTURE_CHUNK):
            await connection.copy_records_to_table(
                "settlement_accounts", columns=["service_account_id", "bill_cycle_day", "enrollments"],
                records=load.account_rows(first, min(first + FIXTURE_CHUNK, load.records)))
        await connection.execute("INSERT INTO settlement_closes (last_closed_day) VALUES ($1)", LAST_CLOSED)
        await connection.execute("ANALYZE settlement_accounts")  # a table this size in service has its statistics
    finally:
        await connection.close()
    seconds = time.perf_counter() - started
    progress(f"settlement: fixture: {load.records:,} accounts COPYed in {seconds:.1f} s (not timed)")
    return {"accounts": load.records, "seconds": round(seconds, 2)}


# -- the measured path ---------------------------------------------------------------------------------

STATEMENTS = [  # (how the SQL starts, after spaces are collapsed; its name in the report)
    ("INSERT INTO settlement_positions", "positions: insert missing (unapplied)"),
    ("SELECT topic, partition, next_offset FROM settlement_positions", "positions: lock (unapplied)"),
    ("SELECT last_closed_day FROM settlement_closes", "closes: FOR SHARE"),
    ("SELECT service_account_id, bill_cycle_day", "accounts: load (FOR UPDATE those with capped lines)"),
    ("SELECT service_account_id, program_id, credit_type, cap_year", "cap usage (ledger_lines GROUP BY)"),
    ("SELECT cause_key FROM settlement_results", "priors: lock the causes' stored results (FOR UPDATE)"),
    ("SELECT r.cause_key", "priors (settlement_results ⟕ ledger_lines)"),
    ("SELECT nextval", "line ids (nextval, 2 per performance)"),
    ("COPY ledger_lines", "COPY ledger_lines"),
    ("COPY ledger_entries", "COPY ledger_entries (+ balance trigger)"),
    ("COPY settlement_results", "COPY settlement_results (first results)"),
    ("INSERT INTO settlement_results AS stored (cause_key, revision, service_account_id, program_id, credit_type,"
     " event_id, status, reason", "results upsert (revisions)"),
    ("INSERT INTO settlement_results AS stored", "waiting performances (settlement_results)"),
    ("UPDATE settlement_positions", "positions: store"),
]
OUTSIDE = "pool acquire, BEGIN, COMMIT"
PYTHON = "Python between statements (domain, records, encoding)"


def statement_name(sql: str) -> str:
    flat = " ".join(sql.split())
    for start, name in STATEMENTS:
        if flat.startswith(start):
            return name
    return flat[:60]


class TimedConnection:
    """The connection as settling sees it, with the time of each statement added up by name."""

    def __init__(self, connection: asyncpg.Connection, seconds: dict[str, float], counts: dict[str, int]):
        self._connection = connection
        self._seconds = seconds
        self._counts = counts

    def __getattr__(self, name: str):
        return getattr(self._connection, name)

    async def _timed(self, name: str, call, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            self._seconds[name] += time.perf_counter() - started
            self._counts[name] += 1

    async def execute(self, sql: str, *args, **kwargs):
        return await self._timed(statement_name(sql), self._connection.execute, sql, *args, **kwargs)

    async def executemany(self, sql: str, *args, **kwargs):
        return await self._timed(statement_name(sql), self._connection.executemany, sql, *args, **kwargs)

    async def fetch(self, sql: str, *args, **kwargs):
        return await self._timed(statement_name(sql), self._connection.fetch, sql, *args, **kwargs)

    async def fetchrow(self, sql: str, *args, **kwargs):
        return await self._timed(statement_name(sql), self._connection.fetchrow, sql, *args, **kwargs)

    async def fetchval(self, sql: str, *args, **kwargs):
        return await self._timed(statement_name(sql), self._connection.fetchval, sql, *args, **kwargs)

    async def copy_records_to_table(self, table: str, *args, **kwargs):
        return await self._timed(statement_name(f"COPY {table}"), self._connection.copy_records_to_table,
                                 table, *args, **kwargs)


@dataclass
class BatchOutcome:
    lines: int
    waiting: int
    inside_s: float  # the callback, from its first statement to its return


@dataclass
class Posting:
    lines: int = 0
    waiting: int = 0
    seconds: float = 0.0  # the Ledger.write calls, added up
    wall_seconds: float = 0.0  # the loop, batches made between them included
    latencies: list[float] = field(default_factory=list)
    statement_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    statement_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    timeline: list[dict] = field(default_factory=list)
    cpu_s: float = 0.0
    backend_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    machine_busy_share: float = 0.0
    wal: dict = field(default_factory=dict)


async def apply_batch(ledger: Ledger, connection, records: list[InputRecord], event_days: dict[str, date],
                      programs: ProgramCatalogue) -> BatchOutcome:
    """What services/settlement/app.py's ``settle_performance`` does in its transaction, less
    Kafka (no record of this load is refused: no dead letter to deliver)."""
    started = time.perf_counter()
    accepted = [record.value for record in await ledger.unapplied(connection, CONSUMER, records)]
    outcome = await settling.settle_performances(ledger, connection, accepted, event_days, programs, NOW)
    positions: dict[tuple[str, int], int] = {}
    for record in records:
        positions[record.topic, record.partition] = record.offset + 1
    await ledger.store_positions(connection, CONSUMER, positions)
    lines = sum(len(settled.lines) for settled in outcome.context.settled)
    return BatchOutcome(lines, outcome.waiting, time.perf_counter() - started)


async def post_all(ledger: Ledger, load: Load, programs: ProgramCatalogue) -> Posting:
    event_days = {event_id: EVENT_DAY for event_id in EVENTS.values()}
    pool = await ledger.pool()
    async with pool.acquire() as connection:
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        wal = await wal_counters(connection)
    postmaster = parent_pid(backend)
    posting = Posting()
    backend_cpu, postgres_cpu = process_cpu(backend), postgres_cpu_by_pid(postmaster)
    cpu, machine = cpu_seconds(os.getpid()), MachineCpu.read()
    progress(f"settlement: posting {load.records:,} lines ({load.batches:,} transactions)")
    wall_started = time.perf_counter()
    reported, reported_at, reported_seconds = 0, 0, 0.0
    for number in range(load.batches):
        records = load.batch(number)
        started = time.perf_counter()
        outcome = await ledger.write(lambda connection, records=records: apply_batch(
            ledger, TimedConnection(connection, posting.statement_seconds, posting.statement_counts), records,
            event_days, programs))
        elapsed = time.perf_counter() - started
        posting.seconds += elapsed
        posting.latencies.append(elapsed)
        posting.statement_seconds[OUTSIDE] += elapsed - outcome.inside_s
        posting.lines += outcome.lines
        posting.waiting += outcome.waiting
        if posting.lines - reported >= PROGRESS_EVERY or number == load.batches - 1:
            window = posting.lines - reported_at
            window_seconds = posting.seconds - reported_seconds
            posting.timeline.append({"lines": posting.lines, "seconds": round(posting.seconds, 3),
                                     "lines_per_s_since_last": round(window / window_seconds)})
            progress(f"settlement: {posting.lines:,} lines posted in {posting.seconds:.1f} s "
                     f"({posting.lines / posting.seconds:,.0f} lines/s; last {window:,}: "
                     f"{window / window_seconds:,.0f} lines/s, last batch {elapsed * 1000:.0f} ms)")
            reported = reported_at = posting.lines
            reported_seconds = posting.seconds
    posting.wall_seconds = time.perf_counter() - wall_started
    posting.cpu_s = cpu_seconds(os.getpid()) - cpu
    posting.machine_busy_share = MachineCpu.read().busy_share_since(machine)
    async with pool.acquire() as connection:
        same_backend = await connection.fetchval("SELECT pg_backend_pid()") == backend
        posting.wal = await wal_since(connection, wal)
    if backend_cpu is not None and same_backend:
        after = process_cpu(backend)
        posting.backend_cpu_s = None if after is None else after - backend_cpu
    if postgres_cpu:
        after = postgres_cpu_by_pid(postmaster)
        posting.postgres_cpu_s = sum(seconds - postgres_cpu.get(pid, 0.0) for pid, seconds in after.items())
    inside = sum(seconds for name, seconds in posting.statement_seconds.items() if name != OUTSIDE)
    posting.statement_seconds[PYTHON] = posting.seconds - inside - posting.statement_seconds[OUTSIDE]
    return posting


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None  # Postgres elsewhere (another machine, a container's own PID namespace)


def process_cpu(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


def postgres_cpu_by_pid(postmaster: int | None) -> dict[int, float]:
    """CPU seconds of the postmaster and every process it started (backends, WAL writer, checkpointer)."""
    if postmaster is None:
        return {}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == postmaster or parent_pid(pid) == postmaster:
            seconds = process_cpu(pid)
            if seconds is not None:
                found[pid] = seconds
    return found


async def replay_first_batch(ledger: Ledger, load: Load, programs: ProgramCatalogue) -> dict:
    """The first batch once more: as re-delivered records, then its performances straight to settling."""
    event_days = {event_id: EVENT_DAY for event_id in EVENTS.values()}
    records = load.batch(0)
    pool = await ledger.pool()
    before = await pool.fetchval("SELECT count(*) FROM ledger_lines")
    redelivered = await ledger.write(lambda connection: apply_batch(ledger, connection, records, event_days, programs))
    after_redelivery = await pool.fetchval("SELECT count(*) FROM ledger_lines")
    resettled = await ledger.write(lambda connection: settling.settle_performances(
        ledger, connection, [record.value for record in records], event_days, programs, NOW))
    after = await pool.fetchval("SELECT count(*) FROM ledger_lines")
    result = {
        "performances": len(records),
        "redelivered_lines_posted": redelivered.lines,
        "resettled_lines_posted": sum(len(settled.lines) for settled in resettled.context.settled),
        "line_count_change": after - before,
        "line_count_change_after_redelivery": after_redelivery - before,
    }
    progress(f"settlement: replays of the first batch ({len(records):,} performances): re-delivered records posted "
             f"{result['redelivered_lines_posted']}, the same performances settled again posted "
             f"{result['resettled_lines_posted']}; line count changed by {result['line_count_change']}")
    return result


# -- correctness ---------------------------------------------------------------------------------------


async def check_ledger(url: str, load: Load) -> dict:
    progress("settlement: checking the ledger")
    connection = await asyncpg.connect(url)
    try:
        figures = dict(await connection.fetchrow(
            "SELECT (SELECT count(*) FROM ledger_lines) AS lines,"
            " (SELECT count(*) FROM ledger_entries) AS entries,"
            " (SELECT count(*) FROM (SELECT line_id FROM ledger_entries GROUP BY line_id"
            "  HAVING sum(amount_cents) <> 0 OR count(*) <> 2) x) AS unbalanced_lines,"
            " (SELECT count(*) FROM ledger_lines l WHERE NOT EXISTS"
            "  (SELECT FROM ledger_entries e WHERE e.line_id = l.line_id)) AS lines_without_entries,"
            " (SELECT count(*) - count(DISTINCT idempotency_key) FROM ledger_lines) AS duplicate_idempotency_keys,"
            " (SELECT coalesce(sum(amount_cents), 0) FROM customer_credits) AS customer_credits_cents,"
            " (SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries) AS ledger_sum_cents,"
            " (SELECT count(*) FROM settlement_results) AS results,"
            " (SELECT count(*) FROM settlement_results WHERE line_id IS NULL OR status <> 'SETTLEABLE') AS results_without_line,"
            " (SELECT count(*) FROM settlement_results r LEFT JOIN ledger_lines l ON l.line_id = r.line_id"
            "  WHERE coalesce(r.detail, l.cause) IS NULL) AS results_without_inputs,"
            " (SELECT count(*) FROM settlement_results WHERE status = $1) AS waiting", settling.WAITING))
        positions = {row["partition"]: row["next_offset"] for row in await connection.fetch(
            "SELECT partition, next_offset FROM settlement_positions WHERE consumer = $1 AND topic = $2",
            CONSUMER, TOPIC)}
        wrong, examples, seen = 0, [], 0
        after = -1
        while True:
            rows = await connection.fetch(
                "SELECT line_id, service_account_id, program_id, provider_id, credit_type, event_id, amount_cents,"
                " bill_period_start, bill_period_end, cap_year, reverses_line_id, idempotency_key FROM ledger_lines"
                " WHERE line_id > $1 ORDER BY line_id LIMIT $2", after, CHECK_CHUNK)
            if not rows:
                break
            after = rows[-1]["line_id"]
            for row in rows:
                seen += 1
                index = load.index_of(row["service_account_id"])
                program = load.program(index)
                cause = f"energy/{EVENTS[program]}/{row['service_account_id']}"
                expected = (program, PROVIDER, CREDIT_TYPES[program], EVENTS[program], load.expected_cents(index),
                            *load.expected_period(index), 2025, None, f"{cause}#r0")
                observed = (row["program_id"], row["provider_id"], row["credit_type"], row["event_id"],
                            row["amount_cents"], row["bill_period_start"], row["bill_period_end"], row["cap_year"],
                            row["reverses_line_id"], row["idempotency_key"])
                if observed != expected:
                    wrong += 1
                    if len(examples) < 10:
                        examples.append({"line_id": row["line_id"], "expected": expected, "observed": observed})
    finally:
        await connection.close()
    expected_total = sum(load.expected_cents(index) for index in range(load.records))
    expected_positions = {partition: len(range(partition, load.records, PARTITIONS)) for partition in range(PARTITIONS)}
    figures |= {"expected_customer_credits_cents": expected_total, "lines_not_as_expected": wrong,
                "examples_not_as_expected": examples, "positions": positions,
                "expected_positions": {p: n for p, n in expected_positions.items() if n}}
    return figures


async def table_sizes(url: str, tables: list[str]) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        return {table: await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
                for table in tables}
    finally:
        await connection.close()


async def wal_counters(connection: asyncpg.Connection) -> dict:
    """The server's WAL position, full-page images and requested checkpoints so far (cluster-wide:
    other work on the same server counts too)."""
    row = await connection.fetchrow(
        "SELECT pg_current_wal_lsn()::text AS lsn, (SELECT wal_fpi FROM pg_stat_wal) AS fpi,"
        " (SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter) AS checkpoints")
    return dict(row)


async def wal_since(connection: asyncpg.Connection, before: dict) -> dict:
    after = await wal_counters(connection)
    return {"bytes": int(await connection.fetchval("SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)",
                                                       after["lsn"], before["lsn"])),
            "full_page_images": after["fpi"] - before["fpi"], "checkpoints": after["checkpoints"] - before["checkpoints"]}


# -- the raw COPY ------------------------------------------------------------------------------------


@dataclass
class RawCopy:
    lines: int = 0
    entries: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wal: dict = field(default_factory=dict)


async def raw_copy(url: str, load: Load) -> RawCopy:
    """The ledger's rows, batch by batch, read back (not timed) and COPYed into tables with no
    index, constraint or trigger (timed, one transaction per batch)."""
    connection = await asyncpg.connect(url)
    raw = RawCopy()
    entry_columns = ["entry_id", *ENTRY_COLUMNS]
    try:
        await connection.execute("CREATE TABLE raw_lines (LIKE ledger_lines); CREATE TABLE raw_entries (LIKE ledger_entries)")
        progress(f"settlement: raw COPY of the same rows into raw_lines and raw_entries, batches of {load.batch_size:,}")
        after, reported = -1, 0
        wal = await wal_counters(connection)  # the reads between the batches write no WAL
        while True:
            lines = await connection.fetch(
                f"SELECT {', '.join(LINE_COLUMNS)} FROM ledger_lines WHERE line_id > $1 ORDER BY line_id LIMIT $2",
                after, load.batch_size)
            if not lines:
                break
            first, after = lines[0]["line_id"], lines[-1]["line_id"]
            entries = await connection.fetch(
                f"SELECT {', '.join(entry_columns)} FROM ledger_entries WHERE line_id BETWEEN $1 AND $2 ORDER BY entry_id",
                first, after)
            line_rows, entry_rows = [tuple(row) for row in lines], [tuple(row) for row in entries]
            cpu = cpu_seconds(os.getpid())
            started = time.perf_counter()
            async with connection.transaction():
                await connection.copy_records_to_table("raw_lines", columns=LINE_COLUMNS, records=line_rows)
                await connection.copy_records_to_table("raw_entries", columns=entry_columns, records=entry_rows)
            elapsed = time.perf_counter() - started
            raw.cpu_s += cpu_seconds(os.getpid()) - cpu
            raw.seconds += elapsed
            raw.latencies.append(elapsed)
            raw.lines += len(line_rows)
            raw.entries += len(entry_rows)
            if raw.lines - reported >= PROGRESS_EVERY:
                progress(f"settlement: raw COPY: {raw.lines:,} lines in {raw.seconds:.1f} s "
                         f"({raw.lines / raw.seconds:,.0f} lines/s)")
                reported = raw.lines
        raw.wal = await wal_since(connection, wal)
        progress(f"settlement: raw COPY: {raw.lines:,} lines, {raw.entries:,} entries in {raw.seconds:.1f} s "
                 f"({raw.lines / raw.seconds:,.0f} lines/s)")
    finally:
        await connection.close()
    return raw


# -- the report ----------------------------------------------------------------------------------------


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def report(load: Load, load_average: tuple[float, float, float], fixture: dict, posting: Posting, replays: dict,
           checks: dict, raw: RawCopy, sizes: dict[str, int]) -> dict:
    ledger_rate = posting.lines / posting.seconds if posting.seconds else 0.0
    raw_rate = raw.lines / raw.seconds if raw.seconds else 0.0
    ratio = ledger_rate / raw_rate if raw_rate else 0.0
    correct = {
        "lines posted (the batches' outcomes)": posting.lines == load.records,
        "lines in ledger_lines": checks["lines"] == load.records,
        "entries: two per line": checks["entries"] == 2 * load.records and checks["lines_without_entries"] == 0,
        "every line's entries balance": checks["unbalanced_lines"] == 0 and checks["ledger_sum_cents"] == 0,
        "customer_credits sum as expected": checks["customer_credits_cents"] == checks["expected_customer_credits_cents"],
        "every line as expected": checks["lines_not_as_expected"] == 0,
        "no idempotency key twice": checks["duplicate_idempotency_keys"] == 0,
        "one result per cause, each with its line and inputs": (checks["results"] == load.records
                                                                and checks["results_without_line"] == 0
                                                                and checks["results_without_inputs"] == 0),
        "no performance waiting": posting.waiting == 0 and checks["waiting"] == 0,
        "positions at the end of each partition": checks["positions"] == checks["expected_positions"],
        "replay of a batch posts nothing": (replays["redelivered_lines_posted"] == 0
                                            and replays["resettled_lines_posted"] == 0
                                            and replays["line_count_change"] == 0),
        "raw COPY: the same rows": raw.lines == load.records and raw.entries == 2 * load.records,
    }
    targets = {
        f"ledger >= {TARGET_LINES_PER_S:,} lines/s": ledger_rate >= TARGET_LINES_PER_S,
        f"ledger >= {TARGET_RATIO} x raw COPY": ratio >= TARGET_RATIO,
    }
    where = {name: {"seconds": round(seconds, 3), "share": round(seconds / posting.seconds, 4),
                    "us_per_line": round(seconds / posting.lines * 1e6, 2) if posting.lines else None,
                    "calls": posting.statement_counts.get(name)}
             for name, seconds in sorted(posting.statement_seconds.items(), key=lambda item: -item[1])}
    result = {
        "benchmark": "settlement",
        "ok": all(correct.values()),
        "records": load.records,
        "batch_size": load.batch_size,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average},
        "fixture": fixture,
        "positions": "stored as the service does: Ledger.unapplied locks them, Ledger.store_positions advances them",
        "ledger": {
            "lines": posting.lines,
            "seconds": round(posting.seconds, 3),
            "wall_seconds_with_batches_made": round(posting.wall_seconds, 3),
            "lines_per_s": round(ledger_rate),
            "batch_latency_ms": {"p50": round(quantile(posting.latencies, 0.5) * 1000, 1),
                                 "p99": round(quantile(posting.latencies, 0.99) * 1000, 1),
                                 "max": round(max(posting.latencies, default=0) * 1000, 1)},
            "cpu_s_this_process": round(posting.cpu_s, 2),
            "cpu_s_postgres_backend": None if posting.backend_cpu_s is None else round(posting.backend_cpu_s, 2),
            "cpu_s_postgres_all": None if posting.postgres_cpu_s is None else round(posting.postgres_cpu_s, 2),
            "machine_cpu_busy_share": round(posting.machine_busy_share, 3),
            "peak_rss_mib": round(peak_rss_mib(os.getpid()), 1),
            "wal": posting.wal,
            "where_the_time_goes": where,
            "timeline": posting.timeline,
        },
        "raw_copy": {
            "lines": raw.lines,
            "entries": raw.entries,
            "seconds": round(raw.seconds, 3),
            "lines_per_s": round(raw_rate),
            "batch_latency_ms": {"p50": round(quantile(raw.latencies, 0.5) * 1000, 1),
                                 "p99": round(quantile(raw.latencies, 0.99) * 1000, 1)},
            "cpu_s_this_process": round(raw.cpu_s, 2),
            "wal": raw.wal,
        },
        "ratio_ledger_to_raw": round(ratio, 3),
        "table_bytes": sizes,
        "replays": replays,
        "checks": checks,
        "correct": correct,
        "targets": targets,
    }
    result["table"] = table_rows(result)
    return result


def table_rows(result: dict) -> list[list[str]]:
    ledger, raw, checks, replays = result["ledger"], result["raw_copy"], result["checks"], result["replays"]
    records, sizes = result["records"], result["table_bytes"]

    def status(met: bool) -> str:
        return "met" if met else "NOT MET"

    def ok(right: bool) -> str:
        return "ok" if right else "WRONG"

    def mib(*tables: str) -> str:
        return f"{sum(sizes[table] for table in tables) / 1024**2:,.0f} MiB"

    ratio = result["ratio_ledger_to_raw"]
    rows = [
        ["accounts / performances / batch size", f"{records:,} / {records:,} / {result['batch_size']:,}", "", ""],
        ["ledger: lines posted", f"{ledger['lines_per_s']:,} lines/s", f">= {TARGET_LINES_PER_S:,} lines/s",
         status(ledger["lines_per_s"] >= TARGET_LINES_PER_S)],
        ["raw COPY (no index, constraint, trigger)", f"{raw['lines_per_s']:,} lines/s", "", ""],
        ["ledger / raw COPY", f"{ratio:.2f} x", f">= {TARGET_RATIO} x", status(ratio >= TARGET_RATIO)],
        ["ledger: posting time (Ledger.write calls)", f"{ledger['seconds']:.1f} s", "", ""],
        ["raw COPY: time (its transactions)", f"{raw['seconds']:.1f} s", "", ""],
        ["ledger: batch latency p50 / p99 / max",
         f"{ledger['batch_latency_ms']['p50']:.0f} / {ledger['batch_latency_ms']['p99']:.0f} / "
         f"{ledger['batch_latency_ms']['max']:.0f} ms", "", ""],
        ["raw COPY: batch latency p50 / p99",
         f"{raw['batch_latency_ms']['p50']:.0f} / {raw['batch_latency_ms']['p99']:.0f} ms", "", ""],
        ["ledger: CPU of this process", f"{ledger['cpu_s_this_process']:.1f} s "
         f"({ledger['cpu_s_this_process'] / ledger['seconds']:.0%} of a core)" if ledger["seconds"] else "n/a", "", ""],
        ["ledger: CPU of the Postgres backend / all of Postgres",
         " / ".join("n/a" if value is None else f"{value:.1f} s"
                    for value in (ledger["cpu_s_postgres_backend"], ledger["cpu_s_postgres_all"])), "", ""],
        ["ledger: machine CPU busy", f"{ledger['machine_cpu_busy_share']:.0%} of {result['machine']['cpus']} CPUs",
         "", ""],
    ]
    for name, figures in list(ledger["where_the_time_goes"].items())[:8]:
        rows.append([f"  time in: {name}", f"{figures['us_per_line']:.1f} µs/line ({figures['share']:.0%})", "", ""])
    rows += [
        ["WAL per line: ledger / raw COPY", " / ".join(
            f"{phase['wal']['bytes'] / max(phase['lines'], 1):,.0f} B" for phase in (ledger, raw)), "", ""],
        ["WAL full-page images: ledger / raw COPY",
         " / ".join(f"{phase['wal']['full_page_images']:,}" for phase in (ledger, raw)), "", ""],
        ["checkpoints during: ledger / raw COPY", " / ".join(f"{phase['wal']['checkpoints']}" for phase in (ledger, raw)),
         "", ""],
        ["size: ledger_lines + ledger_entries", mib("ledger_lines", "ledger_entries"), "", ""],
        ["size: settlement_results", mib("settlement_results"), "", ""],
        ["size: raw_lines + raw_entries", mib("raw_lines", "raw_entries"), "", ""],
        ["lines / entries", f"{checks['lines']:,} / {checks['entries']:,}", f"= {records:,} / {2 * records:,}",
         ok(checks["lines"] == records and checks["entries"] == 2 * records)],
        ["unbalanced lines", f"{checks['unbalanced_lines']:,}", "0", ok(checks["unbalanced_lines"] == 0)],
        ["customer_credits sum", f"{checks['customer_credits_cents'] / 100:,.2f} $",
         f"= {checks['expected_customer_credits_cents'] / 100:,.2f} $",
         ok(checks["customer_credits_cents"] == checks["expected_customer_credits_cents"])],
        ["lines not as expected (amount, period, type)", f"{checks['lines_not_as_expected']:,}", "0",
         ok(checks["lines_not_as_expected"] == 0)],
        ["duplicate idempotency keys", f"{checks['duplicate_idempotency_keys']:,}", "0",
         ok(checks["duplicate_idempotency_keys"] == 0)],
        ["results / waiting", f"{checks['results']:,} / {checks['waiting']:,}", f"= {records:,} / 0",
         ok(checks["results"] == records and checks["waiting"] == 0 and checks["results_without_line"] == 0
            and checks["results_without_inputs"] == 0)],
        ["positions stored", ", ".join(f"p{p}: {n:,}" for p, n in sorted(checks["positions"].items())), "",
         ok(result["correct"]["positions at the end of each partition"])],
        ["replayed batch: lines posted (re-delivered / re-settled)",
         f"{replays['redelivered_lines_posted']} / {replays['resettled_lines_posted']}", "0 / 0",
         ok(result["correct"]["replay of a batch posts nothing"])],
    ]
    return rows
