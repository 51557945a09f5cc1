"""Plain aiokafka producers and readers that speak the catalogue's records.

For everything that is not a Faust service: the operator command, the demo's simulators,
benchmarks and tests. Serialization is the same codec the services use.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gridflex.codec import RecordCodec, SchemaRegistry, Undecodable
from gridflex.settings import ServiceSettings
from gridflex.topics import TopicCatalogue


class Codecs:
    """The record codec of each catalogue topic, built once."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.registry = SchemaRegistry.from_directory(settings.schemas_dir)
        self.catalogue = TopicCatalogue.load(settings.schemas_dir)
        self._by_topic: dict[str, RecordCodec] = {}

    def for_topic(self, topic: str) -> RecordCodec:
        if topic not in self._by_topic:
            self._by_topic[topic] = RecordCodec(self.registry, self.catalogue.spec(topic).value)
        return self._by_topic[topic]

    def topic_name(self, topic: str) -> str:
        return f"{topic}{self.settings.topic_suffix}"


class RecordProducer:
    """Sends catalogue records (dicts) to catalogue topics; ``async with`` starts and flushes it."""

    def __init__(self, settings: ServiceSettings, **producer_options: Any):
        self.codecs = Codecs(settings)
        options = {"linger_ms": 5, "max_batch_size": 256 * 1024, "acks": "all"}
        options.update(producer_options)
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **options)

    async def __aenter__(self) -> "RecordProducer":
        await self.producer.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self.producer.flush()
        finally:
            await self.producer.stop()

    async def send(self, topic: str, key: str, value: Mapping[str, Any]) -> asyncio.Future:
        """Queue one record; returns the delivery future (await it only when you must)."""
        data = self.codecs.for_topic(topic).encode(value)
        return await self.producer.send(self.codecs.topic_name(topic), value=data, key=key.encode())

    async def send_bytes(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        """Queue bytes as they are: for malformed-input tests and dead-letter replay."""
        return await self.producer.send(self.codecs.topic_name(topic), value=value, key=key)

    async def flush(self) -> None:
        await self.producer.flush()


@dataclass(frozen=True)
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict | Undecodable


async def read_records(
    settings: ServiceSettings, topic: str, *, idle_timeout: float = 2.0, max_wait: float = 60.0,
    expect: int | None = None,
) -> AsyncIterator[ReadRecord]:
    """Read a catalogue topic from the beginning, decoding each record.

    Stops when ``expect`` records were read, or after ``idle_timeout`` seconds without new
    records, or after ``max_wait`` seconds in all.
    """
    codecs = Codecs(settings)
    codec = codecs.for_topic(topic)
    name = codecs.topic_name(topic)
    # No consumer group: every partition, from the beginning, nothing committed.
    consumer = AIOKafkaConsumer(
        name, bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        count, deadline, last_seen = 0, time.monotonic() + max_wait, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_seen < idle_timeout:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                for message in messages:
                    last_seen = time.monotonic()
                    key = message.key.decode() if message.key is not None else None
                    yield ReadRecord(tp.topic, tp.partition, message.offset, key, codec.decode(message.value))
                    count += 1
                    if expect is not None and count >= expect:
                        return
    finally:
        await consumer.stop()
