"""Baseline computation service: its wiring.

- ``gridflex.telemetry.meter-intervals.v1``, ``gridflex.enrollment.state.v1`` and
  ``utility.customer-accounts.v1`` (co-partitioned by service account) → one state record per
  account: its usage per meter and local day (highest revision of each interval), its
  enrollments, the facts the look-back checks (service start and end, net metering)
- the event lifecycle (mirrored in every worker): when an event ENDS, each partition evaluates
  every account in slices → ``gridflex.event-performance.v1`` (key ``<event_id>/<account>``) for
  each account the event concerns, as soon as the usage it needs is complete; the hour before
  and after the event → ``gridflex.baseline.event-usage.v1``
- an account still missing usage waits (``gridflex_baseline_accounts_awaiting_data``); a late
  interval completes it; at the data deadline it is INSUFFICIENT_DATA, which a later arrival
  inside the settlement window can still revise; a revised interval that changes a result
  re-emits it with ``revision`` + 1, an unchanged result is not re-emitted
- anything refused → ``gridflex.dead-letters.v1`` with its reason

Delivery is at-least-once: after a crash a result may be emitted again with the same identity
(event, account, revision) and the same content; consumers keep the first.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter, Gauge

from gridflex.batch import Batch
from gridflex.calendar import local_date
from gridflex.codec import Undecodable
from gridflex.enrollments import periods_by_program
from gridflex.programs import ProgramCatalogue
from gridflex.state import PartitionStore
from gridflex.streaming import ServiceRuntime
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_PERFORMANCE,
    EVENT_USAGE,
    METER_INTERVALS,
)
from services.baseline.domain import methods, performance
from services.baseline.domain.performance import DispatchedEvent
from services.baseline.domain.usage import AccountUsage, IntervalRefused
from services.baseline.settings import BaselineSettings

log = structlog.get_logger(__name__)

SERVICE = "baseline"
RESULTS = Counter("gridflex_baseline_results", "Event performance records emitted",
                  ["program", "status", "kind"])  # kind: first, revision
UNCHANGED = Counter("gridflex_baseline_unchanged_results", "Results recomputed after new usage that did not change")
INTERVALS = Counter("gridflex_baseline_intervals", "Meter intervals by what they did to the usage kept", ["outcome"])
EXPIRED_DAYS = Counter("gridflex_baseline_expired_meter_days", "Meter days of usage forgotten (past retention)")
AWAITING = Gauge("gridflex_baseline_accounts_awaiting_data", "Accounts an ended event concerns whose usage is "
                 "not complete yet (this worker's partitions)", ["event_id"])
EVENTS_AWAITING = Gauge("gridflex_baseline_events_awaiting_data", "Ended events with accounts still awaiting "
                        "usage (this worker's partitions)")
SWEEPS = Gauge("gridflex_baseline_sweeps_in_progress", "Event evaluations under way, per partition", ["partition"])
SWEPT = Counter("gridflex_baseline_accounts_evaluated", "Accounts evaluated by event sweeps", ["event_id"])

settings = BaselineSettings()
programs = ProgramCatalogue.load(settings.programs_dir)
for _program in programs:
    methods.method(_program.baseline)  # an unknown method stops the service at start, naming it
    if _program.baseline.search_days > settings.usage_retention_days:
        raise ValueError(f"program {_program.id} looks back {_program.baseline.search_days} days; "
                         f"GRIDFLEX_BASELINE_USAGE_RETENTION_DAYS is {settings.usage_retention_days}")
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app

DEADLINE_CHECK_S = 1.0  # how often sweeps, data deadlines and closed windows are looked at without input
ACCOUNT = "acct/"


# -- the events: every accepted event as the lifecycle tells it -----------------------------------

class EventCalendar:
    """Every dispatched event (the mirror of the lifecycle keeps it current)."""

    def __init__(self):
        self.events: dict[str, DispatchedEvent] = {}
        self._before: dict[str, list[DispatchedEvent]] = {}  # event_id → events that may precede it

    def apply(self, event_id: str, step: dict) -> None:
        self._before.clear()
        status = step["status"]
        if status in ("SCHEDULED", "UPDATED"):
            self.events[event_id] = DispatchedEvent(event_id, step["program_id"], step["start"], step["end"],
                                                    frozenset(step["targets"]))
        elif status == "CANCELLED":
            if step["counted_ms"] > 0 and event_id in self.events:  # cancelled while in progress: it ran until then
                self.events[event_id] = replace(self.events[event_id], end=step["end"])
            else:
                self.events.pop(event_id, None)  # never ran: nobody was dispatched
        elif status == "ENDED" and event_id in self.events:
            self.events[event_id] = replace(self.events[event_id], ended=True)

    def ended(self, now: datetime) -> list[DispatchedEvent]:
        """Ended events whose settlement window is still open."""
        return [event for event in self.events.values()
                if event.ended and event.program_id in programs and now < event.window_closes(_rules(event))]

    def before(self, event: DispatchedEvent) -> list[DispatchedEvent]:
        """The events that may have dispatched an account on a day of ``event``'s look-back."""
        if event.event_id not in self._before:
            since = event.day - timedelta(days=_rules(event).search_days)
            self._before[event.event_id] = [other for other in self.events.values()
                                            if other.day < event.day and local_date(other.end) >= since]
        return self._before[event.event_id]

    def closed(self, now: datetime) -> list[DispatchedEvent]:
        return [event for event in self.events.values()
                if event.ended and event.program_id in programs and now >= event.window_closes(_rules(event))]


def _rules(event: DispatchedEvent):
    return programs[event.program_id].baseline


def _usage_window(event: DispatchedEvent) -> timedelta:
    """Before and after an event, the span the program's minimum-usage rule reads (an hour)."""
    removal = programs[event.program_id].removal
    if removal is None or removal.minimum_usage is None:
        return performance.HOUR
    return timedelta(minutes=removal.minimum_usage.window_minutes)


calendar = EventCalendar()
lifecycle_mirror = runtime.mirror(EVENT_LIFECYCLE, calendar.apply)


# -- usage: intervals, enrollments and account facts → one record per account -------------------

async def compute(batch: Batch) -> None:
    """Account changes first (each re-evaluates the open results it touches), then the sweeps
    of ended events, the data deadlines, and the settlement windows that closed."""
    await lifecycle_mirror.ready.wait()
    ended = calendar.ended(batch.now)
    for partition, records in batch.owned_partitions().items():
        store = batch.store(partition)
        runs = Runs(store)
        touched: dict[str, AccountUsage] = {}
        changed: dict[str, set[str] | None] = defaultdict(set)  # account → days of usage changed; None: all
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            account_id = record.value["service_account_id"]
            usage = touched.get(account_id)
            if usage is None:
                usage = touched[account_id] = AccountUsage.from_state(store.get(ACCOUNT + account_id))
            outcome = _apply(usage, record.topic.removesuffix(settings.topic_suffix), record.value)
            if isinstance(outcome, IntervalRefused):
                batch.dead_letter(record, outcome.reason_code, outcome.reason)
            elif outcome is ALL_DAYS:
                changed[account_id] = None
            elif outcome is not None and changed[account_id] is not None:
                changed[account_id].add(outcome)
        for account_id, usage in touched.items():
            days = changed.get(account_id, set())
            for event in ended:
                if (days is None or _reads_any(event, days)) and runs.passed(event.event_id, ACCOUNT + account_id):
                    _publish(batch, store, runs, event, account_id, usage)
            _expire(usage, ended, batch.now)
            store.put(ACCOUNT + account_id, usage.to_state())
        pending = _sweep(batch, store, runs, ended, settings.sweep_slice)
        _close_windows(batch, store, runs)
        runs.save()
        SWEEPS.labels(str(partition)).set(pending)
        if pending:
            batch.again()
    _report_awaiting(batch)


ALL_DAYS = "*"  # an enrollment or account change: every open result of the account may change


def _apply(usage: AccountUsage, source: str, value: dict) -> str | None | IntervalRefused:
    """Apply one input; returns the day of usage it changed, ALL_DAYS, None (nothing changed) or
    why an interval is refused."""
    if source == METER_INTERVALS:
        outcome = usage.record_interval(value)
        INTERVALS.labels("refused" if isinstance(outcome, IntervalRefused)
                         else "applied" if outcome is not None else "already_known").inc()
        return outcome
    if source == ENROLLMENT_STATE:
        programs_before = usage.programs
        usage.programs = periods_by_program(value["enrollments"])
        return ALL_DAYS if usage.programs != programs_before else None
    return ALL_DAYS if usage.set_facts(value) else None


def _reads_any(event: DispatchedEvent, days: set[str]) -> bool:
    """Whether usage on one of ``days`` can change the event's results: its look-back, its days
    and the day after (the hour after may cross midnight)."""
    first = (event.day - timedelta(days=_rules(event).search_days)).isoformat()
    last = (event.days()[-1] + timedelta(days=1)).isoformat()
    return any(first <= day <= last for day in days)


def _expire(usage: AccountUsage, ended: list[DispatchedEvent], now: datetime) -> None:
    """Forget usage past retention, except the days an open result reads."""
    keep_from = local_date(now) - timedelta(days=settings.usage_retention_days)
    bound = keep_from.isoformat()
    if not any(day < bound for days in usage.meters.values() for day in days):
        return
    pinned: set[str] = set()
    for event in ended:
        if performance.participation(usage, event) is not None:
            candidates = performance.look_back(event, _rules(event), usage, calendar.before(event))
            pinned |= performance.needed_days(event, candidates)
    EXPIRED_DAYS.inc(usage.expire(keep_from, pinned))


# -- results --------------------------------------------------------------------------------------

class Runs:
    """Per partition and ended event: how far its sweep went, whether its data deadline was
    handled, how many accounts still await usage (``run/<event_id>``)."""

    def __init__(self, store: PartitionStore):
        self.store = store
        self.runs: dict[str, dict] = {}
        self.changed: set[str] = set()

    def get(self, event_id: str) -> dict | None:
        if event_id not in self.runs:
            self.runs[event_id] = self.store.get(f"run/{event_id}")
        return self.runs[event_id]

    def start(self, event_id: str) -> dict:
        run = self.runs[event_id] = {"cursor": None, "swept": False, "deadline": False, "awaiting": 0,
                                     "accounts": 0, "started": time.time()}
        self.changed.add(event_id)
        return run

    def update(self, event_id: str, **changes) -> None:
        self.get(event_id).update(changes)
        self.changed.add(event_id)

    def passed(self, event_id: str, key: str) -> bool:
        """Whether the event's sweep has evaluated the account stored at ``key`` already."""
        run = self.get(event_id)
        return run is not None and (run["swept"] or (run["cursor"] is not None and key <= run["cursor"]))

    def save(self) -> None:
        for event_id in self.changed:
            run = self.runs[event_id]
            self.store.put(f"run/{event_id}", run) if run is not None else self.store.delete(f"run/{event_id}")
        self.changed.clear()


def _publish(batch: Batch, store: PartitionStore, runs: Runs, event: DispatchedEvent, account_id: str,
             usage: AccountUsage) -> None:
    """Evaluate one account in one event; emit its result when new or changed."""
    result = performance.evaluate(event, _rules(event), usage, calendar.before(event), batch.now)
    waiting = result is not None and result.status is None
    awaiting_key = f"awaiting/{event.event_id}/{account_id}"
    key = f"result/{event.event_id}/{account_id}"
    prior = store.get(key)
    if waiting != (store.get(awaiting_key) is not None) and (prior is None or not waiting):
        store.put(awaiting_key, True) if waiting else store.delete(awaiting_key)
        runs.update(event.event_id, awaiting=runs.get(event.event_id)["awaiting"] + (1 if waiting else -1))
    if result is None or waiting:
        return
    prior = prior or {}
    digest = result.digest()
    program = event.program_id
    if prior.get("digest") != digest:
        revision = prior["revision"] + 1 if prior else 0
        batch.emit(EVENT_PERFORMANCE, f"{event.event_id}/{account_id}",
                   result.record(event, account_id, _rules(event).method, revision))
        RESULTS.labels(program, result.status, "revision" if prior else "first").inc()
        prior = {**prior, "revision": revision, "digest": digest}
        if revision:
            log.info("event performance revised", event_id=event.event_id, program=program, revision=revision,
                     status=result.status)
    else:
        UNCHANGED.inc()
    _publish_hours(batch, event, account_id, usage, prior)
    store.put(key, prior)


def _publish_hours(batch: Batch, event: DispatchedEvent, account_id: str, usage: AccountUsage, prior: dict) -> None:
    """The hour before and after the event, for enrollment's minimum-usage rule; re-sent when
    either changes."""
    before, after = performance.hour_around(event, usage, _usage_window(event))
    hours = [str(before), str(after)]
    if prior.get("hours") == hours:
        return
    revision = prior["hours_revision"] + 1 if "hours" in prior else 0
    batch.emit(EVENT_USAGE, account_id, {
        "event_id": event.event_id, "program_id": event.program_id, "service_account_id": account_id,
        "event_start": event.start, "event_end": event.end, "hour_before_kwh": before, "hour_after_kwh": after,
        "revision": revision,
    })
    prior.update(hours=hours, hours_revision=revision)


def _sweep(batch: Batch, store: PartitionStore, runs: Runs, ended: list[DispatchedEvent], budget: int) -> int:
    """Evaluate up to ``budget`` accounts for the ended events this partition has not finished;
    then settle what waited past the data deadline. Returns the events still unfinished."""
    unfinished = 0
    for event in ended:
        run = runs.get(event.event_id) or runs.start(event.event_id)
        if run["swept"] and (run["deadline"] or batch.now < event.deadline(_rules(event))):
            continue
        if budget <= 0:
            unfinished += 1
            continue
        if not run["swept"]:
            budget -= _sweep_accounts(batch, store, runs, event, budget)
        else:
            budget -= _settle_awaiting(batch, store, runs, event, budget)
        run = runs.get(event.event_id)
        if not run["swept"] or (batch.now >= event.deadline(_rules(event)) and not run["deadline"]):
            unfinished += 1
    return unfinished


def _sweep_accounts(batch: Batch, store: PartitionStore, runs: Runs, event: DispatchedEvent, budget: int) -> int:
    run = runs.get(event.event_id)
    evaluated, cursor = 0, run["cursor"]
    for key, state in store.items_with_prefix(ACCOUNT, after=cursor):
        _publish(batch, store, runs, event, key[len(ACCOUNT):], AccountUsage.from_state(state))
        evaluated += 1
        cursor = key
        if evaluated >= budget:
            break
    else:
        runs.update(event.event_id, swept=True)
        log.info("event evaluated", event_id=event.event_id, program=event.program_id,
                 partition=store.changelog.partition, accounts=run["accounts"] + evaluated,
                 awaiting_data=runs.get(event.event_id)["awaiting"],
                 seconds=round(time.time() - run["started"], 3))
    runs.update(event.event_id, cursor=cursor, accounts=run["accounts"] + evaluated)
    SWEPT.labels(event.event_id).inc(evaluated)
    return evaluated


def _settle_awaiting(batch: Batch, store: PartitionStore, runs: Runs, event: DispatchedEvent, budget: int) -> int:
    """Past the data deadline: every account still waiting gets its result (INSUFFICIENT_DATA
    unless its usage has just completed)."""
    prefix = f"awaiting/{event.event_id}/"
    settled = 0
    for key in list(store.keys_with_prefix(prefix)):
        account_id = key[len(prefix):]
        _publish(batch, store, runs, event, account_id, AccountUsage.from_state(store.get(ACCOUNT + account_id)))
        settled += 1
        if settled >= budget:
            return settled
    runs.update(event.event_id, deadline=True)
    log.info("event data deadline passed", event_id=event.event_id, program=event.program_id,
             partition=store.changelog.partition, settled_without_data=settled)
    return settled


def _close_windows(batch: Batch, store: PartitionStore, runs: Runs) -> None:
    """Past the settlement window an event's results are final: its bookkeeping is forgotten."""
    for event in calendar.closed(batch.now):
        if runs.get(event.event_id) is None:
            continue
        for prefix in (f"result/{event.event_id}/", f"awaiting/{event.event_id}/"):
            for key in list(store.keys_with_prefix(prefix)):
                store.delete(key)
        runs.runs[event.event_id] = None
        runs.changed.add(event.event_id)
        try:
            AWAITING.remove(event.event_id)
        except KeyError:
            pass  # this worker never reported it
        log.info("event settlement window closed", event_id=event.event_id, partition=store.changelog.partition)


def _report_awaiting(batch: Batch) -> None:
    totals: dict[str, int] = defaultdict(int)
    for store in batch.stores():
        for key in store.keys_with_prefix("run/"):
            run = store.get(key)
            totals[key.removeprefix("run/")] += run["awaiting"]
    for event_id, awaiting in totals.items():
        AWAITING.labels(event_id).set(awaiting)
    EVENTS_AWAITING.set(sum(1 for awaiting in totals.values() if awaiting))


usage_pipeline = runtime.batch_pipeline([METER_INTERVALS, ENROLLMENT_STATE, CUSTOMER_ACCOUNTS], compute,
                                        state_name="usage", idle_every_s=DEADLINE_CHECK_S)
