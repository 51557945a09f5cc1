"""What the VTN produces to Kafka: energy-event requests, the reporting provider's telemetry, and
dead letters for webhooks that keep failing. One idempotent producer, started on first use; each
send waits until every in-sync replica has the record (an HTTP answer never promises more than
Kafka holds)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from gridflex.batch import dead_letter_record
from gridflex.clock import ClockNotStarted
from gridflex.streaming import ServiceRuntime
from gridflex.topics import DEAD_LETTERS

PRODUCE_TIMEOUT_MS = 10_000


class Publisher:
    def __init__(self, runtime: ServiceRuntime):
        self.runtime = runtime
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def send(self, topic: str, key: str, value: dict) -> RecordMetadata:
        """Send one catalogue record (``topic`` as in the catalogue, e.g. a partner topic with its
        provider filled in) and wait for it to be stored; returns where it was stored."""
        producer = await self._started()
        data = self.runtime.codec(topic).encode(value)
        delivery = await producer.send(self.runtime.topic_name(topic), data, key=key.encode())
        return await delivery

    async def dead_letter(self, source_topic: str, partition: int, offset: int, key: bytes | None,
                          value: bytes | None, reason_code: str, reason: str) -> None:
        try:
            failed_at = self.runtime.now()
        except ClockNotStarted:
            failed_at = datetime.now(timezone.utc)
        record = dead_letter_record("vtn", source_topic, partition, offset, key, value, reason_code, reason, failed_at)
        producer = await self._started()
        delivery = await producer.send(self.runtime.topic_name(DEAD_LETTERS),
                                       self.runtime.codec(DEAD_LETTERS).encode(record), key=source_topic.encode())
        await delivery

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.runtime.settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                    request_timeout_ms=PRODUCE_TIMEOUT_MS, client_id="vtn-api",
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer
