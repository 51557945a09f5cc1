"""`make demo`: one summer day of household meter reads through the telemetry service.

What it shows, on the local stack (`make up`) and nothing else:

- the telemetry service running as a real process on a simulated clock, on a private copy of
  the topics (suffix ``-demo-<hex6>``), so reruns never mix with earlier runs;
- one local day of the Green Button sample year (data/demo, six household load profiles) spread
  over ~60 service accounts, each scaled by its own factor: most meters hourly in Wh, a few on
  15-minute intervals, some reporting kWh (normalized to kWh by the service);
- the day streamed hour by hour: the clock ticks to each hour's end + 5 min, then that hour's
  reads go out, with one progress line per hour;
- what a real feed carries too, labelled as it goes: estimated reads revised later, an exact
  re-delivery, a late old revision, a negative value, an unknown unit, a misaligned interval, a
  meter with a fast clock and bytes that are not Avro; and thermostats on two providers' topics
  (their midnight states go first, and the demo waits until the service, which subscribes to
  every provider's topic by pattern, has reported them);
- at the end, read back from the service's outputs and checked against what was sent: clean
  intervals vs dead letters by reason code, the reconciliation counters, the day's load per
  profile (kWh, peak hour) from the clean output, and the device status changes.

Run: ``python -m demo [--accounts 60] [--day 2011-07-20]``. Exits 0 when everything came out as
expected, 1 when it did not or the service failed (its log is in var/log/demo-telemetry.log),
2 for a day outside the sample year, 130 on Ctrl-C (the service is stopped in every case).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import socket
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

from aiokafka.errors import KafkaError

from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE
from gridflex.kafka_io import RecordProducer, read_records
from gridflex.processes import ServiceFailed, ServiceProcess, isolated_env, isolated_topics
from gridflex.settings import ServiceSettings
from gridflex.topics import CLOCK, DEAD_LETTERS, DEVICE_STATUS, METER_INTERVALS, METER_READS

from demo.greenbutton import SAMPLE_YEAR_CSV, OutsideSampleYear, SampleYear
from demo.report import Outputs, Report, TelemetryMetrics, decoded
from demo.scenario import MIN_ACCOUNTS, DayScenario, Outgoing, SimulatedHour, build_day

PROVIDERS = ("energyhub", "resideo")
LOG_PATH = REPO_ROOT / "var" / "log" / "demo-telemetry.log"
CLOCK_TIMEOUT_S = 10.0  # the service's clock follower reads a tick within a poll or two
HOUR_TIMEOUT_S = 60.0  # for the service to handle one hour's reads (a rebalance can pause it for seconds)
QUIET_S = 5.0  # … or to show no progress at all, short of handling them
DEVICE_TIMEOUT_S = 60.0  # partner topics are discovered every 10 s, then subscribed after a rebalance


class DemoFailed(RuntimeError):
    """The demo could not complete; the message says why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=60, help="service accounts to simulate (default 60)")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2011, 7, 20),
                        help="a local day of the 2011 sample year (default 2011-07-20, a Wednesday)")
    parser.add_argument("--seed", type=int, default=2011, help="seed for the per-account factors and noise")
    parser.add_argument("--web-port", type=int, default=8101, help="the telemetry service's /metrics port")
    args = parser.parse_args(argv)
    if args.accounts < MIN_ACCOUNTS:
        parser.error(f"--accounts must be at least {MIN_ACCOUNTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # aiokafka logs retries it recovers from (e.g. a new topic's leader not elected yet); not news here.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started = time.monotonic()
    try:
        scenario = build_day(SampleYear.load(), args.day, args.accounts, args.seed)
    except OutsideSampleYear as exc:
        print(f"demo: {exc.args[0]}; pick a --day in 2011", file=sys.stderr)
        return 2
    suffix = f"-demo-{secrets.token_hex(3)}"
    settings = ServiceSettings(topic_suffix=suffix)
    zone = scenario.hours[0].start.astimezone(LOCAL_ZONE).tzname()
    introduce(scenario, settings, args.web_port, zone)

    if port_in_use(args.web_port):
        print(f"\ndemo: port {args.web_port} is taken (another telemetry service?); "
              "stop it or pass --web-port", file=sys.stderr)
        return 1
    service = ServiceProcess("telemetry", isolated_env(suffix), web_port=args.web_port, log_path=LOG_PATH)
    try:
        asyncio.run(prepare(settings, scenario))
        mark_log(suffix)
        print("\nstarting the telemetry service … ", end="", flush=True)
        ready_since = time.monotonic()
        service.start()
        print(f"up in {time.monotonic() - ready_since:.1f} s (pid {service.process.pid})")
        metrics, outputs = asyncio.run(stream_day(settings, service, scenario, zone))
    except ServiceFailed as exc:
        what, _, tail = str(exc).partition("\n")
        print(f"\n\ndemo FAILED: {what.rstrip(':')}. The end of its log:\n{readable_log(tail)}\n\n"
              f"full log: {relative(LOG_PATH)}", file=sys.stderr)
        return 1
    except DemoFailed as exc:
        log_hint = f"\nservice log: {relative(LOG_PATH)}" if service.process else ""
        print(f"\n\ndemo FAILED: {exc}{log_hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n\ndemo interrupted; stopping the telemetry service (log: {relative(LOG_PATH)})", file=sys.stderr)
        return 130
    finally:
        service.stop()

    report = Report(scenario, metrics, outputs, zone, suffix)
    print(report.render())
    elapsed = time.monotonic() - started
    print(f"\nservice log: {relative(LOG_PATH)} (this run's topics and consumer group end in {suffix})")
    if report.failures:
        print(f"\ndemo FAILED after {elapsed:.0f} s: {len(report.failures)} check(s) did not hold:", file=sys.stderr)
        for failure in report.failures:
            print(f"  ✗ {failure}", file=sys.stderr)
        return 1
    print(f"demo OK in {elapsed:.0f} s: all {len(report.checks)} checks held")
    return 0


def introduce(scenario: DayScenario, settings: ServiceSettings, web_port: int, zone: str) -> None:
    accounts = scenario.accounts
    quarter = sum(1 for a in accounts if a.interval_seconds == 900)
    kwh = sum(1 for a in accounts if a.unit == "KWH")
    rows = [
        ["day", f"{scenario.day:%A %Y-%m-%d}, America/Los_Angeles ({len(scenario.hours)} hours, {zone})"],
        ["data", f"{relative(SAMPLE_YEAR_CSV)}: Green Button sample year, "
                 f"{len({a.profile for a in accounts})} household load profiles (Apache-2.0)"],
        ["accounts", f"{len(accounts)} service accounts, profiles round-robin, each scaled ×0.8–1.3; "
                     f"{quarter} on 15-minute meters, {kwh} reporting kWh, the rest hourly Wh"],
        ["topics", f"private copies with suffix {settings.topic_suffix} "
                   f"(e.g. {METER_READS}{settings.topic_suffix})"],
        ["service", f"telemetry, simulated clock, http://127.0.0.1:{web_port}/metrics, "
                    f"log {relative(LOG_PATH)}"],
    ]
    season = "summer " if 6 <= scenario.day.month <= 9 else ""
    print(f"gridflex demo: one {season}day of meter reads through the telemetry service\n")
    for name, text in rows:
        print(f"  {name:<9} {text}")


async def prepare(settings: ServiceSettings, scenario: DayScenario) -> None:
    """Create this run's topics; start the clock at the beginning of the day."""
    try:
        await isolated_topics(settings, providers=PROVIDERS)
        async with RecordProducer(settings) as producer:
            await (await producer.send(CLOCK, "clock", {"now": scenario.hours[0].start}))
    except KafkaError as exc:
        raise DemoFailed(f"Kafka at {settings.kafka_bootstrap} did not answer ({exc!r}); is the stack up? "
                         "`make up` starts it") from None


def mark_log(suffix: str) -> None:
    """The service appends to its log; a line marks where this run begins."""
    LOG_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOG_PATH.open("a") as log:
        log.write(f"# ---- gridflex demo run {suffix}, started {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} ----\n")


async def stream_day(
    settings: ServiceSettings, service: ServiceProcess, scenario: DayScenario, zone: str
) -> tuple[TelemetryMetrics, Outputs]:
    async with RecordProducer(settings) as producer:
        await open_day(producer, service, scenario)

        print(f"\nstreaming {scenario.day} hour by hour (clock → each hour's end + 5 min, then its reads):\n")
        header = (f"  {'hour (' + zone + ')':<15}  {'reads':>5}  {'sent so far':>11}  {'intervals out':>13}  "
                  f"{'dropped':>7}  {'dead letters':>12}  {'device changes':>14}")
        print(header)
        print("  " + "─" * (len(header) - 2))
        sent, handled = 0, 0
        for hour in scenario.hours:
            await (await producer.send(CLOCK, "clock", {"now": hour.tick}))
            await wait_for_clock(service, hour.tick)
            await send_records(producer, [*hour.meter_reads, *hour.thermostat_states])
            sent += len(hour.meter_reads)
            metrics = await wait_for_reads(service, handled + len(hour.meter_reads))
            progress(hour, sent, handled, metrics)
            handled = metrics.reads_handled

    # Everything sent is handled by now, unless the service fell behind or dropped something.
    await wait_for_reads(service, sent)
    expected_changes = len(scenario.expected_device_changes())
    metrics = await wait_until(service, lambda m: sum(m.device_changes.values()) >= expected_changes and m.settled,
                               QUIET_S)
    metrics = metrics or await scrape(service)

    print("\nreading back the service's output topics …")
    intervals, dead_letters, statuses = await asyncio.gather(
        collect(settings, METER_INTERVALS, metrics.intervals_out),
        collect(settings, DEAD_LETTERS, metrics.dead_letters_out),
        collect(settings, DEVICE_STATUS, metrics.device_statuses_out),
    )
    (intervals, bad_intervals), (dead_letters, bad_letters), (statuses, bad_statuses) = (
        decoded(intervals), decoded(dead_letters), decoded(statuses))
    outputs = Outputs(
        intervals=intervals,
        dead_letters=distinct(dead_letters, ("source_topic", "source_partition", "source_offset")),
        device_statuses=distinct(statuses, ("provider_id", "thermostat_serial", "observed_at", "change")),
        undecodable=bad_intervals + bad_letters + bad_statuses,
    )
    return metrics, outputs


async def open_day(producer: RecordProducer, service: ServiceProcess, scenario: DayScenario) -> None:
    """Send the thermostats' midnight states and wait until the service reports them.

    The service subscribes to the providers' topics by pattern; once the first device changes
    come out, it is subscribed and settled.
    """
    await send_records(producer, scenario.opening_states)
    expected = sum(len(record.changes) for record in scenario.opening_states)
    print(f"waiting for the service to report the thermostats of {', '.join(PROVIDERS)} … ", end="", flush=True)
    waited = time.monotonic()
    metrics = await wait_until(service, lambda m: sum(m.device_changes.values()) >= expected, DEVICE_TIMEOUT_S)
    if metrics is None:
        raise DemoFailed(f"no device status change came out within {DEVICE_TIMEOUT_S:.0f} s of the thermostats' "
                         "midnight states: the service did not subscribe to the partner topics")
    await service_healthy(service)
    print(f"{time.monotonic() - waited:.1f} s ({len(scenario.opening_states)} thermostats first seen)")


async def wait_for_reads(service: ServiceProcess, count: int) -> TelemetryMetrics:
    """The metrics once the service has handled ``count`` reads in all, or has gone quiet short of it."""
    deadline, metrics = time.monotonic() + HOUR_TIMEOUT_S, None
    last_snapshot, quiet_since = None, time.monotonic()
    while True:
        try:
            metrics = await scrape(service)
        except OSError:  # the web server can be briefly unavailable while the worker rebalances
            pass
        else:
            if metrics.reads_handled >= count and metrics.settled:
                return metrics
            if metrics.snapshot != last_snapshot:
                last_snapshot, quiet_since = metrics.snapshot, time.monotonic()
        now = time.monotonic()
        if now - quiet_since > QUIET_S or now > deadline:
            if metrics is None:
                raise DemoFailed(f"the service's /metrics did not answer for {HOUR_TIMEOUT_S:.0f} s")
            return metrics
        await asyncio.sleep(0.1)


async def wait_for_clock(service: ServiceProcess, tick: datetime) -> None:
    """Until the service's clock (its `gridflex_clock_now_seconds` gauge) has read ``tick``."""
    deadline = time.monotonic() + CLOCK_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in service.metrics().splitlines():
            if line.startswith("gridflex_clock_now_seconds{") and float(line.rsplit(" ", 1)[1]) >= tick.timestamp():
                return
        await asyncio.sleep(0.05)
    raise DemoFailed(f"the service's clock did not reach {tick.isoformat()} within {CLOCK_TIMEOUT_S:.0f} s")


async def send_records(producer: RecordProducer, records: list[Outgoing]) -> None:
    """Send, flush, and note where each record landed (to match dead letters to what was sent)."""
    deliveries = []
    for record in records:
        if isinstance(record.value, bytes):
            delivery = await producer.send_bytes(record.topic, record.key.encode(), record.value)
        else:
            delivery = await producer.send(record.topic, record.key, record.value)
        deliveries.append((record, delivery))
    await producer.flush()
    for record, delivery in deliveries:
        metadata = await delivery
        record.position = (metadata.partition, metadata.offset)


def progress(hour: SimulatedHour, sent: int, handled_before: int, m: TelemetryMetrics) -> None:
    print(f"  {hour.label:<15}  {len(hour.meter_reads):>5}  {sent:>11,}  {m.intervals_out:>13,}  {m.dropped:>7}  "
          f"{m.meter_dead_letters:>12}  {sum(m.device_changes.values()):>14}")
    for record in hour.notes:
        print(f"  {'':<15}  ↳ {record.kind:<16} {record.note}")
    if m.reads_handled - handled_before < len(hour.meter_reads):
        print(f"  {'':<15}  ⚠ the service went quiet having handled {m.reads_handled - handled_before} "
              f"of this hour's {len(hour.meter_reads)} reads")


async def scrape(service: ServiceProcess) -> TelemetryMetrics:
    if service.process.poll() is not None:
        raise ServiceFailed(f"telemetry exited with {service.process.returncode}:\n{service.log_tail()}")
    return TelemetryMetrics.parse(await asyncio.to_thread(service.metrics))


async def service_healthy(service: ServiceProcess) -> None:
    """Until ``/health`` answers 200 (not rebalancing)."""
    await asyncio.to_thread(service.wait_ready, HOUR_TIMEOUT_S)


async def wait_until(service: ServiceProcess, condition, timeout: float) -> TelemetryMetrics | None:
    """The service's metrics once ``condition`` holds for them, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            metrics = await scrape(service)
        except OSError:  # the web server can be briefly unavailable while the worker rebalances
            metrics = None
        if metrics is not None and condition(metrics):
            return metrics
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)


async def collect(settings: ServiceSettings, topic: str, expect: int) -> list:
    if expect == 0:
        return []
    return [record async for record in read_records(settings, topic, expect=expect, idle_timeout=5.0, max_wait=60.0)]


def distinct(values: list[dict], fields: tuple[str, ...]) -> list[dict]:
    """One record per identity: a record re-emitted after a rebalance is the same record."""
    return list({tuple(value[f] for f in fields): value for value in values}.values())


def readable_log(tail: str, lines: int = 15) -> str:
    """The service logs JSON objects; one short line each for people."""
    out = []
    for line in tail.splitlines()[-lines:]:
        try:
            entry = json.loads(line)
            event = str(entry.pop("event", "")).splitlines()[0]
            line = f"{entry.get('timestamp', '')[11:23]} {entry.get('level', ''):<7} {entry.get('logger', '')}: {event}"
            if "exception" in entry:
                line += "\n" + entry["exception"]
        except (ValueError, AttributeError):
            pass
        out.append(f"  | {line[:200]}")
    return "\n".join(out)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
