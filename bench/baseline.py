"""Baseline computation: a million accounts' event performance, from the ENDED record to the last result.

The issue: "1,000,000 enrolled accounts with 20 days of hourly usage pre-loaded into the store;
time from an event's ENDED record to its last performance record. Target under 60 s on this
machine; report memory and disk. Also report the throughput of the method function alone
(accounts per second)."

How (all topics private to the run, named with a ``-bench-<hex>`` suffix, deleted at the end with
the workers' state directories):

1. the method alone, in this process, before anything else runs: ``performance.evaluate`` over
   50,000 accounts of the store held in memory (Save Power Days' CSRL; ohm-hours' 10-of-10 with
   its day-of adjustment on the same usage), then decoding the stored state and evaluating, then
   the method function itself (``highest_days_average``) on the candidate days' sums. Each
   result is held against the closed form of the account's load shape;
2. the store pre-loaded (:class:`AccountBook`, ``BENCH_BASELINE_RECORDS`` accounts, default
   1,000,000): each account's state record (facts, enrollments, 20 local days of hourly usage,
   2025-06-27 to the event day) produced straight to the usage store's changelog, at the
   partition of the account's key, as the service writes it. A sample of accounts is rebuilt
   interval by interval with ``AccountUsage.record_interval``: it must give the same state;
3. ``BENCH_BASELINE_WORKERS`` workers (default 2: the machine's cores) start on the simulated
   clock (2025-07-16 20:00 in Los Angeles) with both events SCHEDULED and STARTED on the
   lifecycle; each restores its partitions of the store from the changelog before ``/health``
   answers: the restore is timed from the workers' logs. ``/health`` can answer while a worker
   the broker dropped from the group (a restore or a batch longer than the 10 s session) still
   believes it owns partitions given to another: the event ends only once, by the workers' logs,
   every partition has one owner and none has moved for 15 s. The partition assignments and
   expired sessions of the start-up and of each sweep are reported;
4. the measured event: its ENDED record (Save Power Days, Wednesday 2025-07-16 14:00-18:00; the
   CSRL candidate days are July 15, 14, 11, 10 and 9). The performance topic's end offsets are
   polled until they hold a record for every account the event settles or finds ineligible.
   The figure held against the target: the Kafka timestamp of the last performance record less
   the ENDED's. ``/proc`` gives the workers' CPU and peak memory; the state directories and the
   changelog's partitions on the broker's disk give the disk used;
5. a second event on the same hours (the baseline service judges no program limits; the same
   hours give the same results to check) while py-spy samples worker 0 (:mod:`bench.profiling`):
   where the sweep's time goes, reported apart (``BENCH_BASELINE_PROFILE=0``: no profile);
6. correctness: every performance record read back against the closed form: 85 % of the
   accounts SETTLEABLE with their exact baseline, actual and reduction, 2 % INELIGIBLE for net
   metering inside the look-back, 1 % INELIGIBLE for an enrollment that ended on the event day,
   2 % waiting (one candidate-day interval missing, the data deadline still ahead: no record,
   counted by ``gridflex_baseline_accounts_awaiting_data``), 10 % enrolled in ohm-hours only
   (not concerned: no record); none twice, no dead letters, one event-usage record per result.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench import RESULTS_DIR
from bench.console import progress, rate
from bench.dispatch import edge_timestamps
from bench.ingest import check_alive
from bench.procstats import MachineCpu, cpu_seconds, peak_rss_mib, rss_mib
from bench.profiling import Sampler, py_spy_executable, service_areas, where_the_time_goes
from bench.topics import RecordCounter, isolated_run, publish_clock_tick, read_all
from gridflex import REPO_ROOT
from gridflex.batch import key_partition
from gridflex.calendar import LOCAL_ZONE, local_day_bounds
from gridflex.kafka_io import RecordProducer
from gridflex.processes import ServiceFailed, ServiceProcess, free_port, isolated_env
from gridflex.programs import ProgramCatalogue
from gridflex.settings import ServiceSettings
from gridflex.stack import layout
from gridflex.state import decode_value, encode_value
from gridflex.topics import DEAD_LETTERS, EVENT_LIFECYCLE, EVENT_PERFORMANCE, EVENT_USAGE, TopicSpec, create_topics
from services.baseline.domain import methods, performance
from services.baseline.domain.performance import DispatchedEvent
from services.baseline.domain.usage import AccountUsage

DEFAULT_RECORDS = 1_000_000
DEFAULT_WORKERS = 2
TARGET_SECONDS = 60.0  # ENDED to the last performance record
METHOD_ACCOUNTS = 50_000  # evaluated in memory for the method's own throughput
METHOD_REPEATS = 3  # the best of: other work on the machine only ever slows a pass down
FORMAT_SAMPLE = 40  # accounts rebuilt interval by interval to check the pre-loaded state's format
PRELOAD_PROGRESS_EVERY = 100_000
PRELOAD_BATCH_BYTES = 1024**2  # the broker's message.max.bytes is 1 MiB and a little
POLL_INTERVAL_S = 0.25
METRICS_TIMEOUT_S = 30.0
SERVICE_PROGRESS_EVERY_S = 5.0
STALL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 1800.0  # restoring a million accounts' usage takes minutes
GROUP_STABLE_S = 15.0  # no partition moved for longer than the consumer's session timeout (10 s)
GROUP_TIMEOUT_S = 600.0
PARTITIONS = 4
PROFILE_SECONDS = 180  # at most: the sampler stops when the profiled event's results are out
SERVICE_LOGS = REPO_ROOT / "var" / "log"
PROFILE_STACKS = RESULTS_DIR / "baseline-py-spy-raw.txt"
PROFILE_AREAS = service_areas("baseline", [
    ("evaluate: candidate days, windows, method (services/baseline/domain)", ("services/baseline/domain/",)),
    ("state: account records as JSON in RocksDB (gridflex/state.py, rocksdict, orjson)", ("gridflex/state.py",)),
])

# -- the accounts ---------------------------------------------------------------------------------

PROGRAM_ID = "sce-save-power-days"
PROVIDER = "energyhub"
OTHER_PROGRAM_ID = "ohm-hours"  # where the accounts the event does not concern are enrolled
OTHER_PROVIDER = "ohmconnect"
ENROLLED_SINCE = "2024-05-01"
EVENT_DAY = date(2025, 7, 16)  # a Wednesday
USAGE_DAYS = tuple(EVENT_DAY - timedelta(days=back) for back in range(19, -1, -1))  # 2025-06-27 .. the event day
EVENT_HOURS = (14, 18)  # local; no DST change in these weeks, so slot i of a day is the hour i
CANDIDATE_DAYS = (date(2025, 7, 15), date(2025, 7, 14), date(2025, 7, 11), date(2025, 7, 10), date(2025, 7, 9))
HIGHEST_DAYS = 3
GAP = (date(2025, 7, 10), 15)  # the interval a waiting account misses: a candidate day's event hour
NET_METERING_SINCE = "2025-07-12"  # inside the look-back, July 9 to the event day
CLOCK_NOW = datetime(2025, 7, 17, 3, tzinfo=timezone.utc)  # 20:00 on the event day in Los Angeles
ISSUED_AT = datetime(2025, 7, 15, 16, tzinfo=timezone.utc)
SEED = 20250716
FIRST_ACCOUNT = 7_000_000
SHAPES = 1009  # distinct load shapes; prime, so every kind of account meets every shape
KWH = Decimal("0.000000001")

SETTLEABLE = "settleable"
NET_METERING = "net metering inside the look-back"
ENDED_ON_EVENT_DAY = "enrollment ended on the event day"
AWAITING = "a candidate-day interval missing"
NOT_CONCERNED = "enrolled in ohm-hours only"
KINDS = {SETTLEABLE: 85, NET_METERING: 2, ENDED_ON_EVENT_DAY: 1, AWAITING: 2, NOT_CONCERNED: 10}  # per 100 accounts
KIND_CYCLE = [kind for kind, count in KINDS.items() for _ in range(count)]
EXPECTED_STATUS = {SETTLEABLE: "SETTLEABLE", NET_METERING: "INELIGIBLE", ENDED_ON_EVENT_DAY: "INELIGIBLE"}
EXPECTED_REASON = {NET_METERING: "NET_METERING_ACTIVATED", ENDED_ON_EVENT_DAY: "NOT_ENROLLED_AT_START"}


@dataclass(frozen=True)
class EventPlan:
    """One event the benchmark ends."""

    event_id: str
    profiled: bool
    start: datetime = datetime(2025, 7, 16, 14, tzinfo=LOCAL_ZONE)
    end: datetime = datetime(2025, 7, 16, 18, tzinfo=LOCAL_ZONE)

    def dispatched(self, program_id: str = PROGRAM_ID) -> DispatchedEvent:
        return DispatchedEvent(self.event_id, program_id, self.start, self.end, frozenset(), ended=True)

    def lifecycle(self, status: str, year_used_ms: int) -> dict:
        counted_ms = int((self.end - self.start).total_seconds() * 1000)
        return {
            "event_id": self.event_id, "program_id": PROGRAM_ID, "status": status, "revision": 1,
            "request_action": "SCHEDULE" if status == "SCHEDULED" else None, "reason": "GRID_STRESS",
            "start": self.start, "end": self.end, "setpoint_offset_f": 4, "precool": True, "targets": [],
            "issued_at": ISSUED_AT,
            "decided_at": {"SCHEDULED": ISSUED_AT, "STARTED": self.start, "ENDED": self.end}[status],
            "failures": [], "counted_ms": counted_ms, "program_year": 2025, "year_used_ms": year_used_ms,
            "year_limit_ms": None, "source_offset": 0 if status == "SCHEDULED" else None,
        }


EVENTS = [EventPlan("EVT-BENCH-BASELINE-2025-07-16", profiled=False),
          EventPlan("EVT-BENCH-BASELINE-2025-07-16-PROFILED", profiled=True)]


@dataclass(frozen=True)
class LoadShape:
    """One household's hourly usage over the 20 days, in Wh (integer kWh / 1000)."""

    wh: dict[date, list[int]]

    @classmethod
    def make(cls, number: int) -> "LoadShape":
        generator = random.Random(SEED * 7919 + number)
        step = (1, 10, 100)[number % 3]  # meters reporting to the Wh, the 10 Wh, the 100 Wh: days of scale 3, 2, 1
        overnight = generator.randint(250, 700)
        cooling = generator.randint(300, 2500)  # the air conditioner at its afternoon peak
        response = generator.uniform(0.3, 1.15)  # event hours against a usual day: above 1, no reduction
        wh = {}
        for day in USAGE_DAYS:
            heat = generator.uniform(0.6, 1.4)
            hours = []
            for hour in range(24):
                afternoon = max(0.0, math.sin(math.pi * (hour - 9) / 13))  # 9:00 to 22:00, highest about 15:30
                value = overnight + cooling * heat * afternoon + generator.randint(-60, 60)
                if day == EVENT_DAY and EVENT_HOURS[0] <= hour < EVENT_HOURS[1]:
                    value *= response
                hours.append(max(0, round(value / step)) * step)
            wh[day] = hours
        return cls(wh)

    def meter_days(self, gap: bool) -> dict[str, list]:
        """The meter's days as ``AccountUsage`` keeps them: [seconds, scale, values, revisions]."""
        days = {}
        for day, hours in self.wh.items():
            scale = max(_decimals(value) for value in hours)
            values = [value // 10 ** (3 - scale) for value in hours]
            if gap and day == GAP[0]:
                values[GAP[1]] = None
            days[day.isoformat()] = [3600, scale, values, {}]
        return days

    def expected(self) -> tuple[Decimal, Decimal, Decimal]:
        """Baseline, actual and reduction by the program's rules, worked out apart from the domain
        code: the average of the three highest candidate-day sums over the event hours."""
        sums = sorted((self.window_wh(day) for day in CANDIDATE_DAYS), reverse=True)
        baseline = _round(Fraction(sum(sums[:HIGHEST_DAYS]), HIGHEST_DAYS * 1000))
        actual = _round(Fraction(self.window_wh(EVENT_DAY), 1000))
        return baseline, actual, max(baseline - actual, Decimal(0).quantize(KWH))

    def window_wh(self, day: date) -> int:
        return sum(self.wh[day][EVENT_HOURS[0]:EVENT_HOURS[1]])


def _decimals(wh: int) -> int:
    """Decimal places of wh / 1000 kWh, as Decimal.normalize() counts them."""
    for places, unit in ((0, 1000), (1, 100), (2, 10)):
        if wh % unit == 0:
            return places
    return 3


def _round(kwh: Fraction) -> Decimal:
    """To nine places, half up (EventPerformance's scale)."""
    return Decimal(math.floor(kwh * 10**9 + Fraction(1, 2))).scaleb(-9)


class AccountBook:
    """``accounts`` accounts in the baseline store, made as they are produced: the kind of account
    by its number (:data:`KINDS`, per 100), its load shape by its number modulo :data:`SHAPES`."""

    def __init__(self, accounts: int):
        self.accounts = accounts
        self.shapes = [LoadShape.make(number) for number in range(SHAPES)]
        self._meters = [[orjson.dumps(shape.meter_days(gap)) for gap in (False, True)] for shape in self.shapes]
        self.expected_results = [shape.expected() for shape in self.shapes]
        full, rest = divmod(accounts, len(KIND_CYCLE))
        self.by_kind = Counter({kind: full * count for kind, count in KINDS.items()}) + Counter(KIND_CYCLE[:rest])
        self.by_partition: Counter[int] = Counter()  # filled as the records are made
        self.state_bytes_total = 0

    @property
    def results(self) -> int:
        """Performance records one event must produce."""
        return sum(self.by_kind[kind] for kind in EXPECTED_STATUS)

    def account_id(self, index: int) -> str:
        return f"SA-{FIRST_ACCOUNT + index}"

    def index_of(self, account_id: str) -> int | None:
        try:
            index = int(account_id.removeprefix("SA-")) - FIRST_ACCOUNT
        except ValueError:
            return None
        return index if 0 <= index < self.accounts else None

    @staticmethod
    def kind(index: int) -> str:
        return KIND_CYCLE[index % len(KIND_CYCLE)]

    def usage(self, index: int) -> AccountUsage:
        """The account's state as the service keeps it (the slow way: for checks)."""
        return AccountUsage.from_state(decode_value(self.state(index)))

    def state(self, index: int) -> bytes:
        """``encode_value(AccountUsage(...).to_state())``, put together from pre-encoded parts."""
        kind, number = self.kind(index), FIRST_ACCOUNT + index
        net_metering = f'"{NET_METERING_SINCE}"' if kind == NET_METERING else "null"
        program, provider = (OTHER_PROGRAM_ID, OTHER_PROVIDER) if kind == NOT_CONCERNED else (PROGRAM_ID, PROVIDER)
        until = f'"{EVENT_DAY.isoformat()}"' if kind == ENDED_ON_EVENT_DAY else "null"
        head = (f'{{"facts":{{"service_start":"2020-01-01","service_end":null,"net_metering_since":{net_metering}}},'
                f'"programs":{{"{program}":[["{provider}","T-{number}","{ENROLLED_SINCE}",{until}]]}},'
                f'"meters":{{"M-{number}":')
        return head.encode() + self._meters[index % SHAPES][kind == AWAITING] + b"}}"

    def changelog_records(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(partition, key, value) of every account's state record."""
        # The service's input topics partition by account id; its store key is "acct/<id>".
        partition_of = key_partition.__wrapped__  # a million distinct keys: not through its cache
        for index in range(self.accounts):
            account_id = self.account_id(index)
            partition = partition_of(account_id.encode(), 4)
            value = self.state(index)
            self.by_partition[partition] += 1
            self.state_bytes_total += len(value)
            yield partition, f"acct/{account_id}".encode(), value

    def expected_result(self, index: int) -> tuple[Decimal, Decimal, Decimal]:
        return self.expected_results[index % SHAPES]


def record_interval_state(book: AccountBook, index: int) -> dict:
    """The account's state built as the service builds it: every interval through ``record_interval``."""
    usage = AccountUsage.from_state(decode_value(book.state(index)))
    account_id, shape, kind = book.account_id(index), book.shapes[index % SHAPES], book.kind(index)
    rebuilt = AccountUsage(usage.facts, usage.programs)
    for day, hours in shape.wh.items():
        day_start = local_day_bounds(day)[0]
        for hour, wh in enumerate(hours):
            if kind == AWAITING and (day, hour) == GAP:
                continue
            rebuilt.record_interval({
                "service_account_id": account_id, "meter_id": f"M-{FIRST_ACCOUNT + index}",
                "interval_start": day_start + timedelta(hours=hour), "interval_seconds": 3600, "local_date": day,
                "kwh": Decimal(wh).scaleb(-3).quantize(KWH), "quality": "ACTUAL", "revision": 0,
                "supersedes_revision": None, "read_at": CLOCK_NOW,
            })
    return rebuilt.to_state()


def check_state_format(book: AccountBook) -> dict:
    """Pre-loaded states of a sample (every kind, every meter resolution) against the same usage
    fed interval by interval to ``AccountUsage.record_interval``."""
    # The first accounts of each kind, one cycle of kinds after another: shapes 0, 1 and 2 are
    # the three meter resolutions.
    offsets = {0, 1, 2} | {KIND_CYCLE.index(kind) for kind in KINDS}
    sample = [index for index in range(book.accounts) if index % len(KIND_CYCLE) in offsets][:FORMAT_SAMPLE]
    different = [book.account_id(index) for index in sample
                 if decode_value(book.state(index)) != orjson.loads(encode_value(record_interval_state(book, index)))]
    kinds = Counter(book.kind(index) for index in sample)
    return {"accounts": len(sample), "kinds": dict(kinds), "different": different[:10], "ok": not different}


# -- the method alone ------------------------------------------------------------------------------


def measure_method(book: AccountBook) -> dict:
    """Accounts per second of ``performance.evaluate`` on usage already in memory, of decoding the
    state and evaluating, and of the method function on the candidate days' sums (each the best of
    :data:`METHOD_REPEATS`); every result checked against the closed form."""
    catalogue = ProgramCatalogue.load(REPO_ROOT / "programs")
    rules, other_rules = catalogue[PROGRAM_ID].baseline, catalogue[OTHER_PROGRAM_ID].baseline
    count = min(METHOD_ACCOUNTS, book.accounts)
    progress(f"baseline: the method alone, {count:,} accounts in memory (this process), best of {METHOD_REPEATS}")
    states = [book.state(index) for index in range(count)]
    event, other_event = EVENTS[0].dispatched(), EVENTS[0].dispatched(OTHER_PROGRAM_ID)

    def fresh() -> list[AccountUsage]:
        """The accounts' usage, new objects (the service builds one per evaluation: no meter spans
        cached), kept out of the garbage collector's sight: a worker holds one account at a time,
        and scanning millions of objects held only for this measure would be timed with it."""
        gc.disable()
        try:
            usages = [AccountUsage.from_state(decode_value(state)) for state in states]
        finally:
            gc.enable()
        gc.freeze()
        return usages

    def in_ohm_hours() -> list[AccountUsage]:
        """The same usage enrolled in ohm-hours: ten candidate days (July 4 skipped), the day-of adjustment."""
        return [AccountUsage(usage.facts, {OTHER_PROGRAM_ID: [[OTHER_PROVIDER, "T", ENROLLED_SINCE, None]]},
                             usage.meters) for usage in fresh()]

    def timed(label: str, function, make_items) -> tuple[float, list]:
        best, answers, items = math.inf, [], []
        for _ in range(METHOD_REPEATS):
            items = make_items()
            started = time.perf_counter()
            answers = [function(item) for item in items]
            best = min(best, time.perf_counter() - started)
            del items[:]  # 15 kB an account: one set of them in memory at a time
        progress(f"  {label}: {len(answers):,} accounts in {best:.2f} s ({len(answers) / best:,.0f} accounts/s)")
        return best, answers

    for usage in fresh()[:1000]:  # warm the calendar caches, as a running worker has them
        performance.evaluate(event, rules, usage, [event], CLOCK_NOW)
    evaluate_s, results = timed("performance.evaluate (CSRL 3 of 5)",
                                lambda usage: performance.evaluate(event, rules, usage, [event], CLOCK_NOW), fresh)
    decode_s, _ = timed("decode the state + AccountUsage.from_state + evaluate", lambda state: performance.evaluate(
        event, rules, AccountUsage.from_state(decode_value(state)), [event], CLOCK_NOW), lambda: list(states))
    other_s, other_results = timed("performance.evaluate (10 of 10, day-of adjustment)", lambda usage: (
        performance.evaluate(other_event, other_rules, usage, [other_event], CLOCK_NOW)), in_ohm_hours)
    day_sums = [[usage.window(*event.clock_window(day)).kwh for day in CANDIDATE_DAYS]
                for usage, result in zip(fresh(), results) if result is not None and result.status == "SETTLEABLE"]
    method = methods.method(rules)
    method_s, _ = timed("the method function (highest_days_average) on candidate-day sums",
                        lambda sums: method(sums, rules), lambda: list(day_sums))
    gc.unfreeze()
    wrong = check_method_results(book, results)
    other_statuses = Counter(result.status if result is not None else None for result in other_results)
    return {
        "accounts": count,
        "repeats": METHOD_REPEATS,
        "evaluate_accounts_per_s": round(count / evaluate_s),
        "evaluate_us_per_account": round(evaluate_s / count * 1e6, 1),
        "decode_and_evaluate_accounts_per_s": round(count / decode_s),
        "ohm_hours_evaluate_accounts_per_s": round(count / other_s),
        "ohm_hours_statuses": {str(status): n for status, n in other_statuses.items()},
        "method_function_accounts_per_s": round(len(day_sums) / method_s) if method_s else None,
        "method_function_accounts": len(day_sums),
        "statuses": dict(Counter(str(result.status) if result is not None else "not concerned" for result in results)),
        "wrong": wrong,
    }


def check_method_results(book: AccountBook, results: list) -> list[str]:
    """``performance.evaluate``'s answers against the closed form (examples of any difference)."""
    wrong = []
    for index, result in enumerate(results):
        kind = book.kind(index)
        if kind == NOT_CONCERNED:
            fine = result is None
        elif kind == AWAITING:
            fine = result is not None and result.status is None
        elif kind == SETTLEABLE:
            fine = (result is not None and result.status == "SETTLEABLE"
                    and (result.baseline_kwh, result.actual_kwh, result.reduction_kwh) == book.expected_result(index))
        else:
            fine = (result is not None and result.status == EXPECTED_STATUS[kind]
                    and result.reason.startswith(EXPECTED_REASON[kind]))
        if not fine and len(wrong) < 10:
            wrong.append(f"{book.account_id(index)} ({kind}): {result!r}")
    return wrong


# -- the store --------------------------------------------------------------------------------------


def changelog_name(settings: ServiceSettings) -> str:
    """The usage store's changelog: ``{group_id}-{state_name}-changelog`` (gridflex.batch), the
    group of a pipeline over several topics being ``{app id}-{state_name}`` (gridflex.streaming)."""
    return f"gridflex-baseline{settings.topic_suffix}-usage-usage-changelog"


async def preload_store(settings: ServiceSettings, book: AccountBook, changelog: TopicSpec) -> dict:
    """Every account's state record on the changelog, before anything is timed: per partition,
    in producer batches of up to 1 MiB (no compression: no codec library is installed)."""
    progress(f"baseline: pre-loading {book.accounts:,} account states into {changelog.name}")
    await create_topics(settings.kafka_bootstrap, [changelog])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20,
                                max_batch_size=PRELOAD_BATCH_BYTES, max_request_size=4 * PRELOAD_BATCH_BYTES)
    await producer.start()
    started = time.perf_counter()
    try:
        builders = {partition: producer.create_batch() for partition in range(changelog.partitions)}
        deliveries = []
        for sent, (partition, key, value) in enumerate(book.changelog_records(), 1):
            if builders[partition].append(key=key, value=value, timestamp=None) is None:
                deliveries.append(await send(producer, builders[partition], changelog.name, partition))
                builders[partition] = producer.create_batch()
                builders[partition].append(key=key, value=value, timestamp=None)
            if sent % PRELOAD_PROGRESS_EVERY == 0:
                seconds = time.perf_counter() - started
                progress(f"  loaded {sent:,} / {book.accounts:,} ({rate(sent, seconds)}, "
                         f"{book.state_bytes_total / seconds / 1024**2:.0f} MiB/s)")
        for partition, builder in builders.items():
            if builder.record_count():
                deliveries.append(await send(producer, builder, changelog.name, partition))
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        on_topic = {tp.partition: end for tp, end in (await counter.end_offsets(changelog)).items()}
    if on_topic != {partition: book.by_partition.get(partition, 0) for partition in range(changelog.partitions)}:
        raise RuntimeError(f"pre-load: {on_topic} records on the changelog's partitions, made {dict(book.by_partition)}")
    progress(f"baseline: pre-loaded {book.accounts:,} states ({book.state_bytes_total / 1024**2:,.0f} MiB, "
             f"{book.state_bytes_total / book.accounts:,.0f} bytes each) in {seconds:.1f} s "
             f"({rate(book.accounts, seconds)}); by partition {dict(sorted(on_topic.items()))}")
    return {"records": book.accounts, "bytes": book.state_bytes_total,
            "bytes_per_record": round(book.state_bytes_total / book.accounts), "seconds": round(seconds, 2),
            "records_per_s": round(book.accounts / seconds), "by_partition": on_topic}


async def send(producer: AIOKafkaProducer, builder, topic: str, partition: int) -> asyncio.Future:
    builder.close()
    return await producer.send_batch(builder, topic, partition=partition)


async def publish_lifecycle(settings: ServiceSettings, steps: list[tuple[EventPlan, str]]) -> int:
    """Lifecycle records, in order; the Kafka timestamp (ms) of the last."""
    async with RecordProducer(settings) as producer:
        for event, status in steps:
            delivery = await producer.send(EVENT_LIFECYCLE, event.event_id,
                                           event.lifecycle(status, year_used_ms=(EVENTS.index(event) + 1) * 4 * 3600_000))
        return (await delivery).timestamp


# -- the workers --------------------------------------------------------------------------------------


@dataclass
class Worker:
    """One baseline worker and what was observed of it; times in seconds since its spawn."""

    service: ServiceProcess
    instance: str
    spawned: float = 0.0  # time.monotonic()
    ready_after: float | None = None
    rss_at_ready_mib: float = 0.0  # peak so far, once restored
    cpu_at_ready: float = 0.0
    cpu_total: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def pid(self) -> int:
        return self.service.process.pid

    def log_events(self) -> list[dict]:
        events = []
        if self.service.log_path.exists():
            for line in self.service.log_path.read_bytes().splitlines():
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    events.append(entry)
        return events

    def ownership(self) -> frozenset[int]:
        """The store partitions the worker believes it owns, by its log (eager rebalancing: each
        assignment follows the revocation of everything it had)."""
        owned: set[int] = set()
        for entry in self.log_events():
            if entry.get("logger") == "gridflex.batch" and entry.get("event") == "partitions assigned":
                owned |= set(entry["partitions"])
            elif entry.get("logger") == "gridflex.batch" and entry.get("event") == "partitions revoked":
                owned -= set(entry["partitions"])
        return frozenset(owned)

    def group_events(self) -> Counter[str]:
        """How often the usage pipeline's partitions were assigned, and how often the broker had
        dropped the worker from its group (its session expired: no heartbeat for 10 s)."""
        counts: Counter[str] = Counter()
        for entry in self.log_events():
            event = entry.get("event", "")
            if entry.get("logger") == "gridflex.batch" and event == "partitions assigned":
                counts["assignments"] += 1
            elif event.startswith("Heartbeat failed: local member_id was not recognized"):
                counts["session_expiries"] += 1
        return counts

    def restore_figures(self) -> dict:
        """From its log: how many times it restored partitions from the changelog (once, unless the
        group moved partitions to it again), the records replayed and the seconds it took in all."""
        begun, seconds, replayed, restores = None, 0.0, 0, 0
        for entry in self.log_events():
            if entry.get("event") == "restoring state from changelog":
                begun = datetime.fromisoformat(entry["timestamp"])
            elif entry.get("event") == "state restored" and begun is not None:
                seconds += (datetime.fromisoformat(entry["timestamp"]) - begun).total_seconds()
                replayed += entry.get("records_replayed", 0)
                restores, begun = restores + 1, None
        return {"restores": restores, "seconds": round(seconds, 2), "records_replayed": replayed,
                "records_per_s": round(replayed / seconds) if seconds else None}


def start_worker(worker: Worker) -> None:
    worker.spawned = time.monotonic()
    worker.service.start(ready_timeout=READY_TIMEOUT_S)
    worker.ready_after = time.monotonic() - worker.spawned
    worker.rss_at_ready_mib = peak_rss_mib(worker.pid)
    worker.cpu_at_ready = cpu_seconds(worker.pid)


async def start_workers(settings: ServiceSettings, count: int) -> list[Worker]:
    """Start ``count`` workers at once and wait until every one answers ``/health`` (its
    partitions assigned and restored), saying how far the restore is meanwhile."""
    workers = []
    for number in range(count):
        instance = f"baseline-{number}"
        log_path = SERVICE_LOGS / f"bench-{instance}.log"
        log_path.unlink(missing_ok=True)
        env = isolated_env(settings.topic_suffix, GRIDFLEX_INSTANCE_ID=instance)
        workers.append(Worker(ServiceProcess("baseline", env, web_port=free_port(), log_path=log_path), instance))
    progress(f"baseline: starting {count} worker(s) (logs: {', '.join(str(w.service.log_path) for w in workers)})")
    starting = [asyncio.create_task(asyncio.to_thread(start_worker, worker)) for worker in workers]
    last_report = time.monotonic()
    while not all(task.done() for task in starting):
        await asyncio.wait(starting, timeout=1.0)
        if time.monotonic() - last_report >= SERVICE_PROGRESS_EVERY_S:
            last_report = time.monotonic()
            progress("  restoring: " + ", ".join(f"{worker.instance} {restoring_status(worker)}" for worker in workers))
    try:
        for task in starting:
            task.result()
    except ServiceFailed:
        for worker in workers:
            await asyncio.to_thread(worker.service.stop)
        raise
    for worker in workers:
        restored = worker.restore_figures()
        progress(f"  {worker.instance} ready (/health) {worker.ready_after:.1f} s after its spawn; restored "
                 f"{restored['records_replayed']:,} records in {restored['seconds']:.1f} s; CPU {worker.cpu_at_ready:.1f} s, "
                 f"peak RSS {worker.rss_at_ready_mib:.0f} MiB")
    return workers


async def wait_for_stable_group(workers: list[Worker]) -> float | None:
    """Seconds since the spawn until every store partition has exactly one owner and none has moved
    for :data:`GROUP_STABLE_S` (``/health`` answers 200 while a worker dropped from the group still
    believes it owns partitions another worker was given); None if that never happened."""
    spawned = min(worker.spawned for worker in workers)
    last_layout, since, last_report = None, time.monotonic(), 0.0
    while time.monotonic() - spawned < GROUP_TIMEOUT_S:
        for worker in workers:
            check_alive(worker.service)
        layout_now = tuple(worker.ownership() for worker in workers)
        if layout_now != last_layout:
            last_layout, since = layout_now, time.monotonic()
        owners = Counter(partition for owned in layout_now for partition in owned)
        single = sorted(owners) == list(range(PARTITIONS)) and set(owners.values()) == {1}
        if single and time.monotonic() - since >= GROUP_STABLE_S:
            return since - spawned
        if time.monotonic() - last_report >= SERVICE_PROGRESS_EVERY_S:
            last_report = time.monotonic()
            progress("  waiting for a stable group: " + ", ".join(
                f"{worker.instance} owns {sorted(owned)}" for worker, owned in zip(workers, layout_now)))
        await asyncio.sleep(1.0)
    return None


def restoring_status(worker: Worker) -> str:
    replayed = [entry for entry in worker.log_events() if entry.get("event") in ("restoring state", "state restored")]
    if not replayed:
        return "not restoring yet"
    return f"{replayed[-1]['records_replayed']:,} records replayed"


@dataclass
class WorkerMetrics:
    awaiting: dict[str, float] = field(default_factory=dict)  # by event, all workers
    evaluated: dict[str, float] = field(default_factory=dict)  # by event, all workers
    sweeps_in_progress: float = 0.0
    complete: bool = True  # every worker answered


async def scrape(workers: list[Worker]) -> WorkerMetrics:
    metrics = WorkerMetrics()
    for worker in workers:
        try:
            text = await asyncio.to_thread(worker.service.metrics)
        except OSError:  # a batch can hold the worker's event loop, and its web page, for seconds
            metrics.complete = False
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "gridflex_baseline_accounts_awaiting_data":
                    event_id = sample.labels["event_id"]
                    metrics.awaiting[event_id] = metrics.awaiting.get(event_id, 0) + sample.value
                elif sample.name == "gridflex_baseline_accounts_evaluated_total":
                    event_id = sample.labels["event_id"]
                    metrics.evaluated[event_id] = metrics.evaluated.get(event_id, 0) + sample.value
                elif sample.name == "gridflex_baseline_sweeps_in_progress":
                    metrics.sweeps_in_progress += sample.value
    return metrics


# -- one event: its ENDED, its performance records ------------------------------------------------------


@dataclass
class Sweep:
    """One event's end and its results. Kafka timestamps in ms; ``*_after`` in seconds after the ENDED's."""

    event: EventPlan
    expected: int  # performance records
    ended_ms: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    on_topic_after: float | None = None  # when the polled end offsets first held every record
    results_out: int = 0
    timeline: list[tuple] = field(default_factory=list)  # (seconds after the ENDED, records, each worker's RSS MiB)
    cpu_s: dict[str, float] = field(default_factory=dict)  # by worker, from the ENDED to the last record
    machine_busy_share: float = 0.0
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    awaiting: float | None = None  # the gauge, all workers, once the sweep is done
    evaluated: float | None = None
    group_events: dict[str, int] = field(default_factory=dict)  # assignments and session expiries during the sweep
    profile: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.on_topic_after is not None and self.last_ms is not None

    @property
    def first_after(self) -> float | None:
        return (self.first_ms - self.ended_ms) / 1000 if self.first_ms is not None else None

    @property
    def last_after(self) -> float | None:
        return (self.last_ms - self.ended_ms) / 1000 if self.last_ms is not None else None


async def end_event(settings: ServiceSettings, workers: list[Worker], counter: RecordCounter, results: TopicSpec,
                    sweep: Sweep, book: AccountBook, py_spy: str | None) -> None:
    """Publish the ENDED; poll the performance topic until it holds every record the event must produce."""
    event = sweep.event
    before = await counter.end_offsets(results)
    base = sum(before.values())
    sampler = None
    if event.profiled and py_spy:
        sampler = Sampler(py_spy, workers[0].pid, PROFILE_SECONDS, PROFILE_STACKS, PROFILE_AREAS)
        await sampler.start()
    cpu_before = {worker.instance: cpu_seconds(worker.pid) for worker in workers}
    group_before = sum((worker.group_events() for worker in workers), Counter())
    machine_before = MachineCpu.read()
    sweep.ended_ms = await publish_lifecycle(settings, [(event, "ENDED")])
    progress(f"baseline: ENDED {event.event_id} sent{'; py-spy sampling worker 0' if sampler else ''}; "
             f"{sweep.expected:,} performance records expected")
    try:
        last_change, last_report, last_count = 0.0, 0.0, -1
        while True:
            for worker in workers:
                check_alive(worker.service)
            since = time.time() - sweep.ended_ms / 1000
            out = await counter.count(results) - base
            sweep.timeline.append((round(since, 3), out, *(round(rss_mib(worker.pid)) for worker in workers)))
            if out >= sweep.expected:
                sweep.on_topic_after = since
                break
            if out != last_count:
                last_count, last_change = out, since
            if since - last_change > STALL_TIMEOUT_S:
                progress(f"  no progress for {STALL_TIMEOUT_S:.0f} s at {out:,} / {sweep.expected:,} records: giving up")
                break
            if since - last_report >= SERVICE_PROGRESS_EVERY_S:
                progress(f"  {out:,} / {sweep.expected:,} performance records after {since:.1f} s")
                last_report = since
            await asyncio.sleep(POLL_INTERVAL_S)
        sweep.cpu_s = {worker.instance: cpu_seconds(worker.pid) - cpu_before[worker.instance] for worker in workers}
        sweep.machine_busy_share = MachineCpu.read().busy_share_since(machine_before)
        sweep.peak_rss_mib = {worker.instance: peak_rss_mib(worker.pid) for worker in workers}
        if sampler is not None:
            sweep.profile = await sampler.stop()
    finally:
        if sampler is not None and sampler.process.returncode is None:
            await sampler.stop()
    sweep.results_out = out
    sweep.group_events = dict(sum((worker.group_events() for worker in workers), Counter()) - group_before)
    sweep.first_ms, sweep.last_ms = await edge_timestamps(settings.kafka_bootstrap, before)
    if sweep.complete:
        progress(f"  every performance record out: ENDED → first {sweep.first_after:.2f} s, → last "
                 f"{sweep.last_after:.2f} s (Kafka timestamps), on the topic after {sweep.on_topic_after:.2f} s "
                 f"(polled); workers' CPU {sum(sweep.cpu_s.values()):.1f} s, peak RSS "
                 + ", ".join(f"{rss:.0f} MiB" for rss in sweep.peak_rss_mib.values())
                 + (f"; the group changed meanwhile: {sweep.group_events}" if sweep.group_events else ""))
    await settle_metrics(workers, sweep, book)


async def settle_metrics(workers: list[Worker], sweep: Sweep, book: AccountBook) -> None:
    """The workers' gauges once every partition's sweep is done: accounts awaiting data, evaluated."""
    event_id, deadline = sweep.event.event_id, time.monotonic() + METRICS_TIMEOUT_S
    while True:
        metrics = await scrape(workers)
        sweep.awaiting = metrics.awaiting.get(event_id)
        sweep.evaluated = metrics.evaluated.get(event_id)
        done = metrics.complete and not metrics.sweeps_in_progress and sweep.evaluated == book.accounts
        if (done and sweep.awaiting == book.by_kind[AWAITING]) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    progress(f"  workers' gauges: {sweep.awaiting} accounts awaiting data, {sweep.evaluated} evaluated, "
             f"{metrics.sweeps_in_progress:.0f} sweeps in progress")


@dataclass
class ServiceRun:
    workers: list[Worker]
    sweeps: list[Sweep]
    out: dict[str, int]  # records on the output topics after the workers stopped
    disk: dict
    group_stable_after: float | None  # seconds after the spawn
    start_up_group_events: dict[str, int]


async def measure_service(settings: ServiceSettings, topics: dict[str, TopicSpec], book: AccountBook,
                          workers_wanted: int, changelog: TopicSpec, py_spy: str | None) -> ServiceRun:
    workers = await start_workers(settings, workers_wanted)
    sweeps = []
    try:
        stable_after = await wait_for_stable_group(workers)
        start_up = dict(sum((worker.group_events() for worker in workers), Counter()))
        progress(f"baseline: usage group stable {stable_after:.1f} s after the spawn" if stable_after is not None
                 else f"baseline: the usage group never settled within {GROUP_TIMEOUT_S:.0f} s; ending the event anyway")
        progress(f"  start-up: {start_up.get('assignments', 0)} partition assignments, "
                 f"{start_up.get('session_expiries', 0)} workers dropped from the group (session expired); "
                 + ", ".join(f"{worker.instance} owns {sorted(worker.ownership())}" for worker in workers))
        async with RecordCounter(settings.kafka_bootstrap) as counter:
            for event in EVENTS:
                if event.profiled and not py_spy:
                    continue
                sweep = Sweep(event, book.results)
                sweeps.append(sweep)
                await end_event(settings, workers, counter, topics[EVENT_PERFORMANCE], sweep, book, py_spy)
                if not sweep.complete:
                    break
            for worker in workers:
                worker.cpu_total = cpu_seconds(worker.pid)
                worker.peak_rss_mib = peak_rss_mib(worker.pid)
            for worker in workers:
                await asyncio.to_thread(worker.service.stop)  # flushes: count what they wrote after they stopped
            out = {topic: await counter.count(topics[topic]) for topic in (EVENT_PERFORMANCE, EVENT_USAGE, DEAD_LETTERS)}
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.service.stop)  # nothing left to do unless something above failed
    progress("baseline: workers stopped; records out: " + ", ".join(f"{topic} {n:,}" for topic, n in out.items()))
    return ServiceRun(workers, sweeps, out, disk_used(settings, changelog), stable_after, start_up)


def disk_used(settings: ServiceSettings, changelog: TopicSpec) -> dict:
    """The workers' state directories (RocksDB) and the changelog's partitions on the broker."""
    state_root = settings.data_dir / f"baseline{settings.topic_suffix}"
    kafka_data = layout().kafka_data
    partitions = [kafka_data / f"{changelog.name}-{partition}" for partition in range(changelog.partitions)]
    return {
        "state_dirs_mib": {path.name: round(allocated(path) / 1024**2, 1) for path in sorted(state_root.iterdir())}
        if state_root.exists() else {},
        "changelog_mib": round(sum(allocated(path) for path in partitions) / 1024**2, 1),
        "changelog_segment_bytes": sum(file.stat().st_size for path in partitions if path.exists()
                                       for file in path.glob("*.log")),
    }


def allocated(path: Path) -> int:
    """Bytes of disk allocated to the files under ``path`` (what ``du`` counts)."""
    if not path.exists():
        return 0
    return sum(file.stat().st_blocks * 512 for file in path.rglob("*") if file.is_file())


# -- correctness: every performance record read back ------------------------------------------------


class ResultCheck:
    """Every performance record of one event held against what the account's kind and shape say."""

    def __init__(self, book: AccountBook, event: EventPlan):
        self.book = book
        self.event = event
        self.seen = bytearray(book.accounts)  # records per account (revision 0)
        self.by_status: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.duplicates = 0
        self.revised = 0
        self.not_to_settle: Counter[str] = Counter()  # records for accounts that must get none, by kind
        self.wrong: Counter[str] = Counter()  # records with a field not as expected, by field
        self.examples: list[str] = []
        self.candidate_days_order: Counter[str] = Counter()

    def see(self, record: dict) -> None:
        account_id = record["service_account_id"]
        index = self.book.index_of(account_id)
        self.by_status[record["status"]] += 1
        if index is None:
            self.not_to_settle["unknown account"] += 1
            self._example(f"{account_id}: not an account of the store")
            return
        if record["revision"] != 0:
            self.revised += 1
            self._example(f"{account_id}: revision {record['revision']}")
        if self.seen[index]:
            self.duplicates += 1
            return
        self.seen[index] = 1
        kind = self.book.kind(index)
        self.by_kind[kind] += 1
        if kind not in EXPECTED_STATUS:
            self.not_to_settle[kind] += 1
            self._example(f"{account_id} ({kind}) must get no record: {record['status']} {record['reason']}")
            return
        days = record["candidate_days"]
        self.candidate_days_order["most recent first" if days == list(CANDIDATE_DAYS)
                                  else "oldest first" if days == sorted(CANDIDATE_DAYS) else "other"] += 1
        settled = kind == SETTLEABLE
        baseline, actual, reduction = self.book.expected_result(index) if settled else (None, None, None)
        expected = {"event_id": self.event.event_id, "program_id": PROGRAM_ID, "method": "csrl-3-of-5",
                    "status": EXPECTED_STATUS[kind], "baseline_kwh": baseline, "actual_kwh": actual,
                    "reduction_kwh": reduction, "candidate_days": sorted(CANDIDATE_DAYS)}
        actual_fields = {**record, "candidate_days": sorted(days)}
        for name, value in expected.items():
            if actual_fields[name] != value:
                self.wrong[name] += 1
                self._example(f"{account_id} ({kind}) {name} {actual_fields[name]!r}, expected {value!r}")
        if kind in EXPECTED_REASON:
            reason_as_expected = (record["reason"] or "").startswith(EXPECTED_REASON[kind])
        else:
            reason_as_expected = record["reason"] is None
        if not reason_as_expected:
            self.wrong["reason"] += 1
            self._example(f"{account_id} ({kind}) reason {record['reason']!r}")

    def _example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    def summary(self) -> dict:
        expected = {kind: self.book.by_kind[kind] for kind in EXPECTED_STATUS}
        return {
            "records": sum(self.by_status.values()),
            "expected": self.book.results,
            "by_status": dict(self.by_status),
            "by_kind": dict(self.by_kind),
            "expected_by_kind": expected,
            "missing": sum(expected.values()) - sum(self.by_kind[kind] for kind in EXPECTED_STATUS),
            "duplicates": self.duplicates,
            "revised": self.revised,
            "not_to_settle": dict(self.not_to_settle),
            "wrong": dict(self.wrong),
            "candidate_days_order": dict(self.candidate_days_order),
            "examples": self.examples,
        }


async def read_results(settings: ServiceSettings, book: AccountBook, events: list[EventPlan], records: int) -> dict:
    progress(f"baseline: reading {records:,} performance records back")
    started = time.perf_counter()
    checks = {event.event_id: ResultCheck(book, event) for event in events}
    others: Counter[str] = Counter()
    async for record in read_all(settings, EVENT_PERFORMANCE, records):
        check = checks.get(record.value["event_id"]) if isinstance(record.value, dict) else None
        if check is None:
            others["undecodable" if not isinstance(record.value, dict) else "another event"] += 1
        else:
            check.see(record.value)
    outputs = {"read": sum(check.summary()["records"] for check in checks.values()) + sum(others.values()),
               "other_records": dict(others),
               "events": {event_id: check.summary() for event_id, check in checks.items()}}
    for event_id, summary in outputs["events"].items():
        for example in summary["examples"][:5]:
            progress(f"  {event_id}: {example}")
    progress(f"baseline: read back {outputs['read']:,} records in {time.perf_counter() - started:.1f} s")
    return outputs


# -- the run ------------------------------------------------------------------------------------------


def run() -> dict:
    records = int(os.environ.get("BENCH_BASELINE_RECORDS", DEFAULT_RECORDS))
    workers = int(os.environ.get("BENCH_BASELINE_WORKERS", DEFAULT_WORKERS))
    profile = os.environ.get("BENCH_BASELINE_PROFILE", "1") != "0"
    return asyncio.run(benchmark(records, workers, profile))


async def benchmark(records: int, workers: int, profile: bool) -> dict:
    load_average = os.getloadavg()
    py_spy = py_spy_executable() if profile else None
    progress(f"baseline: {records:,} accounts, {workers} worker(s); load average {load_average[0]:.2f} on "
             f"{os.cpu_count()} CPUs (other work on the machine skews the figures)")
    book = AccountBook(records)
    state_format = check_state_format(book)
    progress(f"baseline: pre-loaded state format against record_interval ({state_format['accounts']} accounts): "
             f"{'same' if state_format['ok'] else 'DIFFERENT: ' + ', '.join(state_format['different'])}")
    method = measure_method(book)
    async with isolated_run("baseline", ()) as run:
        settings, topics = run.settings, run.topics
        changelog = TopicSpec(changelog_name(settings), key="acct/<service_account_id>", value="AccountUsage state (JSON)",
                              partitions=topics[EVENT_PERFORMANCE].partitions, replication_factor=1,
                              cleanup_policy="compact", retention_ms=-1)
        progress(f"baseline: topics suffixed {settings.topic_suffix}")
        preload = await preload_store(settings, book, changelog)
        await publish_clock_tick(settings, CLOCK_NOW)
        ran = [event for event in EVENTS if not event.profiled or py_spy]
        await publish_lifecycle(settings, [(event, status) for event in ran for status in ("SCHEDULED", "STARTED")])
        progress(f"baseline: clock tick {CLOCK_NOW.isoformat()}; {len(ran)} event(s) SCHEDULED and STARTED")
        service = await measure_service(settings, topics, book, workers, changelog, py_spy)
        outputs = await read_results(settings, book, [sweep.event for sweep in service.sweeps],
                                     service.out[EVENT_PERFORMANCE])
    profiled = next((sweep for sweep in service.sweeps if sweep.event.profiled), None)
    if profiled is not None and profiled.profile:
        print("\nwhere the time goes (baseline worker 0, profiled event):\n" + where_the_time_goes(profiled.profile)
              + "\n", flush=True)
    return report(book, load_average, state_format, method, preload, service, outputs)


# -- the report ---------------------------------------------------------------------------------------


def report(book: AccountBook, load_average: tuple[float, float, float], state_format: dict, method: dict,
           preload: dict, service: ServiceRun, outputs: dict) -> dict:
    measured = service.sweeps[0] if service.sweeps else None
    checks = {
        "pre-loaded state as record_interval builds it": state_format["ok"],
        "method: evaluate agrees with the closed form": not method["wrong"],
        "measured event complete": measured is not None and measured.complete,
        "no dead letters": service.out[DEAD_LETTERS] == 0,
        "no records of other events": not outputs["other_records"],
        "one event-usage record per performance record": service.out[EVENT_USAGE] == service.out[EVENT_PERFORMANCE],
    }
    for sweep in service.sweeps:
        summary = outputs["events"].get(sweep.event.event_id)
        checks |= event_checks(sweep, summary, book)
    result = {
        "benchmark": "baseline",
        "ok": all(checks.values()),
        "records": book.accounts,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average},
        "store": {"accounts": book.accounts, "by_kind": dict(book.by_kind), "load_shapes": SHAPES,
                  "usage_days": [USAGE_DAYS[0].isoformat(), USAGE_DAYS[-1].isoformat()],
                  "results_expected_per_event": book.results},
        "state_format": state_format,
        "method": method,
        "preload": preload,
        "service": service_figures(service, book),
        "checks": checks,
        "outputs": outputs,
        "profile": next((sweep.profile for sweep in service.sweeps if sweep.event.profiled), {}),
    }
    if measured is not None and measured.complete:
        result["targets"] = {f"ENDED to last performance record < {TARGET_SECONDS:.0f} s":
                             measured.last_after < TARGET_SECONDS}
    result["table"] = table_rows(result)
    return result


def event_checks(sweep: Sweep, summary: dict | None, book: AccountBook) -> dict[str, bool]:
    event_id = sweep.event.event_id
    if summary is None:
        return {f"{event_id}: records read back": False}
    return {
        f"{event_id}: one record per account to settle, by status": (
            summary["records"] == summary["expected"] and summary["by_kind"] == summary["expected_by_kind"]),
        f"{event_id}: none twice, none missing, none revised": (
            summary["duplicates"] == summary["missing"] == summary["revised"] == 0),
        f"{event_id}: none for an account waiting or not concerned": not summary["not_to_settle"],
        f"{event_id}: every field as expected": not summary["wrong"],
        f"{event_id}: awaiting-data gauge": sweep.awaiting == book.by_kind[AWAITING],
        f"{event_id}: every account evaluated": sweep.evaluated == book.accounts,
    }


def service_figures(service: ServiceRun, book: AccountBook) -> dict:
    return {
        "workers": [{
            "instance": worker.instance,
            "ready_after_spawn_s": round(worker.ready_after, 2) if worker.ready_after is not None else None,
            "restore": worker.restore_figures(),
            "cpu_s_at_ready": round(worker.cpu_at_ready, 2),
            "peak_rss_mib_at_ready": round(worker.rss_at_ready_mib, 1),
            "cpu_s_total": round(worker.cpu_total, 2),
            "peak_rss_mib": round(worker.peak_rss_mib, 1),
        } for worker in service.workers],
        "group_stable_after_spawn_s": round(service.group_stable_after, 2) if service.group_stable_after is not None else None,
        "start_up_group_events": service.start_up_group_events,
        "sweeps": [sweep_figures(sweep, book) for sweep in service.sweeps],
        "records_out": service.out,
        "disk": service.disk,
    }


def sweep_figures(sweep: Sweep, book: AccountBook) -> dict:
    figures = {
        "event_id": sweep.event.event_id,
        "profiled": sweep.event.profiled,
        "complete": sweep.complete,
        "expected": sweep.expected,
        "results_out": sweep.results_out,
        "first_result_after_s": round(sweep.first_after, 3) if sweep.first_after is not None else None,
        "last_result_after_s": round(sweep.last_after, 3) if sweep.last_after is not None else None,
        "on_topic_after_s": round(sweep.on_topic_after, 3) if sweep.on_topic_after is not None else None,
        "cpu_s": {instance: round(seconds, 2) for instance, seconds in sweep.cpu_s.items()},
        "machine_cpu_busy_share": round(sweep.machine_busy_share, 3),
        "peak_rss_mib": {instance: round(rss, 1) for instance, rss in sweep.peak_rss_mib.items()},
        "awaiting_gauge": sweep.awaiting,
        "evaluated": sweep.evaluated,
        "group_events": sweep.group_events,
        "timeline": sweep.timeline,
    }
    if sweep.complete:
        cpu = sum(sweep.cpu_s.values())
        figures |= {
            "results_per_s": round(sweep.expected / sweep.last_after),
            "accounts_per_s": round(book.accounts / sweep.last_after),
            "cpu_us_per_account": round(cpu / book.accounts * 1e6, 1),
        }
    return figures


def table_rows(result: dict) -> list[list[str]]:
    service, store, method, checks = result["service"], result["store"], result["method"], result["checks"]
    cpus = result["machine"]["cpus"]

    def ok(name: str) -> str:
        return "ok" if checks.get(name) else "WRONG"

    def seconds(value: float | None) -> str:
        return f"{value:.2f} s" if value is not None else "never"

    workers = service["workers"]
    disk = service["disk"]
    rows = [
        ["accounts in the store / workers", f"{store['accounts']:,} / {len(workers)}", "", ""],
        ["accounts to settle / waiting / not concerned",
         f"{store['results_expected_per_event']:,} / {store['by_kind'].get(AWAITING, 0):,} / "
         f"{store['by_kind'].get(NOT_CONCERNED, 0):,}", "", ""],
        ["pre-load into the changelog (not timed)", f"{result['preload']['records_per_s']:,} rec/s, "
         f"{result['preload']['bytes_per_record']:,} bytes per account", "", ok("pre-loaded state as record_interval builds it")],
        ["method alone: performance.evaluate (CSRL)", f"{method['evaluate_accounts_per_s']:,} accounts/s "
         f"({method['evaluate_us_per_account']} µs)", "", ok("method: evaluate agrees with the closed form")],
        ["method alone: decode state + evaluate", f"{method['decode_and_evaluate_accounts_per_s']:,} accounts/s", "", ""],
        ["method alone: evaluate (ohm-hours 10 of 10, day-of adj.)",
         f"{method['ohm_hours_evaluate_accounts_per_s']:,} accounts/s", "", ""],
        ["method alone: highest_days_average on day sums", f"{method['method_function_accounts_per_s']:,} accounts/s",
         "", ""],
    ]
    for worker in workers:
        restore = worker["restore"]
        rows.append([f"{worker['instance']}: restore from the changelog",
                     f"{restore['records_replayed']:,} records in {seconds(restore['seconds'])}"
                     + (f" ({restore['restores']} restores)" if restore["restores"] > 1 else "")
                     + (f" ({restore['records_per_s']:,} rec/s)" if restore["records_per_s"] else "")
                     + f"; ready {seconds(worker['ready_after_spawn_s'])} after spawn, peak RSS then "
                     f"{worker['peak_rss_mib_at_ready']:.0f} MiB", "", ""])
    start_up = service["start_up_group_events"]
    rows.append(["start-up: usage group stable after spawn", seconds(service["group_stable_after_spawn_s"])
                 + f" ({start_up.get('assignments', 0)} assignments, {start_up.get('session_expiries', 0)} "
                 "sessions expired)", "", ""])
    for sweep in service["sweeps"]:
        event_id = sweep["event_id"]
        summary = result["outputs"]["events"].get(event_id, {})
        group = sweep["group_events"]
        if sweep["profiled"]:
            rows.append(["profiled event (py-spy on worker 0): ENDED → last record",
                         seconds(sweep["last_result_after_s"]), "", ""])
        elif sweep["complete"]:
            last = sweep["last_result_after_s"]
            cpu = sum(sweep["cpu_s"].values())
            rows += [
                ["measured event: ENDED → first performance record", seconds(sweep["first_result_after_s"]), "", ""],
                ["measured event: ENDED → last performance record", seconds(last), f"< {TARGET_SECONDS:.0f} s",
                 "met" if last < TARGET_SECONDS else "NOT MET"],
                ["measured event: records/s, accounts swept/s (ENDED → last)",
                 f"{sweep['results_per_s']:,} / {sweep['accounts_per_s']:,}", "", ""],
                ["measured event: workers' CPU", f"{cpu:.1f} s ({sweep['cpu_us_per_account']} µs per account; "
                 + ", ".join(f"{instance} {s:.1f} s" for instance, s in sweep["cpu_s"].items()) + ")", "", ""],
                ["measured event: machine CPU busy", f"{sweep['machine_cpu_busy_share']:.0%} of {cpus} CPUs", "", ""],
                ["measured event: workers' peak RSS", ", ".join(f"{instance} {rss:.0f} MiB" for instance, rss in
                                                                sweep["peak_rss_mib"].items()), "", ""],
                ["measured event: group changes (assignments, sessions expired)",
                 f"{group.get('assignments', 0)}, {group.get('session_expiries', 0)}", "0, 0",
                 "ok" if not group else "CHURN"],
            ]
        else:
            rows.append(["measured event: ENDED → last performance record", "did not finish",
                         f"< {TARGET_SECONDS:.0f} s", "NOT MET"])
        rows += [
            [f"{event_id}: records by status", ", ".join(f"{status} {n:,}" for status, n in
                                                         sorted(summary.get("by_status", {}).items())),
             f"= {store['results_expected_per_event']:,}", ok(f"{event_id}: one record per account to settle, by status")],
            [f"{event_id}: twice / missing / revised",
             f"{summary.get('duplicates', 0):,} / {summary.get('missing', 0):,} / {summary.get('revised', 0):,}",
             "0 / 0 / 0", ok(f"{event_id}: none twice, none missing, none revised")],
            [f"{event_id}: fields (baseline, actual, reduction, ...)", "", "as worked out",
             ok(f"{event_id}: every field as expected")],
            [f"{event_id}: awaiting-data gauge (all workers)", f"{sweep['awaiting_gauge']}",
             f"= {store['by_kind'].get(AWAITING, 0):,}", ok(f"{event_id}: awaiting-data gauge")],
        ]
    rows += [
        ["workers' peak RSS (whole run)", ", ".join(f"{w['instance']} {w['peak_rss_mib']:.0f} MiB" for w in workers), "", ""],
        ["workers' CPU (whole run)", ", ".join(f"{w['instance']} {w['cpu_s_total']:.1f} s" for w in workers), "", ""],
        ["disk: state directories (RocksDB)", ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in
                                                        disk["state_dirs_mib"].items()), "", ""],
        ["disk: store changelog on the broker", f"{disk['changelog_mib']:,.0f} MiB", "", ""],
        ["dead letters", f"{service['records_out'][DEAD_LETTERS]:,}", "0", ok("no dead letters")],
        ["event-usage records", f"{service['records_out'][EVENT_USAGE]:,}",
         f"= {service['records_out'][EVENT_PERFORMANCE]:,}", ok("one event-usage record per performance record")],
    ]
    return rows
