"""Run gridflex services as real processes: for the demo, benchmarks and integration tests.

A :class:`ServiceProcess` is ``gridflex run <service>`` in a subprocess with its own
environment (topic suffix, clock mode, web port), its log in a file, and a readiness check on
its ``/health`` page. :func:`isolated_topics` creates a private copy of the catalogue's topics
(names with a suffix) so that runs never see each other's records.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gridflex.settings import ServiceSettings
from gridflex.topics import TopicCatalogue, TopicSpec, create_topics

WEB_PORT_VARIABLE = {"telemetry": "GRIDFLEX_TELEMETRY_WEB_PORT", "enrollment": "GRIDFLEX_ENROLLMENT_WEB_PORT",
                     "dispatch": "GRIDFLEX_DISPATCH_WEB_PORT", "baseline": "GRIDFLEX_BASELINE_WEB_PORT",
                     "settlement": "GRIDFLEX_SETTLEMENT_WEB_PORT", "vtn": "GRIDFLEX_VTN_WEB_PORT"}


class ServiceFailed(RuntimeError):
    """A service process exited or did not become ready; the message holds its log's tail."""


class ServiceProcess:
    """One service worker in a subprocess."""

    def __init__(self, service: str, env: dict[str, str], web_port: int, log_path: Path):
        self.service = service
        self.env = {
            **os.environ,
            # Static group membership: a restarted worker takes its partitions back at once
            # instead of waiting for the broker to time the old member out.
            "GRIDFLEX_INSTANCE_ID": f"{service}-0",
            **env,
            WEB_PORT_VARIABLE[service]: str(web_port),
            "PYTHONUNBUFFERED": "1",
        }
        self.web_port = web_port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 90.0) -> "ServiceProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", "run", self.service],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        try:
            self.wait_ready(ready_timeout)
        except ServiceFailed:
            self.stop()  # a worker that never became ready must not outlive its caller
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until ``/health`` answers 200 (partitions assigned, not rebalancing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceFailed(f"{self.service} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise ServiceFailed(f"{self.service} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye (crash tests)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: a worker's web port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolated_env(suffix: str, *, clock: str = "simulated", **extra: str) -> dict[str, str]:
    """The environment of a service whose topics, consumer group and state carry ``suffix``."""
    return {"GRIDFLEX_TOPIC_SUFFIX": suffix, "GRIDFLEX_CLOCK": clock, **extra}


async def isolated_topics(settings: ServiceSettings, providers: tuple[str, ...] = ()) -> list[TopicSpec]:
    """Create the catalogue's topics (and the providers' partner topics) with ``settings.topic_suffix``."""
    catalogue = TopicCatalogue.load(settings.schemas_dir)
    specs = [*catalogue.topics.values()]
    for provider in providers:
        specs += catalogue.partner_topics(provider)
    suffixed = [spec.renamed(f"{spec.name}{settings.topic_suffix}") for spec in specs]
    await create_topics(settings.kafka_bootstrap, suffixed)
    return suffixed
