"""The benchmark's own topics: scratch topics, record counts, and deleting everything a run made."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridflex.topics import TopicSpec, create_topics


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
        partitions = [TopicPartition(spec.name, partition) for partition in range(spec.partitions)]
        return sum((await self.consumer.end_offsets(partitions)).values())
