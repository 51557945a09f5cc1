"""The afternoon event's performance, live, through the baseline service.

At midnight, before the day's reads, the head-end backfills the three weeks before the day through
telemetry (the same replayed sample year, scale and meters as the day's reads): the CSRL looks
back at the five previous business days. When the clock passes the event's end the dispatch
service says ENDED, and the baseline service evaluates every account with a thermostat in effect:
all wait for the event's last hour, visibly (``gridflex_baseline_accounts_awaiting_data``). That
hour's reads bring their results, except one account whose event-hour read the head-end holds
back until the next morning; an estimated event-hour read corrected after the results are out
revises one (revision 1).

Every result is checked against an oracle worked out here from the sample data, apart from the
service's code: the candidate days from the tariff calendar, each day's usage over the event's
clock hours (as finally updated), the average of the three highest, the event's own usage as the
feed stood at each moment, rounded half-up to 9 places, the reduction never negative. After every
hour from the event's end, the demo waits until the service has read what telemetry emitted and
compares its counters (results, revisions, accounts awaiting) with the oracle's.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

from prometheus_client.parser import text_string_to_metric_families

from gridflex.calendar import LOCAL_ZONE, is_business_day, local_day_bounds
from gridflex.kafka_io import RecordProducer
from gridflex.processes import ServiceProcess
from gridflex.programs import Baseline
from gridflex.settings import ServiceSettings
from gridflex.topics import EVENT_PERFORMANCE, EVENT_USAGE

from demo.dispatch_phase import PROGRAM_ID, EventPlan
from demo.driving import collect, distinct, scrape, send_records, wait_for_progress, wait_until
from demo.enrollment import EnrollmentScenario
from demo.greenbutton import SampleYear, profile_title
from demo.report import Checks, TelemetryMetrics, heading, mark, table
from demo.scenario import (
    HOUR,
    NEW,
    REVISION,
    WH_PER_UNIT,
    DayScenario,
    Outgoing,
    ServiceAccount,
    account_wh,
    build_history,
    hold_back,
    local_hhmm,
    reporting_thermostats,
)

HISTORY_DAYS = 21  # backfilled before the day: the CSRL needs the previous five business days
NEXT_MORNING = timedelta(hours=7)  # after the day's end: when the held-back read is delivered
WAIT_S = 30.0  # for the service to catch up with what telemetry emitted
BACKFILL_TIMEOUT_S = 120.0
METHOD = "csrl-3-of-5"
SETTLEABLE, INSUFFICIENT_DATA, INELIGIBLE = "SETTLEABLE", "INSUFFICIENT_DATA", "INELIGIBLE"
KWH = Decimal("0.000000001")  # EventPerformance carries nine decimal places
ZERO = Decimal(0)
ROWS = 12  # result rows shown; the others are summed up


def rounded(kwh: Decimal) -> Decimal:
    return kwh.quantize(KWH, rounding=ROUND_HALF_UP)


# -- the oracle -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One EventPerformance record as the oracle works it out."""

    status: str
    candidate_days: tuple[date, ...]  # oldest first, as the record lists them
    baseline_kwh: Decimal | None = None
    actual_kwh: Decimal | None = None
    reduction_kwh: Decimal | None = None
    reason_code: str | None = None  # the reason's code (the text before its colon)

    def matches(self, record: dict) -> bool:
        reason = record["reason"].split(":", 1)[0] if record["reason"] else None
        return (record["status"], tuple(record["candidate_days"]), record["baseline_kwh"], record["actual_kwh"],
                record["reduction_kwh"], reason) == (self.status, self.candidate_days, self.baseline_kwh,
                                                     self.actual_kwh, self.reduction_kwh, self.reason_code)


Hours = tuple[Decimal | None, Decimal | None]  # usage in the hour before the start and after the end


@dataclass
class Sync:
    """A moment the demo waits for the baseline service: what its counters should say by then."""

    event_id: str
    label: str
    batch: int | None  # index of the last batch of reads sent (the day's hours, then the next morning); None: ENDED
    results: int = 0  # accounts with a result so far
    revisions: int = 0  # results re-emitted with a higher revision so far
    new: list[str] = field(default_factory=list)  # accounts whose first result comes now
    revised: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # the accounts the event concerns still awaiting usage
    seen: "BaselineMetrics | None" = None  # the service's, once the demo stopped waiting

    @property
    def awaiting(self) -> int:
        return len(self.waiting)

    @property
    def eventful(self) -> bool:
        return self.batch is None or bool(self.new or self.revised)

    @property
    def ok(self) -> bool:
        return self.seen is not None and self.seen.counts(self.event_id) == (self.results, self.revisions, self.awaiting)


@dataclass
class BaselinePlan:
    """What the demo sends for the baseline service, and what it should make of it."""

    event_id: str
    start: datetime  # the event's window as finally updated
    end: datetime
    rules: Baseline
    accounts: dict[str, ServiceAccount]  # those the event concerns: a thermostat in effect on the day
    facts: dict[str, dict]  # the utility's account records
    history: list[Outgoing]
    history_from: date
    late: Outgoing  # the event-hour read held back until the next morning …
    late_batch: int  # … from this hour
    candidates: tuple[date, ...]  # most recent first
    end_batch: int  # the hour whose tick passes the event's end
    expected: dict[str, list[Expected]] = field(default_factory=dict)  # account → its records, by revision
    expected_hours: dict[str, list[Hours]] = field(default_factory=dict)
    syncs: list[Sync] = field(default_factory=list)

    @property
    def day(self) -> date:
        return self.start.astimezone(LOCAL_ZONE).date()

    @property
    def late_account(self) -> str:
        return self.late.key

    @property
    def revised_accounts(self) -> list[str]:
        return [account for account, results in self.expected.items() if len(results) > 1]

    def window(self, day: date) -> tuple[datetime, datetime]:
        """The event's clock hours on ``day`` (UTC instants: hours are added to them)."""
        start, end = self.start.astimezone(LOCAL_ZONE), self.end.astimezone(LOCAL_ZONE)
        return (datetime.combine(day, start.time(), LOCAL_ZONE).astimezone(timezone.utc),
                datetime.combine(day, end.time(), LOCAL_ZONE).astimezone(timezone.utc))


def plan_baseline(sample: SampleYear, scenario: DayScenario, enrollment: EnrollmentScenario, events: EventPlan,
                  seed: int) -> BaselinePlan:
    """The usage history to backfill, the read to hold back, and every result expected (pure; holds
    the read back in ``scenario``)."""
    day = scenario.day
    rules = enrollment.program.baseline
    if rules.method != METHOD:
        raise ValueError(f"the demo's oracle computes {METHOD}; {PROGRAM_ID} names {rules.method}")
    in_effect = {account for account, periods in enrollment.expected_periods().items()
                 if any(since <= day and (until is None or day < until) for *_, since, until in periods)}
    accounts = {a.service_account_id: a for a in scenario.accounts if a.service_account_id in in_effect}
    facts = {account_id: enrollment.accounts[account_id] for account_id in accounts}
    history_from = day - timedelta(days=HISTORY_DAYS)
    starts = {account_id: f["service_start"] for account_id, f in enrollment.accounts.items()}
    history = build_history(sample, scenario.accounts, history_from, day, seed, starts)
    candidates = candidate_days(day, rules)

    # The held-back read: of an hourly meter whose account settles, preferably one with nothing
    # else special about it (no trouble in its feed, no thermostat reporting).
    special = {record.key for record in scenario.meter_reads if record.kind}
    special |= {scenario.accounts[index].service_account_id for *_, index in reporting_thermostats()}
    hourly = sorted(account_id for account_id, account in accounts.items()
                    if account.interval_seconds == 3600 and _ineligible(facts[account_id], day, candidates, rules) is None)
    if not hourly:
        raise ValueError("no account in effect on an hourly meter: nothing to hold back (try more --accounts)")
    held = random.Random(f"late-{seed}").choice([a for a in hourly if a not in special] or hourly)
    late_batch = next(i for i, hour in enumerate(scenario.hours) if hour.start == events.start)
    late = hold_back(scenario, held, events.start, local_day_bounds(day)[1] + NEXT_MORNING)

    plan = BaselinePlan(events.event_id, events.start, events.end, rules, accounts, facts, history, history_from,
                        late, late_batch, candidates,
                        end_batch=next(i for i, hour in enumerate(scenario.hours) if hour.tick >= events.end))
    _simulate(plan, sample, scenario)
    return plan


def candidate_days(day: date, rules: Baseline) -> tuple[date, ...]:
    """The CSRL's candidate days, most recent first: business days before the event day. (No
    account was dispatched on an earlier day in the demo, so none is excluded for that.)"""
    found = []
    for back in range(1, rules.search_days + 1):
        if is_business_day(day - timedelta(days=back)):
            found.append(day - timedelta(days=back))
            if len(found) == rules.candidate_days:
                break
    return tuple(found)


def _ineligible(facts: dict, day: date, candidates: tuple[date, ...], rules: Baseline) -> str | None:
    """Service turned on or Net Energy Metering activated inside the look-back, service ended."""
    since = min(candidates) if len(candidates) == rules.candidate_days else day - timedelta(days=rules.search_days)
    if facts["service_start"] is not None and facts["service_start"] >= since:
        return "SERVICE_TURNED_ON"
    if facts["service_end"] is not None and facts["service_end"] <= day:
        return "SERVICE_ENDED"
    if facts["net_metering_since"] is not None and since <= facts["net_metering_since"] <= day:
        return "NET_METERING_ACTIVATED"
    return None


class _Usage:
    """The oracle's view of usage: the sample year for the days before, and for the day the reads
    sent so far (the highest revision of each interval telemetry emits)."""

    def __init__(self, plan: BaselinePlan, sample: SampleYear):
        self.plan, self.sample = plan, sample
        self.day: dict[tuple[str, datetime], tuple[int, Decimal]] = {}

    def add(self, record: Outgoing) -> None:
        if record.verdict not in (NEW, REVISION):
            return  # dropped or dead-lettered by telemetry
        read = record.value
        slot = (read["meter_id"], read["interval_start"])
        if slot not in self.day or self.day[slot][0] < read["revision"]:
            self.day[slot] = (read["revision"], read["value"] * WH_PER_UNIT[read["unit"]] / 1000)

    def before(self, account: ServiceAccount, day: date) -> Decimal | None:
        """kWh over the event's clock hours on an earlier day: what the backfill sent."""
        start = self.plan.facts[account.service_account_id]["service_start"]
        if day < max(self.plan.history_from, start):
            return None
        hour, end = self.plan.window(day)
        total = ZERO
        while hour < end:
            total += account_wh(self.sample, account, hour) / 1000
            hour += HOUR
        return total

    def today(self, account: ServiceAccount, start: datetime, end: datetime) -> Decimal | None:
        """kWh in [start, end) of the day; None while an interval is missing."""
        total, interval = ZERO, timedelta(seconds=account.interval_seconds)
        start = start.astimezone(timezone.utc)  # whole hours on the timeline, not on the wall clock
        while start < end:
            kept = self.day.get((account.meter_id, start))
            if kept is None:
                return None
            total += kept[1]
            start += interval
        return total


def _result(plan: BaselinePlan, usage: _Usage, account: ServiceAccount) -> Expected | None:
    """The account's performance as the usage stands; None while usage is missing."""
    listed = tuple(sorted(plan.candidates))
    ineligible = _ineligible(plan.facts[account.service_account_id], plan.day, plan.candidates, plan.rules)
    if ineligible:
        return Expected(INELIGIBLE, listed, reason_code=ineligible)
    if len(plan.candidates) < plan.rules.candidate_days:
        return Expected(INSUFFICIENT_DATA, listed, reason_code="FEWER_CANDIDATE_DAYS")
    days = [usage.before(account, day) for day in plan.candidates]
    actual = usage.today(account, plan.start, plan.end)
    if actual is None or None in days:
        return None
    highest = sorted(days, reverse=True)[:plan.rules.highest_days]
    baseline, actual = rounded(sum(highest) / len(highest)), rounded(actual)
    return Expected(SETTLEABLE, listed, baseline, actual, max(baseline - actual, rounded(ZERO)))


def _hours(plan: BaselinePlan, usage: _Usage, account: ServiceAccount) -> Hours:
    before = usage.today(account, plan.start - HOUR, plan.start)
    after = usage.today(account, plan.end, plan.end + HOUR)
    return (rounded(before) if before is not None else None, rounded(after) if after is not None else None)


def _simulate(plan: BaselinePlan, sample: SampleYear, scenario: DayScenario) -> None:
    """Send the day's batches through the oracle, as the demo sends them, noting at each moment
    the demo waits what the service should have emitted by then."""
    usage = _Usage(plan, sample)
    batches = [(hour.label, hour.meter_reads) for hour in scenario.hours]
    batches.append((f"next morning {local_hhmm(scenario.late_delivery)}", scenario.late_reads))
    plan.expected = {account_id: [] for account_id in plan.accounts}
    plan.expected_hours = {account_id: [] for account_id in plan.accounts}

    def sync(label: str, batch: int | None) -> None:
        moment = Sync(plan.event_id, label, batch)
        for account_id, account in plan.accounts.items():
            results = plan.expected[account_id]
            result = _result(plan, usage, account)
            if result is None:
                if not results:
                    moment.waiting.append(account_id)
                continue
            if not results or results[-1] != result:
                (moment.revised if results else moment.new).append(account_id)
                results.append(result)
            hours = _hours(plan, usage, account)
            if not plan.expected_hours[account_id] or plan.expected_hours[account_id][-1] != hours:
                plan.expected_hours[account_id].append(hours)
        moment.results = sum(1 for results in plan.expected.values() if results)
        moment.revisions = sum(len(results) - 1 for results in plan.expected.values() if results)
        plan.syncs.append(moment)

    for index, (label, reads) in enumerate(batches):
        if index == plan.end_batch:
            sync(f"event ENDED ({local_hhmm(plan.end)})", None)
        for record in reads:
            usage.add(record)
        if index >= plan.end_batch:
            sync(f"after {label}" if index < len(scenario.hours) else label, index)


# -- the service's /metrics -----------------------------------------------------------------------


@dataclass
class BaselineMetrics:
    results: Counter = field(default_factory=Counter)  # (status, kind) → records emitted
    awaiting: dict[str, int] = field(default_factory=dict)  # event_id → accounts awaiting usage
    intervals: Counter = field(default_factory=Counter)  # outcome → meter intervals read
    records_out: Counter = field(default_factory=Counter)
    dead_letters: int = 0

    @classmethod
    def parse(cls, text: str) -> "BaselineMetrics":
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels, value = sample.labels, int(sample.value)
                if sample.name == "gridflex_baseline_results_total":
                    metrics.results[labels["status"], labels["kind"]] += value
                elif sample.name == "gridflex_baseline_accounts_awaiting_data":
                    metrics.awaiting[labels["event_id"]] = value
                elif sample.name == "gridflex_baseline_intervals_total":
                    metrics.intervals[labels["outcome"]] += value
                elif sample.name == "gridflex_records_out_total":
                    metrics.records_out[labels["topic"]] += value
                elif sample.name == "gridflex_dead_letters_total":
                    metrics.dead_letters += value
        return metrics

    @property
    def firsts(self) -> int:
        return sum(n for (_, kind), n in self.results.items() if kind == "first")

    @property
    def revisions(self) -> int:
        return sum(n for (_, kind), n in self.results.items() if kind == "revision")

    @property
    def intervals_read(self) -> int:
        return sum(self.intervals.values())

    def counts(self, event_id: str) -> tuple[int, int, int | None]:
        return self.firsts, self.revisions, self.awaiting.get(event_id)


# -- while the day streams ------------------------------------------------------------------------


class BaselineDay:
    """What the demo does for the baseline service while the day streams: the backfill at
    midnight, then after each hour from the event's end a wait until the service has read what
    telemetry emitted, its counters compared with the oracle's."""

    def __init__(self, plan: BaselinePlan, service: ServiceProcess, telemetry: ServiceProcess):
        self.plan, self.service, self.telemetry = plan, service, telemetry
        self.backfilled: TelemetryMetrics | None = None  # what telemetry made of the backfill
        self.backfill_s = 0.0
        self.telemetry_out = 0  # intervals telemetry emitted in all (backfill and day)

    async def backfill(self, producer: RecordProducer) -> TelemetryMetrics:
        """Send the history; once telemetry has handled it and the baseline service has read its
        intervals, return telemetry's metrics (the day is counted from there)."""
        plan, history = self.plan, self.plan.history
        before = await scrape(self.telemetry, TelemetryMetrics.parse)
        print(f"\nbackfilling the {HISTORY_DAYS} days before ({plan.history_from:%m-%d} to "
              f"{plan.day - timedelta(days=1):%m-%d}) for the baseline: {len(history):,} meter reads … ",
              end="", flush=True)
        started = time.monotonic()
        await send_records(producer, history)
        self.backfilled = await wait_for_progress(
            self.telemetry, lambda text: TelemetryMetrics.parse(text).since(before),
            lambda m: m.reads_handled >= len(history) and m.settled, BACKFILL_TIMEOUT_S, WAIT_S)
        after = await scrape(self.telemetry, TelemetryMetrics.parse)
        self.telemetry_out = after.intervals_out
        await wait_until(self.service, BaselineMetrics.parse, lambda m: m.intervals_read >= self.telemetry_out, WAIT_S)
        self.backfill_s = time.monotonic() - started
        print(f"{self.backfilled.intervals_out:,} intervals out of telemetry, read by the baseline service in "
              f"{self.backfill_s:.1f} s")
        return after

    async def ticked(self, batch: int) -> list[str]:
        """After the clock ticked past a batch's hour, before its reads go out: once the event has
        ended, wait until the service has evaluated every account it concerns."""
        if batch != self.plan.end_batch:
            return []
        return await self._sync(self.plan.syncs[0])

    async def handled(self, batch: int) -> list[str]:
        """After telemetry has handled a batch of reads: the baseline service's turn."""
        lines = []
        if batch == self.plan.late_batch:
            lines.append(f"↳ {'held back':<16} {self.plan.late.note}")
        moment = next((sync for sync in self.plan.syncs if sync.batch == batch), None)
        if moment is not None:
            lines += await self._sync(moment)
        return lines

    async def _sync(self, moment: Sync) -> list[str]:
        self.telemetry_out = (await scrape(self.telemetry, TelemetryMetrics.parse)).intervals_out
        event_id = self.plan.event_id
        moment.seen = await wait_until(
            self.service, BaselineMetrics.parse,
            lambda m: m.intervals_read >= self.telemetry_out and m.counts(event_id) == (
                moment.results, moment.revisions, moment.awaiting), WAIT_S)
        if moment.seen is None:
            moment.seen = await scrape(self.service, BaselineMetrics.parse)
        if not moment.eventful and moment.ok:
            return []
        results, revisions, awaiting = moment.seen.counts(event_id)
        if moment.batch is None:
            said = (f"the event has ENDED: {awaiting} accounts await its last hour, {results} results; "
                    f"gridflex_baseline_accounts_awaiting_data{{event_id=\"{event_id}\"}} {awaiting}")
        else:
            said = f"{results} results" + (f" ({revisions} revised)" if revisions else "") + f", {awaiting} awaiting"
            if moment.waiting and len(moment.waiting) <= 3:
                said += f": {', '.join(moment.waiting)}"
        lines = [f"↳ {'baseline':<16} {said} {mark(moment.ok)}"]
        if not moment.ok:
            lines.append(f"  {'':<16} expected {moment.results} results, {moment.revisions} revised, "
                         f"{moment.awaiting} awaiting")
        for account_id in moment.revised:
            old, new = self.plan.expected[account_id][-2:]
            lines.append(f"  {'':<16} {account_id} revision {len(self.plan.expected[account_id]) - 1}: actual "
                         f"{old.actual_kwh:.3f} → {new.actual_kwh:.3f} kWh, reduction {old.reduction_kwh:.3f} → "
                         f"{new.reduction_kwh:.3f} kWh")
        return lines


# -- read back ------------------------------------------------------------------------------------


@dataclass
class BaselineOutcome:
    results: list[dict]  # every EventPerformance record, once each
    hours: list[dict]  # every EventWindowUsage record, once each
    metrics: BaselineMetrics
    in_effect: set[str]  # accounts with a thermostat in effect, per the enrollment service
    day: BaselineDay


async def read_baseline(settings: ServiceSettings, day: BaselineDay, in_effect: set[str]) -> BaselineOutcome:
    """The service's outputs after the day: its results and the hours around the event."""
    metrics = await wait_until(day.service, BaselineMetrics.parse,
                               lambda m: m.intervals_read >= day.telemetry_out, WAIT_S)
    metrics = metrics or await scrape(day.service, BaselineMetrics.parse)
    identity = ("event_id", "service_account_id", "revision")  # a record re-emitted after a crash is the same
    results, hours = [
        distinct([r.value for r in await collect(settings, topic, metrics.records_out[topic])
                  if isinstance(r.value, dict)], identity)
        for topic in (EVENT_PERFORMANCE, EVENT_USAGE)]
    return BaselineOutcome(results, hours, metrics, in_effect, day)


def accounts_in_effect(states: list[dict], day: date) -> set[str]:
    """Accounts with a thermostat enrolled in sce-sep-2025 in effect on ``day`` (the latest state of each)."""
    latest = {state["service_account_id"]: state for state in states}
    return {account_id for account_id, state in latest.items() for period in state["enrollments"]
            if period["program_id"] == PROGRAM_ID and period["effective_from"] <= day
            and (period["effective_to"] is None or day < period["effective_to"])}


# -- the report -----------------------------------------------------------------------------------


class BaselineReport(Checks):
    """The event's performance, read back from the baseline service and checked against the oracle."""

    def __init__(self, plan: BaselinePlan, outcome: BaselineOutcome):
        super().__init__()
        self.plan, self.outcome = plan, outcome
        self.by_account: dict[str, list[dict]] = {}
        for record in sorted(outcome.results, key=lambda r: r["revision"]):
            if record["event_id"] == plan.event_id:
                self.by_account.setdefault(record["service_account_id"], []).append(record)

    def render(self) -> str:
        return "\n".join([self.history(), self.timeline(), self.results(), self.hours_around()])

    def history(self) -> str:
        plan, day = self.plan, self.outcome.day
        backfilled, m = day.backfilled, self.outcome.metrics
        self.check(f"the {len(plan.history):,} backfilled reads all came out of telemetry as new intervals, "
                   "none dead-lettered",
                   backfilled is not None and backfilled.verdicts[NEW] == backfilled.intervals_out == len(plan.history)
                   and backfilled.meter_dead_letters == 0)
        self.check(f"the baseline service applied every interval telemetry emitted ({day.telemetry_out:,}), refused "
                   "none and dead-lettered nothing",
                   m.intervals["applied"] == day.telemetry_out and not m.intervals["refused"] and not m.dead_letters)
        window = f"{local_hhmm(plan.start)}–{local_hhmm(plan.end)}"
        return "\n".join([
            heading(f"Event performance (baseline service, {EVENT_PERFORMANCE}): {plan.event_id}"),
            f"  usage history: {HISTORY_DAYS} days ({plan.history_from} to {plan.day - timedelta(days=1)}) backfilled "
            f"through telemetry at midnight, {len(plan.history):,} reads in {day.backfill_s:.1f} s "
            f"{mark(self.checks[-2].ok and self.checks[-1].ok)}",
            f"  method {METHOD}: the {plan.rules.highest_days} highest of the {plan.rules.candidate_days} previous "
            f"business days over the event's clock hours ({window}, as updated); candidate days "
            + ", ".join(f"{d:%a %m-%d}" for d in plan.candidates),
        ])

    def timeline(self) -> str:
        rows: list[list] = []
        quiet: list[Sync] = []

        def quiet_hours() -> None:
            if not quiet:
                return
            first, last = quiet[0].label.removeprefix("after "), quiet[-1].label.removeprefix("after ")
            ok = self.check(f"after {first} to {last}: no result changed, as the oracle says", all(m.ok for m in quiet))
            rows.append([f"after {first} … {last}", "", "", "", "no change", mark(ok), ""])
            quiet.clear()

        for moment in self.plan.syncs:
            if not moment.eventful:
                quiet.append(moment)
                continue
            quiet_hours()
            seen = moment.seen.counts(self.plan.event_id) if moment.seen else (None, None, None)
            self.check(f"{moment.label}: {moment.results} results, {moment.revisions} revised, {moment.awaiting} "
                       "awaiting usage on /metrics", moment.ok)
            note = ", ".join([*(f"{a} first" for a in moment.new if len(moment.new) <= 2),
                              *(f"{a} revised" for a in moment.revised),
                              *(f"{a} awaiting" for a in moment.waiting if len(moment.waiting) <= 2)])
            rows.append([moment.label, *(("–" if v is None else v) for v in seen),
                         f"{moment.results}/{moment.revisions}/{moment.awaiting}", mark(moment.ok), note])
        quiet_hours()
        final = self.outcome.metrics.awaiting.get(self.plan.event_id)
        self.check("gridflex_baseline_accounts_awaiting_data is 0 at the end", final == 0)
        return "\n".join([
            "", "  as the day went on (the service's /metrics once it had read what telemetry emitted; the oracle's "
                "results/revised/awaiting):",
            table(["moment (" + self.plan.start.astimezone(LOCAL_ZONE).tzname() + ")", "results", "revised", "awaiting",
                   "oracle", "", ""], rows, right={1, 2, 3, 4}, indent="    "),
            f"    gridflex_baseline_accounts_awaiting_data{{event_id=\"{self.plan.event_id}\"}}: "
            + " → ".join(f"{m.seen.awaiting.get(self.plan.event_id)} ({m.label})"
                         for m in self.plan.syncs if m.eventful and m.seen) + f"; {final} at the end",
        ])

    def results(self) -> str:
        plan, by_account = self.plan, self.by_account
        in_effect = self.outcome.in_effect
        self.check(f"one result for each of the {len(in_effect)} accounts with a thermostat in effect (the enrollment "
                   "service's states), and none for another", set(by_account) == in_effect)
        self.check("the oracle worked out the same accounts (from the enrollment scenario)", set(plan.accounts) == in_effect)
        records = [r for results in by_account.values() for r in results]
        self.check(f"every result: {PROGRAM_ID}, method {METHOD}",
                   all(r["program_id"] == PROGRAM_ID and r["method"] == METHOD for r in records))
        self.check("every result lists the candidate days " + ", ".join(f"{d:%m-%d}" for d in sorted(plan.candidates)),
                   all(tuple(r["candidate_days"]) == tuple(sorted(plan.candidates)) for r in records))
        wrong = [a for a in plan.accounts
                 if [r["revision"] for r in by_account.get(a, [])] != list(range(len(plan.expected[a])))
                 or not all(e.matches(r) for e, r in zip(plan.expected[a], by_account.get(a, [])))]
        expected_records = sum(len(results) for results in plan.expected.values())
        self.check(f"all {expected_records} records (revisions 0, 1, …) exactly as the oracle works them out: "
                   "status, baseline, actual, reduction to 9 places", not wrong and len(records) == expected_records)
        late, revised = plan.late_account, plan.revised_accounts
        late_results = by_account.get(late, [])
        morning = plan.syncs[-1]
        self.check(f"{late} (event-hour read held back) has its result only after the late read, "
                   f"{plan.expected[late][0].status}",
                   len(late_results) == 1 and plan.expected[late][0].matches(late_results[0])
                   and late in morning.new and morning.ok)
        for account_id in revised:
            got = by_account.get(account_id, [])
            self.check(f"{account_id}: revision 0 from the estimated read, revision 1 with the corrected figures",
                       len(got) == len(plan.expected[account_id]) and all(
                           e.matches(r) for e, r in zip(plan.expected[account_id], got)))

        statuses = Counter(results[-1]["status"] for results in by_account.values())
        expected_statuses = Counter(results[-1].status for results in plan.expected.values() if results)
        self.check(f"by status: {dict(statuses)} (expected {dict(expected_statuses)})", statuses == expected_statuses)
        latest = {a: results[-1] for a, results in by_account.items()}
        totals = [sum((r[name] or ZERO for r in latest.values()), ZERO)
                  for name in ("baseline_kwh", "actual_kwh", "reduction_kwh")]
        oracle_totals = [sum((getattr(results[-1], name) or ZERO for results in plan.expected.values() if results), ZERO)
                         for name in ("baseline_kwh", "actual_kwh", "reduction_kwh")]

        order = [*([late] if late in plan.accounts else []), *revised,
                 *(a for a in plan.accounts if plan.expected[a] and plan.expected[a][-1].status != SETTLEABLE)]
        order += [a for a in sorted(plan.accounts) if a not in order][:max(ROWS - len(order), 0)]
        rows = []
        for account_id in dict.fromkeys(order):
            expected = plan.expected[account_id]
            got = by_account.get(account_id, [])
            for index, record in enumerate(got or [None]):
                ok = record is not None and index < len(expected) and expected[index].matches(record)
                rows.append([account_id if index == 0 else "", profile_title(plan.accounts[account_id].profile)
                             if index == 0 else "", *(_kwh(record, name) for name in (
                                 "baseline_kwh", "actual_kwh", "reduction_kwh")),
                             record["status"] if record else "(none)", record["revision"] if record else "–", mark(ok),
                             _why(plan, account_id, index)])
        shown = len(dict.fromkeys(order))
        rows.append(["all", f"{len(latest)} accounts", *(f"{t:,.3f}" for t in totals), "", "",
                     mark(totals == oracle_totals), "latest revision of each; the oracle's sums agree"
                     if totals == oracle_totals else f"oracle: {', '.join(f'{t:,.3f}' for t in oracle_totals)}"])
        lines = ["", f"  results: {len(records)} records for {len(by_account)} accounts "
                     f"({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); "
                     f"the oracle: {', '.join(f'{n} {s}' for s, n in sorted(expected_statuses.items()))} "
                     f"{mark(statuses == expected_statuses)}",
                 table(["account", "profile", "baseline kWh", "actual kWh", "reduction kWh", "status", "rev", "", ""],
                       rows, right={2, 3, 4, 6}, indent="    ")]
        if len(plan.accounts) > shown:
            lines.append(f"    … {len(plan.accounts) - shown} more accounts, each as the oracle says "
                         f"{mark(not [a for a in wrong if a not in order])}")
        for account_id in wrong[:8]:
            lines.append(f"    ✗ {account_id}: got {[(r['status'], r['baseline_kwh'], r['actual_kwh'], r['revision']) for r in by_account.get(account_id, [])]}, "
                         f"expected {[(e.status, e.baseline_kwh, e.actual_kwh) for e in plan.expected[account_id]]}")
        return "\n".join(lines)

    def hours_around(self) -> str:
        plan = self.plan
        latest: dict[str, dict] = {}
        for record in sorted(self.outcome.hours, key=lambda r: r["revision"]):
            if record["event_id"] == plan.event_id:
                latest[record["service_account_id"]] = record
        counts = Counter(r["service_account_id"] for r in self.outcome.hours if r["event_id"] == plan.event_id)
        expected_counts = Counter({a: len(h) for a, h in plan.expected_hours.items() if h})
        self.check("the hour before and after (gridflex.baseline.event-usage.v1): one record per change, the latest "
                   "of each account as the oracle says",
                   counts == expected_counts and all(
                       (r["hour_before_kwh"], r["hour_after_kwh"]) == plan.expected_hours[a][-1]
                       for a, r in latest.items()))
        self.check(f"those records carry the updated window {local_hhmm(plan.start)}–{local_hhmm(plan.end)}",
                   bool(latest) and all((r["event_start"], r["event_end"]) == (plan.start, plan.end)
                                        for r in latest.values()))
        return (f"\n  the hour before and after the event ({EVENT_USAGE}, for enrollment's minimum-usage rule): "
                f"{sum(counts.values())} records for {len(latest)} accounts, a second one when the hour after came in "
                f"{mark(self.checks[-2].ok and self.checks[-1].ok)}")


def _kwh(record: dict | None, name: str) -> str:
    value = record[name] if record else None
    return "–" if value is None else f"{value:,.3f}"


def _why(plan: BaselinePlan, account_id: str, revision: int) -> str:
    if account_id == plan.late_account:
        return f"its {local_hhmm(plan.late.value['interval_start'])} read came the next morning"
    if account_id in plan.revised_accounts:
        return "from the estimated read" if revision == 0 else "the corrected read"
    expected = plan.expected[account_id]
    return (expected[-1].reason_code or "") if expected else "never settled"
