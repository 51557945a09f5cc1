"""The ceiling: a raw aiokafka consume-and-produce of the same bytes, no decoding, no logic.

One Python process, one consumer (its own group) and one producer, with the client settings
the telemetry service's Faust app uses where they compare (see ``gridflex/streaming.py`` and
Faust's aiokafka driver): 1 MiB per partition per fetch, CRC checks on, acks=all,
linger 5 ms, 256 KiB batches, records handed over in batches of the service's batch size.
Sends are not awaited one by one: the producer is flushed once, at the end.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.console import progress, rate
from gridflex.settings import ServiceSettings
from gridflex.topics import TopicSpec

PROGRESS_EVERY = 200_000
IDLE_TIMEOUT_S = 30.0


class PassthroughStalled(RuntimeError):
    """The source topic ran dry before the expected number of records was copied."""


@dataclass(frozen=True)
class PassthroughResult:
    records: int
    seconds: float  # from the first record consumed to the last one flushed

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "records_per_s": round(self.records_per_s)}


async def pass_through(settings: ServiceSettings, source: TopicSpec, target: TopicSpec, records: int,
                       group_id: str) -> PassthroughResult:
    """Copy ``records`` records from ``source`` to ``target``, key and value bytes as they are."""
    consumer = AIOKafkaConsumer(
        source.name,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1024**2,
        fetch_max_wait_ms=1500,
        check_crcs=True,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    try:
        copied, started, last_seen = 0, None, time.perf_counter()
        while copied < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=settings.batch_size)
            if not batches:
                if time.perf_counter() - last_seen > IDLE_TIMEOUT_S:
                    raise PassthroughStalled(f"no record from {source.name} for {IDLE_TIMEOUT_S:.0f} s at {copied:,}")
                continue
            last_seen = time.perf_counter()
            started = started or last_seen
            for messages in batches.values():
                for message in messages:
                    await producer.send(target.name, value=message.value, key=message.key)
                copied += len(messages)
                if copied // PROGRESS_EVERY != (copied - len(messages)) // PROGRESS_EVERY:
                    progress(f"  passthrough: {copied:,} / {records:,} copied ({rate(copied, time.perf_counter() - started)})")
        await producer.flush()
        return PassthroughResult(copied, time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()
