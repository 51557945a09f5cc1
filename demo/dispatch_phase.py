"""The day's energy event, live, through the dispatch service.

At the start of the day the utility asks for three events on ``sce-sep-2025``: one afternoon
event with precool (accepted), a second one that would take the day past its 6 hours and a third
that breaks four rules at once (both rejected, every rule named); then it shortens the first.
The dispatch service sends one instruction per thermostat the enrollment service has in effect
that day, and the update to the same thermostats; the providers acknowledge, except one Resideo
thermostat that stays silent. While the day streams, the clock passes the start and the end.
Read back: the lifecycle, the instructions, coverage on /metrics and the `gridflex events`
command's answers, checked against the enrollment states.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from gridflex.calendar import LOCAL_ZONE
from gridflex.kafka_io import RecordProducer, read_records
from gridflex.processes import ServiceProcess
from gridflex.settings import ServiceSettings
from gridflex.topics import DISPATCH, DISPATCH_ACKS, ENERGY_EVENTS, EVENT_LIFECYCLE

from demo.driving import collect, scrape, wait_until
from demo.report import Checks

PROGRAM_ID = "sce-sep-2025"
SILENT_PROVIDER = "resideo"  # one of its thermostats never answers
WAIT_S = 60.0


@dataclass
class EventPlan:
    """What the utility asks for, and what the demo expects of each request."""

    event_id: str
    start: datetime  # of the accepted event, as finally updated
    end: datetime
    requests: list[dict]
    expected: dict[str, tuple[str, set[str]]]  # event_id → (final status, failure codes)


def plan_events(day: date, issued_at: datetime) -> EventPlan:
    def local(hour: int) -> datetime:
        return datetime(day.year, day.month, day.day, hour, tzinfo=LOCAL_ZONE)

    def request(event_id: str, start: datetime, end: datetime, action: str = "SCHEDULE", **fields) -> dict:
        return {"event_id": event_id, "program_id": PROGRAM_ID, "action": action, "reason": "GRID_STRESS",
                "start": start, "end": end, "issued_at": issued_at, "setpoint_offset_f": 4, "precool": True,
                "targets": [], **fields}

    afternoon, evening, wrong = (f"demo-{day:%Y%m%d}-{name}" for name in ("afternoon", "evening", "wrong"))
    return EventPlan(
        event_id=afternoon, start=local(14), end=local(17),
        requests=[
            request(afternoon, local(14), local(18)),  # 4 h with precool from 13:00
            request(evening, local(18), local(21)),  # 3 h more: the day would have 7 h
            request(wrong, local(6), local(13), setpoint_offset_f=6, targets=["nest-labs"]),
            request(afternoon, local(14), local(17), action="UPDATE"),  # the utility shortens it to 3 h
        ],
        expected={
            afternoon: ("UPDATED", set()),
            evening: ("REJECTED", {"DAY_LIMIT"}),
            wrong: ("REJECTED", {"SETPOINT_OFFSET", "UNKNOWN_TARGET", "DURATION", "DAY_LIMIT"}),
        },
    )


async def call_events(settings: ServiceSettings, dispatcher: ServiceProcess, plan: EventPlan,
                      providers: tuple[str, ...], expected_devices: int) -> None:
    """Send the requests; once the instructions are out, the providers acknowledge them."""
    print(f"\nthe utility calls today's events on {PROGRAM_ID} (dispatch service):")
    async with RecordProducer(settings) as producer:
        for request in plan.requests:
            await producer.send(ENERGY_EVENTS, request["event_id"], request)
            print(f"  {request['action']:<8} {request['event_id']:<28} {_hhmm(request['start'])}–{_hhmm(request['end'])} "
                  f"+{request['setpoint_offset_f']} °F")
        await producer.flush()
        started = time.monotonic()
        instructions = await _instructions(settings, dispatcher, providers, 2 * expected_devices)
        print(f"  → {len(instructions)} instructions to {expected_devices} thermostats in "
              f"{time.monotonic() - started:.1f} s (SCHEDULE, then the UPDATE)")
        silent = sorted(serial for provider, serial, _ in instructions if provider == SILENT_PROVIDER)[:1]
        acks = 0
        for provider, serial, record in instructions:
            if record["action"] != "SCHEDULE" or serial in silent:
                continue
            ack = {"event_id": record["event_id"], "thermostat_serial": serial, "status": "ACCEPTED",
                   "at": record["issued_at"] + timedelta(seconds=30)}
            await producer.send(DISPATCH_ACKS.format(provider_id=provider), serial, ack)
            acks += 1
        await producer.flush()
        print(f"  the providers acknowledge {acks} of them; {SILENT_PROVIDER}'s {', '.join(silent) or '-'} stays silent")


async def _instructions(settings: ServiceSettings, dispatcher: ServiceProcess, providers: tuple[str, ...],
                        expect: int) -> list[tuple[str, str, dict]]:
    topics = [DISPATCH.format(provider_id=provider) for provider in providers]
    metrics = await wait_until(dispatcher, DispatchMetrics.parse,  # records out: counted once committed
                               lambda m: sum(m.records_out[topic] for topic in topics) >= expect, WAIT_S)
    if metrics is None:
        metrics = await scrape(dispatcher, DispatchMetrics.parse)
    found = []
    for provider, topic in zip(providers, topics):
        count = metrics.records_out.get(topic, 0)
        found += [(provider, r.value["thermostat_serial"], r.value) for r in await collect(settings, topic, count)
                  if isinstance(r.value, dict)]
    return found


@dataclass
class DispatchMetrics:
    instructions: int = 0
    records_out: Counter = field(default_factory=Counter)
    coverage: dict[tuple[str, str], float] = field(default_factory=dict)
    silent_at_start: dict[tuple[str, str], float] = field(default_factory=dict)
    hours_used: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "DispatchMetrics":
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "gridflex_dispatch_instructions_total":
                    metrics.instructions += int(sample.value)
                elif sample.name == "gridflex_records_out_total":
                    metrics.records_out[labels["topic"]] += int(sample.value)
                elif sample.name == "gridflex_dispatch_ack_coverage_ratio":
                    metrics.coverage[labels["event_id"], labels["provider"]] = sample.value
                elif sample.name == "gridflex_dispatch_unacknowledged_at_start":
                    metrics.silent_at_start[labels["event_id"], labels["provider"]] = sample.value
                elif sample.name == "gridflex_dispatch_program_hours_used":
                    metrics.hours_used[labels["program"], labels["year"]] = sample.value
        return metrics


@dataclass
class DispatchOutcome:
    steps: list[dict]
    instructions: list[tuple[str, str, dict]]
    metrics: DispatchMetrics
    unacknowledged: list[str]
    hours: str


async def read_dispatch(settings: ServiceSettings, dispatcher: ServiceProcess, plan: EventPlan,
                        providers: tuple[str, ...]) -> DispatchOutcome:
    """After the day: the lifecycle up to ENDED, the instructions, coverage, and the command's answers."""
    deadline = time.monotonic() + WAIT_S
    while True:
        steps = [r.value async for r in read_records(settings, EVENT_LIFECYCLE, idle_timeout=0.5)
                 if isinstance(r.value, dict)]
        if any(s["event_id"] == plan.event_id and s["status"] == "ENDED" for s in steps) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    metrics = await wait_until(dispatcher, DispatchMetrics.parse,
                               lambda m: any(key[0] == plan.event_id for key in m.silent_at_start), WAIT_S)
    metrics = metrics or await scrape(dispatcher, DispatchMetrics.parse)
    instructions = await _instructions(settings, dispatcher, providers, metrics.instructions)
    env = {**os.environ, **dispatcher.env}
    unacknowledged = await _command(env, "events", "unacknowledged", plan.event_id)
    hours = await _command(env, "events", "hours", "--year", str(plan.start.year))
    return DispatchOutcome(steps, instructions, metrics, unacknowledged.splitlines(), hours)


async def _command(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "gridflex.cli", *args, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode()


class DispatchReport(Checks):
    """The day's events, read back from the dispatch service and checked."""

    def __init__(self, plan: EventPlan, outcome: DispatchOutcome, in_effect: set[tuple[str, str]]):
        super().__init__()
        self.plan, self.outcome, self.in_effect = plan, outcome, in_effect

    def render(self) -> str:
        plan, outcome = self.plan, self.outcome
        lines = ["", "== dispatch: the day's energy events", ""]
        by_event: dict[str, list[dict]] = {}
        for step in outcome.steps:
            by_event.setdefault(step["event_id"], []).append(step)
        for event_id, (status, codes) in plan.expected.items():
            steps = by_event.get(event_id, [])
            lines.append(f"  {event_id:<28} " + " → ".join(f"{s['status']}" for s in steps))
            for step in steps:
                lines += [f"      {failure['code']}: {failure['message']}" for failure in step["failures"]]
            decided = [s for s in steps if s["status"] not in ("STARTED", "ENDED")]
            self.check(f"{event_id} ends {status} with exactly the rules {sorted(codes) or 'none'} broken",
                       bool(decided) and decided[-1]["status"] == status
                       and {f["code"] for f in decided[-1]["failures"]} == codes)
        afternoon = [s["status"] for s in by_event.get(plan.event_id, [])]
        self.check("the accepted event went SCHEDULED → UPDATED → STARTED → ENDED, once each",
                   afternoon == ["SCHEDULED", "UPDATED", "STARTED", "ENDED"])

        sent = [(provider, serial, r) for provider, serial, r in outcome.instructions if r["event_id"] == plan.event_id]
        schedules = Counter((provider, serial) for provider, serial, r in sent if r["action"] == "SCHEDULE")
        updates = Counter((provider, serial) for provider, serial, r in sent if r["action"] == "UPDATE")
        per_provider = Counter(provider for provider, _ in schedules)
        lines += ["", f"  instructions: {sum(schedules.values())} SCHEDULE and {sum(updates.values())} UPDATE to "
                      f"{len(schedules)} thermostats ({', '.join(f'{p} {n}' for p, n in sorted(per_provider.items()))}); "
                      f"the enrollment service has {len(self.in_effect)} in effect today"]
        self.check("every thermostat enrolled in effect today got exactly one SCHEDULE, and no other did",
                   set(schedules) == self.in_effect and set(schedules.values()) <= {1})
        self.check("the UPDATE reached exactly the thermostats the SCHEDULE did, once each",
                   updates == schedules)
        self.check("the UPDATE carries the new end (17:00)",
                   {r["end"] for _, _, r in sent if r["action"] == "UPDATE"} == {plan.end})
        precool = Counter(r["precool_start"] is not None for _, _, r in sent if r["action"] == "UPDATE")
        lines.append(f"  precool 13:00–14:00 for {precool[True]} thermostats (TOU accounts too: the hour is "
                     f"off-peak), none for {precool[False]}")
        self.check("precool 1 h before the start at −2 °F for every thermostat (13:00 is off-peak)",
                   all(r["precool_start"] == plan.start - timedelta(hours=1) and r["precool_offset_f"] == -2
                       for _, _, r in sent if r["action"] != "CANCEL"))

        coverage = {provider: value for (event_id, provider), value in outcome.metrics.coverage.items()
                    if event_id == plan.event_id}
        silent = {provider: value for (event_id, provider), value in outcome.metrics.silent_at_start.items()
                  if event_id == plan.event_id}
        lines.append("  acknowledgment coverage: " + ", ".join(f"{p} {v:.1%}" for p, v in sorted(coverage.items()))
                     + f"; silent at the start: {', '.join(f'{p} {int(v)}' for p, v in sorted(silent.items())) or 'none'}")
        expected_coverage = {p: (n - (p == SILENT_PROVIDER)) / n for p, n in per_provider.items()}
        self.check("coverage per provider on /metrics is what the providers acknowledged",
                   coverage == expected_coverage)
        self.check(f"exactly one {SILENT_PROVIDER} thermostat is counted silent at the start",
                   {p: v for p, v in silent.items() if v} == ({SILENT_PROVIDER: 1.0} if SILENT_PROVIDER in per_provider else {}))
        listed = [line.split("\t")[:2] for line in outcome.unacknowledged]
        lines.append(f"  `gridflex events unacknowledged {plan.event_id}`: "
                     + ("; ".join("\t".join(item) for item in listed) or "none"))
        self.check("`gridflex events unacknowledged` lists that thermostat alone",
                   len(listed) == (1 if SILENT_PROVIDER in per_provider else 0)
                   and all(provider == SILENT_PROVIDER for provider, _ in listed))
        row = next((line.split() for line in outcome.hours.splitlines() if line.startswith(PROGRAM_ID)), [])
        lines += ["", "  `gridflex events hours`:", *("    " + line for line in outcome.hours.splitlines())]
        self.check(f"{PROGRAM_ID} has used 3.00 h of its 180 h this year (the shortened event alone)",
                   row[2:5] == ["3.00", "180", "177.00"])
        return "\n".join(lines)


def in_effect_today(states: list[dict], day: date) -> set[tuple[str, str]]:
    """(provider, serial) of every sce-sep-2025 enrollment in effect on ``day``, per the latest
    state of each account the enrollment service published."""
    latest = {state["service_account_id"]: state for state in states}
    return {(period["provider_id"], period["thermostat_serial"])
            for state in latest.values() for period in state["enrollments"]
            if period["program_id"] == PROGRAM_ID and period["effective_from"] <= day
            and (period["effective_to"] is None or day < period["effective_to"])}


def _hhmm(instant: datetime) -> str:
    return instant.astimezone(LOCAL_ZONE).strftime("%H:%M")
