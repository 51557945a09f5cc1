"""The one clock. Services ask it for "now"; none reads the wall clock for a domain decision.

Production runs on :class:`WallClock`. Simulation, the demo and tests run on
:class:`SimulatedClock`, which follows the ``gridflex.clock.v1`` topic: whoever drives the
simulation publishes ticks, and "now" is the latest tick read. Time only moves forward.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridflex.codec import RecordCodec, Undecodable

log = logging.getLogger(__name__)


class ClockNotStarted(RuntimeError):
    """A simulated clock has not read its first tick yet."""


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def wait_started(self) -> None: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def wait_started(self) -> None:
        return None


class SimulatedClock:
    """Time as the latest tick read; ticks older than the current time are ignored."""

    def __init__(self, start: datetime | None = None):
        self._now = start
        self._started = asyncio.Event()
        if start is not None:
            self._started.set()

    def now(self) -> datetime:
        if self._now is None:
            raise ClockNotStarted("the simulated clock has read no tick from gridflex.clock.v1 yet")
        return self._now

    def advance(self, to: datetime) -> None:
        if self._now is None or to > self._now:
            self._now = to
        self._started.set()

    async def wait_started(self) -> None:
        await self._started.wait()


async def follow_clock_topic(clock: SimulatedClock, bootstrap: str, topic: str, codec: RecordCodec,
                             until_caught_up: bool = False) -> None:
    """Advance ``clock`` with every tick on ``topic``, starting from the latest one published
    (forever, or ``until_caught_up`` with the end of the topic as it was at the start).

    Every instance of every service follows the whole (single-partition) topic, so it reads it
    without a consumer group rather than through a Faust agent.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="gridflex-clock")
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        consumer.seek(partition, max(end - 1, 0))
        while not (until_caught_up and await consumer.position(partition) >= end):
            batch = await consumer.getmany(partition, timeout_ms=500)
            for message in batch.get(partition, []):
                tick = codec.decode(message.value)
                if isinstance(tick, Undecodable):
                    log.warning("ignoring undecodable clock tick at offset %s: %s", message.offset, tick.reason)
                    continue
                clock.advance(tick["now"])
    finally:
        await consumer.stop()


async def latest_tick(bootstrap: str, topic: str, codec: RecordCodec, timeout_s: float = 5.0) -> datetime:
    """The simulated "now" the services see: the latest tick on ``topic`` (for operator commands
    that date what they send, e.g. an event request's issued_at)."""
    clock = SimulatedClock()
    try:
        await asyncio.wait_for(follow_clock_topic(clock, bootstrap, topic, codec, until_caught_up=True), timeout_s)
    except asyncio.TimeoutError:
        pass
    return clock.now()  # ClockNotStarted when no tick was ever published
