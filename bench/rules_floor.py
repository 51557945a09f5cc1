"""The floor: the telemetry service's own work per meter read, without Kafka.

What the worker's handler does per batch (``ingest_meter_reads`` in services/telemetry/app.py):
decode, the domain's ``ingest_meter_reads`` (validate, group by meter day, reconcile against
the remembered revisions), encode the clean intervals and the changed days' state, over records
held in memory, in batches of the service's batch size, with a dict for the seen-intervals
store. What a worker costs beyond this (and beyond the raw passthrough) is the pipeline's.
"""

from __future__ import annotations

import time
from datetime import datetime

from bench.meter_reads import MeterReadLoad
from gridflex.codec import RecordCodec
from gridflex.kafka_io import Codecs
from gridflex.topics import METER_INTERVALS, METER_READS
from gridflex.state import encode_value
from services.telemetry.domain import TelemetryLimits, ingest_meter_reads
from services.telemetry.settings import TelemetrySettings


def measure_codec_and_rules(settings: TelemetrySettings, load: MeterReadLoad) -> dict:
    """Time decode → rules → encode over ``load`` (encoded first, untimed)."""
    codecs = Codecs(settings)
    reads, intervals = codecs.for_topic(METER_READS), codecs.for_topic(METER_INTERVALS)
    encoded = [reads.encode(read) for _, read in load]
    seen_intervals: dict[str, dict] = {}
    started = time.perf_counter()
    for first in range(0, len(encoded), settings.batch_size):
        process_batch(encoded[first:first + settings.batch_size], first, reads, intervals, seen_intervals,
                      load.clock_now, settings.limits())
    seconds = time.perf_counter() - started
    return {
        "records": len(encoded),
        "seconds": round(seconds, 3),
        "us_per_record": round(seconds / len(encoded) * 1e6, 1),
        "records_per_s": round(len(encoded) / seconds),
    }


def process_batch(batch: list[bytes], first_offset: int, reads: RecordCodec, intervals: RecordCodec,
                  seen_intervals: dict[str, dict], now: datetime, limits: TelemetryLimits) -> None:
    decoded = [(offset, reads.decode(data)) for offset, data in enumerate(batch, first_offset)]
    outcome = ingest_meter_reads(decoded, 0, seen_intervals.get, now, limits)
    if outcome.rejections:
        offset, rejection = outcome.rejections[0]
        raise ValueError(f"the benchmark's load holds an invalid read at {offset}: {rejection.reason}")
    for interval in outcome.intervals:
        intervals.encode(interval)
    for day_key, day in outcome.days.items():
        encode_value(day)  # what the worker's store pays for each changed day
        seen_intervals[day_key] = day
