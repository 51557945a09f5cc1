"""A Prometheus on this machine, for the local stack: the repository's scrape config and alert
rules (``deploy/prometheus/``) against services running on 127.0.0.1.

    with LocalPrometheus(scrape_interval="1s") as prometheus:   # a free port, a temporary data dir
        ... run services (``make demo``, ``gridflex run <service>``) ...
        prometheus.query('up{job="gridflex"}')

or ``python -m gridflex.prometheus`` to keep one running until Ctrl-C.

The binaries come from Debian's ``prometheus`` package (2.42 in bookworm), installed when
missing if this user may (root, or passwordless sudo), like the stack's PostgreSQL. The
package's maintainer scripts may start a system daemon on :9090; one that the installation
started is stopped and disabled again, so installing leaves nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from gridflex import REPO_ROOT
from gridflex.stack import StackError, apt_install

DEPLOY_DIR = REPO_ROOT / "deploy" / "prometheus"
CONFIG_FILE = DEPLOY_DIR / "prometheus.yml"
RULES_DIR = DEPLOY_DIR / "rules"
RULE_TESTS_DIR = DEPLOY_DIR / "tests"
LOCAL_TARGETS = DEPLOY_DIR / "targets" / "local.yml"
TARGETS_FILE = Path("targets") / "gridflex.yml"  # where prometheus.yml's file_sd_configs look, next to it
JOB = "gridflex"
PREFERRED_PORT = 9090
PACKAGE = "prometheus"
SYSTEM_UNIT = "prometheus"  # the Debian package's daemon (systemd unit and init script)


class PrometheusUnavailable(RuntimeError):
    """The binaries are missing and this user cannot install them; the message says how."""


class PrometheusFailed(RuntimeError):
    """Prometheus exited, or did not become ready; the message holds its log's tail."""


@dataclass(frozen=True)
class Binaries:
    prometheus: Path
    promtool: Path

    def version(self) -> str:
        """``prometheus --version``'s first line, e.g. ``prometheus, version 2.42.0+ds (...)``."""
        result = subprocess.run([str(self.prometheus), "--version"], capture_output=True, text=True, timeout=30)
        return (result.stdout or result.stderr).splitlines()[0].strip()


_METRIC_NAME = re.compile(r"\b(?:(?:gridflex|faust|process)_[A-Za-z0-9_]+|up|ALERTS)\b")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')


def referenced_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: gridflex_*, faust_*, process_*, up, ALERTS
    (label values and other strings are not names)."""
    return set(_METRIC_NAME.findall(_STRING.sub('""', expr)))


# -- the binaries ---------------------------------------------------------------------------------


def find_binaries() -> Binaries | None:
    """``prometheus`` and ``promtool`` on PATH (or where Debian puts them), else None."""
    found = [shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
             for name in ("prometheus", "promtool")]
    return Binaries(Path(found[0]), Path(found[1])) if all(found) else None


def ensure_binaries() -> Binaries:
    """The binaries, installing Debian's package if they are missing and this user may."""
    binaries = find_binaries()
    if binaries is not None:
        return binaries
    try:
        apt_install([PACKAGE], "Prometheus (prometheus, promtool)")
    except StackError as exc:
        raise PrometheusUnavailable(str(exc)) from None
    finally:
        # Debian's maintainer scripts enable the package's daemon (a system Prometheus on :9090
        # with its own config) and start it where policy-rc.d allows. Only the binaries were wanted.
        _disable_system_daemon()
    binaries = find_binaries()
    if binaries is None:
        raise PrometheusUnavailable(f"the {PACKAGE} package was installed but prometheus/promtool are not on PATH")
    return binaries


def _systemd() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _system_daemon_running() -> bool:
    if _systemd():
        check = ["systemctl", "is-active", "--quiet", SYSTEM_UNIT]
    elif Path(f"/etc/init.d/{SYSTEM_UNIT}").is_file():
        check = [f"/etc/init.d/{SYSTEM_UNIT}", "status"]
    else:
        return False
    return subprocess.run(check, capture_output=True, timeout=30).returncode == 0


def _disable_system_daemon() -> None:
    """Stop the package's daemon if it runs, and keep it from starting at boot."""
    if not Path(f"/etc/init.d/{SYSTEM_UNIT}").is_file() and not _systemd():
        return  # not installed, or nothing to start it
    running = _system_daemon_running()
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if _systemd():
        steps = [["systemctl", "disable", "--now", SYSTEM_UNIT]]
    else:
        steps = [["invoke-rc.d", SYSTEM_UNIT, "stop"], ["update-rc.d", SYSTEM_UNIT, "disable"]]
    for step in steps:
        subprocess.run([*prefix, *step], capture_output=True, timeout=60)
    if running:
        print(f"prometheus: stopped and disabled the system {SYSTEM_UNIT} daemon the package started",
              file=sys.stderr)


# -- configuration --------------------------------------------------------------------------------


def target_groups(targets: Mapping[str, str]) -> list[dict[str, Any]]:
    """File-discovery target groups: service → ``host:port``, each labelled with its service."""
    return [{"targets": [address], "labels": {"service": service}} for service, address in targets.items()]


def write_config(directory: Path, targets: Mapping[str, str] | None = None,
                 scrape_interval: str | None = None) -> Path:
    """The repository's prometheus.yml and rules in ``directory``, with the local targets
    (``targets/local.yml``, or ``targets``: service → ``host:port``); returns the config file.

    ``scrape_interval`` (e.g. ``1s``) overrides the scrape and evaluation intervals, for short runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(CONFIG_FILE.read_text())
    if scrape_interval:
        config["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval)
    shutil.copytree(RULES_DIR, directory / "rules", dirs_exist_ok=True)
    targets_file = directory / TARGETS_FILE
    targets_file.parent.mkdir(parents=True, exist_ok=True)
    if targets is None:
        shutil.copyfile(LOCAL_TARGETS, targets_file)
    else:
        targets_file.write_text(yaml.safe_dump(target_groups(targets), sort_keys=False))
    config_file = directory / "prometheus.yml"
    config_file.write_text(f"# Written by gridflex/prometheus.py from {CONFIG_FILE.relative_to(REPO_ROOT)}\n"
                           + yaml.safe_dump(config, sort_keys=False))
    return config_file


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def choose_port(preferred: int = PREFERRED_PORT) -> int:
    """``preferred`` if nothing listens there, else any free port on 127.0.0.1."""
    if port_free(preferred):
        return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the server -----------------------------------------------------------------------------------


class LocalPrometheus:
    """A Prometheus process on 127.0.0.1 with the repository's config and rules.

    ``directory`` holds its config, rules, data and log (a temporary one, deleted at ``stop``,
    unless given). ``port``: None for 9090 when free, else any free port. Start it from a thread
    that outlives it (the main thread): Prometheus is told to stop when that thread's process
    dies, and Linux counts the starting thread as the parent.
    """

    def __init__(self, *, port: int | None = None, directory: Path | None = None,
                 targets: Mapping[str, str] | None = None, scrape_interval: str | None = None,
                 retention: str = "1d", binaries: Binaries | None = None):
        self.port = port
        self._given_directory = directory
        self.directory: Path | None = directory
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.retention = retention
        self.binaries = binaries
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self, ready_timeout: float = 60.0) -> "LocalPrometheus":
        """Write the config, start the server, and wait until it answers ``/-/ready``."""
        binaries = self.binaries or ensure_binaries()
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="gridflex-prometheus-"))
        config_file = write_config(self.directory, self.targets, self.scrape_interval)
        self.port = self.port or choose_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*_terminated_with_parent(), str(binaries.prometheus), f"--config.file={config_file}",
                 f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--storage.tsdb.retention.time={self.retention}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusFailed(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise PrometheusFailed(f"prometheus not ready on {self.url} after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (SIGKILL if it does not stop in time); delete a temporary directory."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        if self._given_directory is None and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def log_tail(self, lines: int = 30) -> str:
        if self.directory is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET ``/api/v1/<path>``: the whole JSON answer (``status``, ``data`` or ``error``),
        also for a query Prometheus refuses (HTTP 400/422 carry the same JSON)."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return json.loads(body)
            except ValueError:
                raise PrometheusFailed(f"{path}: HTTP {exc.code}: {body[:500]!r}") from None

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """An instant query (at ``at``, a Unix time; now by default)."""
        return self.api("query", query=expr, time=at)

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _terminated_with_parent() -> list[str]:
    """A command prefix that SIGTERMs Prometheus if the process that started it dies without
    stopping it (util-linux's setpriv; Linux only): nothing is left listening after a crash."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gridflex.prometheus", description=(
        "Run Prometheus with deploy/prometheus/ (scrape config and alert rules) against the services on this "
        "machine (127.0.0.1:8101-8105) until Ctrl-C."))
    parser.add_argument("--port", type=int, help=f"its port (default {PREFERRED_PORT}, or a free one if taken)")
    parser.add_argument("--scrape-interval", help="e.g. 1s for a short run (default: prometheus.yml's, 15s)")
    parser.add_argument("--data-dir", type=Path, help="keep config, data and log here (default: a temporary dir)")
    args = parser.parse_args(argv)
    try:
        prometheus = LocalPrometheus(port=args.port, directory=args.data_dir, scrape_interval=args.scrape_interval)
        prometheus.start()
    except (PrometheusUnavailable, PrometheusFailed) as exc:
        print(f"prometheus: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"prometheus: {prometheus.url} (config and data in {prometheus.directory}); Ctrl-C stops it")
        prometheus.process.wait()
        print(f"prometheus exited with {prometheus.process.returncode}:\n{prometheus.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        prometheus.stop()


if __name__ == "__main__":
    sys.exit(main())
