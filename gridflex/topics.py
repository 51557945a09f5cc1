"""The topic catalogue (``schemas/topics.yaml``): names, keys, value records, partitions, retention.

Applying it to a cluster is idempotent: missing topics are created, existing ones left alone.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")

METER_READS = "utility.meter-reads.v1"
CUSTOMER_ACCOUNTS = "utility.customer-accounts.v1"
ENERGY_EVENTS = "utility.energy-events.v1"
DEAD_LETTERS = "gridflex.dead-letters.v1"
EVENT_PERFORMANCE = "gridflex.event-performance.v1"
CLOCK = "gridflex.clock.v1"
METER_INTERVALS = "gridflex.telemetry.meter-intervals.v1"
DEVICE_STATUS = "gridflex.telemetry.device-status.v1"
ENROLLMENT_STATE = "gridflex.enrollment.state.v1"
INCENTIVE_CLAIMS = "gridflex.enrollment.incentive-claims.v1"
INCENTIVES = "gridflex.enrollment.incentives.v1"
REMOVAL_FINDINGS = "gridflex.enrollment.removal-findings.v1"
EVENT_LIFECYCLE = "gridflex.dispatch.event-lifecycle.v1"
EVENT_USAGE = "gridflex.baseline.event-usage.v1"

THERMOSTAT_STATE = "partner.{provider_id}.thermostat-state.v1"
ENROLLMENT_REQUESTS = "partner.{provider_id}.enrollment-requests.v1"
ENROLLMENT_DECISIONS = "partner.{provider_id}.enrollment-decisions.v1"
DATA_SHARING_AUTHORIZATIONS = "partner.{provider_id}.data-sharing-authorizations.v1"
DISPATCH_ACKS = "partner.{provider_id}.dispatch-acks.v1"
DISPATCH = "partner.{provider_id}.dispatch.v1"


class InvalidProviderId(ValueError):
    """A provider id must be usable as a topic-name segment and an ACL prefix."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str  # full Avro record name
    partitions: int
    replication_factor: int
    cleanup_policy: str
    retention_ms: int

    def renamed(self, name: str) -> "TopicSpec":
        return dataclasses.replace(self, name=name)

    def new_topic(self) -> NewTopic:
        return NewTopic(
            name=self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication_factor,
            topic_configs={"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)},
        )


class TopicCatalogue:
    """Every topic gridflex knows, including the per-provider templates."""

    def __init__(self, topics: list[TopicSpec], partner_templates: list[TopicSpec]):
        self.topics = {topic.name: topic for topic in topics}
        self.partner_templates = {template.name: template for template in partner_templates}

    @classmethod
    def load(cls, schemas_dir: Path) -> "TopicCatalogue":
        document = yaml.safe_load((schemas_dir / "topics.yaml").read_text())
        defaults = document["defaults"]

        def spec(entry: dict) -> TopicSpec:
            return TopicSpec(
                name=entry["name"],
                key=entry["key"],
                value=entry["value"],
                partitions=int(entry.get("partitions", defaults["partitions"])),
                replication_factor=int(entry.get("replication_factor", defaults["replication_factor"])),
                cleanup_policy=entry["cleanup_policy"],
                retention_ms=int(entry["retention_ms"]),
            )

        return cls([spec(e) for e in document["topics"]], [spec(e) for e in document["partner_topics"]])

    def spec(self, name: str) -> TopicSpec:
        """The spec of a topic, including a partner topic such as ``partner.acme.dispatch.v1``."""
        if name in self.topics:
            return self.topics[name]
        for template in self.partner_templates.values():
            pattern = re.escape(template.name).replace(re.escape("{provider_id}"), "(?P<provider>[^.]+)")
            if re.fullmatch(pattern, name):
                return template.renamed(name)
        raise KeyError(f"topic {name!r} is not in the catalogue")

    def partner_topics(self, provider_id: str) -> list[TopicSpec]:
        validate_provider_id(provider_id)
        return [t.renamed(t.name.format(provider_id=provider_id)) for t in self.partner_templates.values()]

    @staticmethod
    def partner_pattern(template: str) -> str:
        """A regex matching every provider's topic made from ``template``."""
        return "^" + re.escape(template).replace(re.escape("{provider_id}"), "[a-z0-9][a-z0-9-]*") + "$"


def provider_of(topic: str) -> str:
    """The provider that owns a partner topic: the identity is the topic prefix, never the record."""
    parts = topic.split(".")
    if len(parts) < 3 or parts[0] != "partner":
        raise ValueError(f"{topic!r} is not a partner topic")
    return parts[1]


def validate_provider_id(provider_id: str) -> str:
    if not PROVIDER_ID.fullmatch(provider_id):
        raise InvalidProviderId(
            f"provider id {provider_id!r} must be 2-63 characters of lower-case letters, digits and '-'"
        )
    return provider_id


async def create_topics(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridflex-topics")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics([spec.new_topic() for spec in missing])
            except TopicAlreadyExistsError:
                pass  # created concurrently by someone else: that is the goal
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def delete_topics_containing(bootstrap: str, marker: str) -> list[str]:
    """Delete every topic whose name contains ``marker``: the catalogue copies of one isolated run
    (a test's or a benchmark's topic suffix) with the changelogs its services made."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="gridflex-topics")
    await admin.start()
    try:
        doomed = sorted(name for name in await admin.list_topics() if marker in name)
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()
