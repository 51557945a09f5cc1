"""Typed configuration from environment variables (prefix ``GRIDFLEX_``).

Every service has one settings class deriving from :class:`ServiceSettings`; nothing else reads
the environment.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gridflex import REPO_ROOT


class ClockMode(str, Enum):
    WALL = "wall"
    SIMULATED = "simulated"


class ServiceSettings(BaseSettings):
    """What every gridflex service needs to run."""

    model_config = SettingsConfigDict(env_prefix="GRIDFLEX_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, host:port[,host:port]")
    database_url: str = Field(
        "postgresql://gridflex:gridflex@127.0.0.1:15432/gridflex", description="Postgres DSN (ledger)"
    )
    clock: ClockMode = Field(ClockMode.WALL, description="wall in production; simulated follows gridflex.clock.v1")
    schemas_dir: Path = Field(REPO_ROOT / "schemas", description="Avro schemas and the topic catalogue")
    programs_dir: Path = Field(REPO_ROOT / "programs", description="The program catalogue (one YAML file per program)")
    data_dir: Path = Field(REPO_ROOT / "var" / "services", description="Local state (RocksDB tables)")
    log_level: str = Field("INFO")
    log_format: str = Field("json", description="json (production) or console (people at a terminal)")
    web_host: str = Field("127.0.0.1", description="Where /metrics and health pages listen")
    topic_suffix: str = Field("", description="Appended to every topic name; tests use it to isolate runs")
    replication_factor: int = Field(1, description="Replication of the topics a service creates itself (changelogs)")
    instance_id: str = Field("", description="Stable consumer-group instance id (static membership); empty = dynamic")
    commit_interval_s: float = Field(1.0, description="How often consumed offsets are committed")
    batch_size: int = Field(5000, description="Most records handed to a batch handler at once")
    batch_within_s: float = Field(0.05, description="Longest wait to fill a batch")
