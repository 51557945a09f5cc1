"""A batch pipeline for a high-volume input: consume many records, decide, produce, commit.

Faust hands records to agents one event at a time; on this machine its per-event machinery
alone caps a worker near 16,000 records/s, below what meter ingestion must sustain. A
:class:`BatchPipeline` consumes catalogue topics (co-partitioned: same key, same partition
count) with aiokafka in its own consumer group and hands whole batches of decoded records to a handler, which reads and writes changelog-backed
state (:mod:`gridflex.state`) and queues outputs. It runs inside the service's Faust worker
(same process, web pages, metrics and clock).

A pipeline whose handler writes Postgres can keep its input positions there instead
(``positions``): the handler stores the batch's positions (:meth:`Batch.positions`) in the same
transaction as what the records produced, and a worker assigned a partition starts from the
stored position, so a replay can never apply a record twice. Such a pipeline keeps no
changelog-backed state.

Delivery is at-least-once, in this order per batch:
1. the handler runs; its outputs are queued on the producer without waiting;
2. once every output is acknowledged, the batch's state changes go to the changelog;
3. once those are acknowledged, they are written to RocksDB and the input offsets committed.
The next batch is processed while the previous one commits. A crash at any point re-reads
input whose outputs may already be out; handlers must re-emit such records with the same
identity (telemetry does: the state remembers which input offset set it).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError, TopicAlreadyExistsError,
)
from aiokafka.partitioner import murmur2
from mode import Service

from gridflex.codec import RecordCodec, Undecodable
from gridflex.metrics import (
    BATCH_SECONDS, CONSUMER_LAG, DEAD_LETTERS, LAST_COMMIT, RECORD_LATENCY, RECORDS_IN, RECORDS_OUT, STATE_READY,
    STATE_RESTORE_SECONDS, STATE_RESTORED, error, forget_partitions,
)
from gridflex.state import PartitionStore, WriteSet, restore

log = structlog.get_logger(__name__)

PATTERN_REFRESH_S = 5.0  # metadata refresh: a new topic matching a pattern is subscribed within this
COMMITS_IN_FLIGHT = 4  # batches processed ahead of their commit; bounds memory and replay after a crash
STOP_TIMEOUT_S = 30.0
LAG_EVERY_S = 10.0  # how often lag is read from the broker's end offsets
# How long the group waits for a member to rejoin a rebalance. A worker restores its stores from
# their changelogs inside the assignment callback (a million accounts: 10-20 s); aiokafka's default
# (the 10 s session timeout) evicts it mid-restore, and two workers then own the same partitions.
REBALANCE_TIMEOUT_S = 60.0


@dataclass(slots=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    raw: bytes | None  # the original value bytes, for dead letters
    value: dict | Undecodable


@dataclass(slots=True)
class Output:
    topic: str  # full topic name
    key: bytes
    value: bytes


class Batch:
    """What a handler receives: records, the state of their partitions, and where outputs go."""

    def __init__(self, pipeline: "BatchPipeline", records: list[InputRecord], now: datetime):
        self.records = records
        self.now = now
        self._pipeline = pipeline
        self.outputs: list[Output] = []

    def by_partition(self) -> dict[int, list[InputRecord]]:
        groups: dict[int, list[InputRecord]] = defaultdict(list)
        for record in self.records:
            groups[record.partition].append(record)
        return groups

    def owned_partitions(self) -> dict[int, list[InputRecord]]:
        """Every partition this worker owns, with its records (none for most, in an idle batch)."""
        groups: dict[int, list[InputRecord]] = {partition: [] for partition in self._pipeline.stores}
        for record in self.records:
            groups.setdefault(record.partition, []).append(record)
        return groups

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read of each (topic, partition) in this batch, once it is applied."""
        positions: dict[tuple[str, int], int] = {}
        for record in self.records:
            positions[record.topic, record.partition] = record.offset + 1
        return positions

    async def deliver(self) -> None:
        """Send the outputs queued so far and wait until Kafka has them: a handler that commits
        its input positions itself (to Postgres) calls this first, so that a crash between the
        two can repeat an output but never lose one."""
        outputs, self.outputs = self.outputs, []
        await self._pipeline.deliver(outputs)

    def again(self) -> None:
        """Ask for the next batch at once, with or without input: the handler has work of its own
        left (a long fan-out done in slices, so that no batch grows without bound)."""
        self._pipeline.again = True

    def store(self, partition: int) -> PartitionStore:
        return self._pipeline.stores[partition]

    def stores(self) -> list[PartitionStore]:
        """The state of every partition this worker owns."""
        return list(self._pipeline.stores.values())

    def emit(self, topic: str, key: str, value: dict) -> None:
        """Queue a catalogue record, partitioned by key as any Kafka producer would."""
        name = self._pipeline.topic_name(topic)
        raw_key = key.encode()
        data = self._pipeline.codec_for(topic).encode(value)
        self.outputs.append(Output(name, raw_key, data))

    def dead_letter(self, record: InputRecord, reason_code: str, reason: str, redacted: dict | None = None) -> None:
        """Send a record that cannot be accepted to the dead-letter topic, with its reason.

        ``redacted``: keep this copy of the record instead of its original bytes, when those hold
        what must never be stored (a credential, personal data)."""
        pipeline = self._pipeline
        kept = record.raw
        if redacted is not None:
            kept = pipeline.codec_for(record.topic.removesuffix(pipeline.topic_suffix)).encode(redacted)
            reason = f"{reason} (the offending fields are removed from this copy)"
        value = dead_letter_record(
            pipeline.service, record.topic, record.partition, record.offset, record.key, kept,
            reason_code, reason, self.now,
        )
        self.outputs.append(Output(
            pipeline.topic_name(pipeline.dead_letter_topic), record.topic.encode(),
            pipeline.codec_for(pipeline.dead_letter_topic).encode(value),
        ))
        DEAD_LETTERS.labels(pipeline.service, record.topic.removesuffix(pipeline.topic_suffix), reason_code).inc()


def dead_letter_record(
    service: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
    reason_code: str, reason: str, failed_at: datetime,
) -> dict:
    return {
        "service": service,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "key": key,
        "value": value if value is not None else b"",
        "reason_code": reason_code,
        "reason": reason,
        "failed_at": failed_at,
    }


@lru_cache(maxsize=1 << 20)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2), remembered per key.

    aiokafka computes murmur2 in pure Python on every send; meter keys repeat every interval.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


Handler = Callable[[Batch], Awaitable[None]]


@dataclass
class _Delivery:
    future: asyncio.Future  # resolves to the RecordMetadata of the producer batch's first record
    count: int


@dataclass
class _PendingCommit:
    outputs: list[_Delivery]
    output_counts: dict[str, int]
    writes: list[WriteSet]
    offsets: dict[TopicPartition, int]  # next offset to read, per partition
    timestamps_ms: dict[str, list[int]] = field(default_factory=dict)  # of the batch's input records, by topic


class BatchPipeline(Service, ConsumerRebalanceListener):
    """Consumes ``topics`` in batches through ``handler``, with per-partition changelog state.

    Partition p of every topic goes to the same worker and shares store p: the topics must be
    co-partitioned (same key, same partition count).
    """

    def __init__(
        self, *, service: str, group_id: str, name: str, topics: list[str], pattern: str | None, partitions: int,
        topic_suffix: str, handler: Handler,
        codec_for: Callable[[str], RecordCodec], bootstrap_servers: str, replication_factor: int, instance_id: str | None,
        state_dir: Path, state_name: str, dead_letter_topic: str, clock: Any,
        batch_size: int, batch_within_s: float, idle_every_s: float | None = None,
        positions: Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]] | None = None, **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.service = service
        self.group_id = group_id
        self.name = name  # for logs and metrics
        self.topics = topics  # catalogue topics; partner templates are subscribed through ``pattern``
        self.pattern = pattern  # regex of every topic to read, when a partner template is among them
        self.partitions = partitions
        self.topic_suffix = topic_suffix
        self.handler = handler
        self.codec_for = lru_cache(maxsize=None)(codec_for)  # one codec per topic
        self.bootstrap_servers = bootstrap_servers
        self.replication_factor = replication_factor
        self.instance_id = instance_id
        self.state_dir = state_dir / state_name
        self.changelog_topic = f"{group_id}-{state_name}-changelog"
        self.dead_letter_topic = dead_letter_topic
        self.clock = clock
        self.batch_size = batch_size
        self.batch_within_ms = max(int(batch_within_s * 1000), 1)
        # When set, the handler also runs on an empty batch this often without input, so that
        # what is due by time (deadlines in the state) happens even when nothing arrives.
        self.idle_every_s = idle_every_s
        # Where the handler keeps its input positions (see the module's docstring); None: Kafka.
        self.stored_positions = positions
        self.stores: dict[int, PartitionStore] = {}
        self.again = False  # the handler asked for another batch at once (Batch.again)
        self.ready = asyncio.Event()
        self._processing = asyncio.Lock()
        self._commits: asyncio.Queue[_PendingCommit] = asyncio.Queue(maxsize=COMMITS_IN_FLIGHT)
        self._partition_counts: dict[str, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batch_seconds = BATCH_SECONDS.labels(service)
        self._state_ready = STATE_READY.labels(service, name)
        self._state_ready.set(0)
        self._committed: dict[TopicPartition, int] = {}  # the last offset committed per assigned partition

    def topic_name(self, topic: str) -> str:
        return f"{topic}{self.topic_suffix}"

    @lru_cache(maxsize=None)
    def _records_in(self, topic: str):
        return RECORDS_IN.labels(self.service, topic.removesuffix(self.topic_suffix))

    @lru_cache(maxsize=None)
    def _latency(self, topic: str):
        return RECORD_LATENCY.labels(self.service, topic.removesuffix(self.topic_suffix))

    async def _partition_count(self, topic: str) -> int:
        if topic not in self._partition_counts:
            self._partition_counts[topic] = len(await self._producer.partitions_for(topic))
        return self._partition_counts[topic]

    # -- lifecycle ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        sources = [self.topic_name(topic) for topic in self.topics if "{provider_id}" not in topic]
        await self._check_sources(sources)
        if self.stored_positions is None:
            await self._create_changelog()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", enable_idempotence=True,
            linger_ms=5, max_batch_size=512 * 1024, client_id=f"{self.service}-{self.name}",
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id,
            group_instance_id=self.instance_id or None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
            # Range assignment gives one worker partition p of every matching topic, so one
            # worker at a time writes changelog partition p.
            partition_assignment_strategy=(RangePartitionAssignor,),
            metadata_max_age_ms=int(PATTERN_REFRESH_S * 1000),  # how soon a new provider's topic is read
            rebalance_timeout_ms=int(REBALANCE_TIMEOUT_S * 1000),
            client_id=f"{self.service}-{self.name}",
        )
        await self._consumer.start()
        if self.pattern:
            self._consumer.subscribe(pattern=self.pattern, listener=self)
        else:
            self._consumer.subscribe(sources, listener=self)

    async def on_stop(self) -> None:
        if self._consumer is not None:
            async with self._processing:
                try:
                    await asyncio.wait_for(self._commits.join(), STOP_TIMEOUT_S)
                except asyncio.TimeoutError:
                    log.warning("stopping with batches not committed; they will be read again", pipeline=self.name)
                await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        for store in self.stores.values():
            store.close()
        self.stores.clear()

    async def _check_sources(self, sources: list[str]) -> None:
        """The named source topics must exist, with the catalogue's partition count."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{self.service}-admin")
        await admin.start()
        try:
            for source in sources:
                [described] = await admin.describe_topics([source])
                if described["error_code"] or not described["partitions"]:
                    raise RuntimeError(f"topic {source} does not exist: create the catalogue's topics "
                                       "(`gridflex topics create`) before starting the service")
                if len(described["partitions"]) != self.partitions:
                    raise RuntimeError(f"topic {source} has {len(described['partitions'])} partitions; "
                                       f"the topic catalogue says {self.partitions}")
        finally:
            await admin.close()

    async def _create_changelog(self) -> None:
        """Create the compacted changelog (one partition per input partition) if missing."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{self.service}-admin")
        await admin.start()
        try:
            try:
                await admin.create_topics([NewTopic(
                    self.changelog_topic, self.partitions, self.replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                )])
            except TopicAlreadyExistsError:
                pass
        finally:
            await admin.close()

    # -- rebalancing (called by aiokafka while fetching is paused) -----------------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.ready.clear()
        self._state_ready.set(0)
        async with self._processing:
            await self._commits.join()
            for tp in revoked:
                store = self.stores.pop(tp.partition, None)
                if store is not None:
                    store.close()
        forget_partitions(self.service, self.group_id, revoked)
        for tp in revoked:
            self._committed.pop(tp, None)
        if revoked:
            log.info("partitions revoked", pipeline=self.name, partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self.stored_positions is not None:
            for tp, offset in (await self.stored_positions(assigned)).items():
                self._consumer.seek(tp, offset)
            log.info("partitions assigned", pipeline=self.name, partitions=sorted(tp.partition for tp in assigned),
                     positions="stored")
            self._assigned(assigned)
            return
        opened = []
        for tp in assigned:
            if tp.partition >= self.partitions:
                raise RuntimeError(f"{tp.topic} has more partitions than the catalogue's {self.partitions}: "
                                   "partner topics must be created with `gridflex partner add`")
            if tp.partition not in self.stores:
                self.stores[tp.partition] = PartitionStore(
                    self.state_dir / f"p{tp.partition}", TopicPartition(self.changelog_topic, tp.partition)
                )
                opened.append(self.stores[tp.partition])
        started = time.monotonic()
        replayed = await restore(opened, self.bootstrap_servers, self.changelog_topic)
        STATE_RESTORED.labels(self.service, self.name).inc(replayed)
        STATE_RESTORE_SECONDS.labels(self.service, self.name).set(time.monotonic() - started)
        log.info("partitions assigned", pipeline=self.name, partitions=sorted(tp.partition for tp in assigned),
                 restored_records=replayed)
        self._assigned(assigned)

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        # Until its first commit, a partition counts as committed at its assignment: a consumer
        # that never commits after taking a partition shows up in the time since the last commit.
        now = time.time()
        self._committed = {tp: offset for tp, offset in self._committed.items() if tp in assigned}
        for tp in assigned:
            LAST_COMMIT.labels(self.service, self.group_id, tp.topic, str(tp.partition)).set(now)
        self.ready.set()
        self._state_ready.set(1)

    # -- the loop -----------------------------------------------------------------------------

    @Service.task
    async def _consume(self) -> None:
        await self.clock.wait_started()
        consumer = self._consumer
        last_batch = time.monotonic()
        while not self.should_stop:
            again = self.again and self.ready.is_set()
            try:
                fetched = await consumer.getmany(timeout_ms=0 if again else self.batch_within_ms,
                                                 max_records=self.batch_size)
            except ConsumerStoppedError:
                return  # stopping
            if self.should_stop:
                return  # fetched while on_stop waited for the last batch: read again after restart
            if not fetched and not again and (self.idle_every_s is None or not self.ready.is_set()
                                              or time.monotonic() - last_batch < self.idle_every_s):
                continue
            last_batch = time.monotonic()
            self.again = False
            async with self._processing:
                started = time.perf_counter()
                records = []
                for tp, messages in fetched.items():
                    decode = self.codec_for(tp.topic.removesuffix(self.topic_suffix)).decode
                    records += [
                        InputRecord(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, decode(m.value))
                        for m in messages
                    ]
                    self._records_in(tp.topic).inc(len(messages))
                batch = Batch(self, records, self.clock.now())
                await self.handler(batch)
                await self._queue_commit(batch, fetched)
                self._batch_seconds.observe(time.perf_counter() - started)

    async def _queue_commit(self, batch: Batch, fetched: dict[TopicPartition, list]) -> None:
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        for output in batch.outputs:
            partitions = self._partition_counts.get(output.topic) or await self._partition_count(output.topic)
            by_partition[output.topic, key_partition(output.key, partitions)].append((output.key, output.value))
            counts[output.topic] += 1
        deliveries: list[_Delivery] = []
        for (topic, partition), records in by_partition.items():
            deliveries += await self._send(TopicPartition(topic, partition), records)
        writes = [w for w in (store.seal() for store in self.stores.values()) if w is not None]
        timestamps: dict[str, list[int]] = defaultdict(list)
        for tp, messages in fetched.items():
            timestamps[tp.topic] += [m.timestamp for m in messages]
        offsets = {tp: messages[-1].offset + 1 for tp, messages in fetched.items() if messages}
        await self._commits.put(_PendingCommit(deliveries, counts, writes, offsets, timestamps))

    async def deliver(self, outputs: list[Output]) -> None:
        """Send outputs now and wait for every acknowledgment (see :meth:`Batch.deliver`)."""
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
        for output in outputs:
            partitions = self._partition_counts.get(output.topic) or await self._partition_count(output.topic)
            by_partition[output.topic, key_partition(output.key, partitions)].append((output.key, output.value))
        deliveries = [delivery for (topic, partition), records in by_partition.items()
                      for delivery in await self._send(TopicPartition(topic, partition), records)]
        await asyncio.gather(*(delivery.future for delivery in deliveries))
        for output in outputs:
            RECORDS_OUT.labels(self.service, output.topic.removesuffix(self.topic_suffix)).inc()

    async def _send(self, tp: TopicPartition, records: Iterable[tuple[bytes, bytes | None]]) -> list[_Delivery]:
        """Queue records for one partition in as few producer batches as fit; nothing is awaited
        but room in the producer's buffer. (One future per batch, not per record.)"""
        deliveries, builder, count = [], self._producer.create_batch(), 0
        for key, value in records:
            if builder.append(key=key, value=value, timestamp=None) is None:
                builder.close()
                deliveries.append(_Delivery(await self._producer.send_batch(builder, tp.topic, partition=tp.partition), count))
                builder, count = self._producer.create_batch(), 0
                builder.append(key=key, value=value, timestamp=None)
            count += 1
        builder.close()
        deliveries.append(_Delivery(await self._producer.send_batch(builder, tp.topic, partition=tp.partition), count))
        return deliveries

    @Service.task
    async def _commit(self) -> None:
        # Runs until cancelled, after on_stop has drained what was queued.
        while True:
            pending = await self._commits.get()
            try:
                await self._complete(pending)
            finally:
                self._commits.task_done()

    async def _complete(self, pending: _PendingCommit) -> None:
        await asyncio.gather(*(delivery.future for delivery in pending.outputs))
        changelog = [(writes, await self._send(writes.store.changelog, writes.values.items()))
                     for writes in pending.writes]
        await asyncio.gather(*(delivery.future for _, deliveries in changelog for delivery in deliveries))
        for writes, deliveries in changelog:
            last = deliveries[-1]
            writes.store.persist(writes, last.future.result().offset + last.count - 1)
        try:
            if pending.offsets:  # none in an idle batch: its outputs and state are out, no input was read
                await self._consumer.commit(pending.offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another worker meanwhile: it reads them again from the
            # last commit, and re-emits with the same identities (at-least-once).
            error("commit")
            log.warning("offsets not committed: partitions were reassigned", pipeline=self.name, error=str(exc))
            return
        self._observe_commit(pending)

    def _observe_commit(self, pending: _PendingCommit) -> None:
        now = time.time()
        for topic, count in pending.output_counts.items():
            RECORDS_OUT.labels(self.service, topic.removesuffix(self.topic_suffix)).inc(count)
        for topic, timestamps_ms in pending.timestamps_ms.items():
            observe = self._latency(topic).observe
            for timestamp_ms in timestamps_ms:
                observe(max(now - timestamp_ms / 1000, 0.0))
        for tp, offset in pending.offsets.items():
            self._committed[tp] = offset
            LAST_COMMIT.labels(self.service, self.group_id, tp.topic, str(tp.partition)).set(now)
            end = self._consumer.highwater(tp)
            if end is not None:
                CONSUMER_LAG.labels(self.service, self.group_id, tp.topic, str(tp.partition)).set(max(end - offset, 0))

    @Service.timer(LAG_EVERY_S)
    async def _observe_lag(self) -> None:
        """Lag from the broker's end offsets, also when nothing is committed: a stuck consumer's
        lag grows while its last commit ages (the highwater seen at commits would freeze)."""
        if self._consumer is None or not self.ready.is_set():
            return
        assigned = list(self._consumer.assignment())
        if not assigned:
            return
        try:
            ends = await self._consumer.end_offsets(assigned)
            for tp in assigned:
                if tp not in self._committed:
                    self._committed[tp] = await self._consumer.committed(tp) or 0
        except KafkaError as exc:  # a rebalance or a broker restart: the next round tries again
            log.warning("end offsets not read; lag not updated", pipeline=self.name, error=type(exc).__name__)
            return
        for tp, end in ends.items():
            committed = self._committed[tp]
            CONSUMER_LAG.labels(self.service, self.group_id, tp.topic, str(tp.partition)).set(max(end - committed, 0))
