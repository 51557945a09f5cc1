"""Proven, not assumed: a real Prometheus with the repository's scrape config (local targets) and
alert rules scrapes the five services through a short run of the demo, and every dashboard
query and every alert expression, evaluated through its HTTP API, parses and finds data.

One demo run for the module (about a minute with the smallest demo): Prometheus scrapes every
second while it runs; a thread records /api/v1/targets. Afterwards the queries are evaluated at
the last moment all five services were up, so the services' last figures are there (once they
stop, their series go stale). Dashboard variables become ``.*``, ``$__rate_interval`` one minute
and ``$__range`` five (the whole run).

An alert is empty while it does not fire, so for alerts "finds data" means every metric its
expression reads has series: a misspelt or never-exported metric would leave it silent forever.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from gridflex import REPO_ROOT
from gridflex.processes import free_port
from gridflex.prometheus import (
    JOB, RULES_DIR, LocalPrometheus, PrometheusUnavailable, ensure_binaries, referenced_metrics,
)

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DEMO_LOG = REPO_ROOT / "var" / "log" / "tests" / "observability-demo.log"
# The services the demo runs (the VTN is not one of them), on their default ports.
SERVICE_PORTS = {"telemetry": 8101, "enrollment": 8102, "dispatch": 8103, "baseline": 8104, "settlement": 8105}
DEMO_ACCOUNTS = "20"  # the demo's minimum: every phase, every kind of record, about a minute
DEMO_TIMEOUT_S = 600
PORTS_BUSY_WAIT_S = 300  # another demo run (e.g. a colleague's) holds the ports: wait for it
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}


@dataclass
class ObservedRun:
    prometheus: LocalPrometheus
    at: float  # the last scrape at which all five services were up
    snapshots: list[dict[str, str]] = field(default_factory=list)  # service → health, per poll of /api/v1/targets

    def query(self, expr: str) -> dict[str, Any]:
        return self.prometheus.query(expr, at=self.at)


def ports_in_use() -> list[int]:
    from demo.driving import port_in_use

    return [port for port in SERVICE_PORTS.values() if port_in_use(port)]


def wait_for_free_ports() -> None:
    deadline = time.monotonic() + PORTS_BUSY_WAIT_S
    while busy := ports_in_use():
        if time.monotonic() > deadline:
            pytest.fail(f"ports {busy} stayed in use for {PORTS_BUSY_WAIT_S} s (another demo run?); "
                        "the demo needs 8101-8105")
        time.sleep(5)


def poll_targets(prometheus: LocalPrometheus, snapshots: list[dict[str, str]], stop: threading.Event) -> None:
    """Every second until ``stop``: each gridflex target's service → health, as /api/v1/targets says."""
    while not stop.wait(1.0):
        try:
            active = prometheus.api("targets", state="active")["data"]["activeTargets"]
        except Exception:  # a missed poll is not a result; the next one counts
            continue
        snapshots.append({target["labels"].get("service", "?"): target["health"] for target in active
                          if target["labels"].get("job") == JOB})


@pytest.fixture(scope="module")
def observed(running_stack) -> ObservedRun:
    try:
        binaries = ensure_binaries()
    except PrometheusUnavailable as exc:
        pytest.skip(f"Prometheus is not installed and cannot be here: {exc}")
    wait_for_free_ports()
    targets = {service: f"127.0.0.1:{port}" for service, port in SERVICE_PORTS.items()}
    with LocalPrometheus(port=free_port(), targets=targets, scrape_interval="1s", binaries=binaries) as prometheus:
        snapshots: list[dict[str, str]] = []
        stop = threading.Event()
        poller = threading.Thread(target=poll_targets, args=(prometheus, snapshots, stop), daemon=True)
        poller.start()
        started = time.time()
        DEMO_LOG.parent.mkdir(parents=True, exist_ok=True)
        try:
            with DEMO_LOG.open("w") as log:
                demo = subprocess.run([sys.executable, "-m", "demo", "--accounts", DEMO_ACCOUNTS], cwd=REPO_ROOT,
                                      stdout=log, stderr=subprocess.STDOUT, timeout=DEMO_TIMEOUT_S)
        finally:
            stop.set()
            poller.join(timeout=10)
        ended = time.time()
        tail = "\n".join(DEMO_LOG.read_text(errors="replace").splitlines()[-30:])
        assert demo.returncode == 0, f"the demo failed ({demo.returncode}); {DEMO_LOG}:\n{tail}"
        # The last scrape at which every service answered.
        answer = prometheus.api("query_range", query=f'count(up{{job="{JOB}"}} == 1)',
                                start=started, end=ended, step=1)
        points = answer["data"]["result"][0]["values"] if answer["data"]["result"] else []
        all_up = [float(at) for at, count in points if int(count) == len(SERVICE_PORTS)]
        assert all_up, f"the five services were never up together during the run:\n{prometheus.log_tail()}"
        yield ObservedRun(prometheus, max(all_up), snapshots)


# -- what the dashboards and rules are made of ----------------------------------------------------


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query of every panel."""
    found = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def dashboard_variables() -> list[tuple[str, str, str]]:
    """(dashboard file, variable, its label_values query) for every query variable."""
    return [(path.name, variable["name"], variable["definition"])
            for path in sorted(DASHBOARD_DIR.glob("*.json"))
            for variable in json.loads(path.read_text())["templating"]["list"] if variable["type"] == "query"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for path in sorted(RULES_DIR.glob("*.yml")) for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def substituted(expr: str) -> str:
    """A panel query as Grafana sends it with every variable on All and a concrete interval."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", ".*", expr)


def test_grafana_substitution_leaves_no_variable() -> None:
    # (The helper the dashboard test relies on.)
    assert substituted('rate(x{p=~"$program", t=~"partner[.]${provider}[.].*"}[$__rate_interval])') == \
        'rate(x{p=~".*", t=~"partner[.].*[.].*"}[1m])'


# -- the run ----------------------------------------------------------------------------------------


def test_prometheus_scraped_the_five_services_during_the_run(observed: ObservedRun) -> None:
    # /api/v1/targets showed every service up at once, at its port on 127.0.0.1 (targets/local.yml).
    assert any(all(snapshot.get(service) == "up" for service in SERVICE_PORTS) for snapshot in observed.snapshots), \
        f"never all up in {len(observed.snapshots)} polls; last: {observed.snapshots[-1:]}"
    up = observed.query(f'up{{job="{JOB}"}}')["data"]["result"]
    assert {(series["metric"]["service"], series["metric"]["instance"], series["value"][1]) for series in up} == \
        {(service, f"127.0.0.1:{port}", "1") for service, port in SERVICE_PORTS.items()}


def test_every_rule_group_is_loaded_and_evaluates_without_error(observed: ObservedRun) -> None:
    groups = observed.prometheus.api("rules")["data"]["groups"]
    expected = {group["name"] for path in RULES_DIR.glob("*.yml") for group in yaml.safe_load(path.read_text())["groups"]}
    assert {group["name"] for group in groups} == expected
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {rule["alert"] for rule in alert_rules()}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{group['name']}/{rule['name']}: {rule['health']} {rule.get('lastError')}"
            assert not rule["lastEvaluation"].startswith("0001"), f"{rule['name']} was never evaluated"


@pytest.mark.parametrize("dashboard", sorted(path.name for path in DASHBOARD_DIR.glob("*.json")))
def test_every_dashboard_query_parses_and_returns_data(observed: ObservedRun, dashboard: str) -> None:
    problems = []
    targets = [(title, expr) for name, title, expr in dashboard_targets() if name == dashboard]
    assert targets
    for title, expr in targets:
        answer = observed.query(substituted(expr))
        if answer["status"] != "success":
            problems.append(f"{title}: {answer.get('error')}\n    {substituted(expr)}")
        elif not answer["data"]["result"]:
            problems.append(f"{title}: no data\n    {substituted(expr)}")
    assert not problems, f"{dashboard}:\n  " + "\n  ".join(problems)


def test_every_dashboard_variable_offers_values(observed: ObservedRun) -> None:
    for dashboard, name, definition in dashboard_variables():
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", definition).groups()
        answer = observed.prometheus.api("series", **{"match[]": selector}, start=observed.at - 300, end=observed.at)
        assert answer["status"] == "success", f"{dashboard} ${name}: {answer.get('error')}"
        values = {series[label] for series in answer["data"] if label in series}
        assert values, f"{dashboard} ${name}: {definition} offers nothing"


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alert_rules()])
def test_every_alert_expression_parses_and_reads_metrics_that_have_series(observed: ObservedRun, alert: str) -> None:
    rule = next(rule for rule in alert_rules() if rule["alert"] == alert)
    answer = observed.query(rule["expr"])
    assert answer["status"] == "success", f"{alert}: {answer.get('error')}"
    metrics = referenced_metrics(rule["expr"])
    assert metrics, f"{alert}: no metric found in its expression"
    missing = [metric for metric in sorted(metrics) if not observed.query(f"count({metric})")["data"]["result"]]
    assert not missing, f"{alert} reads {missing}, which had no series while the services ran"
