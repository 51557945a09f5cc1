"""The benchmark's own topics: pre-loading them, scratch topics, record counts, reading them back,
the simulated clock, and deleting everything a run made."""

from __future__ import annotations

import secrets
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.console import progress, rate
from gridflex.db import create_schema, drop_schema
from gridflex.kafka_io import ReadRecord, RecordProducer, read_records
from gridflex.processes import isolated_topics
from gridflex.settings import ServiceSettings
from gridflex.topics import CLOCK, TopicSpec, create_topics, delete_topics_containing

READ_IDLE_TIMEOUT_S = 10.0


@dataclass
class IsolatedRun:
    """One run's own world: the catalogue's topics with a suffix (by catalogue name), a Postgres
    schema for the worker's projection, and its state directory; all deleted at the end."""

    settings: ServiceSettings
    schema: str
    database_url: str
    topics: dict[str, TopicSpec]


@asynccontextmanager
async def isolated_run(service: str, providers: tuple[str, ...]) -> AsyncIterator[IsolatedRun]:
    suffix = f"-bench-{secrets.token_hex(4)}"
    settings = ServiceSettings(topic_suffix=suffix)
    schema = f"bench_{suffix.rsplit('-', 1)[1]}"
    database_url = await create_schema(settings.database_url, schema)
    try:
        topics = {spec.name.removesuffix(suffix): spec for spec in await isolated_topics(settings, providers=providers)}
        yield IsolatedRun(settings, schema, database_url, topics)
    finally:
        deleted = await delete_topics_containing(settings.kafka_bootstrap, suffix)
        shutil.rmtree(settings.data_dir / f"{service}{suffix}", ignore_errors=True)
        await drop_schema(settings.database_url, schema)
        progress(f"{service}: deleted {len(deleted)} topics and the schema {schema} of this run")


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
