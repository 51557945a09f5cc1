"""`gridflex status`: is each service up, ready, keeping up? Read from its /health and /metrics.

A service is *ready* when /health answers 200 (partitions assigned, state restored), *starting*
when it answers 503 (starting, restoring or rebalancing), *down* when nothing answers. From
/metrics: records behind (consumer lag summed over partitions), dead letters sent since start,
pipelines whose local state is restored, and the oldest commit among partitions that have lag:
a consumer that stopped committing while records wait.
"""

from __future__ import annotations

import importlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gridflex.settings import ServiceSettings
from gridflex.stack import text_table

PROBE_TIMEOUT_S = 2.0
COLUMNS = (("service", "SERVICE"), ("address", "ADDRESS"), ("health", "HEALTH"), ("lag", "LAG"),
           ("stalled_s", "NO COMMIT FOR (s)"), ("state", "STATE READY"), ("dead_letters", "DEAD LETTERS"))


@dataclass(frozen=True)
class ServiceHealth:
    service: str
    address: str
    health: str  # ready, starting, down
    lag: int | None = None
    stalled_s: int | None = None  # longest time since a commit among partitions with lag
    state: str | None = None  # pipelines restored / pipelines
    dead_letters: int | None = None


def web_address(service: str) -> str:
    """host:port of a service's web server, as its settings (and the environment) give it."""
    module = importlib.import_module(f"services.{service}.settings")
    settings_class = next(value for value in vars(module).values() if isinstance(value, type)
                          and issubclass(value, ServiceSettings) and value is not ServiceSettings)
    settings = settings_class()
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::") else settings.web_host
    return f"{host}:{settings.web_port}"


def summarize(service: str, address: str, health_status: int | None, metrics_text: str | None,
              now: float) -> ServiceHealth:
    """What /health's status code (None: no answer) and /metrics say of one service."""
    if health_status is None:
        return ServiceHealth(service, address, "down")
    health = "ready" if health_status == 200 else "starting"
    if metrics_text is None:
        return ServiceHealth(service, address, health)
    lag: dict[tuple, float] = {}
    commits: dict[tuple, float] = {}
    ready, dead_letters = [], 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "gridflex_consumer_lag":
                lag[_partition(sample.labels)] = sample.value
            elif sample.name == "gridflex_last_commit_timestamp_seconds":
                commits[_partition(sample.labels)] = sample.value
            elif sample.name == "gridflex_state_ready":
                ready.append(sample.value)
            elif sample.name == "gridflex_dead_letters_total":
                dead_letters += sample.value
    waiting = [now - commits[key] for key, behind in lag.items() if behind > 0 and key in commits]
    return ServiceHealth(
        service, address, health, lag=int(sum(lag.values())), stalled_s=int(max(waiting)) if waiting else 0,
        state=f"{int(sum(ready))}/{len(ready)}" if ready else None, dead_letters=int(dead_letters),
    )


def _partition(labels: dict[str, str]) -> tuple:
    return labels.get("group"), labels["topic"], labels["partition"]


def probe(service: str) -> ServiceHealth:
    address = web_address(service)
    status: int | None
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=PROBE_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as answered:
        status = answered.code
    except (urllib.error.URLError, OSError):
        status = None
    text = None
    if status is not None:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=PROBE_TIMEOUT_S) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            pass
    return summarize(service, address, status, text, time.time())


def format_services(rows: list[ServiceHealth]) -> str:
    return text_table(COLUMNS, [vars(row) for row in rows])
