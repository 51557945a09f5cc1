"""Enrollment service: its wiring.

- ``utility.customer-accounts.v1`` + every ``partner.<provider>.enrollment-requests.v1`` and
  ``partner.<provider>.data-sharing-authorizations.v1`` + ``gridflex.enrollment.removal-findings.v1``
  (co-partitioned by service account) → one decision per request on
  ``partner.<provider>.enrollment-decisions.v1``, the account's enrollments on
  ``gridflex.enrollment.state.v1``, and bonus/rebate claims on
  ``gridflex.enrollment.incentive-claims.v1``
- the claims (one partition: each fund decided in log order) → granted, denied, cancelled and
  reversed bonuses and rebates on ``gridflex.enrollment.incentives.v1``
- enrollment state, device status and ``gridflex.baseline.event-usage.v1`` (the usage around
  each event) + the dispatch lifecycle → removal findings (offline, overrides, minimum usage)
- decisions and account states → the Postgres projection the HTTP API reads
- anything refused → ``gridflex.dead-letters.v1`` with its reason
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from prometheus_client import Counter, Gauge

from gridflex.batch import Batch, InputRecord
from gridflex.calendar import local_date
from gridflex.codec import Undecodable
from gridflex.metrics import count
from gridflex.programs import ProgramCatalogue
from gridflex.state import PartitionStore
from gridflex.streaming import ServiceRuntime
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DATA_SHARING_AUTHORIZATIONS,
    DEVICE_STATUS,
    ENROLLMENT_DECISIONS,
    ENROLLMENT_REQUESTS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_USAGE,
    INCENTIVE_CLAIMS,
    INCENTIVES,
    REMOVAL_FINDINGS,
    provider_of,
)
from services.enrollment import api, projection
from services.enrollment.domain import accounts, authorizations, removal
from services.enrollment.domain.accounts import AccountBook, Outcome
from services.enrollment.domain.incentives import ClaimRefused, IncentiveLedger
from services.enrollment.domain.validation import Refusal, validate_account, validate_request
from services.enrollment.settings import EnrollmentSettings

log = structlog.get_logger(__name__)

SERVICE = "enrollment"
DECISIONS = Counter("gridflex_enrollment_decisions", "Enrollment decisions", ["program", "provider", "action", "outcome"])
RULE_FAILURES = Counter("gridflex_enrollment_rule_failures", "Failed rules in rejected requests", ["code"])
DUPLICATE_REQUESTS = Counter("gridflex_enrollment_duplicate_requests", "Re-delivered requests already decided")
WAITING_REQUESTS = Counter(
    "gridflex_enrollment_requests_waited", "Requests that waited for their account", ["result"]
)
INCENTIVE_DECISIONS = Counter(
    "gridflex_enrollment_incentive_decisions", "Bonus and rebate decisions", ["program", "kind", "outcome"]
)
REMOVALS = Counter("gridflex_enrollment_removal_findings", "Removal rules broken", ["program", "rule"])
FUND_REMAINING = Gauge("gridflex_enrollment_bonus_fund_remaining_dollars", "Sign-up bonus fund left", ["program"])

settings = EnrollmentSettings()
programs = ProgramCatalogue.load(settings.programs_dir)
runtime = ServiceRuntime(SERVICE, settings, web_port=settings.web_port)
app = runtime.app
unknown_account_wait = timedelta(seconds=settings.unknown_account_wait_s)
pending_limit = timedelta(days=settings.authorization_pending_days)
clock_skew = timedelta(seconds=settings.clock_skew_s)

DEADLINE_CHECK_S = 1.0  # how often waiting requests and pending authorizations are checked without input
WAITING = "!waiting/"  # "!waiting/<wait_until>/<service_account_id>": sorts before account keys
OVERDUE = "!pending-authorization/"  # "!pending-authorization/<due>/<service_account_id>"
OFFLINE = "!offline/"  # "!offline/<service_account_id>" while a thermostat of the account is offline


class AccountBooks:
    """The account books of one partition touched by a batch, loaded once and saved once."""

    def __init__(self, store: PartitionStore):
        self.store = store
        self.books: dict[str, AccountBook] = {}
        self.outcome = Outcome()
        self.changed: set[str] = set()
        self.published: dict[str, tuple] = {}  # each book's published view as loaded

    def __getitem__(self, account_id: str) -> AccountBook:
        if account_id not in self.books:
            self.books[account_id] = AccountBook.from_state(account_id, self.store.get(f"account/{account_id}"))
            self.published[account_id] = self.books[account_id].published_view()
        return self.books[account_id]

    def mark(self, account_id: str) -> None:
        self.changed.add(account_id)


async def decide_requests(batch: Batch) -> None:
    """Account facts, requests, authorizations and removal findings → decisions, state, claims."""
    now = batch.now
    for partition, records in batch.owned_partitions().items():
        books = AccountBooks(batch.store(partition))
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            source = record.topic.removesuffix(settings.topic_suffix)
            refusal = _route(books, source, record, now)
            if refusal is not None:
                batch.dead_letter(record, refusal.reason_code, refusal.reason, refusal.redacted)
        _expire_waiting(books, now)
        _flag_overdue_authorizations(books, now)
        _publish(batch, books, now)


def _route(books: AccountBooks, source: str, record: InputRecord, now) -> Refusal | None:
    """Apply one record to its account's book; a refusal goes to the dead-letter topic."""
    account_id = record.value["service_account_id"]
    books.outcome.changed = False
    refusal = _apply(books, books[account_id], source, record.value, now)
    if books.outcome.changed:
        books.mark(account_id)
    return refusal


def _apply(books: AccountBooks, book: AccountBook, source: str, value: dict, now) -> Refusal | None:
    outcome = books.outcome
    if source == CUSTOMER_ACCOUNTS:
        refusal = validate_account(value)
        if refusal is None and (book.account is None or value["updated_at"] >= book.account["updated_at"]):
            book.account = value  # an older fact than the one known (a replay) changes nothing
            outcome.changed = True
            accounts.close_account(book, now, outcome)
            _release_waiting(books, book, now)
        return refusal
    if source == REMOVAL_FINDINGS:
        program = programs.programs.get(value["program_id"])
        if program is None or program.removal is None:
            return Refusal("PROGRAM_UNKNOWN", f"program {value['program_id']!r} has no removal rules")
        accounts.remove(book, program, value["rule"], value["thermostat_serial"], value["found_on"],
                        value["evidence"], now, outcome)
        return None
    provider_id = provider_of(source)
    if source.endswith(".enrollment-requests.v1"):
        refusal = validate_request(value, now, clock_skew)
        if refusal is None:
            _request(books, book, provider_id, value, now)
        return refusal
    refusal = authorizations.screen(value)
    if refusal is not None:
        return Refusal(*refusal, redacted=authorizations.redacted(value))
    applied = authorizations.apply(book, provider_id, value, pending_limit, now)
    if isinstance(applied, authorizations.AuthorizationRefused):
        return Refusal(*applied)
    if applied:
        outcome.changed = True
        if value["status"] == authorizations.PENDING:
            due = value["requested_at"] + pending_limit
            books.store.put(f"{OVERDUE}{due.isoformat()}/{book.service_account_id}", True)
        authorizations.end_unauthorized(book, programs, provider_id, local_date(value["updated_at"]), outcome)
    return None


def _request(books: AccountBooks, book: AccountBook, provider_id: str, request: dict, now) -> None:
    key = accounts.request_key(provider_id, request["request_id"])
    if key in book.decided or any(accounts.request_key(w["provider_id"], w["request"]["request_id"]) == key
                                  for w in book.waiting):
        DUPLICATE_REQUESTS.inc()
        return
    if book.account is None:
        wait_until = now + unknown_account_wait
        book.waiting.append({"provider_id": provider_id, "request": request, "wait_until": wait_until})
        books.store.put(f"{WAITING}{wait_until.isoformat()}/{book.service_account_id}", True)
        books.outcome.changed = True
        return
    accounts.forget_posted_claims(book, local_date(now))
    accounts.decide(book, provider_id, request, programs, now, books.outcome)


def _release_waiting(books: AccountBooks, book: AccountBook, now) -> None:
    """The account is published: decide what waited for it."""
    for waiting in book.waiting:
        accounts.decide(book, waiting["provider_id"], waiting["request"], programs, now, books.outcome)
        WAITING_REQUESTS.labels("decided").inc()
    book.waiting = []


def _expire_waiting(books: AccountBooks, now) -> None:
    """Requests whose account did not appear in time are rejected with UNKNOWN_ACCOUNT."""
    store = books.store
    for key in list(store.keys_before(f"{WAITING}{now.isoformat()}", start=WAITING)):
        store.delete(key)
        book = books[key.rsplit("/", 1)[1]]
        for waiting in [w for w in book.waiting if w["wait_until"] <= now]:
            book.waiting.remove(waiting)
            book.decided.add(accounts.request_key(waiting["provider_id"], waiting["request"]["request_id"]))
            books.outcome.decisions.append(
                accounts.reject_unknown_account(waiting["provider_id"], waiting["request"], unknown_account_wait, now)
            )
            books.mark(book.service_account_id)
            WAITING_REQUESTS.labels("unknown_account").inc()


def _flag_overdue_authorizations(books: AccountBooks, now) -> None:
    store = books.store
    for key in list(store.keys_before(f"{OVERDUE}{now.isoformat()}", start=OVERDUE)):
        store.delete(key)
        book = books[key.rsplit("/", 1)[1]]
        if authorizations.flag_overdue(book, pending_limit, now):
            books.mark(book.service_account_id)


def _publish(batch: Batch, books: AccountBooks, now) -> None:
    decisions = books.outcome.decisions
    for decision in decisions:
        batch.emit(ENROLLMENT_DECISIONS.format(provider_id=decision["provider_id"]),
                   decision["service_account_id"], decision)
    count(DECISIONS, ((d["program_id"], d["provider_id"], d["action"], d["outcome"]) for d in decisions))
    count(RULE_FAILURES, ((failure["code"],) for d in decisions for failure in d["failures"]))
    for claim in books.outcome.claims:
        batch.emit(INCENTIVE_CLAIMS, claim["program_id"], claim)
    for account_id in sorted(books.changed):
        book = books.books[account_id]
        books.store.put(f"account/{account_id}", book.to_state())
        if book.published_view() != books.published[account_id]:  # account facts alone publish nothing
            batch.emit(ENROLLMENT_STATE, account_id, book.to_record(now))


decision_pipeline = runtime.batch_pipeline(
    [CUSTOMER_ACCOUNTS, ENROLLMENT_REQUESTS, DATA_SHARING_AUTHORIZATIONS, REMOVAL_FINDINGS],
    decide_requests, state_name="accounts", idle_every_s=DEADLINE_CHECK_S,
)


async def decide_incentives(batch: Batch) -> None:
    """Bonus and rebate claims, one after another in log order (the funds are on one partition)."""
    decided = []
    for partition, records in batch.by_partition().items():
        ledger = IncentiveLedger(batch.store(partition), programs)
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            decision = ledger.decide(record.value, batch.now)
            if isinstance(decision, ClaimRefused):
                batch.dead_letter(record, decision.reason_code, decision.reason)
            elif decision is not None:
                batch.emit(INCENTIVES, decision["service_account_id"], decision)
                decided.append(decision)
    count(INCENTIVE_DECISIONS, ((d["program_id"], d["kind"], d["outcome"]) for d in decided))
    for program_id, remaining in {d["program_id"]: d["fund_remaining"] for d in decided
                                  if d["fund_remaining"] is not None}.items():
        FUND_REMAINING.labels(program_id).set(float(remaining))


incentive_pipeline = runtime.batch_pipeline(INCENTIVE_CLAIMS, decide_incentives, state_name="incentives")


# -- removal: what enrolled accounts did, judged against each program's removal rules ------------

events: dict[str, removal.Event] = {}  # every dispatched energy event, by id (the mirror keeps it current)


def _dispatched(event_id: str, step: dict) -> None:
    """The dispatch service's lifecycle: an accepted event as it stands; one cancelled before its
    start is gone, one cancelled while in progress ran until it was cancelled (its ``end``)."""
    status = step["status"]
    if status in ("SCHEDULED", "UPDATED") or (status == "CANCELLED" and step["counted_ms"] > 0):
        events[event_id] = removal.Event(event_id, step["program_id"], step["start"], step["end"],
                                         tuple(step["targets"]))
    elif status == "CANCELLED":
        events.pop(event_id, None)


event_calendar = runtime.mirror(EVENT_LIFECYCLE, _dispatched)
REMOVAL_PROGRAMS = [p for p in programs if p.removal is not None]
_judged_on: dict = {}  # partition → the local day its offline streaks were last judged


async def track_participation(batch: Batch) -> None:
    """Device status, usage around events (from the baseline service) and enrollments → removal findings."""
    await event_calendar.ready.wait()
    today = local_date(batch.now)
    for partition, records in batch.owned_partitions().items():
        store = batch.store(partition)
        touched: dict[str, removal.Participation] = {}
        for record in records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
                continue
            value = record.value
            account_id = value["service_account_id"]
            participation = touched.get(account_id) or removal.Participation.from_state(
                store.get(f"participation/{account_id}"))
            if _observe(participation, record.topic.removesuffix(settings.topic_suffix), value):
                touched[account_id] = participation
        for account_id, participation in touched.items():
            _save_participation(store, account_id, participation)
        _judge(batch, store, today)


def _observe(participation: removal.Participation, source: str, value: dict) -> bool:
    if source == ENROLLMENT_STATE:
        participation.enrollments = value["enrollments"]
        return True
    if not participation.enrollments:
        return False  # only enrolled accounts are judged
    if source == DEVICE_STATUS:
        return removal.record_device_status(participation, value)
    return removal.record_window_usage(participation, value)


def _save_participation(store: PartitionStore, account_id: str, participation: removal.Participation) -> None:
    store.put(f"participation/{account_id}", participation.to_state())
    if participation.offline_since:
        store.put(f"{OFFLINE}{account_id}", True)
    else:
        store.delete(f"{OFFLINE}{account_id}")


def _judge(batch: Batch, store: PartitionStore, today) -> None:
    """Once a local day: offline streaks; once a year, on the review day: overrides and usage."""
    if _judged_on.get(store.changelog.partition) == today:
        return
    _judged_on[store.changelog.partition] = today
    for key in list(store.keys_with_prefix(OFFLINE)):
        account_id = key.removeprefix(OFFLINE)
        participation = removal.Participation.from_state(store.get(f"participation/{account_id}"))
        for program in REMOVAL_PROGRAMS:
            _publish_findings(batch, store, account_id, participation,
                              removal.offline_findings(participation, program, today))
    for program in REMOVAL_PROGRAMS:
        year = today.year - 1
        review = removal.review_day(program, year)
        if review is None or today < review or store.get(f"!reviewed/{program.id}/{year}"):
            continue
        for key in list(store.keys_with_prefix("participation/")):
            account_id = key.removeprefix("participation/")
            participation = removal.Participation.from_state(store.get(key))
            _publish_findings(batch, store, account_id, participation,
                              removal.annual_findings(participation, program, year, list(events.values()), review))
        store.put(f"!reviewed/{program.id}/{year}", True)
        log.info("annual removal review done", program=program.id, year=year, partition=store.changelog.partition)


def _publish_findings(batch, store, account_id, participation, findings) -> None:
    if not findings:
        return
    for key, finding in findings:
        batch.emit(REMOVAL_FINDINGS, account_id, finding.to_record(account_id))
        participation.found.append(key)
        REMOVALS.labels(finding.program_id, finding.rule).inc()
    store.put(f"participation/{account_id}", participation.to_state())


participation_pipeline = runtime.batch_pipeline(
    [ENROLLMENT_STATE, DEVICE_STATUS, EVENT_USAGE], track_participation, state_name="participation",
    idle_every_s=DEADLINE_CHECK_S,
)

database = projection.Database(settings.database_url)
projection_pipeline = runtime.batch_pipeline(
    [ENROLLMENT_DECISIONS, ENROLLMENT_STATE], database.project, state_name="projection"
)
api.add_routes(runtime, database)
