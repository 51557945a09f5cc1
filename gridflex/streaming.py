"""The Kafka side every service shares: the Faust worker (lifecycle, web pages, the clock) and
the batch pipelines that carry the service's inputs.

A service's ``app.py`` builds one :class:`ServiceRuntime` and adds its batch pipelines
(:meth:`ServiceRuntime.batch_pipeline`). Handlers receive decoded records (``dict``) or
:class:`Undecodable` markers, never bytes; they hand records to pure domain functions, emit what
those return, and send what they refuse to the dead-letter topic with its reason.
"""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import datetime
from typing import Any, Awaitable, Callable

import faust
import structlog
from aiohttp.web import Response
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gridflex.batch import BatchPipeline, Handler
from gridflex.clock import ClockNotStarted, SimulatedClock, WallClock, follow_clock_topic
from gridflex.codec import RecordCodec, SchemaRegistry
from gridflex.metrics import CLOCK_NOW, ServiceMonitor, identify
from gridflex.mirror import TopicMirror
from gridflex.settings import ClockMode, ServiceSettings
from gridflex.topics import CLOCK, DEAD_LETTERS as DEAD_LETTER_TOPIC, TopicCatalogue

log = structlog.get_logger(__name__)


class ServiceRuntime:
    """One service's Faust app, wired to the catalogue, the codec, the clock and dead letters."""

    def __init__(self, service: str, settings: ServiceSettings, web_port: int):
        self.service = service
        self.settings = settings
        self.registry = SchemaRegistry.from_directory(settings.schemas_dir)
        self.catalogue = TopicCatalogue.load(settings.schemas_dir)
        # Local state (RocksDB) per service and instance: two workers on one machine must not
        # open the same files. Kafka changelogs hold the truth; this is a cache of them.
        self.state_dir = settings.data_dir / f"{service}{settings.topic_suffix}" / (settings.instance_id or "worker")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock = SimulatedClock() if settings.clock is ClockMode.SIMULATED else WallClock()
        self.app = faust.App(
            f"gridflex-{service}{settings.topic_suffix}",
            broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
            store="rocksdb://",  # driven by rocksdict (faust-streaming[rocksdict]); python-rocksdb is not installed
            datadir=str(self.state_dir),
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval_s,
            consumer_group_instance_id=settings.instance_id or None,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,  # Faust's own changelog topics; catalogue topics are created by `gridflex topics create`
            producer_linger_ms=5,
            producer_max_batch_size=256 * 1024,
            web_bind=settings.web_host,
            web_port=web_port,
            # Faust's assignor puts this URL in the group metadata and asserts it on every
            # assignment; with static membership the broker may hand a restarted worker its
            # previous metadata, so the URL must not change with the web port between restarts.
            canonical_url=f"http://{settings.instance_id or socket.gethostname()}",
        )
        identify(service)
        self.app.monitor = ServiceMonitor(service, self.app.conf.id)
        CLOCK_NOW.labels(service).set_function(self._clock_seconds)
        self._pipelines: list[BatchPipeline] = []
        self._mirrors: list[TopicMirror] = []
        self._add_pages()
        if isinstance(self.clock, SimulatedClock):
            self._follow_clock()

    # -- topics -------------------------------------------------------------------------------

    def topic_name(self, name: str) -> str:
        return f"{name}{self.settings.topic_suffix}"

    def codec(self, topic: str) -> RecordCodec:
        """The codec of a catalogue topic's records (partner templates included)."""
        return RecordCodec(self.registry, self.catalogue.spec(topic).value)

    # -- batch pipelines ------------------------------------------------------------------------

    def batch_pipeline(
        self, topics: str | list[str], handler: Handler, state_name: str, idle_every_s: float | None = None,
        positions: Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]] | None = None,
    ) -> BatchPipeline:
        """Consume ``topics`` in large batches outside Faust's per-event path (see gridflex.batch).

        Each is a catalogue topic or a partner template (``partner.{provider_id}.…``): a template
        is subscribed by pattern, so a new provider's topic is read without restart. Several
        topics must be co-partitioned (same key, same partition count): partition p of each
        goes to one worker and shares its store. Runs in this worker, in its own consumer group,
        with changelog-backed state named ``state_name``; the worker reports healthy only once
        the pipeline's state is restored. With ``idle_every_s``, the handler also gets an empty
        batch that often when no input arrives (for deadlines kept in the state). With
        ``positions`` (a handler that stores its input positions in Postgres, with what they
        produced), the pipeline keeps no state of its own and starts each assigned partition
        where ``positions`` says.
        """
        topics = [topics] if isinstance(topics, str) else list(topics)
        partitions = {self.catalogue.spec(topic).partitions for topic in topics}
        if len(partitions) != 1:
            raise ValueError(f"{topics} are not co-partitioned: the catalogue gives them {sorted(partitions)} partitions")
        pattern = None
        if any(topic in self.catalogue.partner_templates for topic in topics):
            suffix = re.escape(self.settings.topic_suffix)
            alternatives = [
                TopicCatalogue.partner_pattern(topic)[1:-1] + suffix if topic in self.catalogue.partner_templates
                else re.escape(self.topic_name(topic))
                for topic in topics
            ]
            pattern = "^(" + "|".join(alternatives) + ")$"
        group_topic = topics[0].replace("{provider_id}", "partners") if len(topics) == 1 else state_name
        pipeline = BatchPipeline(
            service=self.service, group_id=f"{self.app.conf.id}-{group_topic}", name=state_name,
            topics=topics, pattern=pattern, partitions=partitions.pop(),
            topic_suffix=self.settings.topic_suffix, handler=handler, codec_for=self.codec,
            bootstrap_servers=self.settings.kafka_bootstrap, replication_factor=self.settings.replication_factor,
            instance_id=f"{self.settings.instance_id}-{state_name}" if self.settings.instance_id else None,
            state_dir=self.state_dir, state_name=state_name,
            dead_letter_topic=DEAD_LETTER_TOPIC, clock=self.clock,
            batch_size=self.settings.batch_size, batch_within_s=self.settings.batch_within_s,
            idle_every_s=idle_every_s, positions=positions,
        )
        self._pipelines.append(pipeline)

        @self.app.task
        async def start_pipeline() -> None:
            await self.app.add_runtime_dependency(pipeline)

        return pipeline

    def mirror(self, topic: str, apply) -> TopicMirror:
        """Keep a whole small catalogue topic in memory in every worker (see gridflex.mirror)."""
        mirror = TopicMirror(self.settings.kafka_bootstrap, self.topic_name(topic),
                             self.catalogue.spec(topic).partitions, self.codec(topic), apply)
        self._mirrors.append(mirror)

        @self.app.task
        async def follow_mirror() -> None:
            await mirror.follow()

        return mirror

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def _clock_seconds(self) -> float:
        try:
            return self.clock.now().timestamp()
        except ClockNotStarted:
            return 0.0

    def _follow_clock(self) -> None:
        codec = RecordCodec(self.registry, self.catalogue.spec(CLOCK).value)

        @self.app.task
        async def follow_clock() -> None:
            await follow_clock_topic(self.clock, self.settings.kafka_bootstrap, self.topic_name(CLOCK), codec)

    # -- web ----------------------------------------------------------------------------------

    def _add_pages(self) -> None:
        @self.app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Response:
            return Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

        @self.app.page("/health")
        async def health(web: Any, request: Any) -> Response:
            # Ready once partitions are assigned and state recovered, and not mid-rebalance.
            ready = (
                all(pipeline.ready.is_set() for pipeline in self._pipelines)
                and all(mirror.ready.is_set() for mirror in self._mirrors)
                and self.app.tables.recovery.completed.is_set()
                and not self.app.rebalancing
                and not self.app.should_stop
            )
            return Response(text="ok" if ready else "starting or rebalancing", status=200 if ready else 503)


class RecordPublisher:
    """What a service's HTTP API produces: catalogue records through one idempotent producer,
    started on first use. Each send waits until every in-sync replica has the record, so an
    HTTP answer never promises more than Kafka holds."""

    def __init__(self, runtime: ServiceRuntime, timeout_ms: int = 10_000):
        self.runtime = runtime
        self.timeout_ms = timeout_ms  # a send waits this long for Kafka before the caller is told to retry
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def send(self, topic: str, key: str, value: dict) -> RecordMetadata:
        """Send one record of catalogue ``topic`` (a partner topic with its provider filled in)
        and wait for it to be stored; returns where it was stored."""
        producer = await self._started()
        data = self.runtime.codec(topic).encode(value)
        return await (await producer.send(self.runtime.topic_name(topic), data, key=key.encode()))

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.runtime.settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                    request_timeout_ms=self.timeout_ms, client_id=f"{self.runtime.service}-api",
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer
