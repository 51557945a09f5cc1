"""Telemetry ingestion service: the Faust app and its wiring.

- ``utility.meter-reads.v1`` → validate → reconcile revisions → ``gridflex.telemetry.meter-intervals.v1``
- ``partner.*.thermostat-state.v1`` → validate → status changes → ``gridflex.telemetry.device-status.v1``
- anything rejected → ``gridflex.dead-letters.v1`` with its reason

Delivery is at-least-once: offsets are committed only after the outputs and table changes of a
batch are flushed. A record read again after a crash is re-emitted with the same identity
(interval + revision), which every consumer drops.
"""

from __future__ import annotations

import time
from collections import defaultdict

from faust.types import EventT

from gridflex.codec import Undecodable
from gridflex.metrics import BATCH_SECONDS, RECORD_LATENCY, RECORDS_IN, RECORDS_OUT
from gridflex.streaming import ServiceRuntime, route_tables_to
from gridflex.topics import DEVICE_STATUS, METER_INTERVALS, METER_READS, THERMOSTAT_STATE, provider_of
from prometheus_client import Counter
from services.telemetry.domain import (
    DeviceSnapshot,
    MeterInterval,
    Rejection,
    SeenInterval,
    Verdict,
    conflict_rejection,
    device_changes,
    device_status,
    reconcile,
    validate_meter_read,
    validate_thermostat_state,
)
from services.telemetry.settings import TelemetrySettings

SERVICE = "telemetry"
INTERVALS_BY_VERDICT = Counter(
    "gridflex_telemetry_intervals", "Meter intervals by what reconciliation decided", ["verdict"]
)
DEVICE_CHANGES = Counter("gridflex_telemetry_device_changes", "Thermostat status changes emitted", ["change"])

settings = TelemetrySettings()
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app
limits = settings.limits()

meter_reads = runtime.topic(METER_READS)
meter_intervals = runtime.topic(METER_INTERVALS)
thermostat_states = runtime.partner_topics(THERMOSTAT_STATE)
device_statuses = runtime.topic(DEVICE_STATUS)

# Revision memory per meter and local day: {interval_start_ms: SeenInterval state}.
seen_intervals = app.Table(
    "seen-intervals", partitions=runtime.catalogue.spec(METER_READS).partitions
)
# Last accepted state per provider and thermostat.
devices = app.Table(
    "devices", partitions=runtime.catalogue.spec(THERMOSTAT_STATE).partitions
)

_verdict_counters = {verdict: INTERVALS_BY_VERDICT.labels(verdict.value) for verdict in Verdict}
_reads_in = RECORDS_IN.labels(SERVICE, METER_READS)
_intervals_out = RECORDS_OUT.labels(SERVICE, METER_INTERVALS)
_read_latency = RECORD_LATENCY.labels(SERVICE, METER_READS)
_batch_seconds = BATCH_SECONDS.labels(SERVICE)


@app.agent(meter_reads)
async def ingest_meter_reads(stream):
    await runtime.clock.wait_started()
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        started = time.perf_counter()
        await _ingest_meter_batch(events)
        _batch_seconds.observe(time.perf_counter() - started)


async def _ingest_meter_batch(events: list[EventT]) -> None:
    now = runtime.now()
    _reads_in.inc(len(events))
    by_day: dict[tuple[int, str], list[tuple[EventT, MeterInterval]]] = defaultdict(list)
    for event in events:
        result = _decoded(event.value) or validate_meter_read(event.value, now, limits)
        if isinstance(result, Rejection):
            await runtime.dead_letter(event, result.reason_code, result.reason)
        else:
            by_day[(event.message.partition, result.day_key)].append((event, result))

    for (_, day_key), items in by_day.items():
        route_tables_to(items[0][0])
        day = seen_intervals.get(day_key) or {}
        changed = False
        for event, interval in items:
            state = day.get(interval.slot)
            verdict, seen = reconcile(
                SeenInterval.from_state(state) if state else None, interval, event.message.partition, event.message.offset
            )
            _verdict_counters[verdict].inc()
            if verdict is Verdict.CONFLICT:
                rejection = conflict_rejection(interval)
                await runtime.dead_letter(event, rejection.reason_code, rejection.reason)
            elif verdict in (Verdict.NEW, Verdict.REVISION, Verdict.REPLAY):
                await meter_intervals.send(key=interval.service_account_id, value=interval.as_record(seen.supersedes))
                _intervals_out.inc()
                if verdict is not Verdict.REPLAY:
                    day[interval.slot] = seen.to_state()
                    changed = True
        if changed:
            seen_intervals[day_key] = day

    finished = time.time()
    for event in events:
        _read_latency.observe(max(finished - event.message.timestamp, 0.0))


@app.agent(thermostat_states)
async def ingest_thermostat_states(stream):
    await runtime.clock.wait_started()
    async for event in stream.events():
        provider_id = provider_of(event.message.topic)
        RECORDS_IN.labels(SERVICE, THERMOSTAT_STATE).inc()
        state = event.value
        rejection = _decoded(state) or validate_thermostat_state(state, runtime.now(), limits)
        if rejection:
            await runtime.dead_letter(event, rejection.reason_code, rejection.reason)
            continue
        key = f"{provider_id}/{state['thermostat_serial']}"
        previous = devices.get(key)
        changes, snapshot = device_changes(DeviceSnapshot.from_state(previous) if previous else None, state)
        for change in changes:
            await device_statuses.send(key=state["thermostat_serial"], value=device_status(provider_id, state, change))
            DEVICE_CHANGES.labels(change).inc()
            RECORDS_OUT.labels(SERVICE, DEVICE_STATUS).inc()
        if snapshot is not None:
            devices[key] = snapshot.to_state()


def _decoded(value) -> Rejection | None:
    """A rejection for a record the codec could not decode, else None."""
    if isinstance(value, Undecodable):
        return Rejection(value.reason_code, value.reason)
    return None
