"""Real Kafka and PostgreSQL for integration tests: started by the test session if not running."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gridflex import REPO_ROOT, stack
from gridflex.db import create_schema, drop_schema, with_search_path
from gridflex.kafka_io import RecordProducer, read_records
from gridflex.processes import ServiceProcess, free_port, isolated_env, isolated_topics
from gridflex.settings import ServiceSettings
from gridflex.topics import CLOCK, delete_topics_containing

LOG_DIR = REPO_ROOT / "var" / "log" / "tests"


@pytest.fixture(scope="session")
def running_stack():
    """Kafka and PostgreSQL up (idempotent: a no-op when `make up` already ran); at the end, the
    topics of every isolated system are deleted, so the broker does not grow run after run."""
    stack.up()
    settings = ServiceSettings()
    yield settings
    for suffix in IsolatedSystem.suffixes:
        asyncio.run(delete_topics_containing(settings.kafka_bootstrap, suffix))
        asyncio.run(drop_schema(settings.database_url, IsolatedSystem.schema_of(suffix)))


class IsolatedSystem:
    """A private set of topics (unique suffix) and the services started on them."""

    suffixes: list[str] = []  # of every system of the test session, for the clean-up

    def __init__(self, name: str, providers: tuple[str, ...]):
        self.suffix = f"-{name}-{uuid.uuid4().hex[:8]}"
        IsolatedSystem.suffixes.append(self.suffix)
        base = ServiceSettings()
        self.settings = ServiceSettings(
            topic_suffix=self.suffix, database_url=with_search_path(base.database_url, self.schema_of(self.suffix)))
        self.providers = providers
        self.services: list[ServiceProcess] = []

    @staticmethod
    def schema_of(suffix: str) -> str:
        """The Postgres schema of a system's projections."""
        return "test" + suffix.replace("-", "_")

    async def create_topics(self) -> None:
        """This system's topics, and the Postgres schema its services' tables go in."""
        await isolated_topics(self.settings, self.providers)
        await create_schema(ServiceSettings().database_url, self.schema_of(self.suffix))

    def env(self, **extra: str) -> dict[str, str]:
        return isolated_env(self.suffix, **{"GRIDFLEX_DATABASE_URL": self.settings.database_url, **extra})

    def service(self, service: str, **env: str) -> ServiceProcess:
        """A worker on this system's topics; ``env`` adds settings (e.g. GRIDFLEX_DATA_DIR)."""
        process = ServiceProcess(
            service, self.env(**env), web_port=free_port(),
            log_path=LOG_DIR / f"{service}{self.suffix}.log",
        )
        self.services.append(process)
        return process

    def producer(self) -> RecordProducer:
        return RecordProducer(self.settings)

    async def publish(self, *records: tuple[str, str, Mapping]) -> None:
        """Send (catalogue topic, key, value) records, in this order."""
        async with self.producer() as producer:
            for topic, key, value in records:
                await producer.send(topic, key, value)

    async def tick(self, now: datetime) -> None:
        async with self.producer() as producer:
            await producer.send(CLOCK, "clock", {"now": now})

    async def read(self, topic: str, **options) -> list:
        return [record async for record in read_records(self.settings, topic, **options)]

    async def command(self, *args: str, **env: str) -> tuple[int, str, str]:
        """Run the `gridflex` operator command on this system's topics: (exit code, stdout, stderr)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gridflex.cli", *args, env={**os.environ, **self.env(**env)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    def stop(self) -> None:
        for process in self.services:
            process.stop()


@pytest.fixture
def isolated_system_factory(running_stack):
    systems: list[IsolatedSystem] = []

    def make(name: str, providers: tuple[str, ...] = ()) -> IsolatedSystem:
        system = IsolatedSystem(name, providers)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop()


async def records_on(settings: ServiceSettings, topic: str) -> int:
    """Records written to a catalogue topic so far (the sum of its partitions' end offsets)."""
    name = f"{topic}{settings.topic_suffix}"
    consumer = AIOKafkaConsumer(name, bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or []]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def crash_mid_stream(
    system: IsolatedSystem, service: ServiceProcess, inputs: Sequence[tuple[str, str, Mapping]],
    output_topic: str, chunk: int = 1000, timeout: float = 90,
) -> int:
    """Start ``service``, feed it ``inputs`` (topic, key, value) chunk by chunk, and SIGKILL it
    at its first output on ``output_topic``, always before the last chunk is sent; the rest is
    sent after the kill. Returns the outputs present at the kill.

    Holding back the last chunk makes the crash land mid-stream however fast the machine is.
    """
    service.start()
    chunks = [inputs[i:i + chunk] for i in range(0, len(inputs), chunk)]
    assert len(chunks) > 1, "a crash mid-stream needs at least two chunks of input"
    before = None
    async with system.producer() as producer:
        for index, records in enumerate(chunks):
            last = index == len(chunks) - 1
            if before is None and last:
                await wait_for_records(system, output_topic, 1, timeout)
            if before is None and (last or await records_on(system.settings, output_topic)):
                service.kill()
                before = await records_on(system.settings, output_topic)
            for topic, key, value in records:
                await producer.send(topic, key, value)
            await producer.flush()
    return before


async def wait_for_records(system: IsolatedSystem, topic: str, count: int, timeout: float = 90) -> None:
    """Until ``topic`` holds ``count`` records, or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while await records_on(system.settings, topic) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


def new_id(prefix: str) -> str:
    """A fresh identifier (event, account, request) that no earlier run used."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def customer_account(account_id: str, **facts) -> dict:
    """A CustomerAccount the current SEP terms accept (residential TOU-D, smart meter, no other
    program), published on June 30, 2025; ``facts`` change what a test needs."""
    base = {
        "service_account_id": account_id, "customer_class": "RESIDENTIAL", "rate_schedule": "TOU-D",
        "meter_type": "SMARTCONNECT", "service_start": date(2020, 1, 1), "service_end": None,
        "net_metering_since": None, "bill_cycle_day": 1, "programs": [], "joint_gas_customer": False,
        "updated_at": utc(2025, 6, 30, 17),
    }
    return {**base, **facts}

