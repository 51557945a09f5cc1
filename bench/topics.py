"""The benchmark's own topics: pre-loading them, scratch topics, record counts, reading them back,
the simulated clock, and deleting everything a run made."""

from __future__ import annotations

import time
from datetime import datetime
from typing import AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.console import progress, rate
from gridflex.kafka_io import ReadRecord, RecordProducer, read_records
from gridflex.settings import ServiceSettings
from gridflex.topics import CLOCK, TopicSpec, create_topics

READ_IDLE_TIMEOUT_S = 10.0


async def preload_records(settings: ServiceSettings, records: Iterable[tuple[str, str, dict]], every: int,
                  total: int | None = None) -> float:
    """Produce ``(topic, key, value)`` records before anything is timed, a progress line every
    ``every`` records; deliveries are awaited once, at the end. Returns the seconds it took."""
    started = time.perf_counter()
    async with RecordProducer(settings, linger_ms=20, max_batch_size=1024**2) as producer:
        for sent, (topic, key, value) in enumerate(records, 1):
            await producer.send(topic, key, value)
            if sent % every == 0:
                progress(f"  loaded {sent:,}{f' / {total:,}' if total else ''} "
                         f"({rate(sent, time.perf_counter() - started)})")
    return time.perf_counter() - started


async def publish_clock_tick(settings: ServiceSettings, now: datetime) -> None:
    """Services on the simulated clock wait for it: one tick sets their "now"."""
    async with RecordProducer(settings) as producer:
        await (await producer.send(CLOCK, "clock", {"now": now}))


async def create_scratch_topic(bootstrap: str, like: TopicSpec, name: str) -> TopicSpec:
    """A topic shaped like ``like`` (partitions, retention) under another name."""
    spec = like.renamed(name)
    await create_topics(bootstrap, [spec])
    return spec


class RecordCounter:
    """How many records topics hold: the sum of their partitions' end offsets (nothing is read)."""

    def __init__(self, bootstrap: str):
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> "RecordCounter":
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.consumer.stop()

    async def count(self, spec: TopicSpec) -> int:
        return sum((await self.end_offsets(spec)).values())

    async def end_offsets(self, spec: TopicSpec) -> dict[TopicPartition, int]:
        partitions = [TopicPartition(spec.name, partition) for partition in range(spec.partitions)]
        return await self.consumer.end_offsets(partitions)


async def read_all(settings: ServiceSettings, topic: str, records: int) -> AsyncIterator[ReadRecord]:
    """The ``records`` a catalogue topic holds (counted beforehand), decoded, from the beginning."""
    if records:
        async for record in read_records(settings, topic, expect=records, idle_timeout=READ_IDLE_TIMEOUT_S,
                                         max_wait=600):
            yield record
