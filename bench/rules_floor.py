"""The floor: the telemetry service's own work per meter read, without Kafka or Faust.

The steps of ``_ingest_meter_batch`` in ``services/telemetry/app.py`` (decode, validate, group
by meter and day, reconcile against the remembered revisions, encode the clean interval) over
records held in memory, in batches of the service's batch size, with a dict for the
seen-intervals table. What a worker costs beyond this (and beyond the raw passthrough) is the
cost of moving records one by one through Faust.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime

from bench.meter_reads import MeterReadLoad
from gridflex.codec import RecordCodec
from gridflex.kafka_io import Codecs
from gridflex.topics import METER_INTERVALS, METER_READS
from services.telemetry.domain import Rejection, SeenInterval, TelemetryLimits, reconcile, validate_meter_read
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
    by_day = defaultdict(list)
    for offset, data in enumerate(batch, first_offset):
        result = validate_meter_read(reads.decode(data), now, limits)
        if isinstance(result, Rejection):
            raise ValueError(f"the benchmark's load holds an invalid read at {offset}: {result.reason}")
        by_day[result.day_key].append((offset, result))
    for day_key, items in by_day.items():
        day = seen_intervals.get(day_key) or {}
        for offset, interval in items:
            state = day.get(interval.slot)
            _, seen = reconcile(SeenInterval.from_state(state) if state else None, interval, 0, offset)
            intervals.encode(interval.as_record(seen.supersedes))
            day[interval.slot] = seen.to_state()
        seen_intervals[day_key] = day
