"""A whole small topic kept in memory by every worker (a global table without Faust).

Some facts every partition needs, such as the energy events that decide which meter intervals
matter, live on a small topic that is not co-partitioned with the data. Each worker reads all
of it from the beginning, without a consumer group, and keeps following it; ``ready`` is set
once it has caught up with the end offsets it saw at start.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from gridflex.codec import RecordCodec, Undecodable

log = structlog.get_logger(__name__)


class TopicMirror:
    def __init__(self, bootstrap: str, topic: str, partitions: int, codec: RecordCodec,
                 apply: Callable[[str, dict], None]):
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.codec = codec
        self.apply = apply  # (key, value) for each record, in order per partition
        self.ready = asyncio.Event()

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    client_id=f"gridflex-mirror-{self.topic}")
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            pending = {tp: end for tp, end in (await consumer.end_offsets(partitions)).items() if end}
            if not pending:
                self.ready.set()
            while True:
                fetched = await consumer.getmany(timeout_ms=500)
                for tp, messages in fetched.items():
                    for message in messages:
                        value = self.codec.decode(message.value)
                        if isinstance(value, Undecodable):
                            # The owner of the topic dead-letters it; a mirror only skips it.
                            log.warning("mirror skips an undecodable record", topic=self.topic, offset=message.offset,
                                        reason=value.reason)
                            continue
                        self.apply(message.key.decode() if message.key else "", value)
                    if tp in pending and messages and messages[-1].offset + 1 >= pending[tp]:
                        del pending[tp]
                if not pending and not self.ready.is_set():
                    self.ready.set()
                    log.info("mirror caught up", topic=self.topic)
        finally:
            await consumer.stop()
