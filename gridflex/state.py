"""Changelog-backed key-value state for batch pipelines: RocksDB on disk, Kafka as the truth.

The same design as a Faust table, for a pipeline that consumes with plain aiokafka: each input
partition owns one RocksDB database (through rocksdict) and one partition of a compacted
changelog topic. A batch's writes are visible at once to later batches (``pending``), sent to
the changelog after the batch's outputs are acknowledged, then written to RocksDB together
with the changelog offset they reach (the checkpoint). On assignment, a store replays the
changelog from its checkpoint, so a restart, a rebalance or a lost disk recovers the state.
"""

from __future__ import annotations

import heapq
import shutil
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

log = structlog.get_logger(__name__)

CHECKPOINT_KEY = b"\x00changelog-offset"  # sorts before every state key
RESTORE_PROGRESS_EVERY_S = 5.0


def encode_value(value: Any) -> bytes:
    """JSON (orjson): dataclasses as objects, dates and instants as ISO 8601 strings (they are
    read back as strings), decimals as strings, sets as sorted lists."""
    return orjson.dumps(value, default=_json_default)


def decode_value(data: bytes) -> Any:
    return orjson.loads(data)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class WriteSet:
    """One batch's writes to one store: what goes to the changelog, then to disk."""

    store: "PartitionStore"
    values: dict[bytes, bytes | None] = field(default_factory=dict)  # None deletes


class PartitionStore:
    """The state of one input partition."""

    def __init__(self, path: Path, changelog: TopicPartition):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.changelog = changelog
        self.db = Rdict(str(path), options=Options(raw_mode=True))
        self.pending: dict[bytes, bytes | None] = {}  # written by batches not yet on disk
        self.expired_before: str | None = None  # the key bound of the last expiry sweep
        self._writes = WriteSet(self)

    @property
    def checkpoint(self) -> int:
        """Offset of the last changelog record reflected on disk; -1 when none."""
        data = self.db.get(CHECKPOINT_KEY)
        return int(data) if data is not None else -1

    def get(self, key: str) -> Any:
        raw_key = key.encode()
        data = self.pending[raw_key] if raw_key in self.pending else self.db.get(raw_key)
        return decode_value(data) if data is not None else None

    def put(self, key: str, value: Any) -> None:
        data = encode_value(value)
        self.pending[key.encode()] = data
        self._writes.values[key.encode()] = data

    def delete(self, key: str) -> None:
        self.pending[key.encode()] = None
        self._writes.values[key.encode()] = None

    def keys_before(self, bound: str, start: str = "") -> Iterator[str]:
        """Keys from ``start`` up to (not including) ``bound``: state keys that begin with a date
        or a deadline expire this way."""
        raw_bound = bound.encode()
        for raw_key in self._keys_from(start.encode() if start else CHECKPOINT_KEY, raw_bound):
            if raw_key >= raw_bound:
                break
            yield raw_key.decode()

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """Keys that start with ``prefix``."""
        raw_prefix = prefix.encode()
        for raw_key in self._keys_from(raw_prefix, raw_prefix + b"\xff"):  # 0xff never occurs in UTF-8
            if not raw_key.startswith(raw_prefix):
                break
            yield raw_key.decode()

    def items_with_prefix(self, prefix: str, after: str | None = None) -> Iterator[tuple[str, Any]]:
        """(key, value) of the keys that start with ``prefix``, in order, from the first key after
        ``after`` (a cursor: the last key a previous scan handled)."""
        raw_prefix = prefix.encode()
        start = after.encode() if after is not None else raw_prefix
        bound = raw_prefix + b"\xff"  # 0xff never occurs in UTF-8
        pending = self.pending
        written = sorted((key, value) for key, value in pending.items() if start <= key < bound)
        previous = start if after is not None else None
        on_disk = ((key, value) for key, value in self.db.items(from_key=start) if key not in pending)
        for raw_key, data in heapq.merge(on_disk, written, key=lambda item: item[0]):
            if not raw_key.startswith(raw_prefix):
                break
            if raw_key == previous or data is None:
                continue
            previous = raw_key
            yield raw_key.decode(), decode_value(data)

    def _keys_from(self, start: bytes, bound: bytes) -> Iterator[bytes]:
        """Live keys from ``start`` in order, on disk or written by a batch not yet on disk (those
        below ``bound``), less the deleted ones; the caller stops at its bound."""
        written = sorted(key for key, value in self.pending.items() if value is not None and start <= key < bound)
        previous = None
        for raw_key in heapq.merge(self.db.keys(from_key=start), written):
            if raw_key == previous or raw_key == CHECKPOINT_KEY or self.pending.get(raw_key, b"") is None:
                continue
            previous = raw_key
            yield raw_key

    def seal(self) -> WriteSet | None:
        """The writes made since the last seal, to be sent to the changelog."""
        writes, self._writes = self._writes, WriteSet(self)
        return writes if writes.values else None

    def persist(self, writes: WriteSet, changelog_offset: int) -> None:
        """Write a batch's changes to disk once the changelog holds them."""
        batch = WriteBatch(raw_mode=True)
        for key, value in writes.values.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT_KEY, str(changelog_offset).encode())
        self.db.write(batch)
        for key, value in writes.values.items():
            if self.pending.get(key, b"") is value:  # not overwritten by a later batch
                del self.pending[key]

    def apply_changelog(self, records: list[tuple[bytes, bytes | None, int]]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value, _ in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT_KEY, str(records[-1][2]).encode())
        self.db.write(batch)

    def wipe(self) -> None:
        self.db.close()
        Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(self.path), options=Options(raw_mode=True))
        self.pending.clear()

    def close(self) -> None:
        self.db.close()


async def restore(stores: list[PartitionStore], bootstrap_servers: str, name: str) -> int:
    """Bring each store up to the end of its changelog partition; returns records replayed."""
    if not stores:
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [store.changelog for store in stores]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        behind: dict[TopicPartition, PartitionStore] = {}
        for store in stores:
            checkpoint, end = store.checkpoint, ends[store.changelog]
            if checkpoint >= end:
                # The changelog is shorter than what the disk remembers: it was recreated.
                log.warning("local state is ahead of its changelog; rebuilding", store=name,
                            partition=store.changelog.partition, checkpoint=checkpoint, changelog_end=end)
                store.wipe()
                checkpoint = -1
            if checkpoint + 1 < end:
                consumer.seek(store.changelog, checkpoint + 1)
                behind[store.changelog] = store
        total = sum(ends[tp] - (store.checkpoint + 1) for tp, store in behind.items())
        replayed, last_report = 0, time.monotonic()
        if behind:
            log.info("restoring state from changelog", store=name, partitions=sorted(tp.partition for tp in behind),
                     records_at_most=total)
        while behind:
            fetched = await consumer.getmany(*behind, timeout_ms=500, max_records=10_000)
            for tp, messages in fetched.items():
                if messages:
                    behind[tp].apply_changelog([(m.key, m.value, m.offset) for m in messages])
                    replayed += len(messages)
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    del behind[tp]
            if time.monotonic() - last_report > RESTORE_PROGRESS_EVERY_S:
                log.info("restoring state", store=name, records_replayed=replayed, records_at_most=total)
                last_report = time.monotonic()
        if replayed:
            log.info("state restored", store=name, records_replayed=replayed)
        return replayed
    finally:
        await consumer.stop()
