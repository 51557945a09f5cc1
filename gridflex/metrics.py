"""Prometheus metrics every service exports, with the same names and labels everywhere.

Faust's own sensor (``faust_*`` metrics: messages, events, sends, commits, rebalances) is
extended with consumer lag and the time of each partition's last commit, the symptoms that
faust-streaming's known offset-commit problems show first.
"""

from __future__ import annotations

import gc
import time
from collections import Counter as Tally
from typing import Iterable

from faust.sensors.monitor import TPOffsetMapping
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

def count(counter: Counter, label_values: Iterable[tuple[str, ...]]) -> None:
    """Increment ``counter`` once per distinct label set of a batch, not once per record."""
    for values, amount in Tally(label_values).items():
        counter.labels(*values).inc(amount)


RECORDS_IN = Counter("gridflex_records_in", "Records consumed", ["service", "topic"])
RECORDS_OUT = Counter("gridflex_records_out", "Records produced", ["service", "topic"])
DEAD_LETTERS = Counter(
    "gridflex_dead_letters", "Records sent to the dead-letter topic", ["service", "source_topic", "reason_code"]
)
BATCH_SECONDS = Histogram(
    "gridflex_batch_processing_seconds",
    "Time to process one batch of records",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RECORD_LATENCY = Histogram(
    "gridflex_record_latency_seconds",
    "From a record's Kafka timestamp to the end of its processing",
    ["service", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge(
    "gridflex_consumer_lag", "Records behind the partition end (end offset - committed offset)",
    ["service", "group", "topic", "partition"],
)
CLOCK_NOW = Gauge(
    "gridflex_clock_now_seconds", "The service's current time (simulated mode: the latest tick read; 0 before any)",
    ["service"],
)
LAST_COMMIT = Gauge(
    "gridflex_last_commit_timestamp_seconds",
    "Unix time of the partition's last offset commit (or of its assignment, before the first)",
    ["service", "group", "topic", "partition"],
)
STATE_READY = Gauge(
    "gridflex_state_ready", "1 once a pipeline's partitions are assigned and its local state restored; "
    "0 while restoring or rebalancing", ["service", "state"],
)
STATE_RESTORED = Counter(
    "gridflex_state_restored_records", "Changelog records replayed into local state", ["service", "state"],
)
STATE_RESTORE_SECONDS = Gauge(
    "gridflex_state_restore_duration_seconds", "How long the last restore of local state took", ["service", "state"],
)
ERRORS = Counter(
    "gridflex_errors", "Failures the service survived: a retried database write (database), offsets not "
    "committed after a rebalance (commit), an API request answered 503 (dependency)", ["service", "kind"],
)
_service = {"name": "gridflex"}


def forget_partitions(service: str, group: str, tps: Iterable) -> None:
    """Drop the lag and last-commit series of partitions this worker no longer owns, so a
    rebalance does not leave an ageing commit behind that looks like a stuck consumer."""
    for tp in tps:
        for gauge in (CONSUMER_LAG, LAST_COMMIT):
            try:
                gauge.remove(service, group, tp.topic, str(tp.partition))
            except KeyError:
                pass


def identify(service: str) -> None:
    """Name the process's service for metrics recorded where no service is at hand (``error``)."""
    _service["name"] = service
    for kind in ("database", "commit", "dependency"):
        ERRORS.labels(service, kind)  # exported at 0 from the start, so rates and alerts see the series


def error(kind: str) -> None:
    """Count one survived failure of this process's service (``gridflex_errors_total``)."""
    ERRORS.labels(_service["name"], kind).inc()


GC_PAUSES = Histogram(
    "gridflex_gc_pause_seconds", "Pauses of Python's cyclic garbage collector", ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
# Collect the youngest generation every 50,000 net allocations instead of 700. Records are
# dicts and tuples without reference cycles, so the collector finds almost nothing, and with
# the default thresholds a batch of 5,000 records triggered a full collection of the whole heap
# every few batches: a third of the enrollment worker's CPU time (bench, 100,000 decisions).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collection() -> None:
    """Freeze what start-up allocated (modules, schemas, the app) out of every later collection,
    collect less often, and time each pause (``gridflex_gc_pause_seconds``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    started: list[float] = [0.0]

    def observe(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSES.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    gc.callbacks.append(observe)


class ServiceMonitor(PrometheusMonitor):
    """Faust's Prometheus monitor plus per-partition lag and last-commit time.

    Lag is updated at each commit (about once a second), not per message: Faust reports end
    offsets for every message and a gauge update there costs measurable throughput.
    """

    def __init__(self, service: str, group: str, **kwargs):
        super().__init__(metrics=_faust_metrics(), **kwargs)
        self.service = service
        self.group = group

    def on_tp_commit(self, tp_offsets: TPOffsetMapping) -> None:
        super().on_tp_commit(tp_offsets)
        now = time.time()
        for tp in tp_offsets:
            LAST_COMMIT.labels(self.service, self.group, tp.topic, str(tp.partition)).set(now)
            self._update_lag(tp)

    def _update_lag(self, tp: TP) -> None:
        end = self.tp_end_offsets.get(tp)
        if end is None:
            return
        committed = self.tp_committed_offsets.get(tp, 0)
        CONSUMER_LAG.labels(self.service, self.group, tp.topic, str(tp.partition)).set(max(end - committed, 0))


_FAUST_METRICS: FaustMetrics | None = None


def _faust_metrics() -> FaustMetrics:
    # Faust's metrics register globally; one set per process, whatever the number of apps.
    global _FAUST_METRICS
    if _FAUST_METRICS is None:
        _FAUST_METRICS = FaustMetrics.create(REGISTRY, "faust")
    return _FAUST_METRICS
