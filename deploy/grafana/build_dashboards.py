"""The gridflex Grafana dashboards, as code: ``python deploy/grafana/build_dashboards.py`` writes
``deploy/grafana/dashboards/*.json`` (committed; Grafana loads them through
``provisioning/dashboards/gridflex.yml``). Edit the panels here, not in the JSON:
tests/unit/test_dashboards.py fails when the two differ.

Every panel has a title, a description and a unit. Every dashboard has a ``datasource`` variable
(default: the provisioned Prometheus, uid ``prometheus``) and the ``program`` and ``provider``
variables where its metrics carry those labels. Series are selected on the labels every gridflex
service exports (``service``, ``program``, ``provider``, ``topic``) and on ``job="gridflex"``
(deploy/prometheus/prometheus.yml). Provider topics are ``partner.<provider>.<name>.v1``, so
per-provider Kafka panels match ``topic`` on ``partner[.]$provider[.].*``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_UID = "prometheus"  # deploy/grafana/provisioning/datasources/gridflex.yml
TAG = "gridflex"

# Reused selectors and expressions.
PROVIDER_TOPIC = 'partner[.]${provider}[.].*'


def quantile(q: float, metric: str, selector: str = "", by: str = "") -> str:
    """``histogram_quantile`` of a histogram's rate, grouped by ``by`` (plus ``le``)."""
    group = f"{by}, le" if by else "le"
    return (f"histogram_quantile({q}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))")


# -- panels ----------------------------------------------------------------------------------------


@dataclass
class Query:
    expr: str
    legend: str = "__auto"
    instant: bool = False


@dataclass
class Panel:
    title: str
    description: str
    unit: str
    queries: list[Query]
    kind: str = "timeseries"  # timeseries, stat, bargauge, table
    width: int = 12
    height: int = 8
    mappings: list[dict] = field(default_factory=list)
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    stacked: bool = False
    bars: bool = False
    min: float | None = None
    max: float | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "mappings": self.mappings,
            "thresholds": {"mode": "absolute", "steps": [
                {"color": color, "value": value} for value, color in self.thresholds]},
            "color": {"mode": "thresholds" if self.kind in ("stat", "bargauge") else "palette-classic"},
        }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "bars" if self.bars else "line",
                "lineWidth": 1,
                "fillOpacity": 80 if self.bars else 10,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if self.stacked else "none", "group": "A"},
                "axisSoftMin": 0,
            }
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self._options(),
            "targets": [
                {
                    "refId": chr(ord("A") + index),
                    "datasource": DATASOURCE,
                    "editorMode": "code",
                    "expr": query.expr,
                    "legendFormat": query.legend,
                    "range": not (query.instant or self.kind == "table"),
                    "instant": query.instant or self.kind == "table",
                    **({"format": "table"} if self.kind == "table" else {}),
                }
                for index, query in enumerate(self.queries)
            ],
        }

    def _options(self) -> dict[str, Any]:
        reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
        if self.kind == "timeseries":
            return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}}
        if self.kind == "stat":
            return {"reduceOptions": reduce, "colorMode": "background", "graphMode": "none",
                    "justifyMode": "auto", "orientation": "auto", "textMode": "value_and_name",
                    "wideLayout": True, "showPercentChange": False}
        if self.kind == "bargauge":
            return {"reduceOptions": reduce, "orientation": "horizontal", "displayMode": "basic",
                    "showUnfilled": True, "valueMode": "color", "namePlacement": "left", "sizing": "auto"}
        if self.kind == "table":
            return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
        raise ValueError(self.kind)


@dataclass
class Row:
    title: str
    panels: list[Panel]


def state_mapping(off: str, on: str) -> list[dict]:
    """Value mappings for a 0/1 gauge: red ``off``, green ``on``."""
    return [{"type": "value", "options": {
        "0": {"text": off, "color": "red", "index": 0},
        "1": {"text": on, "color": "green", "index": 1},
    }}]


# -- variables -------------------------------------------------------------------------------------


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {"selected": True, "text": "Prometheus", "value": DATASOURCE_UID},
        "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
        "skipUrlSync": False,
    }


def query_variable(name: str, label: str, query: str, description: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "description": description, "type": "query", "datasource": DATASOURCE,
        "definition": query,
        # As Grafana's variable editor stores it: the query string (label_values(...)) it runs.
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "includeAll": True, "allValue": ".*", "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0, "options": [], "refresh": 2, "regex": "", "sort": 1, "skipUrlSync": False,
    }


PROGRAM = query_variable(
    "program", "Program", "label_values(gridflex_dispatch_events, program)",
    "Programs in dispatch's catalogue (programs/*.yaml)")
PROVIDER = query_variable(
    "provider", "Provider", 'label_values({__name__=~"gridflex_dispatch_instructions_total|'
    'gridflex_enrollment_decisions_total"}, provider)',
    "Provider fleets that sent enrollment requests or were sent dispatch instructions")


# -- dashboards ------------------------------------------------------------------------------------


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    variables: list[dict]
    rows: list[Row]

    def to_json(self) -> dict[str, Any]:
        panels: list[dict] = []
        panel_id, y = 1, 0
        for row in self.rows:
            panels.append({"id": panel_id, "type": "row", "title": row.title, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            panel_id, y = panel_id + 1, y + 1
            x, row_height = 0, 0
            for panel in row.panels:
                if x + panel.width > 24:
                    x, y, row_height = 0, y + row_height, 0
                panels.append(panel.to_json(panel_id, x, y))
                panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
            y += row_height
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": [TAG],
            "editable": True,
            "graphTooltip": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "time": {"from": "now-6h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "weekStart": "",
            "version": 1,
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
            }]},
            "links": [{"title": "gridflex dashboards", "type": "dashboards", "tags": [TAG], "asDropdown": True,
                       "includeVars": True, "keepTime": True, "targetBlank": False, "icon": "external link",
                       "tooltip": "", "url": ""}],
            "templating": {"list": self.variables},
            "panels": panels,
        }


def overview() -> Dashboard:
    return Dashboard(
        uid="gridflex-overview",
        title="gridflex · Overview",
        description="Every service at a glance: up, ready, throughput, dead letters, errors, lag and commits.",
        variables=[datasource_variable(), PROGRAM, PROVIDER],
        rows=[
            Row("Services", [
                Panel("Up", "1 when Prometheus scrapes every instance of the service (the lowest of its "
                      "instances); DOWN: the worker is not running or its web server does not answer. "
                      "Alert: GridflexServiceDown.", "none",
                      [Query('min by (service) (up{job="gridflex"})', "{{service}}")],
                      kind="stat", width=6, height=5, mappings=state_mapping("DOWN", "UP")),
                Panel("Ready (/health)", "1 when every pipeline of the service has its partitions assigned and its "
                      "local state restored, which is when /health answers 200; 0 while restoring or rebalancing "
                      "(503). Alert: GridflexServiceNotReady.", "none",
                      [Query("min by (service) (gridflex_state_ready)", "{{service}}")],
                      kind="stat", width=6, height=5, mappings=state_mapping("NOT READY", "READY")),
                Panel("Alerts firing", "gridflex alerts firing now (deploy/prometheus/rules; each has a runbook "
                      "in docs/operations.md).", "none",
                      [Query('count(ALERTS{alertstate="firing", alertname=~"Gridflex.*"}) or vector(0)', "firing")],
                      kind="stat", width=4, height=5, thresholds=[(None, "green"), (1, "red")]),
                Panel("Restarts", "Process starts in the selected time range, per service (a crash loop shows "
                      "here before anywhere else).", "none",
                      [Query('sum by (service) (changes(process_start_time_seconds{job="gridflex"}[$__range]))',
                             "{{service}}")],
                      kind="stat", width=4, height=5, thresholds=[(None, "green"), (1, "orange")]),
                Panel("Service clock", "Each service's current time: the wall clock in production, the latest "
                      "tick of gridflex.clock.v1 in a simulation (1970 before the first).", "dateTimeAsIso",
                      [Query("max by (service) (gridflex_clock_now_seconds) * 1000", "{{service}}")],
                      kind="stat", width=4, height=5, thresholds=[(None, "blue")]),
            ]),
            Row("Flow", [
                Panel("Records in", "Records consumed per second, per service (all its input topics).", "recps",
                      [Query("sum by (service) (rate(gridflex_records_in_total[$__rate_interval]))", "{{service}}")]),
                Panel("Records out", "Records produced per second, per service (dead letters included).", "recps",
                      [Query("sum by (service) (rate(gridflex_records_out_total[$__rate_interval]))",
                             "{{service}}")]),
                Panel("Dead letters", "Records refused per second, per service and reason code: on "
                      "gridflex.dead-letters.v1 with their original bytes (`gridflex dead-letters summary`). "
                      "Alert: GridflexDeadLettersSpiking.", "recps",
                      [Query("sum by (service, reason_code) (rate(gridflex_dead_letters_total[$__rate_interval]))",
                             "{{service}} {{reason_code}}")], stacked=True),
                Panel("Errors survived", "Failures a service survived and retried, per second: database writes "
                      "retried, commits lost to a rebalance, API requests answered 503. Alert: "
                      "GridflexServiceRetrying.", "ops",
                      [Query("sum by (service, kind) (rate(gridflex_errors_total[$__rate_interval]))",
                             "{{service}} {{kind}}")], stacked=True),
            ]),
            Row("Kafka consumption", [
                Panel("Consumer lag", "Records behind the end of the input topics, per service and consumer "
                      "group (end offset minus committed offset, read from the broker every few seconds). "
                      "Alert: GridflexConsumerLagGrowing.", "short",
                      [Query("sum by (service, group) (gridflex_consumer_lag)", "{{service}} {{group}}")],
                      width=8),
                Panel("Time since last commit", "The oldest last commit among a service's partitions. An idle "
                      "partition does not commit, so a high value with no lag is fine; with lag it is a stuck "
                      "consumer (alert: GridflexConsumerNotCommitting).", "s",
                      [Query("max by (service) (time() - gridflex_last_commit_timestamp_seconds)", "{{service}}")],
                      width=8),
                Panel("Record latency p95", "From a record's Kafka timestamp to the end of its processing, 95th "
                      "percentile per service (in a simulation, replayed records are old by design).", "s",
                      [Query(quantile(0.95, "gridflex_record_latency_seconds", by="service"), "{{service}}")],
                      width=8),
                Panel("Batch processing p95", "Time to process one batch of records, 95th percentile per service.",
                      "s", [Query(quantile(0.95, "gridflex_batch_processing_seconds", by="service"), "{{service}}")],
                      width=8),
                Panel("Last state restore", "How long each pipeline's last restore of its local state from its "
                      "changelog took (at start and after a rebalance).", "s",
                      [Query("max by (service, state) (gridflex_state_restore_duration_seconds)",
                             "{{service}} {{state}}")], kind="bargauge", width=8),
                Panel("GC pause p99", "Pauses of Python's cyclic garbage collector, 99th percentile per service.",
                      "s", [Query(quantile(0.99, "gridflex_gc_pause_seconds", by="service"), "{{service}}")],
                      width=8),
            ]),
            Row("Programs at a glance", [
                Panel("Events scheduled and under way", "Events accepted and not started yet (scheduled) or "
                      "started and not ended (active), per program.", "short",
                      [Query('sum by (program, state) (gridflex_dispatch_events{program=~"$program"})',
                             "{{program}} {{state}}")], width=8),
                Panel("Dispatch instructions", "Instructions sent to thermostats per second, per provider.", "recps",
                      [Query('sum by (provider) (rate(gridflex_dispatch_instructions_total{program=~"$program", '
                             'provider=~"$provider"}[$__rate_interval]))', "{{provider}}")], width=8),
                Panel("Credits posted", "Customer credit posted to the ledger in the selected time range, per "
                      "program (credits only; reversals on the Baseline and settlement dashboard).", "currencyUSD",
                      [Query('sum by (program) (increase(gridflex_settlement_credits_dollars_total{program=~"$program", '
                             'kind="credit"}[$__range]))', "{{program}}")],
                      kind="stat", width=8, thresholds=[(None, "blue")]),
            ]),
        ],
    )


def telemetry() -> Dashboard:
    sel = 'service="telemetry"'
    return Dashboard(
        uid="gridflex-telemetry",
        title="gridflex · Telemetry",
        description="Meter reads and thermostat states in; clean intervals, device status and dead letters out.",
        variables=[datasource_variable(), PROVIDER],
        rows=[
            Row("Input", [
                Panel("Meter reads in", "The utility's AMI reads consumed per second (utility.meter-reads.v1).",
                      "recps", [Query(f'sum(rate(gridflex_records_in_total{{{sel}, topic=~"utility[.]meter-reads[.].*"}}'
                                      '[$__rate_interval]))', "meter reads")]),
                Panel("Thermostat states in", "Thermostat state reports consumed per second, per provider topic "
                      "(partner.<provider>.thermostat-state.v1).", "recps",
                      [Query(f'sum by (topic) (rate(gridflex_records_in_total{{{sel}, topic=~"{PROVIDER_TOPIC}"}}'
                             '[$__rate_interval]))', "{{topic}}")]),
                Panel("Intervals by verdict", "What reconciliation decided per meter interval, per second: new, "
                      "revision, duplicate, replay, conflict, stale.", "recps",
                      [Query("sum by (verdict) (rate(gridflex_telemetry_intervals_total[$__rate_interval]))",
                             "{{verdict}}")], stacked=True),
                Panel("Device status changes", "Thermostat status changes emitted, per second: first seen, "
                      "online/offline, override.", "recps",
                      [Query("sum by (change) (rate(gridflex_telemetry_device_changes_total[$__rate_interval]))",
                             "{{change}}")], stacked=True),
            ]),
            Row("Output and refusals", [
                Panel("Records out", "Records produced per second, per topic: clean intervals, device status, "
                      "dead letters.", "recps",
                      [Query(f"sum by (topic) (rate(gridflex_records_out_total{{{sel}}}[$__rate_interval]))",
                             "{{topic}}")]),
                Panel("Dead letters by reason", "Reads and states refused per second, per reason code "
                      "(`gridflex dead-letters summary --service telemetry`).", "recps",
                      [Query(f"sum by (reason_code) (rate(gridflex_dead_letters_total{{{sel}}}[$__rate_interval]))",
                             "{{reason_code}}")], stacked=True),
            ]),
            Row("Processing", [
                Panel("Batch processing time", "Time to process one batch: median, 95th and 99th percentile.", "s",
                      [Query(quantile(q, "gridflex_batch_processing_seconds", sel), f"p{round(q * 100)}")
                       for q in (0.5, 0.95, 0.99)], width=8),
                Panel("Record latency p95", "From a record's Kafka timestamp to the end of its processing, per "
                      "input topic.", "s",
                      [Query(quantile(0.95, "gridflex_record_latency_seconds", sel, by="topic"), "{{topic}}")],
                      width=8),
                Panel("GC pause p99", "Pauses of Python's cyclic garbage collector in the telemetry worker.", "s",
                      [Query(quantile(0.99, "gridflex_gc_pause_seconds", sel), "p99")], width=8),
                Panel("Consumer lag", "Records behind the end of each input topic (meter reads and every "
                      "provider's thermostat states).", "short",
                      [Query(f"sum by (topic) (gridflex_consumer_lag{{{sel}}})", "{{topic}}")], width=8),
                Panel("Consumer lag, provider topics", "Records behind on the selected providers' "
                      "thermostat-state topics.", "short",
                      [Query(f'sum by (topic) (gridflex_consumer_lag{{{sel}, topic=~"{PROVIDER_TOPIC}"}})',
                             "{{topic}}")], width=8),
                Panel("Time since last commit", "Per input topic, the oldest last commit among its partitions "
                      "(idle partitions do not commit).", "s",
                      [Query(f"max by (topic) (time() - gridflex_last_commit_timestamp_seconds{{{sel}}})",
                             "{{topic}}")], width=8),
            ]),
            Row("Local state", [
                Panel("State ready", "1 when the pipeline's state (RocksDB, backed by its changelog) is restored "
                      "and its partitions assigned.", "none",
                      [Query(f"min by (state) (gridflex_state_ready{{{sel}}})", "{{state}}")],
                      kind="stat", width=8, mappings=state_mapping("NOT READY", "READY")),
                Panel("Records restored", "Changelog records replayed into local state since the worker started "
                      "(large after a worker lost its state directory).", "short",
                      [Query(f"sum by (state) (gridflex_state_restored_records_total{{{sel}}})", "{{state}}")],
                      kind="stat", width=8, thresholds=[(None, "blue")]),
                Panel("Last restore duration", "How long the last restore of each state took.", "s",
                      [Query(f"max by (state) (gridflex_state_restore_duration_seconds{{{sel}}})", "{{state}}")],
                      kind="stat", width=8, thresholds=[(None, "green"), (60, "orange")]),
            ]),
        ],
    )


def events_and_dispatch() -> Dashboard:
    program = 'program=~"$program"'
    return Dashboard(
        uid="gridflex-events-and-dispatch",
        title="gridflex · Events and dispatch",
        description="Energy events against program limits, instructions to thermostats and their "
                    "acknowledgments, and the enrollments that decide who is dispatched.",
        variables=[datasource_variable(), PROGRAM, PROVIDER],
        rows=[
            Row("Events", [
                Panel("Events scheduled and under way", "Events accepted and not started yet (scheduled) or "
                      "started and not ended (active), per program.", "short",
                      [Query(f"sum by (program, state) (gridflex_dispatch_events{{{program}}})",
                             "{{program}} {{state}}")], width=8),
                Panel("Event requests decided", "The utility's event requests decided, per program, action and "
                      "outcome (rejected: a program limit broken).", "short",
                      [Query(f"sum by (program, action, outcome) (increase(gridflex_dispatch_event_decisions_total"
                             f"{{{program}}}[$__rate_interval]))", "{{program}} {{action}} {{outcome}}")],
                      width=8, bars=True, stacked=True),
                Panel("Limits broken", "Rules broken by rejected event requests in the selected time range, per "
                      "rule code.", "short",
                      [Query("sum by (code) (increase(gridflex_dispatch_limit_failures_total[$__range]))", "{{code}}")],
                      kind="bargauge", width=8, thresholds=[(None, "orange")]),
                Panel("Lifecycle steps", "Event lifecycle records emitted (SCHEDULED, UPDATED, STARTED, ENDED, "
                      "CANCELLED, REJECTED), per program and status.", "short",
                      [Query(f"sum by (program, status) (increase(gridflex_dispatch_lifecycle_steps_total{{{program}}}"
                             "[$__rate_interval]))", "{{program}} {{status}}")], width=8, bars=True, stacked=True),
                Panel("Event hours used", "Event hours counted against each program's yearly limit.", "h",
                      [Query(f"max by (program, year) (gridflex_dispatch_program_hours_used{{{program}}})",
                             "{{program}} {{year}}")], kind="bargauge", width=8, thresholds=[(None, "blue")]),
                Panel("Event hours remaining", "Event hours each program has left in the year (programs with a "
                      "yearly limit). Alert: GridflexProgramHoursNearCap.", "h",
                      [Query(f"max by (program, year) (gridflex_dispatch_program_hours_remaining{{{program}}})",
                             "{{program}} {{year}}")], kind="bargauge", width=8,
                      thresholds=[(None, "red"), (10, "orange"), (30, "green")]),
            ]),
            Row("Instructions and acknowledgments", [
                Panel("Instructions sent", "Dispatch instructions sent to thermostats per second, per provider and "
                      "action (SCHEDULE, UPDATE, CANCEL).", "recps",
                      [Query(f'sum by (provider, action) (rate(gridflex_dispatch_instructions_total{{{program}, '
                             f'provider=~"$provider"}}[$__rate_interval]))', "{{provider}} {{action}}")],
                      stacked=True),
                Panel("Acknowledgments received", "Providers' acknowledgments consumed per second "
                      "(partner.<provider>.dispatch-acks.v1).", "recps",
                      [Query('sum by (topic) (rate(gridflex_records_in_total{service="dispatch", '
                             'topic=~"partner[.]${provider}[.]dispatch-acks[.].*"}[$__rate_interval]))', "{{topic}}")]),
                Panel("Acknowledgment coverage", "Per event and provider, the share of the thermostats the event "
                      "reached whose provider answered (`gridflex events show <event_id>`). Alert: "
                      "GridflexDispatchCoverageLowAtStart.", "percentunit",
                      [Query('max by (event_id, provider) (gridflex_dispatch_ack_coverage_ratio{provider=~"$provider"})',
                             "{{event_id}} {{provider}}")],
                      kind="bargauge", min=0, max=1, thresholds=[(None, "red"), (0.9, "orange"), (0.98, "green")]),
                Panel("Unacknowledged at start", "Per event and provider, thermostats with no acknowledgment when "
                      "the event started (`gridflex events unacknowledged <event_id>` lists them).", "short",
                      [Query('max by (event_id, provider) (gridflex_dispatch_unacknowledged_at_start'
                             '{provider=~"$provider"})', "{{event_id}} {{provider}}")],
                      kind="bargauge", thresholds=[(None, "green"), (1, "orange")]),
                Panel("Answers by status", "Thermostats answered, summed over the events on /metrics, per provider "
                      "and answer (ACCEPTED, REJECTED, OPTED_OUT, FAILED).", "short",
                      [Query('sum by (provider, status) (gridflex_dispatch_devices_acknowledged{provider=~"$provider"})',
                             "{{provider}} {{status}}")], kind="bargauge", thresholds=[(None, "blue")]),
                Panel("Fan-out in progress", "Event steps being fanned out to thermostats right now.", "short",
                      [Query("sum(gridflex_dispatch_fanout_in_progress)", "steps")], width=6),
                Panel("Duplicate requests", "Re-delivered event requests already decided, per second "
                      "(at-least-once delivery: expected now and then).", "ops",
                      [Query("sum(rate(gridflex_dispatch_duplicate_requests_total[$__rate_interval]))", "duplicates")],
                      width=6),
            ]),
            Row("Enrollment: who can be dispatched", [
                Panel("Enrollment decisions", "Enrollment and removal requests decided, per provider, action and "
                      "outcome.", "short",
                      [Query(f'sum by (provider, action, outcome) (increase(gridflex_enrollment_decisions_total'
                             f'{{{program}, provider=~"$provider"}}[$__rate_interval]))',
                             "{{provider}} {{action}} {{outcome}}")], bars=True, stacked=True),
                Panel("Enrollment rules failed", "Rules failed by rejected requests in the selected time range, per "
                      "rule code.", "short",
                      [Query("sum by (code) (increase(gridflex_enrollment_rule_failures_total[$__range]))", "{{code}}")],
                      kind="bargauge", thresholds=[(None, "orange")]),
                Panel("Requests that waited for their account", "Requests that arrived before the utility "
                      "published their service account, in the selected time range, by how the wait ended.",
                      "short",
                      [Query("sum by (result) (increase(gridflex_enrollment_requests_waited_total[$__range]))",
                             "{{result}}")], kind="bargauge", thresholds=[(None, "blue")]),
                Panel("HTTP API responses", "The enrollment and settlement HTTP APIs' responses per second, per "
                      "status code (401/403: a token problem; 503: a dependency down).", "reqps",
                      [Query('sum by (service, status_code) (rate(faust_http_status_codes_total{service=~'
                             '"enrollment|settlement"}[$__rate_interval]))', "{{service}} {{status_code}}")]),
            ]),
            Row("Processing", [
                Panel("Consumer lag", "Records behind on dispatch's and enrollment's input topics.", "short",
                      [Query('sum by (service, topic) (gridflex_consumer_lag{service=~"dispatch|enrollment"})',
                             "{{service}} {{topic}}")]),
                Panel("Batch processing p95", "Time to process one batch, 95th percentile.", "s",
                      [Query(quantile(0.95, "gridflex_batch_processing_seconds", 'service=~"dispatch|enrollment"',
                                      by="service"), "{{service}}")]),
            ]),
        ],
    )


def baseline_and_settlement() -> Dashboard:
    program = 'program=~"$program"'
    credits = "gridflex_settlement_credits_dollars_total"
    return Dashboard(
        uid="gridflex-baseline-and-settlement",
        title="gridflex · Baseline and settlement",
        description="Event performance against baselines, and the credits, reversals, statements and bonuses "
                    "posted to the billing ledger.",
        variables=[datasource_variable(), PROGRAM, PROVIDER],
        rows=[
            Row("Baseline", [
                Panel("Performance results", "Event performance records emitted per program, status and kind "
                      "(first result, or a revision after late or corrected data).", "short",
                      [Query(f"sum by (program, status, kind) (increase(gridflex_baseline_results_total{{{program}}}"
                             "[$__rate_interval]))", "{{program}} {{status}} {{kind}}")], bars=True, stacked=True),
                Panel("Accounts awaiting meter data", "Per ended event, accounts whose usage is not complete yet; at "
                      "the program's data deadline (7 days) they settle as INSUFFICIENT_DATA. Alert: "
                      "GridflexMeterDataOverdue.", "short",
                      [Query("sum by (event_id) (gridflex_baseline_accounts_awaiting_data)", "{{event_id}}")],
                      kind="bargauge", thresholds=[(None, "green"), (1, "orange")]),
                Panel("Events awaiting meter data", "Ended events with accounts still awaiting usage.", "short",
                      [Query("sum(gridflex_baseline_events_awaiting_data)", "events")],
                      kind="stat", width=6, thresholds=[(None, "green"), (1, "orange")]),
                Panel("Event sweeps in progress", "Ended events being evaluated right now, across partitions.",
                      "short", [Query("sum(gridflex_baseline_sweeps_in_progress)", "sweeps")],
                      kind="stat", width=6, thresholds=[(None, "blue")]),
                Panel("Meter intervals", "Meter intervals per second by what they did to the usage kept "
                      "(applied, ignored …).", "recps",
                      [Query("sum by (outcome) (rate(gridflex_baseline_intervals_total[$__rate_interval]))",
                             "{{outcome}}")]),
            ]),
            Row("Settlement", [
                Panel("Credits posted", "Customer credit posted to the ledger, in dollars, per program and credit "
                      "type.", "currencyUSD",
                      [Query(f'sum by (program, credit_type) (increase({credits}{{{program}, kind="credit"}}'
                             '[$__rate_interval]))', "{{program}} {{credit_type}}")], bars=True, stacked=True),
                Panel("Credits reversed", "Credit reversed by revisions (a corrected read changed a performance), "
                      "in dollars, per program and credit type.", "currencyUSD",
                      [Query(f'sum by (program, credit_type) (increase({credits}{{{program}, kind="reversal"}}'
                             '[$__range]))', "{{program}} {{credit_type}}")],
                      kind="bargauge", thresholds=[(None, "orange")]),
                Panel("Credited in the time range", "Credit posted (before reversals) in the selected time range, "
                      "per program.", "currencyUSD",
                      [Query(f'sum by (program) (increase({credits}{{{program}, kind="credit"}}[$__range]))',
                             "{{program}}")], kind="stat", thresholds=[(None, "blue")]),
                Panel("Ledger lines", "Ledger lines posted per program, credit type and kind (credit or "
                      "reversal).", "short",
                      [Query(f"sum by (program, credit_type, kind) (increase(gridflex_settlement_lines_total"
                             f"{{{program}}}[$__rate_interval]))", "{{program}} {{credit_type}} {{kind}}")],
                      bars=True, stacked=True),
                Panel("Causes settled", "Event results, capacity periods and incentives settled, per program, "
                      "credit type and status.", "short",
                      [Query(f"sum by (program, credit_type, status) (increase(gridflex_settlement_results_total"
                             f"{{{program}}}[$__rate_interval]))", "{{program}} {{credit_type}} {{status}}")],
                      bars=True, stacked=True),
                Panel("Caps applied", "Lines reduced by a cap in the selected time range (per bill period, per "
                      "year).", "short",
                      [Query(f"sum by (program, cap) (increase(gridflex_settlement_caps_applied_total{{{program}}}"
                             "[$__range]))", "{{program}} {{cap}}")], kind="bargauge", width=8,
                      thresholds=[(None, "blue")]),
                Panel("Performances waiting", "Event performances kept until settlement knows their account (bill "
                      "cycle, enrollment) and event.", "short",
                      [Query("sum(gridflex_settlement_performances_waiting)", "waiting")],
                      kind="stat", width=8, thresholds=[(None, "green"), (1, "orange")]),
                Panel("Closing behind the clock", "How far the last closed day's end is behind settlement's clock; "
                      "normally under a day. Alert: GridflexSettlementStalled (over 36 h).", "dtdurations",
                      [Query('max(gridflex_clock_now_seconds{service="settlement"}) '
                             "- max(gridflex_settlement_last_closed_day_timestamp_seconds)", "behind")],
                      kind="stat", width=8, thresholds=[(None, "green"), (86400, "orange"), (129600, "red")]),
                Panel("Ledger write time", "One ledger transaction (lines, results and Kafka positions together): "
                      "median and 95th percentile.", "s",
                      [Query(quantile(q, "gridflex_settlement_ledger_write_seconds"), f"p{round(q * 100)}")
                       for q in (0.5, 0.95)], width=8),
                Panel("Day close time", "Time to close one day's bill periods, 95th percentile.", "s",
                      [Query(quantile(0.95, "gridflex_settlement_close_seconds"), "p95")], width=8),
                Panel("Statements closed", "Bill statements closed per second (one per account and period with "
                      "lines).", "ops",
                      [Query("sum(rate(gridflex_settlement_statements_total[$__rate_interval]))", "statements")],
                      width=8),
            ]),
            Row("Sign-up bonuses", [
                Panel("Bonus fund remaining", "What is left of each program's sign-up bonus fund. Alert: "
                      "GridflexBonusFundNearlyEmpty.", "currencyUSD",
                      [Query(f"min by (program) (gridflex_enrollment_bonus_fund_remaining_dollars{{{program}}})",
                             "{{program}}")], kind="stat", width=6,
                      thresholds=[(None, "red"), (25000, "orange"), (100000, "green")]),
                Panel("Bonus and rebate decisions", "Enrollment's decisions on bonus and rebate claims in the "
                      "selected time range (GRANTED, DENIED, CANCELLED).", "short",
                      [Query(f"sum by (program, kind, outcome) (increase(gridflex_enrollment_incentive_decisions_total"
                             f"{{{program}}}[$__range]))", "{{program}} {{kind}} {{outcome}}")],
                      kind="bargauge", width=6, thresholds=[(None, "blue")]),
                Panel("Sign-ups accepted by provider", "Enrollments accepted in the selected time range, per "
                      "provider: each may earn a sign-up bonus.", "short",
                      [Query(f'sum by (provider) (increase(gridflex_enrollment_decisions_total{{{program}, '
                             'provider=~"$provider", action="ENROLL", outcome="ACCEPTED"}[$__range]))', "{{provider}}")],
                      kind="bargauge", width=6, thresholds=[(None, "blue")]),
                Panel("Incentives applied by settlement", "Incentive decisions settlement applied in the selected "
                      "time range (granted ones post at their bill period's close).", "short",
                      [Query("sum by (outcome) (increase(gridflex_settlement_incentive_decisions_total[$__range]))",
                             "{{outcome}}")], kind="bargauge", width=6, thresholds=[(None, "blue")]),
            ]),
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "telemetry.json": telemetry,
    "events-and-dispatch.json": events_and_dispatch,
    "baseline-and-settlement.json": baseline_and_settlement,
}


def render() -> dict[str, str]:
    """File name → JSON text, as committed."""
    return {name: json.dumps(build().to_json(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUTPUT_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUTPUT_DIR / name).write_text(text)
        print(f"wrote {OUTPUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
