"""The settlement report as one self-contained HTML page: the tables of the printed report, and
charts (matplotlib, inline SVG): baseline vs actual load for one event of each program, credits
per program, and credits as they were posted over the summer.

The baseline curve is the participants' baseline hour by hour, worked out here from the usage the
demo sent and each performance's candidate days, by the program's method (PROGRAMS.md); over the
event hours it must add up to the baseline kWh the baseline service reported (a check).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import matplotlib
from jinja2 import Environment, select_autoescape

from gridflex.calendar import LOCAL_ZONE
from gridflex.money import from_cents
from gridflex.programs import ProgramCatalogue

from demo.settlement_report import SHORT, SettlementReport, describe_cause
from demo.summer import SummerPlan

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402 (after choosing the backend)

TOLERANCE_KWH = Decimal("0.000001")  # per account: the service rounds each baseline to 9 places


@dataclass
class EventCurves:
    event_id: str
    program_id: str
    day: date
    accounts: int
    hours: list[int]  # local hours of the day
    actual: list[Decimal]  # kWh, all participants
    baseline: list[Decimal]
    event_hours: tuple[int, int]  # [start, end) local hours
    reported_baseline: Decimal  # what the baseline service reported, summed

    @property
    def window_baseline(self) -> Decimal:
        return sum(self.baseline[self.event_hours[0]:self.event_hours[1]], Decimal(0))


def hourly_usage(plan: SummerPlan, earlier_kwh: dict) -> dict[tuple[str, date, int], Decimal]:
    """(account, local day, local hour) → kWh, from what the demo sent (the last revision): the
    summer's, and ``earlier_kwh`` ((meter, interval start) → kWh) of the days before it."""
    meters = {account.meter_id: account.service_account_id for account in plan.accounts}
    usage: dict[tuple[str, date, int], Decimal] = defaultdict(Decimal)
    for (meter_id, start), kwh in {**earlier_kwh, **plan.final_kwh}.items():
        local = start.astimezone(LOCAL_ZONE)
        usage[(meters[meter_id], local.date(), local.hour)] += kwh
    return usage


def event_curves(report: SettlementReport, programs: ProgramCatalogue, earlier_kwh: dict) -> list[EventCurves]:
    """For one event of each program (the one with most participants whose look-back the demo has
    the usage of), the participants' load and baseline, hour by hour."""
    usage = hourly_usage(report.plan, earlier_kwh)
    known_days = {(account, day) for (account, day, _) in usage}
    chosen = []
    for program_id in sorted({event.program_id for event in report.plan.events}):
        best = None
        for event in (e for e in report.plan.events if e.program_id == program_id):
            records = [r for (e, _), r in report.final.items() if e == event.event_id and r["status"] == "SETTLEABLE"]
            if records and all((r["service_account_id"], day) in known_days for r in records
                               for day in r["candidate_days"]):
                if best is None or len(records) > len(best[1]):
                    best = (event, records)
        if best is not None:
            chosen.append(_curves(best[0], best[1], usage, programs))
    return chosen


def _curves(event, records: list[dict], usage: dict, programs: ProgramCatalogue) -> EventCurves:
    rules = programs[event.program_id].baseline
    start, end = event.start.astimezone(LOCAL_ZONE).hour, event.end.astimezone(LOCAL_ZONE).hour
    hours = list(range(24))
    actual = [Decimal(0)] * 24
    baseline = [Decimal(0)] * 24
    for record in records:
        account = record["service_account_id"]
        days = list(record["candidate_days"])

        in_window = {day: sum((usage[(account, day, h)] for h in range(start, end)), Decimal(0)) for day in days}
        days = sorted(days, key=in_window.__getitem__, reverse=True)[:rules.highest_days]
        mean = [sum((usage[(account, day, h)] for day in days), Decimal(0)) / len(days) for h in hours]
        today = [usage[(account, event.day, h)] for h in hours]
        adjustment = rules.day_of_adjustment
        if adjustment is not None:
            before = range(start - adjustment.hours_before - adjustment.gap_hours, start - adjustment.gap_hours)
            expected, seen = sum(mean[h] for h in before), sum(today[h] for h in before)
            if adjustment.kind == "RATIO":
                ratio = seen / expected if expected else Decimal(1)
                ratio = min(max(ratio, 1 - adjustment.max_change), 1 + adjustment.max_change)
                mean = [value * ratio for value in mean]
            else:
                shift = (seen - expected) / len(before)
                mean = [value + shift for value in mean]
        for h in hours:
            actual[h] += today[h]
            baseline[h] += mean[h]
    reported = sum((Decimal(r["baseline_kwh"]) for r in records), Decimal(0))
    return EventCurves(event.event_id, event.program_id, event.day, len(records), hours, actual, baseline,
                       (start, end), reported)


def check_curves(report: SettlementReport, curves: list[EventCurves]) -> None:
    for curve in curves:
        tolerance = TOLERANCE_KWH * curve.accounts
        report.check(f"{curve.event_id}: the hour-by-hour baseline worked out here adds up over the event to the "
                     f"{curve.reported_baseline:,.3f} kWh the baseline service reported for its {curve.accounts} accounts",
                     abs(curve.window_baseline - curve.reported_baseline) <= tolerance)


# -- charts ---------------------------------------------------------------------------------------


def _svg(figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight")
    pyplot.close(figure)
    text = out.getvalue()
    return text[text.index("<svg"):]


def load_chart(curve: EventCurves, title: str) -> str:
    figure, axes = pyplot.subplots(figsize=(7.2, 3.2))
    axes.axvspan(curve.event_hours[0], curve.event_hours[1], color="#fde68a", alpha=0.6, label="event")
    steps = curve.hours + [24]
    axes.stairs([float(v) for v in curve.baseline], steps, label="baseline", color="#6b7280", linewidth=2, linestyle="--")
    axes.stairs([float(v) for v in curve.actual], steps, label="actual", color="#2563eb", linewidth=2)
    axes.set_xlim(0, 24)
    axes.set_xticks(range(0, 25, 3))
    axes.set_xlabel(f"hour of {curve.day:%a %Y-%m-%d} (Pacific)")
    axes.set_ylabel(f"kWh, {curve.accounts} accounts")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)


def credits_chart(programs: list[dict]) -> str:
    figure, axes = pyplot.subplots(figsize=(7.2, 3.0))
    names = [row["program"] for row in programs]
    bottom = [0.0] * len(names)
    for key, label, color in (("energy", "energy / reward", "#2563eb"), ("capacity", "capacity", "#16a34a"),
                              ("bonuses", "sign-up bonuses", "#f59e0b")):
        values = [float(from_cents(row[key])) for row in programs]
        axes.barh(names, values, left=bottom, label=label, color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    for y, total in enumerate(bottom):
        axes.text(total, y, f"  ${total:,.2f}", va="center", fontsize=8)
    axes.set_xlabel("credits, dollars")
    axes.set_title("Credits per program, summer 2025", fontsize=10)
    axes.legend(fontsize=8, frameon=False, loc="lower right")
    axes.set_xlim(0, max(bottom + [1.0]) * 1.25)
    return _svg(figure)


def posted_chart(lines: list[dict]) -> str:
    figure, axes = pyplot.subplots(figsize=(7.2, 3.0))
    by_program: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for line in lines:
        by_program[line["program_id"]][line["posted_at"].astimezone(LOCAL_ZONE).date()] += line["amount_cents"]
    for program_id, days in sorted(by_program.items()):
        running, xs, ys = 0, [], []
        for day in sorted(days):
            running += days[day]
            xs.append(datetime.combine(day, time()))
            ys.append(running / 100)
        axes.step(xs, ys, where="post", label=SHORT.get(program_id, program_id))
    axes.set_ylabel("dollars, cumulative")
    axes.set_title("Credits as posted (simulated time)", fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return _svg(figure)


# -- the page -------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gridflex settlement report, summer 2025</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #111827; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #e5e7eb; }
table { border-collapse: collapse; margin: .5rem 0; font-size: 12.5px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #f3f4f6; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; } .charts > div { flex: 1 1 480px; }
.charts svg { width: 100%; height: auto; }
.ok { color: #15803d; } .bad { color: #b91c1c; font-weight: bold; } .muted { color: #6b7280; }
</style></head><body>
<h1>gridflex — settlement report, summer 2025</h1>
<p class="muted">{{ summary }}</p>
<h2>Baseline vs actual load</h2>
<div class="charts">{% for chart in load_charts %}<div>{{ chart | safe }}</div>{% endfor %}</div>
<h2>Credits</h2>
<div class="charts"><div>{{ credits_chart | safe }}</div><div>{{ posted_chart | safe }}</div></div>
<h2>Per program</h2>
<table><tr><th>program</th><th class="n">accounts credited</th><th class="n">events</th><th class="n">event hours</th>
<th class="n">energy / reward</th><th class="n">capacity</th><th class="n">bonuses</th><th class="n">total</th>
<th class="n">bonus fund left</th></tr>
{% for r in programs %}<tr><td>{{ r.program }}</td><td class="n">{{ r.accounts }}</td><td class="n">{{ r.events }}</td>
<td class="n">{{ r.event_hours or "–" }}</td><td class="n">${{ dollars(r.energy) }}</td><td class="n">${{ dollars(r.capacity) }}</td>
<td class="n">${{ dollars(r.bonuses) }}</td><td class="n"><b>${{ dollars(r.total) }}</b></td>
<td class="n">{{ "$" + dollars(r.fund_left) if r.fund_left is not none else "–" }}</td></tr>{% endfor %}
</table>
<h2>Per event</h2>
<table><tr><th>event</th><th>program</th><th>when (Pacific)</th><th class="n">followed</th><th class="n">overrode</th>
<th class="n">offline</th><th class="n">settled</th><th class="n">baseline kWh</th><th class="n">actual kWh</th>
<th class="n">reduction kWh</th><th class="n">credits</th><th class="n">capped</th><th class="n">reversals</th></tr>
{% for r in events %}<tr><td>{{ r.event_id }}</td><td>{{ r.program }}</td><td>{{ r.when }}</td>
<td class="n">{{ r.followed or "" }}</td><td class="n">{{ r.overrode or "" }}</td><td class="n">{{ r.offline or "" }}</td>
<td class="n">{{ r.settled }}/{{ r.accounts }}</td><td class="n">{{ "{:,.1f}".format(r.baseline) }}</td>
<td class="n">{{ "{:,.1f}".format(r.actual) }}</td><td class="n">{{ "{:,.1f}".format(r.reduction) }}</td>
<td class="n">${{ dollars(r.credits) }}</td><td class="n">{{ r.capped or "" }}</td><td class="n">{{ r.reversals or "" }}</td></tr>
{% endfor %}</table>
{% for s in statements %}
<h2>Statement: {{ s.service_account_id }}, {{ s.bill_period_start }} to {{ s.bill_period_end }} ({{ s.status }})</h2>
<table><tr><th>credit</th><th>event</th><th class="n">amount</th><th>cause</th></tr>
{% for line in s.lines %}<tr><td>{{ line.credit_type }}</td><td>{{ line.event_id or "" }}</td>
<td class="n">${{ line.amount }}</td><td>{{ describe(line.cause) }}</td></tr>{% endfor %}
<tr><td colspan="2"><b>total</b></td><td class="n"><b>${{ s.total }}</b></td><td></td></tr></table>
{% endfor %}
<h2>Checks</h2>
<ul>{% for c in checks %}<li class="{{ 'ok' if c.ok else 'bad' }}">{{ '✓' if c.ok else '✗' }} {{ c.what }}</li>{% endfor %}</ul>
<p class="muted">Load data: Green Button sample year (data/demo, Apache-2.0; see data/demo/ATTRIBUTION.md).</p>
</body></html>
"""


def write_html(report: SettlementReport, curves: list[EventCurves], path: Path, summary: str) -> Path:
    environment = Environment(autoescape=select_autoescape(default=True))
    page = environment.from_string(PAGE)
    programs = report.program_rows()
    statements = [body for key, (status, body) in report.ledger.api.items()
                  if isinstance(key, tuple) and key[0] == "statement" and status == 200]
    html = page.render(
        summary=summary,
        load_charts=[load_chart(curve, f"{curve.event_id} ({SHORT.get(curve.program_id, curve.program_id)}): "
                                       f"baseline {curve.window_baseline:,.1f} kWh vs actual "
                                       f"{sum(curve.actual[curve.event_hours[0]:curve.event_hours[1]]):,.1f} kWh "
                                       "in the event") for curve in curves],
        credits_chart=credits_chart(programs), posted_chart=posted_chart(report.ledger.lines),
        programs=programs, events=report.event_rows(), statements=statements, checks=report.checks,
        dollars=lambda cents: f"{from_cents(cents):,}", describe=describe_cause,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
