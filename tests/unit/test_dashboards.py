"""The Grafana dashboards (deploy/grafana/dashboards/) are what build_dashboards.py builds, and
each is usable as provisioned: every panel has a title, a unit and a description, reads the
provisioned Prometheus through the ``datasource`` variable, and queries metrics the code exports;
the ``program`` and ``provider`` variables are there and used.

Static: tests/integration/test_observability.py runs every query against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridflex.prometheus import referenced_metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "gridflex.yml"
# The variables each dashboard offers (telemetry's metrics carry no program).
EXPECTED_VARIABLES = {
    "overview.json": {"datasource", "program", "provider"},
    "telemetry.json": {"datasource", "provider"},
    "events-and-dispatch.json": {"datasource", "program", "provider"},
    "baseline-and-settlement.json": {"datasource", "program", "provider"},
}
# Grafana's unit ids used here (packages/grafana-data valueFormats); custom units start "suffix:".
KNOWN_UNITS = {"none", "short", "percentunit", "s", "ms", "h", "dtdurations", "recps", "ops", "reqps",
               "currencyUSD", "dateTimeAsIso"}
SCHEMA_VERSIONS = range(39, 42)  # Grafana 11.x–12.x
VARIABLE = re.compile(r"\$\{?(\w+)")


def load_builder():
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def declared_metrics() -> set[str]:
    names = set()
    for path in [*(ROOT / "gridflex").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        names |= set(re.findall(r"\b(?:Counter|Gauge|Histogram)\(\s*\"(gridflex_\w+)\"", path.read_text()))
    return names


def test_committed_dashboards_are_what_the_script_builds() -> None:
    # Edit build_dashboards.py, run it, commit both: the JSON must not drift from it.
    built = load_builder().render()
    committed = {path.name: path.read_text() for path in DASHBOARD_DIR.glob("*.json")}
    assert set(committed) == set(built), "run: python deploy/grafana/build_dashboards.py"
    for name, text in built.items():
        assert committed[name] == text, f"{name} differs from build_dashboards.py's; run it and commit"


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    found = dashboards()
    assert set(found) == set(EXPECTED_VARIABLES)
    uids = [dashboard["uid"] for dashboard in found.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in found.items():
        assert dashboard["schemaVersion"] in SCHEMA_VERSIONS, name
        assert dashboard["title"] and dashboard["description"] and "gridflex" in dashboard["tags"], name
        assert dashboard.get("id") is None, f"{name}: provisioned dashboards carry no database id"


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIABLES))
def test_every_panel_has_a_title_unit_and_description(name: str) -> None:
    panels = data_panels(dashboards()[name])
    assert panels
    for panel in panels:
        where = f"{name}: {panel.get('title')!r}"
        assert panel.get("title", "").strip(), where
        assert len(panel.get("description", "").strip()) > 20, f"{where} has no description"
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit in KNOWN_UNITS or (unit or "").startswith("suffix:"), f"{where}: unit {unit!r}"
        assert panel.get("targets"), f"{where} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip() and target.get("refId"), where


def test_panels_read_the_provisioned_prometheus_through_the_datasource_variable() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uid = next(ds["uid"] for ds in provisioned if ds["type"] == "prometheus")
    assert uid == "prometheus"
    selected = {"type": "prometheus", "uid": "${datasource}"}
    for name, dashboard in dashboards().items():
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
        # A Prometheus data source picker, defaulting to the provisioned one.
        assert variable["type"] == "datasource" and variable["query"] == "prometheus", name
        assert variable["current"]["value"] == uid, name
        for panel in data_panels(dashboard):
            assert panel["datasource"] == selected, f"{name}: {panel['title']}"
            assert all(target["datasource"] == selected for target in panel["targets"]), f"{name}: {panel['title']}"


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIABLES))
def test_program_and_provider_variables_are_offered_and_used(name: str) -> None:
    dashboard = dashboards()[name]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert set(variables) == EXPECTED_VARIABLES[name]
    used = {match for panel in data_panels(dashboard) for target in panel["targets"]
            for match in VARIABLE.findall(target["expr"]) if not match.startswith("__")}
    # Every query's variables are defined, and every variable filters at least one panel.
    assert used <= set(variables), f"{name}: undefined {used - set(variables)}"
    assert set(variables) - {"datasource"} <= used, f"{name}: unused {set(variables) - {'datasource'} - used}"
    for key in set(variables) - {"datasource"}:
        variable = variables[key]
        # Multi-select with All meaning "any" (the queries match with =~).
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*", f"{name}: {key}"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, f"{name}: {key}"
        assert re.fullmatch(r"label_values\(.+, " + key + r"\)", variable["definition"]), f"{name}: {key}"
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            # A multi-value variable only works in a regex match.
            for label, _ in re.findall(r'(\w+)\s*(?<![=~!])=\s*"[^"]*\$\{?(program|provider)\b', target["expr"]):
                pytest.fail(f"{name}: {panel['title']}: {label}= with a multi-value variable; use =~")


def test_queries_read_metrics_the_code_exports() -> None:
    declared = declared_metrics()
    assert "gridflex_consumer_lag" in declared, "the metric declarations were not found"
    for name, dashboard in dashboards().items():
        for panel in data_panels(dashboard):
            for target in panel["targets"]:
                metrics = referenced_metrics(target["expr"])
                assert metrics, f"{name}: {panel['title']}: no metric in {target['expr']}"
                for metric in metrics:
                    base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
                    if metric.startswith("gridflex_"):
                        assert metric in declared or base in declared, f"{name}: {panel['title']}: {metric}"


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIABLES))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboards()[name]["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']}"
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{name}: {panel['title']} overlaps another panel"
        taken |= cells
