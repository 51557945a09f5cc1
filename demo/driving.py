"""What the demo does to the services it runs: tick the clock, send records, watch /metrics,
read output topics back. Shared by the telemetry day and the enrollment weeks."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, TypeVar

from gridflex.kafka_io import RecordProducer, read_records
from gridflex.processes import ServiceFailed, ServiceProcess
from gridflex.settings import ServiceSettings
from gridflex.topics import CLOCK

from demo.scenario import Outgoing

CLOCK_TIMEOUT_S = 10.0  # a service's clock follower reads a tick within a poll or two
Metrics = TypeVar("Metrics")


class DemoFailed(RuntimeError):
    """The demo could not complete; the message says why."""


async def tick(producer: RecordProducer, services: list[ServiceProcess], now: datetime) -> None:
    """Publish ``now`` on the clock topic and wait until every service has read it."""
    await (await producer.send(CLOCK, "clock", {"now": now}))
    for service in services:
        await wait_for_clock(service, now)


async def wait_for_clock(service: ServiceProcess, now: datetime) -> None:
    """Until the service's clock (its `gridflex_clock_now_seconds` gauge) has read ``now``."""
    deadline = time.monotonic() + CLOCK_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in service.metrics().splitlines():
            if line.startswith("gridflex_clock_now_seconds{") and float(line.rsplit(" ", 1)[1]) >= now.timestamp():
                return
        await asyncio.sleep(0.05)
    raise DemoFailed(f"the {service.service} service's clock did not reach {now.isoformat()} "
                     f"within {CLOCK_TIMEOUT_S:.0f} s")


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


async def scrape(service: ServiceProcess, parse: Callable[[str], Metrics]) -> Metrics:
    if service.process.poll() is not None:
        raise ServiceFailed(f"{service.service} exited with {service.process.returncode}:\n{service.log_tail()}")
    return parse(await asyncio.to_thread(service.metrics))


async def wait_until(service: ServiceProcess, parse: Callable[[str], Metrics], condition: Callable[[Metrics], bool],
                     timeout: float) -> Metrics | None:
    """The service's metrics once ``condition`` holds for them, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            metrics = await scrape(service, parse)
        except OSError:  # the web server can be briefly unavailable while the worker rebalances
            metrics = None
        if metrics is not None and condition(metrics):
            return metrics
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)


async def wait_for_progress(service: ServiceProcess, parse: Callable[[str], Metrics],
                            done: Callable[[Metrics], bool], timeout: float, quiet: float,
                            *, quiet_once_moved: bool = False) -> Metrics:
    """The service's metrics once ``done`` holds for them, or once they have not changed for
    ``quiet`` seconds (with ``quiet_once_moved``: only after they changed at least once), or
    after ``timeout``. Metrics have a ``snapshot`` that changes whenever the service progresses."""
    deadline, metrics = time.monotonic() + timeout, None
    first_snapshot = last_snapshot = None
    quiet_since = time.monotonic()
    while True:
        try:
            metrics = await scrape(service, parse)
        except OSError:  # the web server can be briefly unavailable while the worker rebalances
            pass
        else:
            if done(metrics):
                return metrics
            first_snapshot = first_snapshot or metrics.snapshot
            if metrics.snapshot != last_snapshot:
                last_snapshot, quiet_since = metrics.snapshot, time.monotonic()
        now = time.monotonic()
        counts_as_quiet = not quiet_once_moved or last_snapshot != first_snapshot
        if (counts_as_quiet and now - quiet_since > quiet) or now > deadline:
            if metrics is None:
                raise DemoFailed(f"the {service.service} service's /metrics did not answer for {timeout:.0f} s")
            return metrics
        await asyncio.sleep(0.1)


async def collect(settings: ServiceSettings, topic: str, expect: int) -> list:
    """The first ``expect`` records of an output topic (fewer if no more come within a few seconds)."""
    if expect == 0:
        return []
    return [record async for record in read_records(settings, topic, expect=expect, idle_timeout=5.0, max_wait=60.0)]


def distinct(values: list[dict], fields: tuple[str, ...]) -> list[dict]:
    """One record per identity: a record re-emitted after a rebalance is the same record."""
    return list({tuple(value[f] for f in fields): value for value in values}.values())


def readable_log(tail: str, lines: int = 15) -> str:
    """The services log JSON objects; one short line each for people."""
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
