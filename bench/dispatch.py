"""Dispatch fan-out: one SCHEDULE to a million enrolled thermostats, from the request to the last instruction.

The issue: "1,000,000 enrolled thermostats across 3 providers; time from the SCHEDULE record to the
last dispatch instruction produced. Target: under 30 s on this machine (the program allows 20
minutes of notice). Report the figure and memory used."

How (all topics private to the run, named with a ``-bench-<hex>`` suffix, deleted at the end; the
Postgres projection in a schema of its own, dropped at the end):

1. pre-load the fleet (:class:`EnrolledFleet`, ``BENCH_DISPATCH_RECORDS`` thermostats, default
   1,000,000) as the utility and the enrollment service publish it: each account's facts on
   ``utility.customer-accounts.v1``, its enrollments on ``gridflex.enrollment.state.v1``. Three
   providers: energyhub and resideo in ``sce-sep-2025`` (the two its program file authorizes),
   nest-labs in ``sce-save-power-days``. Then one clock tick, 2025-07-16 10:00 in Los Angeles;
2. one ``gridflex run dispatch`` worker ingests the fleet: its ``/metrics`` page is scraped until
   ``gridflex_records_in_total`` counts every record and the consumer lag is 0;
3. the measured event: one SCHEDULE for ``sce-sep-2025`` on ``utility.energy-events.v1``; the
   ``partner.<provider>.dispatch.v1`` end offsets are polled every 0.25 s until they hold one
   instruction per thermostat reached. The figure held against the target: the Kafka timestamp of
   the last instruction (the worker's wall time when it produced it) less the SCHEDULE's. Then the
   time until the Postgres projection (``dispatch_devices``) holds a row for each. ``/proc`` gives
   the worker's CPU time and peak memory;
4. a second SCHEDULE (the next day) while py-spy samples the worker (:mod:`bench.profiling`):
   where the fan-out's time goes. Sampling slows the worker, so its figure is reported apart; the
   raw stacks stay in ``bench/results/dispatch-py-spy-raw.txt``;
5. correctness: every instruction read back: exactly one SCHEDULE per thermostat in effect on the
   event's day in the event's program and none for the others (ended, not started yet, another
   program); each with its account, window and setpoint, and precool the hour before the start,
   except for TOU accounts when that hour overlaps the on-peak window (16:00-21:00 on business
   days: the first event's does, the second's does not); no dead letters; the projection's rows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench import RESULTS_DIR
from bench.console import progress, rate
from bench.ingest import check_alive, ready_after, start_when_ready
from bench.procstats import MachineCpu, cpu_seconds, peak_rss_mib
from bench.profiling import Sampler, py_spy_executable, service_areas, where_the_time_goes
from bench.topics import RecordCounter, isolated_run, preload_records, publish_clock_tick, read_all
from gridflex import REPO_ROOT
from gridflex.calendar import local_date
from gridflex.kafka_io import RecordProducer, read_records
from gridflex.processes import ServiceProcess, free_port, isolated_env
from gridflex.programs import ProgramCatalogue
from gridflex.settings import ServiceSettings
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DEAD_LETTERS,
    DISPATCH,
    ENERGY_EVENTS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    TopicSpec,
)

DEFAULT_RECORDS = 1_000_000
TARGET_SECONDS = 30.0  # SCHEDULE to last instruction; the program's minimum notice is 20 minutes
PRELOAD_PROGRESS_EVERY = 200_000
POLL_INTERVAL_S = 0.25
METRICS_INTERVAL_S = 0.5
PROJECTION_INTERVAL_S = 1.0  # counting a million projection rows is work for Postgres too
SERVICE_PROGRESS_EVERY_S = 5.0
STALL_TIMEOUT_S = 60.0
PROFILE_SECONDS = 120  # at most: the sampler stops when the profiled event's fan-out is done
SERVICE_LOG = REPO_ROOT / "var" / "log" / "bench-dispatch.log"
PROFILE_STACKS = RESULTS_DIR / "dispatch-py-spy-raw.txt"
PROFILE_AREAS = service_areas("dispatch", [
    ("fan-out rules: thermostats in effect, precool, instructions (services/dispatch/domain)",
     ("services/dispatch/domain/",)),
    ("state: accounts, devices and sent chunks as JSON in RocksDB (gridflex/state.py, rocksdict, orjson)",
     ("gridflex/state.py",)),
    ("Postgres projection (services/dispatch/projection.py, asyncpg)", ("services/dispatch/projection.py", "asyncpg/")),
])

# -- the fleet ------------------------------------------------------------------------------------

PROGRAM_ID = "sce-sep-2025"
OTHER_PROGRAM_ID = "sce-save-power-days"  # where a provider the event's program does not authorize enrolls
EARLIER_TERMS_ID = "sce-sep-legacy"  # ended 2024-12-31; some thermostats moved over from it
PROVIDERS = {"energyhub": 0.50, "resideo": 0.40, "nest-labs": 0.10}  # share of the accounts
PROVIDER_NAMES = list(PROVIDERS)
CLOCK_NOW = datetime(2025, 7, 16, 17, tzinfo=timezone.utc)  # a Wednesday, 10:00 in Los Angeles
SEED = 20250716
FIRST_ACCOUNT = 5_000_000
THERMOSTATS_PER_ACCOUNT = {1: 0.87, 2: 0.12, 3: 0.01}
RATES = {"D": 0.38, "D-CARE": 0.10, "D-FERA": 0.02, "TOU-D": 0.31, "TOU-D-T": 0.12, "TOU-GS-1": 0.05, "TOU-GS-2": 0.02}
BUSINESS_RATES = {"TOU-GS-1", "TOU-GS-2"}
RATE_CHANGED_SHARE = 0.02  # accounts published twice: the rate they had, then the one they have
NOT_ENROLLED_SHARE = 0.10  # accounts published with nothing enrolled, per enrolled account
EARLIER_TERMS_SHARE = 0.20  # of the thermostats of providers the earlier terms had
# When a thermostat's enrollment in its program is in effect, against the two event days (share of thermostats)
PERIOD_MIX = {
    "enrolled": 0.900,            # since before both days, no end
    "renewed": 0.010,             # removed once, enrolled again: two periods, one thermostat
    "starts on the first day": 0.005,
    "leaving": 0.010,             # a disenrollment dated after both days
    "ends on the second day": 0.005,  # effective_to is the first day no longer in effect
    "ended": 0.030,               # effective_to on or before the first day
    "starts on the second day": 0.005,
    "starts later": 0.035,        # enrolled lately: in effect three business days later
}
SETPOINT_OFFSET_F = 4

# A thermostat's expectation, one int: the provider's index, TOU rate, which events reach it.
PROVIDER_BITS = 0b11
TOU = 0b100


def reached_bit(event_index: int) -> int:
    return 0b1000 << event_index


@dataclass(frozen=True)
class EventPlan:
    """One SCHEDULE the benchmark sends, and what its instructions must say."""

    event_id: str
    start: datetime
    end: datetime
    tou_precool: bool  # TOU accounts precool only when the precool hour misses the on-peak window
    profiled: bool

    @property
    def day(self) -> date:
        return local_date(self.start)

    def request(self) -> dict:
        return {
            "event_id": self.event_id, "program_id": PROGRAM_ID, "action": "SCHEDULE", "reason": "GRID_STRESS",
            "start": self.start, "end": self.end, "issued_at": CLOCK_NOW, "setpoint_offset_f": SETPOINT_OFFSET_F,
            "precool": True, "targets": [],
        }


EVENTS = [
    # 17:00-20:00 on Wednesday 16 July: the precool hour, 16:00-17:00, is on-peak: TOU accounts get none.
    EventPlan("EVT-BENCH-2025-07-16", datetime(2025, 7, 17, 0, tzinfo=timezone.utc),
              datetime(2025, 7, 17, 3, tzinfo=timezone.utc), tou_precool=False, profiled=False),
    # 16:00-18:00 on Thursday 17 July: the precool hour ends as on-peak begins: every account precools.
    EventPlan("EVT-BENCH-2025-07-17", datetime(2025, 7, 17, 23, tzinfo=timezone.utc),
              datetime(2025, 7, 18, 1, tzinfo=timezone.utc), tou_precool=True, profiled=True),
]


class Choice:
    """A seeded weighted choice among ``mix``'s keys."""

    def __init__(self, generator: random.Random, mix: dict):
        self.generator = generator
        self.options = list(mix)
        self.cumulative = list(itertools.accumulate(mix.values()))

    def __call__(self):
        return self.generator.choices(self.options, cum_weights=self.cumulative)[0]


class EnrolledFleet:
    """``thermostats`` enrolled thermostats and their accounts, made as they are produced (seeded: every
    run the same), with what each SCHEDULE must do to each thermostat of the event's program."""

    def __init__(self, thermostats: int, events: list[EventPlan]):
        self.thermostats = thermostats
        self.events = events
        self.first_day = min(event.day for event in events)
        self.second_day = max(event.day for event in events)
        catalogue = ProgramCatalogue.load(REPO_ROOT / "programs")
        self.program = catalogue[PROGRAM_ID]
        # A provider enrolls in the event's program if its program file authorizes it, else in the other one.
        self.program_of = {provider: PROGRAM_ID if provider in self.program.providers else OTHER_PROGRAM_ID
                           for provider in PROVIDERS}
        for provider, program_id in self.program_of.items():
            if provider not in catalogue[program_id].providers:
                raise ValueError(f"{program_id} does not authorize {provider}: change the benchmark's providers")
        self.earlier_terms_providers = catalogue[EARLIER_TERMS_ID].providers
        self.tou_prefix = self.program.events.precool.tou_rate_prefix
        self.random = random.Random(SEED)
        self.pick_provider = Choice(self.random, PROVIDERS)
        self.pick_rate = Choice(self.random, RATES)
        self.pick_count = Choice(self.random, THERMOSTATS_PER_ACCOUNT)
        self.pick_period = Choice(self.random, PERIOD_MIX)
        self.expected: dict[str, int] = {}  # serial → expectation bits, for the event program's thermostats
        self.kinds: Counter[str] = Counter()  # thermostats by program and period kind
        self.by_provider: Counter[str] = Counter()  # thermostats
        self.records: Counter[str] = Counter()  # by topic
        self.accounts = 0  # with a thermostat enrolled
        self.tou_thermostats = 0  # of the event's program

    def reached(self, event_index: int) -> Counter[str]:
        """Thermostats the event must reach, by provider."""
        bit = reached_bit(event_index)
        return Counter(PROVIDER_NAMES[code & PROVIDER_BITS] for code in self.expected.values() if code & bit)

    def reached_tou(self, event_index: int) -> int:
        bit = reached_bit(event_index) | TOU
        return sum(1 for code in self.expected.values() if code & bit == bit)

    def topic_records(self) -> Iterator[tuple[str, str, dict]]:
        """``(topic, key, value)`` account by account: its facts (twice when its rate changed), then its
        enrollments; now and then an account with nothing enrolled."""
        number, made = FIRST_ACCOUNT, 0
        while made < self.thermostats:
            account_id = f"SA-{number}"
            rate_schedule, provider = self.pick_rate(), self.pick_provider()
            if self.random.random() < RATE_CHANGED_SHARE:
                earlier = "D" if rate_schedule.startswith(self.tou_prefix) else "TOU-D"
                yield self._record(CUSTOMER_ACCOUNTS, account_id, self._account(account_id, earlier, days_ago=90))
            yield self._record(CUSTOMER_ACCOUNTS, account_id, self._account(account_id, rate_schedule, days_ago=20))
            count = min(self.pick_count(), self.thermostats - made)
            periods = []
            for position in range(1, count + 1):
                periods += self._thermostat(provider, f"TS-{number}-{position}", rate_schedule)
            yield self._record(ENROLLMENT_STATE, account_id, {
                "service_account_id": account_id, "enrollments": periods, "lockouts": [], "authorizations": [],
                "updated_at": CLOCK_NOW - timedelta(seconds=self.random.randrange(86_400 * 30)),
            })
            self.accounts += 1
            made += count
            number += 1
            if self.random.random() < NOT_ENROLLED_SHARE:
                yield self._record(CUSTOMER_ACCOUNTS, f"SA-{number}",
                                   self._account(f"SA-{number}", self.pick_rate(), days_ago=200))
                number += 1

    def _record(self, topic: str, key: str, value: dict) -> tuple[str, str, dict]:
        self.records[topic] += 1
        return topic, key, value

    def _account(self, account_id: str, rate_schedule: str, days_ago: int) -> dict:
        start = date(2005, 1, 1) + timedelta(days=self.random.randrange(20 * 365))
        return {
            "service_account_id": account_id,
            "customer_class": "BUSINESS" if rate_schedule in BUSINESS_RATES else "RESIDENTIAL",
            "rate_schedule": rate_schedule, "meter_type": "SMARTCONNECT", "service_start": start,
            "service_end": None, "net_metering_since": None, "bill_cycle_day": self.random.randint(1, 28),
            "programs": [], "joint_gas_customer": self.random.random() < 0.4,
            "updated_at": CLOCK_NOW - timedelta(days=days_ago),
        }

    def _thermostat(self, provider: str, serial: str, rate_schedule: str) -> list[dict]:
        """The enrollment periods of one thermostat; remembers what each event must do to it."""
        program_id = self.program_of[provider]
        kind = self.pick_period() if program_id == PROGRAM_ID else "another program"
        spans = self._spans(kind)
        periods = [self._period(program_id, provider, serial, start, end) for start, end in spans]
        if provider in self.earlier_terms_providers and self.random.random() < EARLIER_TERMS_SHARE:
            moved = date(2019, 6, 1) + timedelta(days=self.random.randrange(5 * 365))
            periods.insert(0, self._period(EARLIER_TERMS_ID, provider, serial, moved, date(2025, 1, 1)))
        self.kinds[f"{program_id} {kind}"] += 1
        self.by_provider[provider] += 1
        if program_id == PROGRAM_ID:
            code = PROVIDER_NAMES.index(provider)
            if rate_schedule.startswith(self.tou_prefix):
                code |= TOU
                self.tou_thermostats += 1
            for index, event in enumerate(self.events):
                # In effect on a day when effective_from <= day < effective_to (AccountEnrollments.avsc)
                if any(start <= event.day and (end is None or event.day < end) for start, end in spans):
                    code |= reached_bit(index)
            self.expected[serial] = code
        return periods

    def _spans(self, kind: str) -> list[tuple[date, date | None]]:
        """(effective_from, effective_to) of each period of one thermostat in its program."""
        first, second = self.first_day, self.second_day

        def before(latest: date, earliest: date = date(2025, 1, 6)) -> date:
            return earliest + timedelta(days=self.random.randrange((latest - earliest).days))

        def after(day: date, within: int) -> date:
            return day + timedelta(days=self.random.randint(1, within))

        if kind == "renewed":
            return [(before(date(2025, 3, 1)), date(2025, 4, 1)), (before(first, date(2025, 5, 1)), None)]
        if kind == "starts on the first day":
            return [(first, None)]
        if kind == "leaving":
            return [(before(first), after(second, 45))]
        if kind == "ends on the second day":
            return [(before(first), second)]
        if kind == "ended":
            ended = first if self.random.random() < 0.2 else before(first, date(2025, 3, 1))
            return [(before(date(2025, 3, 1)), ended)]
        if kind == "starts on the second day":
            return [(second, None)]
        if kind == "starts later":
            return [(after(second, 10), None)]
        return [(before(first), None)]  # enrolled (in this program or another)

    @staticmethod
    def _period(program_id: str, provider: str, serial: str, start: date, end: date | None) -> dict:
        return {"program_id": program_id, "provider_id": provider, "thermostat_serial": serial,
                "request_id": f"REQ-{program_id}-{serial}-{start.isoformat()}", "effective_from": start,
                "effective_to": end, "end_reason": "DISENROLLED" if end is not None else None}


def account_of(serial: str) -> str:
    """``TS-5000123-2`` → ``SA-5000123``."""
    return "SA-" + serial.split("-")[1]


def run() -> dict:
    records = int(os.environ.get("BENCH_DISPATCH_RECORDS", DEFAULT_RECORDS))
    return asyncio.run(benchmark(records))


async def benchmark(records: int) -> dict:
    load_average = os.getloadavg()
    py_spy = py_spy_executable()
    async with isolated_run("dispatch", tuple(PROVIDERS)) as run:
        settings, topics, database_url = run.settings, run.topics, run.database_url
        progress(f"dispatch: {records:,} thermostats, topics suffixed {settings.topic_suffix}, Postgres schema {run.schema}; "
                 f"load average {load_average[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine skews the figures)")
        fleet = EnrolledFleet(records, EVENTS)
        preload = await preload_fleet(settings, fleet, topics)
        await publish_clock_tick(settings, CLOCK_NOW)
        progress(f"dispatch: clock tick {CLOCK_NOW.isoformat()}")
        service = await measure_service(settings, topics, fleet, database_url, py_spy)
        outputs = await read_instructions(settings, topics, fleet)
    profiled = next((fan_out for fan_out in service.fan_outs if fan_out.event.profiled), None)
    if profiled is not None and profiled.profile:
        print("\nwhere the time goes (dispatch worker, profiled SCHEDULE):\n" + where_the_time_goes(profiled.profile)
              + "\n", flush=True)
    return report(fleet, load_average, preload, service, outputs)


# -- input ---------------------------------------------------------------------------------------


async def preload_fleet(settings: ServiceSettings, fleet: EnrolledFleet, topics: dict[str, TopicSpec]) -> dict:
    """Produce every account and its enrollments before anything is timed."""
    progress(f"dispatch: pre-loading {fleet.thermostats:,} thermostats: each account's facts, then its enrollments")
    seconds = await preload_records(settings, fleet.topic_records(), PRELOAD_PROGRESS_EVERY)
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        on_topics = {topic: await counter.count(topics[topic]) for topic in (CUSTOMER_ACCOUNTS, ENROLLMENT_STATE)}
    if on_topics != dict(fleet.records):
        raise RuntimeError(f"pre-load: {on_topics} on the topics, expected {dict(fleet.records)}")
    total = sum(on_topics.values())
    reached = fleet.reached(0)
    progress(f"dispatch: pre-loaded {total:,} records in {seconds:.1f} s ({rate(total, seconds)}): "
             f"{fleet.accounts:,} enrolled accounts, thermostats "
             + ", ".join(f"{provider} {count:,}" for provider, count in fleet.by_provider.items())
             + f"; the measured event must reach {sum(reached.values()):,}")
    return {"records": total, "by_topic": on_topics, "seconds": round(seconds, 2),
            "records_per_s": round(total / seconds)}


# -- the service under test ----------------------------------------------------------------------


@dataclass
class FanOut:
    """One SCHEDULE and its instructions. Kafka timestamps in ms; ``*_after`` in seconds after the SCHEDULE's."""

    event: EventPlan
    expected: int  # instructions
    sent_ms: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    on_topics_after: float | None = None  # when the polled end offsets first held every instruction
    instructions_out: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds after the SCHEDULE, instructions)
    lifecycle: dict | None = None  # the step the SCHEDULE got
    cpu_s: float = 0.0  # the worker's, from the SCHEDULE to the last instruction on the topics
    machine_busy_share: float = 0.0
    peak_rss_mib: float = 0.0  # at the end of the fan-out
    projection_after: float | None = None  # seconds after the last instruction's timestamp
    profile: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.on_topics_after is not None and self.last_ms is not None

    @property
    def first_after(self) -> float | None:
        return (self.first_ms - self.sent_ms) / 1000 if self.first_ms is not None else None

    @property
    def last_after(self) -> float | None:
        return (self.last_ms - self.sent_ms) / 1000 if self.last_ms is not None else None


@dataclass
class DispatchRun:
    """What was observed of one dispatch worker; times in seconds since its spawn unless said."""

    spawned: float  # time.monotonic()
    ready: float | None = None
    ingest_timeline: list[tuple[float, int]] = field(default_factory=list)  # (time, input records consumed)
    first_in: float | None = None
    ingested: float | None = None  # every input record consumed and committed
    cpu_at_first_in: float = 0.0
    cpu_at_ingested: float = 0.0
    rss_after_ingest_mib: float = 0.0
    fan_outs: list[FanOut] = field(default_factory=list)
    cpu_total: float = 0.0
    peak_rss_mib: float = 0.0
    dead_letters: int = 0
    instructions_out: dict[str, int] = field(default_factory=dict)  # by provider, after the worker stopped

    def now(self) -> float:
        return time.monotonic() - self.spawned


async def measure_service(settings: ServiceSettings, topics: dict[str, TopicSpec], fleet: EnrolledFleet,
                          database_url: str, py_spy: str | None) -> DispatchRun:
    SERVICE_LOG.unlink(missing_ok=True)
    service = ServiceProcess(
        "dispatch", isolated_env(settings.topic_suffix, GRIDFLEX_DATABASE_URL=database_url),
        web_port=free_port(), log_path=SERVICE_LOG,
    )
    progress(f"dispatch: starting the dispatch worker (log: {SERVICE_LOG})")
    observed = DispatchRun(spawned=time.monotonic())
    starting = asyncio.create_task(asyncio.to_thread(start_when_ready, service))
    dispatch_topics = [topics[DISPATCH.format(provider_id=provider)] for provider in PROVIDERS]
    try:
        await watch_ingest(service, starting, topics, fleet, observed)
        connection = await asyncpg.connect(database_url)
        try:
            async with RecordCounter(settings.kafka_bootstrap) as counter:
                for index, event in enumerate(fleet.events):
                    fan_out = FanOut(event, sum(fleet.reached(index).values()))
                    observed.fan_outs.append(fan_out)
                    await dispatch_event(settings, service, counter, dispatch_topics, fan_out, py_spy)
                    if not fan_out.complete:
                        break
                    if not event.profiled:
                        fan_out.projection_after = await wait_for_projection(service, connection, fan_out)
                observed.cpu_total = cpu_seconds(service.process.pid)
                observed.peak_rss_mib = peak_rss_mib(service.process.pid)
                await asyncio.to_thread(service.stop)  # flushes: count what it wrote after it stopped
                observed.instructions_out = {spec.name.removesuffix(settings.topic_suffix): await counter.count(spec)
                                             for spec in dispatch_topics}
                observed.dead_letters = await counter.count(topics[DEAD_LETTERS])
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(service.stop)  # nothing left to do unless something above failed
    progress(f"dispatch: worker stopped; {sum(observed.instructions_out.values()):,} instructions out, "
             f"{observed.dead_letters:,} dead letters")
    return observed


# -- ingest: the fleet into the worker's state ---------------------------------------------------


@dataclass
class WorkerMetrics:
    records_in: dict[str, float]  # by catalogue topic
    lag: dict[tuple[str, str], float]  # (topic as named on the broker, partition) → records behind


def parse_metrics(text: str) -> WorkerMetrics:
    records_in, lag = {}, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service") != "dispatch":
                continue
            if sample.name == "gridflex_records_in_total":
                records_in[sample.labels["topic"]] = sample.value
            elif sample.name == "gridflex_consumer_lag":
                lag[sample.labels["topic"], sample.labels["partition"]] = sample.value
    return WorkerMetrics(records_in, lag)


async def watch_ingest(service: ServiceProcess, starting: asyncio.Task, topics: dict[str, TopicSpec],
                       fleet: EnrolledFleet, observed: DispatchRun) -> None:
    """Scrape ``/metrics`` until the fan-out pipeline has consumed every record of the fleet and
    committed it (consumer lag 0 on every partition of both topics)."""
    inputs = {topic: fleet.records[topic] for topic in (CUSTOMER_ACCOUNTS, ENROLLMENT_STATE)}
    total = sum(inputs.values())
    partitions = {(topics[topic].name, str(partition)) for topic in inputs for partition in range(topics[topic].partitions)}
    last_change, last_report, last_count = 0.0, 0.0, -1
    while True:
        check_alive(service)
        if starting.done() and observed.ready is None:
            observed.ready = await ready_after(starting, observed.spawned)
            progress(f"  worker ready (/health) after {observed.ready:.1f} s" if observed.ready is not None
                     else "  the worker's /health never answered 200; watching its metrics anyway")
        try:
            metrics = parse_metrics(await asyncio.to_thread(service.metrics))
        except OSError:  # not listening yet
            await asyncio.sleep(METRICS_INTERVAL_S)
            continue
        now = observed.now()
        consumed = int(sum(metrics.records_in.get(topic, 0) for topic in inputs))
        observed.ingest_timeline.append((round(now, 3), consumed))
        if consumed and observed.first_in is None:
            observed.first_in, observed.cpu_at_first_in = now, cpu_seconds(service.process.pid)
        lagging = {key: metrics.lag.get(key) for key in partitions}
        if consumed >= total and all(behind == 0 for behind in lagging.values()):
            observed.ingested = now
            observed.cpu_at_ingested = cpu_seconds(service.process.pid)
            observed.rss_after_ingest_mib = peak_rss_mib(service.process.pid)
            seconds = now - observed.first_in
            progress(f"  ingested {consumed:,} records in {seconds:.1f} s ({rate(consumed, seconds)}), "
                     f"peak RSS {observed.rss_after_ingest_mib:.0f} MiB")
            if starting.done() and observed.ready is None:
                observed.ready = await ready_after(starting, observed.spawned)
            return
        if consumed != last_count:
            last_count, last_change = consumed, now
        if now - last_change > STALL_TIMEOUT_S:
            raise RuntimeError(f"dispatch: ingest stalled at {consumed:,} / {total:,} records for "
                               f"{STALL_TIMEOUT_S:.0f} s (lag {lagging}):\n{service.log_tail()}")
        if observed.first_in is not None and now - last_report >= SERVICE_PROGRESS_EVERY_S:
            progress(f"  {consumed:,} / {total:,} records in ({rate(consumed, now - observed.first_in)} so far)")
            last_report = now
        await asyncio.sleep(METRICS_INTERVAL_S)


# -- one event: the SCHEDULE, its instructions, its projection -----------------------------------


async def dispatch_event(settings: ServiceSettings, service: ServiceProcess, counter: RecordCounter,
                         dispatch_topics: list[TopicSpec], fan_out: FanOut, py_spy: str | None) -> None:
    """Send the SCHEDULE; poll the dispatch topics until they hold every instruction it must produce."""
    event = fan_out.event
    before = {tp: offset for spec in dispatch_topics for tp, offset in (await counter.end_offsets(spec)).items()}
    base = sum(before.values())
    sampler = None
    if event.profiled and py_spy:
        sampler = Sampler(py_spy, service.process.pid, PROFILE_SECONDS, PROFILE_STACKS, PROFILE_AREAS)
        await sampler.start()
    cpu_before, machine_before = cpu_seconds(service.process.pid), MachineCpu.read()
    fan_out.sent_ms = await send_schedule(settings, event)
    progress(f"dispatch: SCHEDULE {event.event_id} sent ({event.start:%Y-%m-%d %H:%M}Z-{event.end:%H:%M}Z, precool, "
             f"every provider{'; py-spy sampling the worker' if sampler else ''}); {fan_out.expected:,} "
             "instructions expected")
    decided = asyncio.create_task(lifecycle_step(settings, event.event_id))
    try:
        last_change, last_report, last_count = 0.0, 0.0, -1
        while True:
            check_alive(service)
            since = time.time() - fan_out.sent_ms / 1000
            out = sum([await counter.count(spec) for spec in dispatch_topics]) - base
            fan_out.timeline.append((round(since, 3), out))
            if decided.done():
                refused(decided.result(), event)
            if out >= fan_out.expected:
                fan_out.on_topics_after = since
                break
            if out != last_count:
                last_count, last_change = out, since
            if since - last_change > STALL_TIMEOUT_S:
                progress(f"  no progress for {STALL_TIMEOUT_S:.0f} s at {out:,} / {fan_out.expected:,} "
                         "instructions: giving up")
                break
            if since - last_report >= SERVICE_PROGRESS_EVERY_S:
                progress(f"  {out:,} / {fan_out.expected:,} instructions out after {since:.1f} s")
                last_report = since
            await asyncio.sleep(POLL_INTERVAL_S)
        fan_out.cpu_s = cpu_seconds(service.process.pid) - cpu_before
        fan_out.machine_busy_share = MachineCpu.read().busy_share_since(machine_before)
        fan_out.peak_rss_mib = peak_rss_mib(service.process.pid)
        if sampler is not None:
            fan_out.profile = await sampler.stop()
        fan_out.lifecycle = await decided
        refused(fan_out.lifecycle, event)
    finally:
        decided.cancel()
        if sampler is not None and sampler.process.returncode is None:
            await sampler.stop()
    fan_out.instructions_out = out
    fan_out.first_ms, fan_out.last_ms = await edge_timestamps(settings.kafka_bootstrap, before)
    if fan_out.complete:
        progress(f"  every instruction out: SCHEDULE → first {fan_out.first_after:.2f} s, → last "
                 f"{fan_out.last_after:.2f} s (Kafka timestamps), on the topics after {fan_out.on_topics_after:.2f} s "
                 f"(polled); worker CPU {fan_out.cpu_s:.1f} s, peak RSS {fan_out.peak_rss_mib:.0f} MiB")


async def send_schedule(settings: ServiceSettings, event: EventPlan) -> int:
    """The SCHEDULE's Kafka timestamp (ms): the time the benchmark produced it."""
    async with RecordProducer(settings) as producer:
        metadata = await (await producer.send(ENERGY_EVENTS, event.event_id, event.request()))
    return metadata.timestamp


async def lifecycle_step(settings: ServiceSettings, event_id: str) -> dict | None:
    """The first lifecycle record of the event (SCHEDULED or REJECTED); None if none came in time."""
    async for record in read_records(settings, EVENT_LIFECYCLE, idle_timeout=STALL_TIMEOUT_S, max_wait=STALL_TIMEOUT_S):
        if isinstance(record.value, dict) and record.value["event_id"] == event_id:
            return record.value
    return None


def refused(step: dict | None, event: EventPlan) -> None:
    """Stop the run if the service did not schedule the event: nothing would be dispatched."""
    if step is None:
        raise RuntimeError(f"dispatch: no lifecycle step for {event.event_id} within {STALL_TIMEOUT_S:.0f} s")
    if step["status"] != "SCHEDULED":
        raise RuntimeError(f"dispatch: {event.event_id} was {step['status']}, not SCHEDULED: "
                           + "; ".join(f"{failure['code']}: {failure['message']}" for failure in step["failures"]))


async def edge_timestamps(bootstrap: str, before: dict[TopicPartition, int]) -> tuple[int | None, int | None]:
    """Kafka timestamps (ms) of the earliest first and the latest last record the partitions got
    after the offsets ``before``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(before))
        ends = await consumer.end_offsets(list(before))
        firsts, lasts = [], []
        for tp, start in before.items():
            if ends[tp] > start:
                firsts.append(await timestamp_at(consumer, tp, start))
                lasts.append(await timestamp_at(consumer, tp, ends[tp] - 1))
        return (min(firsts), max(lasts)) if firsts else (None, None)
    finally:
        await consumer.stop()


async def timestamp_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> int:
    consumer.seek(tp, offset)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp, []):
            return message.timestamp
    raise RuntimeError(f"no record at {tp.topic}[{tp.partition}] offset {offset} within 30 s")


async def wait_for_projection(service: ServiceProcess, connection: asyncpg.Connection, fan_out: FanOut) -> float | None:
    """Seconds from the last instruction's Kafka timestamp until ``dispatch_devices`` holds a row for
    each instruction of the event; None if the rows stop coming for the stall timeout."""
    event_id, last_change, last_rows, last_report = fan_out.event.event_id, time.monotonic(), -1, time.monotonic()
    while True:
        check_alive(service)
        rows = await projected_devices(connection, event_id)
        since_last = time.time() - fan_out.last_ms / 1000
        if rows >= fan_out.expected:
            progress(f"  projection: {rows:,} dispatch_devices rows {since_last:.1f} s after the last instruction")
            return since_last
        if rows != last_rows:
            last_rows, last_change = rows, time.monotonic()
        if time.monotonic() - last_change > STALL_TIMEOUT_S:
            progress(f"  projection: no progress for {STALL_TIMEOUT_S:.0f} s at {rows:,} / {fan_out.expected:,} rows")
            return None
        if time.monotonic() - last_report >= SERVICE_PROGRESS_EVERY_S:
            progress(f"  projection: {rows:,} / {fan_out.expected:,} dispatch_devices rows")
            last_report = time.monotonic()
        await asyncio.sleep(PROJECTION_INTERVAL_S)


async def projected_devices(connection: asyncpg.Connection, event_id: str) -> int:
    """Rows of the event in the projection (the worker creates the table on first use)."""
    try:
        return await connection.fetchval("SELECT count(*) FROM dispatch_devices WHERE event_id = $1", event_id)
    except asyncpg.UndefinedTableError:
        return 0


# -- correctness: the instructions read back -----------------------------------------------------


class DeliveryCheck:
    """Every instruction of one event held against what the fleet says it must be."""

    def __init__(self, fleet: EnrolledFleet, index: int, event: EventPlan):
        self.fleet = fleet
        self.event = event
        self.bit = reached_bit(index)
        precool = fleet.program.events.precool
        self.precool = (event.start - timedelta(minutes=precool.max_minutes), -precool.offset_f)
        self.seen: set[str] = set()
        self.by_provider: Counter[str] = Counter()
        self.reached = 0  # distinct thermostats instructed that had to be
        self.duplicates = 0
        self.not_to_reach: Counter[str] = Counter()  # instructed though they must not be, by why
        self.wrong: Counter[str] = Counter()  # instructions with a field not as expected, by field
        self.examples: list[str] = []
        self.precools: Counter[str] = Counter()  # by rate kind and whether told to precool

    def see(self, provider: str, instruction: dict) -> None:
        serial = instruction["thermostat_serial"]
        self.by_provider[provider] += 1
        if serial in self.seen:
            self.duplicates += 1
            return
        self.seen.add(serial)
        code = self.fleet.expected.get(serial)
        if code is None or not code & self.bit:
            self.not_to_reach["not in the program" if code is None else "not in effect on the event's day"] += 1
            self._example(f"{provider}/{serial} must not be instructed")
            return
        self.reached += 1
        tou = bool(code & TOU)
        told = (instruction["precool_start"], instruction["precool_offset_f"])
        self.precools[f"{'TOU' if tou else 'other'} rate, {'precool' if told[0] else 'no precool'}"] += 1
        expected = {
            "provider": PROVIDER_NAMES[code & PROVIDER_BITS], "service_account_id": account_of(serial),
            "action": "SCHEDULE", "program_id": PROGRAM_ID, "start": self.event.start, "end": self.event.end,
            "setpoint_offset_f": SETPOINT_OFFSET_F, "issued_at": CLOCK_NOW,
            "precool": self.precool if not tou or self.event.tou_precool else (None, 0),
        }
        actual = {**instruction, "provider": provider, "precool": told}
        for name, value in expected.items():
            if actual[name] != value:
                self.wrong[name] += 1
                self._example(f"{provider}/{serial} {name} {actual[name]!r}, expected {value!r}")

    def _example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    def summary(self, expected: Counter[str], expected_tou: int) -> dict:
        return {
            "instructions": sum(self.by_provider.values()),
            "expected": sum(expected.values()),
            "by_provider": {provider: self.by_provider.get(provider, 0) for provider in PROVIDERS},
            "expected_by_provider": {provider: expected.get(provider, 0) for provider in PROVIDERS},
            "duplicates": self.duplicates,
            "missing": sum(expected.values()) - self.reached,
            "not_to_reach": dict(self.not_to_reach),
            "wrong": dict(self.wrong),
            "precools": dict(self.precools),
            "expected_tou": expected_tou,
            "tou_precool": self.event.tou_precool,
            "examples": self.examples,
        }


async def read_instructions(settings: ServiceSettings, topics: dict[str, TopicSpec], fleet: EnrolledFleet) -> dict:
    """Every instruction of both events, checked; the count of any other."""
    progress("dispatch: reading every instruction back")
    started = time.perf_counter()
    checks = {event.event_id: DeliveryCheck(fleet, index, event) for index, event in enumerate(fleet.events)}
    others = Counter()
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        ends = {provider: await counter.count(topics[DISPATCH.format(provider_id=provider)]) for provider in PROVIDERS}
    read = 0
    for provider in PROVIDERS:
        async for record in read_all(settings, DISPATCH.format(provider_id=provider), ends[provider]):
            read += 1
            check = checks.get(record.value["event_id"]) if isinstance(record.value, dict) else None
            if check is None:
                others["undecodable" if not isinstance(record.value, dict) else "another event"] += 1
            else:
                check.see(provider, record.value)
    outputs = {
        "read": read,
        "other_records": dict(others),
        "events": {event.event_id: checks[event.event_id].summary(fleet.reached(index), fleet.reached_tou(index))
                   for index, event in enumerate(fleet.events)},
    }
    for event_id, summary in outputs["events"].items():
        for example in summary["examples"][:5]:
            progress(f"  {event_id}: {example}")
    progress(f"dispatch: read back {read:,} instructions in {time.perf_counter() - started:.1f} s")
    return outputs


# -- the report ----------------------------------------------------------------------------------


def report(fleet: EnrolledFleet, load_average: tuple[float, float, float], preload: dict, service: DispatchRun,
           outputs: dict) -> dict:
    measured = service.fan_outs[0] if service.fan_outs else None
    checks = {"measured event fanned out": measured is not None and measured.complete,
              "profiled event fanned out": len(service.fan_outs) > 1 and service.fan_outs[1].complete,
              "no dead letters": service.dead_letters == 0,
              "no instructions of other events": not outputs["other_records"]}
    for event_id, summary in outputs["events"].items():
        checks |= event_checks(event_id, summary)
    if measured is not None:
        checks["projection rows (dispatch_devices)"] = measured.projection_after is not None
    result = {
        "benchmark": "dispatch",
        "ok": all(checks.values()),
        "records": fleet.thermostats,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average},
        "fleet": {
            "thermostats": fleet.thermostats, "accounts_enrolled": fleet.accounts, "by_provider": dict(fleet.by_provider),
            "kinds": dict(fleet.kinds), "tou_thermostats_in_program": fleet.tou_thermostats,
            "program_providers": sorted(fleet.program.providers),
        },
        "preload": preload,
        "service": service_figures(service),
        "checks": checks,
        "outputs": outputs,
        "profile": next((fan_out.profile for fan_out in service.fan_outs if fan_out.event.profiled), {}),
    }
    if measured is not None and measured.complete:
        result["targets"] = {f"SCHEDULE to last instruction < {TARGET_SECONDS:.0f} s": measured.last_after < TARGET_SECONDS}
    result["table"] = table_rows(result)
    return result


def event_checks(event_id: str, summary: dict) -> dict[str, bool]:
    tou_without = summary["precools"].get("TOU rate, no precool", 0)
    tou_expected_without = 0 if summary["tou_precool"] else summary["expected_tou"]
    return {
        f"{event_id}: one instruction per thermostat reached": (summary["instructions"] == summary["expected"]
                                                              and summary["by_provider"] == summary["expected_by_provider"]),
        f"{event_id}: none twice, none missing": summary["duplicates"] == summary["missing"] == 0,
        f"{event_id}: none to a thermostat not in effect or not in the program": not summary["not_to_reach"],
        f"{event_id}: every field as expected": not summary["wrong"],
        f"{event_id}: TOU accounts without precool": tou_without == tou_expected_without,
    }


def service_figures(service: DispatchRun) -> dict:
    ingest_records = service.ingest_timeline[-1][1] if service.ingest_timeline else 0
    return {
        "ready_after_s": round(service.ready, 2) if service.ready is not None else None,
        "ingest": {
            "records": ingest_records,
            "first_in_after_s": round(service.first_in, 2) if service.first_in is not None else None,
            "ingested_after_s": round(service.ingested, 2) if service.ingested is not None else None,
            "seconds": round(service.ingested - service.first_in, 2),
            "records_per_s": round(ingest_records / (service.ingested - service.first_in)),
            "cpu_s": round(service.cpu_at_ingested - service.cpu_at_first_in, 2),
            "cpu_us_per_record": round((service.cpu_at_ingested - service.cpu_at_first_in) / ingest_records * 1e6, 1),
            "peak_rss_mib": round(service.rss_after_ingest_mib, 1),
            "timeline": service.ingest_timeline,
        },
        "fan_outs": [fan_out_figures(fan_out) for fan_out in service.fan_outs],
        "cpu_s_total": round(service.cpu_total, 2),
        "peak_rss_mib": round(service.peak_rss_mib, 1),
        "dead_letters": service.dead_letters,
        "instructions_out": service.instructions_out,
    }


def fan_out_figures(fan_out: FanOut) -> dict:
    figures = {
        "event_id": fan_out.event.event_id,
        "profiled": fan_out.event.profiled,
        "complete": fan_out.complete,
        "expected": fan_out.expected,
        "instructions_out": fan_out.instructions_out,
        "lifecycle_status": fan_out.lifecycle["status"] if fan_out.lifecycle else None,
        "first_instruction_after_s": round(fan_out.first_after, 3) if fan_out.first_after is not None else None,
        "last_instruction_after_s": round(fan_out.last_after, 3) if fan_out.last_after is not None else None,
        "on_topics_after_s": round(fan_out.on_topics_after, 3) if fan_out.on_topics_after is not None else None,
        "projection_after_last_instruction_s": (round(fan_out.projection_after, 2)
                                                if fan_out.projection_after is not None else None),
        "cpu_s": round(fan_out.cpu_s, 2),
        "machine_cpu_busy_share": round(fan_out.machine_busy_share, 3),
        "peak_rss_mib": round(fan_out.peak_rss_mib, 1),
        "timeline": fan_out.timeline,
    }
    if fan_out.complete:
        seconds = fan_out.on_topics_after
        figures |= {
            "instructions_per_s": round(fan_out.expected / fan_out.last_after),
            # Instructions are stamped as each batch is handed to the producer: under a second apart, one batch.
            "instructions_per_s_first_to_last": (round(fan_out.expected / (fan_out.last_after - fan_out.first_after))
                                                 if fan_out.last_after - fan_out.first_after >= 1 else None),
            "cpu_utilisation": round(fan_out.cpu_s / seconds, 3),
            "cpu_us_per_instruction": round(fan_out.cpu_s / fan_out.expected * 1e6, 1) if fan_out.expected else None,
        }
    return figures


def table_rows(result: dict) -> list[list[str]]:
    service, fleet, cpus = result["service"], result["fleet"], result["machine"]["cpus"]
    ingest, checks = service["ingest"], result["checks"]

    def status(met: bool) -> str:
        return "met" if met else "NOT MET"

    def ok(name: str) -> str:
        return "ok" if checks.get(name) else "WRONG"

    def seconds(value: float | None) -> str:
        return f"{value:.2f} s" if value is not None else "never"

    rows = [
        ["thermostats / enrolled accounts", f"{fleet['thermostats']:,} / {fleet['accounts_enrolled']:,}", "", ""],
        ["thermostats by provider", ", ".join(f"{provider} {count:,}" for provider, count in fleet["by_provider"].items()),
         "", ""],
        ["pre-load (not timed)", f"{result['preload']['records_per_s']:,} rec/s", "", ""],
        ["ingest: accounts + enrollment states in", f"{ingest['records_per_s']:,} rec/s ({ingest['records']:,} in "
         f"{ingest['seconds']:.1f} s)", "", ""],
        ["ingest: worker CPU per record", f"{ingest['cpu_us_per_record']} µs", "", ""],
        ["worker peak RSS after ingest", f"{ingest['peak_rss_mib']:.0f} MiB", "", ""],
    ]
    for fan_out, (event_id, summary) in zip(service["fan_outs"], result["outputs"]["events"].items()):
        label = "profiled event" if fan_out["profiled"] else "measured event"
        if fan_out["profiled"]:
            rows.append([f"{label} (py-spy sampling): SCHEDULE → last instruction",
                         seconds(fan_out["last_instruction_after_s"]), "", ""])
        elif fan_out["complete"]:
            last = fan_out["last_instruction_after_s"]
            rows += [
                [f"{label}: thermostats reached", f"{fan_out['expected']:,}", "", ""],
                [f"{label}: SCHEDULE → first instruction", seconds(fan_out["first_instruction_after_s"]), "", ""],
                [f"{label}: SCHEDULE → last instruction", seconds(last), f"< {TARGET_SECONDS:.0f} s",
                 status(last < TARGET_SECONDS)],
                [f"{label}: SCHEDULE → all on the topics (polled)", seconds(fan_out["on_topics_after_s"]), "", ""],
                [f"{label}: instructions/s (SCHEDULE → last)", f"{fan_out['instructions_per_s']:,} /s", "", ""],
                [f"{label}: instructions/s (first → last)", f"{fan_out['instructions_per_s_first_to_last']:,} /s"
                 if fan_out["instructions_per_s_first_to_last"] else "n/a (one batch)", "", ""],
                [f"{label}: worker CPU", f"{fan_out['cpu_s']:.1f} s ({fan_out['cpu_utilisation']:.0%} of a core, "
                 f"{fan_out['cpu_us_per_instruction']} µs per instruction)", "", ""],
                [f"{label}: machine CPU busy", f"{fan_out['machine_cpu_busy_share']:.0%} of {cpus} CPUs", "", ""],
                [f"{label}: worker peak RSS", f"{fan_out['peak_rss_mib']:.0f} MiB", "", ""],
                [f"{label}: projection complete after last instruction",
                 seconds(fan_out["projection_after_last_instruction_s"]), "",
                 ok("projection rows (dispatch_devices)")],
            ]
        else:
            rows.append([f"{label}: SCHEDULE → last instruction", "did not finish", f"< {TARGET_SECONDS:.0f} s",
                         "NOT MET"])
        by_provider = ", ".join(f"{provider} {count:,}" for provider, count in summary["by_provider"].items())
        expected = ", ".join(f"{count:,}" for count in summary["expected_by_provider"].values())
        tou_without = summary["precools"].get("TOU rate, no precool", 0)
        rows += [
            [f"{label}: instructions by provider", by_provider, f"= {expected}",
             ok(f"{event_id}: one instruction per thermostat reached")],
            [f"{label}: thermostats instructed twice / never", f"{summary['duplicates']:,} / {summary['missing']:,}",
             "0 / 0", ok(f"{event_id}: none twice, none missing")],
            [f"{label}: instructed though ended, not started or other program",
             f"{sum(summary['not_to_reach'].values()):,}", "0",
             ok(f"{event_id}: none to a thermostat not in effect or not in the program")],
            [f"{label}: instructions with a field not as expected", f"{sum(summary['wrong'].values()):,}", "0",
             ok(f"{event_id}: every field as expected")],
            [f"{label}: TOU accounts without precool", f"{tou_without:,}",
             f"= {0 if summary['tou_precool'] else summary['expected_tou']:,}",
             ok(f"{event_id}: TOU accounts without precool")],
        ]
    rows += [
        ["worker peak RSS (whole run)", f"{service['peak_rss_mib']:.0f} MiB", "", ""],
        ["worker CPU (whole run)", f"{service['cpu_s_total']:.1f} s", "", ""],
        ["dead letters", f"{service['dead_letters']:,}", "0", ok("no dead letters")],
    ]
    return rows
