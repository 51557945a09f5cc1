"""Telemetry ingest throughput: meter reads in, clean meter intervals out, against a raw ceiling.

The issue: "1,000,000 meter reads pre-loaded on the input topic; records per second through the
ingestion service (input to clean topic), and, in the same run, a raw aiokafka
consume-and-produce passthrough of the same bytes (no decoding) as the ceiling. Report both and
the ratio. Target: ingestion ≥ 0.5 × the raw passthrough in the same run, and ≥ 30,000
records/s for one worker process on this machine. Report what you reach and where the time
goes (a profile)."

How (all topics private to the run, named with a ``-bench-<hex>`` suffix, deleted at the end):

1. pre-load the records (:mod:`bench.meter_reads`, ``BENCH_INGEST_RECORDS``, default 1,000,000)
   and one clock tick after all of them: the service runs on the simulated clock;
2. the ceiling (:mod:`bench.passthrough`): copy the input's bytes to a scratch topic; and the
   floor (:mod:`bench.rules_floor`): the service's codec and rules alone, on 100,000 records in
   memory. Together they bound what one process can do;
3. the service: one ``gridflex run telemetry`` worker process reads the same input; the clean
   topic's end offsets are polled every 0.25 s until it holds every record. The *ingestion*
   rate, held against the targets, runs from the first clean record seen to the last, less the
   15 s in which py-spy samples the worker (:mod:`bench.profiling`: sampling slows it); the
   rate over the whole run, while profiled, and from the worker's ``/health`` readiness are
   reported too. ``/proc`` gives the worker's CPU time and peak memory. The raw stacks stay in
   ``bench/results/ingest-py-spy-raw.txt`` (flamegraph.pl or speedscope read them);
4. correctness: exactly one clean interval per read, no dead letters.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field

from bench import RESULTS_DIR
from bench.console import progress, rate
from bench.meter_reads import MeterReadLoad
from bench.passthrough import pass_through
from bench.procstats import MachineCpu, cpu_seconds, peak_rss_mib
from bench.profiling import Sampler, py_spy_executable, service_areas, where_the_time_goes
from bench.rules_floor import measure_codec_and_rules
from bench.topics import RecordCounter, create_scratch_topic, preload_records, publish_clock_tick
from gridflex import REPO_ROOT
from gridflex.processes import ServiceFailed, ServiceProcess, free_port, isolated_env, isolated_topics
from gridflex.settings import ServiceSettings
from gridflex.topics import DEAD_LETTERS, METER_INTERVALS, METER_READS, TopicSpec, delete_topics_containing
from services.telemetry.settings import TelemetrySettings

DEFAULT_RECORDS = 1_000_000
TARGET_RECORDS_PER_S = 30_000
TARGET_SHARE_OF_CEILING = 0.5
PRELOAD_PROGRESS_EVERY = 100_000
POLL_INTERVAL_S = 0.25
SERVICE_PROGRESS_EVERY_S = 5.0
STALL_TIMEOUT_S = 60.0
PROFILE_SECONDS = 15
MIN_UNPROFILED_S = 5.0  # shorter than that without the profiler, the steady rate is the ingestion rate
RULES_FLOOR_RECORDS = 100_000
SERVICE_LOG = REPO_ROOT / "var" / "log" / "bench-telemetry.log"
PROFILE_STACKS = RESULTS_DIR / "ingest-py-spy-raw.txt"
# What the worker's CPU time is for: the frame nearest the leaf that names an area decides.
PROFILE_AREAS = service_areas("telemetry", [
    ("telemetry rules: validate, day key, reconcile, digest", ("services/telemetry/domain.py", "gridflex/calendar.py")),
    ("state: seen-intervals (rocksdict, JSON, changelog)", ("gridflex/state.py",)),
])


def run() -> dict:
    records = int(os.environ.get("BENCH_INGEST_RECORDS", DEFAULT_RECORDS))
    return asyncio.run(benchmark(records))


async def benchmark(records: int) -> dict:
    suffix = f"-bench-{secrets.token_hex(4)}"
    settings = ServiceSettings(topic_suffix=suffix)
    load_average = os.getloadavg()
    progress(f"ingest: {records:,} meter reads, topics suffixed {suffix}; load average {load_average[0]:.2f} "
             f"on {os.cpu_count()} CPUs (other work on the machine skews the figures)")
    topics = {spec.name.removesuffix(suffix): spec for spec in await isolated_topics(settings)}
    scratch = await create_scratch_topic(settings.kafka_bootstrap, topics[METER_READS], f"bench.passthrough{suffix}")
    try:
        load = MeterReadLoad(records)
        preload = await preload_meter_reads(settings, load, topics[METER_READS])
        await tick_after_the_load(settings, load)
        ceiling = await measure_ceiling(settings, topics[METER_READS], scratch, records)
        floor = measure_floor(records)
        service = await measure_service(settings, topics, records, py_spy_executable())
    finally:
        deleted = await delete_topics_containing(settings.kafka_bootstrap, suffix)
        shutil.rmtree(settings.data_dir / f"telemetry{suffix}", ignore_errors=True)
        progress(f"ingest: deleted {len(deleted)} topics of this run")
    print("\nwhere the time goes (telemetry worker):\n" + where_the_time_goes(service.profile) + "\n", flush=True)
    return report(records, load_average, preload, ceiling, floor, service)


# -- input ---------------------------------------------------------------------------------------


async def preload_meter_reads(settings: ServiceSettings, load: MeterReadLoad, topic: TopicSpec) -> dict:
    """Produce the whole load before anything is timed; deliveries are awaited once, at the end."""
    progress(f"ingest: pre-loading {load.records:,} meter reads ({len(load.accounts):,} accounts, {load.days} days)")
    seconds = await preload_records(settings, ((METER_READS, key, read) for key, read in load), PRELOAD_PROGRESS_EVERY,
                            total=load.records)
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        on_topic = await counter.count(topic)
    if on_topic != load.records:
        raise RuntimeError(f"pre-load: {topic.name} holds {on_topic:,} records, expected {load.records:,}")
    progress(f"ingest: pre-loaded {on_topic:,} records in {seconds:.1f} s ({rate(on_topic, seconds)})")
    return {"records": on_topic, "seconds": round(seconds, 2), "records_per_s": round(on_topic / seconds)}


async def tick_after_the_load(settings: ServiceSettings, load: MeterReadLoad) -> None:
    """The service waits for simulated time; "now" is after every interval of the load."""
    await publish_clock_tick(settings, load.clock_now)
    progress(f"ingest: clock tick {load.clock_now.isoformat()}")


# -- ceiling and floor ---------------------------------------------------------------------------


async def measure_ceiling(settings: ServiceSettings, source: TopicSpec, scratch: TopicSpec, records: int) -> dict:
    progress("ingest: raw passthrough (the ceiling)")
    machine_before = MachineCpu.read()
    ceiling = await pass_through(settings, source, scratch, records, group_id=f"bench-passthrough{settings.topic_suffix}")
    machine_busy = MachineCpu.read().busy_share_since(machine_before)
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        copied = await counter.count(scratch)
    if copied != records:
        raise RuntimeError(f"passthrough: {scratch.name} holds {copied:,} records, expected {records:,}")
    progress(f"ingest: raw passthrough {rate(ceiling.records, ceiling.seconds)} over {ceiling.seconds:.1f} s")
    return {**ceiling.as_dict(), "machine_cpu_busy_share": round(machine_busy, 3)}


def measure_floor(records: int) -> dict:
    floor = measure_codec_and_rules(TelemetrySettings(), MeterReadLoad(min(records, RULES_FLOOR_RECORDS)))
    progress(f"ingest: codec + rules alone (no Kafka, no Faust): {floor['records_per_s']:,} rec/s, "
             f"{floor['us_per_record']} µs per record")
    return floor


# -- the service under test ----------------------------------------------------------------------


@dataclass
class ServiceRun:
    """What was observed of one telemetry worker processing the load; times in seconds since its spawn."""

    spawned: float  # time.monotonic()
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (time, clean intervals out so far)
    ready: float | None = None
    first_output: float | None = None
    done: float | None = None  # when the clean topic held every record
    profile_window: tuple[float, float] | None = None
    cpu_at_first_output: float = 0.0
    cpu_at_done: float = 0.0
    peak_rss_mib: float = 0.0
    machine_busy_share: float = 0.0
    records_out: int = 0
    dead_letters: int = 0
    profile: dict = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.spawned

    @property
    def complete(self) -> bool:
        return self.done is not None

    def count_at(self, moment: float) -> int:
        """Clean intervals out at the last poll before ``moment``."""
        return max((count for polled, count in self.timeline if polled <= moment), default=0)

    def rate(self, start: float, end: float) -> float:
        return (self.count_at(end) - self.count_at(start)) / (end - start)

    def steady_rate(self) -> float:
        """From the first output to the last, profiled window included."""
        return self.rate(self.first_output, self.done)

    def unprofiled_rate(self) -> float | None:
        """From the first output to the last, the profiled window (the profiler slows the worker) left out."""
        if not self.profile_window:
            return self.steady_rate()
        start, end = max(self.profile_window[0], self.first_output), min(self.profile_window[1], self.done)
        seconds = self.done - self.first_output - (end - start)
        if seconds < MIN_UNPROFILED_S:
            return None
        records = self.count_at(self.done) - self.count_at(self.first_output) - (self.count_at(end) - self.count_at(start))
        return records / seconds

    def ingestion_rate(self) -> float:
        """The figure held against the targets: unprofiled if long enough, else the steady rate."""
        return self.unprofiled_rate() or self.steady_rate()


async def measure_service(settings: ServiceSettings, topics: dict[str, TopicSpec], records: int,
                          py_spy: str | None) -> ServiceRun:
    SERVICE_LOG.unlink(missing_ok=True)
    service = ServiceProcess(
        "telemetry", isolated_env(settings.topic_suffix), web_port=free_port(), log_path=SERVICE_LOG
    )
    progress(f"ingest: starting the telemetry worker (log: {SERVICE_LOG})")
    observed = ServiceRun(spawned=time.monotonic())
    machine_before = MachineCpu.read()
    starting = asyncio.create_task(asyncio.to_thread(start_when_ready, service))
    try:
        async with RecordCounter(settings.kafka_bootstrap) as counter:
            sampler = await watch_output(service, starting, counter, topics[METER_INTERVALS], records, observed, py_spy)
            observed.machine_busy_share = MachineCpu.read().busy_share_since(machine_before)
            if sampler is None:
                observed.profile = {"note": "no profile: py-spy is not available"}
            else:
                observed.profile = await sampler.stop()
                observed.profile_window = tuple(moment - observed.spawned for moment in sampler.window)
            observed.ready = await starting - observed.spawned
            observed.cpu_at_done = cpu_seconds(service.process.pid)
            observed.peak_rss_mib = peak_rss_mib(service.process.pid)
            await asyncio.to_thread(service.stop)  # flushes: count what it wrote after it stopped
            observed.records_out = await counter.count(topics[METER_INTERVALS])
            observed.dead_letters = await counter.count(topics[DEAD_LETTERS])
    finally:
        await asyncio.to_thread(service.stop)  # nothing left to do unless something above failed
    progress(f"ingest: worker stopped; {observed.records_out:,} intervals out, {observed.dead_letters:,} dead letters")
    return observed


async def watch_output(service: ServiceProcess, starting: asyncio.Task, counter: RecordCounter, output: TopicSpec,
                       records: int, observed: ServiceRun, py_spy: str | None) -> Sampler | None:
    """Poll the clean topic until it holds ``records``; start the profiler (if any) at the first output."""
    sampler, reported_ready, last_change, last_report = None, False, 0.0, 0.0
    while True:
        if starting.done() and starting.exception():
            raise starting.exception()
        check_alive(service)
        if starting.done() and not reported_ready:
            progress(f"  worker ready (/health) after {starting.result() - observed.spawned:.1f} s")
            reported_ready = True
        count, now = await counter.count(output), observed.now()
        if count != observed.count_at(now):
            last_change = now
        observed.timeline.append((round(now, 3), count))
        if count and observed.first_output is None:
            observed.first_output = now
            observed.cpu_at_first_output = cpu_seconds(service.process.pid)
            progress(f"  first intervals out after {now:.1f} s" + (f"; profiling for {PROFILE_SECONDS} s" if py_spy else ""))
            if py_spy:
                sampler = Sampler(py_spy, service.process.pid, PROFILE_SECONDS, PROFILE_STACKS, PROFILE_AREAS)
                await sampler.start()
        if count >= records:
            observed.done = now
            return sampler
        if observed.first_output is not None and now - last_change > STALL_TIMEOUT_S:
            progress(f"  no progress for {STALL_TIMEOUT_S:.0f} s at {count:,} / {records:,}: giving up")
            return sampler
        if observed.first_output is not None and now - last_report >= SERVICE_PROGRESS_EVERY_S:
            progress(f"  {count:,} / {records:,} intervals out ({rate(count, now - observed.first_output)} so far)")
            last_report = now
        await asyncio.sleep(POLL_INTERVAL_S)


def start_when_ready(service: ServiceProcess) -> float:
    """Start the worker, wait for its ``/health`` page; the time.monotonic() it became ready."""
    service.start()
    return time.monotonic()


async def ready_after(starting: asyncio.Task, spawned: float) -> float | None:
    """Seconds from spawn (time.monotonic()) to ``/health`` answering 200, for a ``starting`` task of
    :func:`start_when_ready`; None if it never did while the worker kept running."""
    try:
        return await starting - spawned
    except ServiceFailed as failure:
        if "not ready after" not in str(failure):
            raise
        return None


def check_alive(service: ServiceProcess) -> None:
    if service.process is not None and service.process.poll() is not None:
        raise RuntimeError(f"the {service.service} worker exited with {service.process.returncode}:\n"
                           f"{service.log_tail()}")


# -- the report ----------------------------------------------------------------------------------


def report(records: int, load_average: tuple[float, float, float], preload: dict, ceiling: dict, floor: dict,
           service: ServiceRun) -> dict:
    correct = service.complete and service.records_out == records and service.dead_letters == 0
    result = {
        "benchmark": "ingest",
        "ok": correct,
        "records": records,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average},
        "preload": preload,
        "passthrough": ceiling,
        "codec_and_rules": floor,
        # One process doing the passthrough's Kafka work and the rules' work, with nothing else.
        "bound_records_per_s": round(1 / (1 / ceiling["records_per_s"] + 1 / floor["records_per_s"])),
        "service": service_figures(records, service),
        "profile": service.profile,
    }
    if service.complete:
        steady = service.ingestion_rate()
        result["ratio"] = round(steady / ceiling["records_per_s"], 3)
        result["targets"] = {
            f"ingestion >= {TARGET_RECORDS_PER_S} rec/s": steady >= TARGET_RECORDS_PER_S,
            f"ingestion >= {TARGET_SHARE_OF_CEILING} x passthrough": result["ratio"] >= TARGET_SHARE_OF_CEILING,
        }
    result["table"] = table_rows(result)
    return result


def service_figures(records: int, service: ServiceRun) -> dict:
    figures = {
        "complete": service.complete,
        "records_out": service.records_out,
        "dead_letters": service.dead_letters,
        "ready_after_s": round(service.ready, 2) if service.ready is not None else None,
        "first_output_after_s": round(service.first_output, 2) if service.first_output is not None else None,
        "peak_rss_mib": round(service.peak_rss_mib, 1),
        "cpu_s_total": round(service.cpu_at_done, 2),
        "machine_cpu_busy_share": round(service.machine_busy_share, 3),
        "profile_window_s": service.profile_window,
        "timeline": service.timeline,
    }
    if service.complete:
        steady_seconds = service.done - service.first_output
        cpu_processing = service.cpu_at_done - service.cpu_at_first_output
        unprofiled = service.unprofiled_rate()
        figures |= {
            "ingestion_records_per_s": round(service.ingestion_rate()),
            "steady_records_per_s": round(service.steady_rate()),
            "steady_unprofiled_records_per_s": round(unprofiled) if unprofiled else None,
            "records_per_s_from_ready": round(records / (service.done - service.ready)),
            "steady_seconds": round(steady_seconds, 2),
            "cpu_s_processing": round(cpu_processing, 2),
            "cpu_utilisation_processing": round(cpu_processing / steady_seconds, 3),
            "cpu_us_per_record": round(cpu_processing / (records - service.count_at(service.first_output)) * 1e6, 1),
        }
        if service.profile_window:
            figures["records_per_s_while_profiled"] = round(service.rate(*service.profile_window))
    return figures


def table_rows(result: dict) -> list[list[str]]:
    service, ceiling, floor, cpus = result["service"], result["passthrough"], result["codec_and_rules"], result["machine"]["cpus"]

    def status(met: bool) -> str:
        return "met" if met else "NOT MET"

    rows = [
        ["records", f"{result['records']:,}", "", ""],
        ["pre-load (not timed)", f"{result['preload']['records_per_s']:,} rec/s", "", ""],
        ["raw passthrough (ceiling)", f"{ceiling['records_per_s']:,} rec/s", "", ""],
        ["codec + rules alone, in memory", f"{floor['records_per_s']:,} rec/s ({floor['us_per_record']} µs/rec)", "", ""],
        ["bound: passthrough + rules", f"{result['bound_records_per_s']:,} rec/s "
         f"({result['bound_records_per_s'] / ceiling['records_per_s']:.2f} x passthrough)", "", ""],
    ]
    if service["complete"]:
        ingestion, ratio = service["ingestion_records_per_s"], result["ratio"]
        rows += [
            ["ingestion (unprofiled, steady)", f"{ingestion:,} rec/s", f">= {TARGET_RECORDS_PER_S:,} rec/s",
             status(ingestion >= TARGET_RECORDS_PER_S)],
            ["ingestion / passthrough", f"{ratio:.3f}", f">= {TARGET_SHARE_OF_CEILING:.2f}",
             status(ratio >= TARGET_SHARE_OF_CEILING)],
            ["ingestion, whole steady run", f"{service['steady_records_per_s']:,} rec/s", "", ""],
            ["ingestion, while profiled", f"{service['records_per_s_while_profiled']:,} rec/s"
             if "records_per_s_while_profiled" in service else "not profiled", "", ""],
            ["ingestion, from /health ready", f"{service['records_per_s_from_ready']:,} rec/s", "", ""],
            ["processing duration", f"{service['steady_seconds']:.1f} s", "", ""],
            ["worker CPU while processing",
             f"{service['cpu_s_processing']:.1f} s ({service['cpu_utilisation_processing']:.0%} of a core)", "", ""],
            ["worker CPU per record", f"{service['cpu_us_per_record']} µs", "", ""],
        ]
    else:
        rows.append(["ingestion", "did not finish", f">= {TARGET_RECORDS_PER_S:,} rec/s", "NOT MET"])
    rows += [
        ["worker ready / first output", f"{service['ready_after_s']} s / {service['first_output_after_s']} s", "", ""],
        ["worker peak RSS", f"{service['peak_rss_mib']:.0f} MiB", "", ""],
        ["machine CPU busy, passthrough", f"{ceiling['machine_cpu_busy_share']:.0%} of {cpus} CPUs", "", ""],
        ["machine CPU busy, ingestion", f"{service['machine_cpu_busy_share']:.0%} of {cpus} CPUs", "", ""],
        ["clean intervals out", f"{service['records_out']:,}", f"= {result['records']:,}",
         "ok" if service["records_out"] == result["records"] else "WRONG"],
        ["dead letters", f"{service['dead_letters']:,}", "0", "ok" if service["dead_letters"] == 0 else "WRONG"],
    ]
    return rows
