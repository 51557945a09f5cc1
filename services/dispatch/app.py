"""Event dispatch service: its wiring.

- ``utility.energy-events.v1`` (one partition: requests decided one after another, so the
  program-hour ledgers in its state can never be overspent) → SCHEDULED, UPDATED, CANCELLED or
  REJECTED (every broken rule named) on ``gridflex.dispatch.event-lifecycle.v1``, then STARTED
  and ENDED from timers kept in the same state (a worker down at the start emits STARTED when
  it is back, once)
- the lifecycle (mirrored in every worker) + ``gridflex.enrollment.state.v1`` and
  ``utility.customer-accounts.v1`` (co-partitioned by service account) → one
  ``DispatchInstruction`` per thermostat reached on ``partner.<provider>.dispatch.v1``, sent in
  slices, resumable after a crash; UPDATE and CANCEL reach exactly the thermostats the SCHEDULE did
- instructions + ``partner.<provider>.dispatch-acks.v1`` (co-partitioned by thermostat) and the
  lifecycle → the Postgres projection: who was told what, who answered, acknowledgment coverage
- anything refused → ``gridflex.dead-letters.v1`` with its reason
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from datetime import date, datetime, timezone

import structlog
from prometheus_client import Counter, Gauge

from gridflex import enrollments
from gridflex.batch import Batch
from gridflex.calendar import local_date
from gridflex.clock import ClockNotStarted
from gridflex.codec import Undecodable
from gridflex.metrics import count
from gridflex.programs import ProgramCatalogue
from gridflex.state import PartitionStore
from gridflex.streaming import ServiceRuntime
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DISPATCH,
    DISPATCH_ACKS,
    ENERGY_EVENTS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
)
from services.dispatch import projection
from services.dispatch.domain import events, fanout
from services.dispatch.domain.events import CANCELLED, ENDED, MS_PER_HOUR, REJECTED, STARTED, Event
from services.dispatch.settings import DispatchSettings

log = structlog.get_logger(__name__)

SERVICE = "dispatch"
EVENT_DECISIONS = Counter("gridflex_dispatch_event_decisions", "Energy event requests decided",
                          ["program", "action", "outcome"])
LIMIT_FAILURES = Counter("gridflex_dispatch_limit_failures", "Rules broken by rejected event requests", ["code"])
DUPLICATE_REQUESTS = Counter("gridflex_dispatch_duplicate_requests", "Re-delivered event requests already decided")
LIFECYCLE = Counter("gridflex_dispatch_lifecycle_steps", "Event lifecycle records emitted", ["program", "status"])
HOURS_USED = Gauge("gridflex_dispatch_program_hours_used", "Event hours counted against a program", ["program", "year"])
HOURS_REMAINING = Gauge("gridflex_dispatch_program_hours_remaining", "Event hours a program has left in the year",
                        ["program", "year"])
INSTRUCTIONS = Counter("gridflex_dispatch_instructions", "Dispatch instructions sent to thermostats",
                       ["program", "provider", "action"])
WITHDRAWN = Counter("gridflex_dispatch_withdrawn_devices", "Thermostats sent a CANCEL because their enrollment "
                    "ended between the SCHEDULE and the start", ["program"])
NOT_ADDED = Counter("gridflex_dispatch_late_enrollments", "Thermostats that came into effect for an event after "
                    "its SCHEDULE was fanned out, and were not added", ["program"])
EVENTS = Gauge("gridflex_dispatch_events", "Events accepted and not ended or cancelled: not started yet (scheduled) "
               "or under way (active); every worker reports every event", ["program", "state"])
FANOUT_PENDING = Gauge("gridflex_dispatch_fanout_in_progress", "Event steps being fanned out, per partition",
                       ["partition"])

settings = DispatchSettings()
programs = ProgramCatalogue.load(settings.programs_dir)
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app

TIMER_CHECK_S = 1.0  # how often due STARTED/ENDED timers are checked without input
TIMER = "!timer/"  # "!timer/<instant>/<event_id>/<STARTED|ENDED>": sorts before every other key


def _instant_key(instant: datetime) -> str:
    """A fixed-width UTC instant: keys sort in time order."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- events: requests against the program limits, and the timers of accepted events ---------------

class StoreLedger:
    """The program-hour ledger (ms per program and local day, and per calendar year) in the state."""

    def __init__(self, store: PartitionStore):
        self.store = store

    def day_ms(self, program_id: str, day: date) -> int:
        return self.store.get(f"day-ms/{program_id}/{day.isoformat()}") or 0

    def year_ms(self, program_id: str, year: int) -> int:
        return self.store.get(f"year-ms/{program_id}/{year}") or 0

    def apply(self, program_id: str, changes: dict[str, int]) -> None:
        for day, delta in changes.items():
            for key in (f"day-ms/{program_id}/{day}", f"year-ms/{program_id}/{day[:4]}"):
                total = (self.store.get(key) or 0) + delta
                self.store.put(key, total) if total else self.store.delete(key)

    def year_limit_ms(self, program_id: str) -> int | None:
        program = programs.programs.get(program_id)
        if program is None or program.events.max_hours_per_year is None:
            return None
        return program.events.max_hours_per_year * MS_PER_HOUR


async def decide_events(batch: Batch) -> None:
    """Due timers first (a request is judged with the event as it stands now), then requests."""
    for partition, records in batch.owned_partitions().items():
        store = batch.store(partition)
        ledger = StoreLedger(store)
        _fire_timers(batch, store, ledger)
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            refusal = _malformed(record.value, record.key)
            if refusal is not None:
                batch.dead_letter(record, *refusal)
                continue
            _decide(batch, store, ledger, record.value, record.offset)
        _report_hours(store)


def _malformed(request: dict, key: bytes | None) -> tuple[str, str] | None:
    if not request["event_id"].strip() or not request["program_id"].strip():
        return "MISSING_ID", "event_id and program_id must not be empty"
    if key is not None and key.decode(errors="replace") != request["event_id"]:
        return "KEY_MISMATCH", f"the record key {key.decode(errors='replace')!r} is not its event_id"
    return None


def _decide(batch: Batch, store: PartitionStore, ledger: StoreLedger, request: dict, offset: int) -> None:
    identity = events.fingerprint(request)
    if store.get(f"request/{identity}") is not None:
        DUPLICATE_REQUESTS.inc()
        return
    event_id, program_id = request["event_id"], request["program_id"]
    state = store.get(f"event/{event_id}")
    current = Event.from_state(state) if state is not None else None
    decision = events.decide(request, programs, current, ledger, batch.now)
    store.put(f"request/{identity}", {"event_id": event_id, "status": decision.status, "offset": offset})
    EVENT_DECISIONS.labels(program_id, request["action"], "accepted" if decision.accepted else "rejected").inc()
    if not decision.accepted:
        count(LIMIT_FAILURES, ((failure.code,) for failure in decision.failures))
        log.warning("event request rejected", event_id=event_id, program=program_id, action=request["action"],
                    failures=[failure.code for failure in decision.failures])
        _emit_step(batch, ledger, REJECTED, current, request, failures=decision.failures, source_offset=offset)
        return
    event = decision.event
    ledger.apply(event.program_id, decision.ledger_changes())
    _set_timers(store, current, event)
    _emit_step(batch, ledger, decision.status, event, request, source_offset=offset)
    log.info("event request accepted", event_id=event_id, program=program_id, action=request["action"],
             status=decision.status, revision=event.revision, start=event.start.isoformat(), end=event.end.isoformat())
    if decision.status == CANCELLED and event.started:  # cancelled while in progress: it ends now
        event.ended = True
        _emit_step(batch, ledger, ENDED, event, None)
    store.put(f"event/{event_id}", event.to_state())


def _set_timers(store: PartitionStore, before: Event | None, after: Event) -> None:
    for instant, status in events.due_timers(before) if before is not None else ():
        store.delete(f"{TIMER}{_instant_key(instant)}/{before.event_id}/{status}")
    for instant, status in events.due_timers(after):
        store.put(f"{TIMER}{_instant_key(instant)}/{after.event_id}/{status}", True)


def _fire_timers(batch: Batch, store: PartitionStore, ledger: StoreLedger) -> None:
    # '0' sorts after '/': timers due exactly now are included.
    for key in list(store.keys_before(f"{TIMER}{_instant_key(batch.now)}0", start=TIMER)):
        store.delete(key)
        event_id, status = key.removeprefix(TIMER).split("/", 1)[1].rsplit("/", 1)
        event = Event.from_state(store.get(f"event/{event_id}"))
        if status == STARTED:
            event.started = True
        else:
            event.started = event.ended = True
        store.put(f"event/{event_id}", event.to_state())
        _emit_step(batch, ledger, status, event, None)
        log.info("event " + status.lower(), event_id=event_id, program=event.program_id)


def _emit_step(batch: Batch, ledger: StoreLedger, status: str, event: Event | None, request: dict | None, *,
               failures=(), source_offset: int | None = None) -> None:
    program_id = event.program_id if event is not None and status != REJECTED else request["program_id"]
    start = event.start if event is not None and status != REJECTED else request["start"]
    year = local_date(start).year
    record = events.lifecycle_record(
        status, event, request, batch.now, failures=list(failures), source_offset=source_offset,
        year_used_ms=ledger.year_ms(program_id, year), year_limit_ms=ledger.year_limit_ms(program_id),
    )
    batch.emit(EVENT_LIFECYCLE, record["event_id"], record)
    LIFECYCLE.labels(program_id, status).inc()


def _report_hours(store: PartitionStore) -> None:
    for key in store.keys_with_prefix("year-ms/"):
        program_id, year = key.removeprefix("year-ms/").rsplit("/", 1)
        used = store.get(key) or 0
        HOURS_USED.labels(program_id, year).set(used / MS_PER_HOUR)
        program = programs.programs.get(program_id)
        if program is not None and program.events.max_hours_per_year is not None:
            HOURS_REMAINING.labels(program_id, year).set(program.events.max_hours_per_year - used / MS_PER_HOUR)


events_pipeline = runtime.batch_pipeline(ENERGY_EVENTS, decide_events, state_name="events",
                                         idle_every_s=TIMER_CHECK_S)


# -- fan-out: each lifecycle step → one instruction per thermostat reached --------------------------

class Steps:
    """Every event's lifecycle as far as the fan-out needs it (kept current by a mirror)."""

    def __init__(self):
        self.steps: dict[str, dict[int, dict]] = {}  # event_id → revision → SCHEDULED/UPDATED/CANCELLED record
        self.latest: dict[str, dict] = {}  # event_id → its latest record of any status

    def apply(self, event_id: str, record: dict) -> None:
        if record["status"] == REJECTED:
            return
        if record["status"] in (events.SCHEDULED, events.UPDATED, CANCELLED):
            self.steps.setdefault(event_id, {})[record["revision"]] = record
        if event_id in self.steps:
            self.latest[event_id] = record

    def open_events(self):
        """Events not ended yet and not cancelled, with their latest record."""
        return [(event_id, record) for event_id, record in self.latest.items()
                if record["status"] not in (CANCELLED, ENDED)]

    def count_open(self, program_id: str, state: str) -> int:
        """``program_id``'s open events that are under way (active) or not yet (scheduled)."""
        try:
            now = runtime.now()
        except ClockNotStarted:
            now = None
        return sum(1 for _, record in self.open_events() if record["program_id"] == program_id
                   and state == ("active" if record["status"] == STARTED or (now and record["start"] <= now)
                                 else "scheduled"))


steps = Steps()
lifecycle_mirror = runtime.mirror(EVENT_LIFECYCLE, steps.apply)
for program_id, state in [(program.id, state) for program in programs for state in ("scheduled", "active")]:
    EVENTS.labels(program_id, state).set_function(functools.partial(steps.count_open, program_id, state))


async def fan_out(batch: Batch) -> None:
    """Account facts first (who is enrolled, on which rate), then a slice of each pending step."""
    await lifecycle_mirror.ready.wait()
    for partition, records in batch.owned_partitions().items():
        store = batch.store(partition)
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            if record.topic.removesuffix(settings.topic_suffix) == CUSTOMER_ACCOUNTS:
                _account_rate(store, record.value)
            else:
                _account_devices(batch, store, record.value)
        pending = _fan_out_slices(batch, store, settings.fanout_slice)
        FANOUT_PENDING.labels(str(partition)).set(pending)
        if pending:
            batch.again()


def _account_rate(store: PartitionStore, account: dict) -> None:
    account_id, rate = account["service_account_id"], account["rate_schedule"]
    known = store.get(f"account/{account_id}") or {"rate": None, "programs": []}
    if known["rate"] == rate:
        return
    known["rate"] = rate
    store.put(f"account/{account_id}", known)
    for program_id in known["programs"]:
        entry = store.get(f"devices/{program_id}/{account_id}")
        store.put(f"devices/{program_id}/{account_id}", {**entry, "rate": rate})


def _account_devices(batch: Batch, store: PartitionStore, state: dict) -> None:
    account_id = state["service_account_id"]
    known = store.get(f"account/{account_id}") or {"rate": None, "programs": []}
    grouped = enrollments.periods_by_program(state["enrollments"])
    before = {program_id: store.get(f"devices/{program_id}/{account_id}")["periods"]
              for program_id in known["programs"]}
    for program_id in set(known["programs"]) - set(grouped):
        store.delete(f"devices/{program_id}/{account_id}")
    for program_id, periods in grouped.items():
        store.put(f"devices/{program_id}/{account_id}", {"rate": known["rate"], "periods": periods})
    known["programs"] = sorted(grouped)
    store.put(f"account/{account_id}", known)
    _recheck_open_events(batch, store, account_id, before, grouped)


def _recheck_open_events(batch: Batch, store: PartitionStore, account_id: str, before: dict, after: dict) -> None:
    """An enrollment that changed after an event's SCHEDULE went out: a thermostat no longer in
    effect at the start is sent a CANCEL; one newly in effect is not added (counted and logged)."""
    for event_id, latest in steps.open_events():
        program_id = latest["program_id"]
        if (program_id not in before and program_id not in after) or latest["status"] == STARTED:
            continue
        progress = store.get(f"fanout/{event_id}")
        if progress is None or not _reached(progress, account_id):
            continue  # the SCHEDULE has not reached this account yet: it will see the new enrollment
        day, targets = enrollments.event_day(latest["start"]), frozenset(latest["targets"])
        was = dict((serial, provider) for provider, serial in enrollments.devices_in_effect(before.get(program_id, []), day, targets))
        now = dict((serial, provider) for provider, serial in enrollments.devices_in_effect(after.get(program_id, []), day, targets))
        sent = _sent_devices(store, event_id)
        for serial in sorted(set(was) - set(now)):
            if sent.get(serial, (None,))[0] == account_id and store.get(f"withdrawn/{event_id}/{serial}") is None:
                store.put(f"withdrawn/{event_id}/{serial}", {"account": account_id, "at": batch.now.isoformat()})
                batch.emit(DISPATCH.format(provider_id=was[serial]), serial,
                           fanout.instruction({**latest, "decided_at": batch.now}, "CANCEL", serial, account_id,
                                              fanout.NO_PRECOOL))
                INSTRUCTIONS.labels(program_id, was[serial], "CANCEL").inc()
                WITHDRAWN.labels(program_id).inc()
                log.info("thermostat withdrawn from an event: its enrollment ended before the start",
                         event_id=event_id, provider=was[serial])
        added = set(now) - set(was) - set(sent)
        if added:
            NOT_ADDED.labels(program_id).inc(len(added))
            log.info("thermostats enrolled after the event was dispatched are not added", event_id=event_id,
                     program=program_id, thermostats=len(added))


def _reached(progress: dict, account_id: str) -> bool:
    """Whether the SCHEDULE fan-out of this partition has passed the account."""
    if progress["revision"] >= 1:
        return True
    cursor = (progress.get("working") or {}).get("cursor")
    return cursor is not None and cursor.split("/", 2)[2] >= account_id  # devices/<program>/<account>


_sent_cache: dict[tuple[int, str], tuple[int, dict]] = {}  # (store id, event) → (chunks, serial → (account, provider))


def _sent_devices(store: PartitionStore, event_id: str) -> dict[str, tuple[str, str]]:
    progress = store.get(f"fanout/{event_id}")
    chunks = progress["chunks"] + (progress.get("working") or {}).get("chunks", 0)
    cached = _sent_cache.get((id(store), event_id))
    if cached is None or cached[0] != chunks:
        devices = {serial: (account, provider)
                   for _, chunk in store.items_with_prefix(f"sent/{event_id}/")
                   for serial, account, provider, _ in chunk}
        cached = _sent_cache[id(store), event_id] = (chunks, devices)
    return cached[1]


def _fan_out_slices(batch: Batch, store: PartitionStore, budget: int) -> int:
    """Send up to ``budget`` instructions for the steps this partition has not finished;
    returns how many steps are still unfinished."""
    unfinished = 0
    for event_id, revisions in list(steps.steps.items()):
        progress = store.get(f"fanout/{event_id}") or {"revision": 0, "chunks": 0, "sent": {}, "working": None}
        latest = max(revisions)
        if progress["revision"] >= latest:
            continue
        if budget <= 0:
            unfinished += 1
            continue
        if progress["revision"] == 0 and progress["working"] is None and (
                revisions[latest]["status"] == CANCELLED or steps.latest[event_id]["status"] == ENDED):
            progress["revision"] = latest  # cancelled or over before anything was sent: nothing to send
            store.put(f"fanout/{event_id}", progress)
            continue
        step = revisions.get(progress["revision"] + 1)
        if step is None:
            continue  # the mirror has not seen this revision yet
        budget -= _fan_out_step(batch, store, event_id, step, progress, budget)
        store.put(f"fanout/{event_id}", progress)
        if progress["revision"] < latest:
            unfinished += 1
    return unfinished


def _fan_out_step(batch: Batch, store: PartitionStore, event_id: str, step: dict, progress: dict, budget: int) -> int:
    """Continue one step's fan-out for up to ``budget`` thermostats; returns how many were sent."""
    working = progress["working"] or {"revision": step["revision"], "cursor": None, "chunks": 0, "started": time.time()}
    program = programs[step["program_id"]]
    plans = fanout.precool_plans(program, step["start"], step["precool"])
    if step["status"] == events.SCHEDULED:
        sent, done = _send_schedule(batch, store, step, program, plans, working, budget)
    else:
        sent, done = _send_change(batch, store, step, progress, plans, working, budget)
    for provider, devices in sent.items():
        INSTRUCTIONS.labels(step["program_id"], provider, _ACTIONS[step["status"]]).inc(devices)
    if step["status"] == events.SCHEDULED:
        for provider, devices in sent.items():
            progress["sent"][provider] = progress["sent"].get(provider, 0) + devices
    if done:
        progress["revision"], progress["working"] = step["revision"], None
        if step["status"] == events.SCHEDULED:
            progress["chunks"] = working["chunks"]
        log.info("event fanned out", event_id=event_id, status=step["status"], revision=step["revision"],
                 partition=store.changelog.partition, thermostats=progress["sent"],
                 seconds=round(time.time() - working["started"], 3))
    else:
        progress["working"] = working
    return sum(sent.values())


_ACTIONS = {events.SCHEDULED: "SCHEDULE", events.UPDATED: "UPDATE", CANCELLED: "CANCEL"}


def _send_schedule(batch, store, step, program, plans, working, budget) -> tuple[dict[str, int], bool]:
    day, targets = enrollments.event_day(step["start"]), frozenset(step["targets"])
    prefix = f"devices/{program.id}/"
    sent: dict[str, int] = defaultdict(int)
    chunk: list[list] = []
    emit, instruction, total, done = batch.emit, fanout.instruction, 0, True
    for key, entry in store.items_with_prefix(prefix, after=working["cursor"]):
        account_id = key[len(prefix):]
        tou = fanout.is_tou_rate(entry["rate"], program)
        plan = plans[1] if tou else plans[0]
        for provider, serial in enrollments.devices_in_effect(entry["periods"], day, targets):
            emit(DISPATCH.format(provider_id=provider), serial, instruction(step, "SCHEDULE", serial, account_id, plan))
            chunk.append([serial, account_id, provider, tou])
            sent[provider] += 1
        working["cursor"] = key
        if len(chunk) >= settings.sent_chunk:
            total += len(chunk)
            _store_chunk(store, step["event_id"], working, chunk)
            chunk = []
            if total >= budget:
                done = False
                break
    if chunk:
        _store_chunk(store, step["event_id"], working, chunk)
    return sent, done


def _store_chunk(store: PartitionStore, event_id: str, working: dict, chunk: list) -> None:
    store.put(f"sent/{event_id}/{working['chunks']:06d}", chunk)
    working["chunks"] += 1


def _send_change(batch, store, step, progress, plans, working, budget) -> tuple[dict[str, int], bool]:
    """UPDATE or CANCEL: the thermostats the SCHEDULE reached, chunk by chunk, less the withdrawn."""
    event_id, action = step["event_id"], _ACTIONS[step["status"]]
    withdrawn = {key.rsplit("/", 1)[1] for key in store.keys_with_prefix(f"withdrawn/{event_id}/")}
    sent: dict[str, int] = defaultdict(int)
    index = working["cursor"] or 0
    total = 0
    while index < progress["chunks"] and total < budget:
        for serial, account_id, provider, tou in store.get(f"sent/{event_id}/{index:06d}"):
            if serial in withdrawn:
                continue
            batch.emit(DISPATCH.format(provider_id=provider), serial,
                       fanout.instruction(step, action, serial, account_id, plans[1] if tou else plans[0]))
            sent[provider] += 1
            total += 1
        index += 1
    working["cursor"] = index
    return sent, index >= progress["chunks"]


fanout_pipeline = runtime.batch_pipeline([ENROLLMENT_STATE, CUSTOMER_ACCOUNTS], fan_out, state_name="fanout",
                                         idle_every_s=TIMER_CHECK_S)


# -- the projection: events, instructions and acknowledgments in Postgres ------------------------------

database = projection.Database(settings.database_url, settings.coverage_every_s)
lifecycle_projection = runtime.batch_pipeline(EVENT_LIFECYCLE, database.project_lifecycle, state_name="lifecycle")
deliveries_projection = runtime.batch_pipeline([DISPATCH, DISPATCH_ACKS], database.project_deliveries,
                                               state_name="deliveries", idle_every_s=settings.coverage_every_s)
