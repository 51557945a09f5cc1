"""Telemetry ingestion service: its wiring. Both inputs are high-volume batch pipelines
(gridflex.batch) running in the service's Faust worker.

- ``utility.meter-reads.v1`` → validate → reconcile revisions → ``gridflex.telemetry.meter-intervals.v1``
- every ``partner.<provider>.thermostat-state.v1`` (by pattern: a new provider needs no restart)
  → validate → status changes → ``gridflex.telemetry.device-status.v1``
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
from gridflex.streaming import ServiceRuntime
from gridflex.topics import DEVICE_STATUS, METER_INTERVALS, METER_READS, THERMOSTAT_STATE, provider_of
from services.telemetry import domain
from services.telemetry.domain import (
    DEVICE_CHANGE_KINDS,
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

_intervals_by_verdict = {verdict: INTERVALS_BY_VERDICT.labels(verdict.value) for verdict in Verdict}
_device_changes = {change: DEVICE_CHANGES.labels(change) for change in DEVICE_CHANGE_KINDS}


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


async def ingest_thermostat_states(batch: Batch) -> None:
    """Turn a batch of every provider's thermostat states into device status changes.

    The provider is the one named by the topic the record came from, never by the record; the
    last accepted state of each provider's thermostat is remembered in the partition's store.
    """
    for partition, records in batch.by_partition().items():
        store = batch.store(partition)
        for record in records:
            state = record.value
            rejection = _decoded(state) or validate_thermostat_state(state, batch.now, limits)
            if rejection:
                batch.dead_letter(record, rejection.reason_code, rejection.reason)
                continue
            provider_id = provider_of(record.topic)
            key = f"{provider_id}/{state['thermostat_serial']}"
            previous = store.get(key)
            changes, snapshot = device_changes(DeviceSnapshot.from_state(previous) if previous else None, state)
            for change in changes:
                batch.emit(DEVICE_STATUS, state["service_account_id"], device_status(provider_id, state, change))
                _device_changes[change].inc()
            if snapshot is not None:
                store.put(key, snapshot.to_state())


thermostat_pipeline = runtime.batch_pipeline(THERMOSTAT_STATE, ingest_thermostat_states, state_name="devices")


def _decoded(value) -> Rejection | None:
    """A rejection for a record the codec could not decode, else None."""
    if isinstance(value, Undecodable):
        return Rejection(value.reason_code, value.reason)
    return None
