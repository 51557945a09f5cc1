"""What the VTN produces to Kafka: energy-event requests, the reporting provider's telemetry, and
dead letters for webhooks that keep failing. One idempotent producer, started on first use; each
send waits until every in-sync replica has the record (an HTTP answer never promises more than
Kafka holds)."""

from __future__ import annotations

from datetime import datetime, timezone

from gridflex.batch import dead_letter_record
from gridflex.clock import ClockNotStarted
from gridflex.streaming import RecordPublisher
from gridflex.topics import DEAD_LETTERS


class Publisher(RecordPublisher):
    """The API's records, and dead letters for webhooks that keep failing."""

    async def dead_letter(self, source_topic: str, partition: int, offset: int, key: bytes | None,
                          value: bytes | None, reason_code: str, reason: str) -> None:
        try:
            failed_at = self.runtime.now()
        except ClockNotStarted:
            failed_at = datetime.now(timezone.utc)
        record = dead_letter_record("vtn", source_topic, partition, offset, key, value, reason_code, reason, failed_at)
        await self.send(DEAD_LETTERS, source_topic, record)
