"""The rest of the summer, live, through all five services (the plan is demo.summer's).

The clock moves a day at a time: each day's event requests go out the day before, the clock
ticks past the day's end (dispatch starts and ends its events, settlement closes the bill periods
ending that day), then the day's meter reads, thermostat states and whatever else the day brings.
Once a week the demo waits for telemetry to have handled every read and prints where the
services are: events ended, performances out, ledger lines posted, bill periods closed. After the
summer the clock runs on until every bill period holding a summer day has closed, and the demo
waits for settlement to have settled every performance the baseline service sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

from gridflex.calendar import LOCAL_ZONE
from gridflex.kafka_io import RecordProducer, read_records
from gridflex.processes import ServiceProcess
from gridflex.settings import ServiceSettings
from gridflex.topics import (
    DATA_SHARING_AUTHORIZATIONS,
    DEAD_LETTERS,
    DEVICE_STATUS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_PERFORMANCE,
    INCENTIVES,
    METER_READS,
)

from demo.baseline_phase import BaselineMetrics
from demo.dispatch_phase import DispatchMetrics
from demo.driving import DemoFailed, collect, distinct, scrape, send_records, tick, wait_for_progress, wait_until
from demo.enrollment_report import EnrollmentMetrics
from demo.report import TelemetryMetrics, decoded
from demo.summer import SummerPlan

OPENING_BEFORE = timedelta(hours=1)
CATCH_UP_S = 180.0  # for a service to handle a week of the summer
QUIET_S = 8.0  # … or to show no progress at all, short of it
SETTLED_S = 180.0  # for settlement to settle every performance and close every period


@dataclass
class SettlementMetrics:
    lines: Counter = field(default_factory=Counter)  # (program, credit_type, kind) → lines posted
    cents: Counter = field(default_factory=Counter)
    results: int = 0
    waiting: int = 0
    last_closed: date | None = None
    statements: int = 0
    performances_in: int = 0
    dead_letters: int = 0

    @classmethod
    def parse(cls, text: str) -> "SettlementMetrics":
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels, name = sample.labels, sample.name
                if name == "gridflex_settlement_lines_total":
                    metrics.lines[labels["program"], labels["credit_type"], labels["kind"]] += int(sample.value)
                elif name == "gridflex_settlement_credits_dollars_total":
                    metrics.cents[labels["program"], labels["credit_type"], labels["kind"]] += round(sample.value * 100)
                elif name == "gridflex_settlement_results_total":
                    metrics.results += int(sample.value)
                elif name == "gridflex_settlement_performances_waiting":
                    metrics.waiting += int(sample.value)
                elif name == "gridflex_settlement_last_closed_day_timestamp_seconds" and sample.value > 0:
                    metrics.last_closed = datetime.fromtimestamp(sample.value, timezone.utc).astimezone(LOCAL_ZONE).date()
                elif name == "gridflex_settlement_statements_total":
                    metrics.statements += int(sample.value)
                elif name == "gridflex_records_in_total" and labels["topic"].startswith(EVENT_PERFORMANCE):
                    metrics.performances_in += int(sample.value)
                elif name == "gridflex_dead_letters_total":
                    metrics.dead_letters += int(sample.value)
        return metrics

    @property
    def posted(self) -> int:
        return sum(self.lines.values())


@dataclass
class SummerServices:
    enrollment: ServiceProcess
    telemetry: ServiceProcess
    dispatch: ServiceProcess
    baseline: ServiceProcess
    settlement: ServiceProcess

    @property
    def all(self) -> list[ServiceProcess]:
        return [self.enrollment, self.telemetry, self.dispatch, self.baseline, self.settlement]


@dataclass
class SummerOutcome:
    performances: list[dict]
    states: list[dict]
    incentives: list[dict]
    device_statuses: list[dict]
    dead_letters: list[dict]
    lifecycle: list[dict]
    settlement: SettlementMetrics
    elapsed_s: float


async def run_summer(settings: ServiceSettings, services: SummerServices, plan: SummerPlan) -> float:
    """Drive the summer; the seconds it took."""
    started = time.monotonic()
    reads_before = (await scrape(services.telemetry, TelemetryMetrics.parse)).reads_handled
    sent_reads = 0
    async with RecordProducer(settings) as producer:
        # The accounts and the authorizations first: a request the enrollment service sees before its
        # account waits for it, but one before its authorization is refused.
        await tick(producer, services.all, plan.signup_at - OPENING_BEFORE)
        await send_records(producer, plan.opening)
        authorizations = sum(1 for record in plan.opening if record.topic == DATA_SHARING_AUTHORIZATIONS.format(
            provider_id="ohmconnect"))
        if await wait_until(services.enrollment, EnrollmentMetrics.parse, lambda m: sum(
                n for topic, n in m.records_in.items() if "data-sharing-authorizations" in topic) >= authorizations,
                CATCH_UP_S) is None:
            raise DemoFailed("the enrollment service did not read OhmConnect's data-sharing authorizations")
        await tick(producer, services.all, plan.signup_at)
        await send_records(producer, plan.signups)
        await send_records(producer, plan.history)
        baseline_before = await scrape(services.baseline, BaselineMetrics.parse)
        firsts, revisions = baseline_before.firsts, baseline_before.revisions
        sent_reads += sum(1 for record in plan.history if record.topic == METER_READS)
        print(f"\nthe rest of the summer, {plan.days[0].day} to {plan.days[-1].day} (all five services; one line a week):\n")
        print(f"  {plan.signup_at.astimezone(LOCAL_ZONE):%a %m-%d %H:%M}  the utility publishes {len(plan.new_accounts)} "
              f"more accounts; EnergyHub and Google Nest sign {_count(plan, 'sce-save-power-days')} up for Save Power "
              f"Days, OhmConnect {_count(plan, 'ohm-hours')} for ohm-hours (data-sharing authorizations first); "
              f"{len(plan.history):,} reads of their weeks before")
        header = (f"  {'week':<11}  {'events ended':<22}  {'reads':>8}  {'performances':>12}  {'ledger lines':>12}  "
                  f"{'periods closed':>14}  {'waiting':>7}  {'elapsed':>7}")
        print("\n" + header + "\n  " + "─" * (len(header) - 2))
        week_events: Counter = Counter()
        week_notes: list[str] = []
        for index, day in enumerate(plan.days):
            if day.schedules:
                await send_records(producer, day.schedules)
            await tick(producer, services.all, day.tick)
            await send_records(producer, day.records)
            sent_reads += sum(1 for record in day.records if record.topic == METER_READS)
            # Before the next day goes out, the baseline service has evaluated what this one completed
            # (so a correction two days later revises a result, as it would in real time).
            first_now, revised_now = plan.results_completed(day.day)
            if first_now or revised_now:
                firsts, revisions = firsts + first_now, revisions + revised_now
                await _evaluated(services.baseline, firsts, revisions, day.day)
            week_events.update(event.program_id for event in day.events)
            last = index == len(plan.days) - 1
            week_notes += [f"  {'':<11}  ↳ {day.day:%m-%d} {record.kind:<16} {record.note}" for record in day.notes]
            if day.day.weekday() == 6 or last:
                await _caught_up(services.telemetry, reads_before + sent_reads)
                await _week_line(services, day.day, week_events, sent_reads, started)
                for note in week_notes:
                    print(note)
                week_events.clear()
                week_notes.clear()
    return time.monotonic() - started


async def _evaluated(baseline: ServiceProcess, firsts: int, revisions: int, day: date) -> None:
    metrics = await wait_until(baseline, BaselineMetrics.parse,
                               lambda m: m.firsts >= firsts and m.revisions >= revisions, CATCH_UP_S)
    if metrics is None:
        last = await scrape(baseline, BaselineMetrics.parse)
        raise DemoFailed(f"the baseline service has {last.firsts} results and {last.revisions} revisions after {day}; "
                         f"{firsts} and {revisions} were due")


def _count(plan: SummerPlan, program_id: str) -> int:
    return sum(1 for t in plan.thermostats if t.program_id == program_id)


async def _caught_up(telemetry: ServiceProcess, reads: int) -> None:
    metrics = await wait_for_progress(telemetry, TelemetryMetrics.parse,
                                      lambda m: m.reads_handled >= reads and m.settled, CATCH_UP_S, QUIET_S)
    if metrics.reads_handled < reads:
        raise DemoFailed(f"telemetry handled {metrics.reads_handled:,} reads of {reads:,} sent, and went quiet")


async def _week_line(services: SummerServices, day: date, events: Counter, reads: int, started: float) -> None:
    baseline, settlement = await asyncio.gather(scrape(services.baseline, BaselineMetrics.parse),
                                                scrape(services.settlement, SettlementMetrics.parse))
    short = {"sce-sep-2025": "SEP", "sce-save-power-days": "SPD", "ohm-hours": "OHM"}
    ended = ", ".join(f"{short.get(program, program)} {n}" for program, n in sorted(events.items())) or "-"
    waiting = sum(baseline.awaiting.values())
    print(f"  to {day:%a %m-%d}  {ended:<22}  {reads:>8,}  {baseline.records_out[EVENT_PERFORMANCE]:>12,}  "
          f"{settlement.posted:>12,}  {settlement.statements:>14,}  {waiting:>7}  {time.monotonic() - started:>6.0f}s")


async def settle_summer(settings: ServiceSettings, services: SummerServices, plan: SummerPlan, elapsed_s: float
                        ) -> SummerOutcome:
    """Wait until settlement has settled every performance and closed the summer's last bill period;
    read back what the services published."""
    print(f"\nwaiting for settlement to settle every performance and close the bill periods to {plan.close_until} … ",
          end="", flush=True)
    waited = time.monotonic()
    baseline = await wait_until(services.baseline, BaselineMetrics.parse,
                                lambda m: not any(m.awaiting.values()), SETTLED_S)
    if baseline is None:
        raise DemoFailed("the baseline service still awaits usage for an event after the summer")
    sent = baseline.records_out[EVENT_PERFORMANCE]
    settlement = await wait_until(
        services.settlement, SettlementMetrics.parse,
        lambda m: m.performances_in >= sent and m.waiting == 0 and m.last_closed is not None
        and m.last_closed >= plan.close_until, SETTLED_S)
    if settlement is None:
        last = await scrape(services.settlement, SettlementMetrics.parse)
        raise DemoFailed(f"settlement did not settle the summer within {SETTLED_S:.0f} s: {last.performances_in} of "
                         f"{sent} performances read, {last.waiting} waiting, last closed day {last.last_closed}")
    print(f"{time.monotonic() - waited:.1f} s")

    enrollment, telemetry, dispatch = await asyncio.gather(
        scrape(services.enrollment, EnrollmentMetrics.parse), scrape(services.telemetry, TelemetryMetrics.parse),
        scrape(services.dispatch, DispatchMetrics.parse))
    performances, states, incentives, statuses, lifecycle = await asyncio.gather(
        collect(settings, EVENT_PERFORMANCE, sent),
        collect(settings, ENROLLMENT_STATE, enrollment.records_out[ENROLLMENT_STATE]),
        collect(settings, INCENTIVES, enrollment.records_out[INCENTIVES]),
        collect(settings, DEVICE_STATUS, telemetry.device_statuses_out),
        collect(settings, EVENT_LIFECYCLE, sum(n for topic, n in dispatch.records_out.items()
                                               if topic.startswith(EVENT_LIFECYCLE))),
    )
    letters = [r async for r in read_records(settings, DEAD_LETTERS, idle_timeout=3.0, max_wait=60.0)]
    (performances, _), (states, _), (incentives, _), (statuses, _), (lifecycle, _), (letters, _) = (
        decoded(performances), decoded(states), decoded(incentives), decoded(statuses), decoded(lifecycle),
        decoded(letters))
    return SummerOutcome(
        performances=distinct(performances, ("event_id", "service_account_id", "revision")),
        states=states,
        incentives=distinct(incentives, ("claim_id", "outcome")),
        device_statuses=distinct(statuses, ("provider_id", "thermostat_serial", "observed_at", "change")),
        dead_letters=distinct(letters, ("source_topic", "source_partition", "source_offset", "service")),
        lifecycle=lifecycle,
        settlement=settlement,
        elapsed_s=elapsed_s,
    )
