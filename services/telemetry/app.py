"""Telemetry ingestion service: the Faust app and its wiring.

- ``utility.meter-reads.v1`` → validate → reconcile revisions → ``gridflex.telemetry.meter-intervals.v1``
  (a batch pipeline: the high-volume path, see gridflex.batch)
- ``partner.*.thermostat-state.v1`` → validate → status changes → ``gridflex.telemetry.device-status.v1``
  (a Faust agent)
- anything rejected → ``gridflex.dead-letters.v1`` with its reason

Delivery is at-least-once: offsets are committed only after the outputs and state changes of a
batch are acknowledged. A record read again after a crash is re-emitted with the same identity
(interval + revision), which every consumer drops.
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter

from gridflex.batch import Batch
from gridflex.codec import Undecodable
from gridflex.metrics import RECORDS_IN, RECORDS_OUT
from gridflex.streaming import ServiceRuntime
from gridflex.topics import DEVICE_STATUS, METER_INTERVALS, METER_READS, THERMOSTAT_STATE, provider_of
from services.telemetry import domain
from services.telemetry.domain import (
    DeviceSnapshot,
    Rejection,
    Verdict,
    device_changes,
    device_status,
    first_tracked_day,
    validate_thermostat_state,
)
from services.telemetry.settings import TelemetrySettings

log = structlog.get_logger(__name__)

SERVICE = "telemetry"
INTERVALS_BY_VERDICT = Counter(
    "gridflex_telemetry_intervals", "Meter intervals by what reconciliation decided", ["verdict"]
)
DEVICE_CHANGES = Counter("gridflex_telemetry_device_changes", "Thermostat status changes emitted", ["change"])

settings = TelemetrySettings()
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app
limits = settings.limits()

thermostat_states = runtime.partner_topics(THERMOSTAT_STATE)
device_statuses = runtime.topic(DEVICE_STATUS)

# Last accepted state per provider and thermostat.
devices = app.Table(
    "devices", partitions=runtime.catalogue.spec(THERMOSTAT_STATE).partitions
)

_intervals_by_verdict = {verdict: INTERVALS_BY_VERDICT.labels(verdict.value) for verdict in Verdict}


async def ingest_meter_reads(batch: Batch) -> None:
    """Validate, reconcile and emit a batch of meter reads (see gridflex.batch for delivery)."""
    _expire_seen_intervals(batch)
    for partition, records in batch.by_partition().items():
        store = batch.store(partition)
        reads = []
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
            else:
                reads.append((record.offset, record.value))
        outcome = domain.ingest_meter_reads(reads, partition, store.get, batch.now, limits)
        if outcome.rejections:
            by_offset = {record.offset: record for record in records}
            for offset, rejection in outcome.rejections:
                batch.dead_letter(by_offset[offset], rejection.reason_code, rejection.reason)
        for interval in outcome.intervals:
            batch.emit(METER_INTERVALS, interval["service_account_id"], interval)
        for day_key, day in outcome.days.items():
            store.put(day_key, day)
        for verdict, count in outcome.verdicts.items():
            if count:
                _intervals_by_verdict[verdict].inc(count)


def _expire_seen_intervals(batch: Batch) -> None:
    """Forget the revisions of days that left the revision window (once per local day)."""
    first_day = first_tracked_day(batch.now, limits).isoformat()
    for store in batch.stores():
        if store.expired_before != first_day:
            expired = list(store.keys_before(first_day))
            for key in expired:
                store.delete(key)
            store.expired_before = first_day
            if expired:
                log.info("seen intervals expired", partition=store.changelog.partition, days_before=first_day,
                         meter_days=len(expired))


meter_pipeline = runtime.batch_pipeline(METER_READS, ingest_meter_reads, state_name="seen-intervals")


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
