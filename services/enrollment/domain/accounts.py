"""One service account's enrollments and the decisions that change them.

An :class:`AccountBook` holds what the enrollment service knows of an account: the utility's
facts, every thermostat's enrollment periods per program, re-enrollment lock-outs, data-sharing
authorizations, the requests already decided (a re-delivered request is never decided twice)
and the requests waiting for the account to be published. The functions here decide; they
return records to publish and never touch Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

from gridflex.calendar import add_business_days, add_months, bill_period, local_date
from gridflex.programs import Program, ProgramCatalogue
from services.enrollment.domain.eligibility import (
    RuleFailure,
    account_failures,
    program_failures,
    thermostat_failures,
)

ACTIVE = "ACTIVE"
INCENTIVE_KINDS = ("SIGNUP_BONUS", "REBATE")


@dataclass
class Period:
    """A thermostat enrolled in a program: in effect from ``effective_from`` up to, not including, ``effective_to``."""

    program_id: str
    provider_id: str
    thermostat_serial: str
    request_id: str
    effective_from: date
    effective_to: date | None = None
    end_reason: str | None = None

    def open_after(self, day: date) -> bool:
        """Still in effect, or yet to start, after ``day``."""
        return self.effective_to is None or self.effective_to > day

    def end(self, day: date, reason: str) -> None:
        """End the period on ``day`` (a period that had not started yet ends where it would start)."""
        self.effective_to = max(day, self.effective_from)
        self.end_reason = reason

    def to_record(self) -> dict:
        return {
            "program_id": self.program_id, "provider_id": self.provider_id,
            "thermostat_serial": self.thermostat_serial, "request_id": self.request_id,
            "effective_from": self.effective_from, "effective_to": self.effective_to, "end_reason": self.end_reason,
        }


@dataclass
class Lockout:
    program_id: str
    until: date  # the last locked-out day
    reason: str


@dataclass
class Authorization:
    authorization_id: str
    provider_id: str
    status: str
    requested_at: datetime
    updated_at: datetime
    reauthorization_required: bool = False


@dataclass
class PendingClaim:
    """A bonus or rebate claimed for an enrollment and not yet posted: cancelled if the account
    disenrolls or closes before ``post_on``."""

    claim_id: str
    kind: str
    program_id: str
    provider_id: str
    thermostat_serial: str
    post_on: date


@dataclass
class AccountBook:
    service_account_id: str
    account: dict | None = None  # the utility's latest CustomerAccount
    periods: list[Period] = field(default_factory=list)
    lockouts: list[Lockout] = field(default_factory=list)
    authorizations: dict[str, Authorization] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)  # "<provider_id>/<request_id>"
    waiting: list[dict] = field(default_factory=list)  # requests for an unpublished account
    claims: list[PendingClaim] = field(default_factory=list)

    def open_periods(self, program_id: str, after: date) -> list[Period]:
        return [p for p in self.periods if p.program_id == program_id and p.open_after(after)]

    def lockout(self, program_id: str, day: date) -> Lockout | None:
        return next((lock for lock in self.lockouts if lock.program_id == program_id and day <= lock.until), None)

    def active_authorization(self, provider_id: str) -> Authorization | None:
        return next(
            (a for a in self.authorizations.values() if a.provider_id == provider_id and a.status == ACTIVE), None
        )

    def published_view(self) -> tuple:
        """What the state topic shows of the book (periods, lock-outs, authorizations), to tell
        whether a change needs publishing: periods are only added or ended, lock-outs only added."""
        return (
            tuple((p.effective_to, p.end_reason) for p in self.periods), len(self.lockouts),
            tuple((a.status, a.reauthorization_required) for a in self.authorizations.values()),
        )

    def to_record(self, updated_at: datetime) -> dict:
        """The AccountEnrollments record that dispatch, baseline and settlement read."""
        return {
            "service_account_id": self.service_account_id,
            "enrollments": [period.to_record() for period in self.periods],
            "lockouts": [{"program_id": lock.program_id, "until": lock.until, "reason": lock.reason}
                         for lock in self.lockouts],
            "authorizations": [
                {"authorization_id": a.authorization_id, "provider_id": a.provider_id, "status": a.status,
                 "requested_at": a.requested_at, "reauthorization_required": a.reauthorization_required}
                for a in self.authorizations.values()
            ],
            "updated_at": updated_at,
        }

    # -- storage (JSON) -----------------------------------------------------------------------

    def to_state(self) -> dict:
        """The book for the state store (its JSON encoder writes dataclasses, dates and sets)."""
        return {
            "account": self.account, "periods": self.periods, "lockouts": self.lockouts,
            "authorizations": list(self.authorizations.values()), "decided": self.decided,
            "waiting": self.waiting, "claims": self.claims,
        }

    @classmethod
    def from_state(cls, service_account_id: str, state: dict | None) -> "AccountBook":
        if state is None:
            return cls(service_account_id)
        return cls(
            service_account_id,
            account=_account_from_json(state["account"]) if state["account"] else None,
            periods=[Period(p["program_id"], p["provider_id"], p["thermostat_serial"], p["request_id"],
                            date.fromisoformat(p["effective_from"]), _date_or_none(p["effective_to"]),
                            p["end_reason"]) for p in state["periods"]],
            lockouts=[Lockout(lock["program_id"], date.fromisoformat(lock["until"]), lock["reason"])
                      for lock in state["lockouts"]],
            authorizations={
                a["authorization_id"]: Authorization(
                    a["authorization_id"], a["provider_id"], a["status"], datetime.fromisoformat(a["requested_at"]),
                    datetime.fromisoformat(a["updated_at"]), a["reauthorization_required"])
                for a in state["authorizations"]
            },
            decided=set(state["decided"]),
            waiting=[_request_from_json(w) for w in state["waiting"]],
            claims=[PendingClaim(c["claim_id"], c["kind"], c["program_id"], c["provider_id"], c["thermostat_serial"],
                                 date.fromisoformat(c["post_on"])) for c in state["claims"]],
        )


@dataclass
class Outcome:
    """What deciding produced: decisions for providers, incentive claims, and whether the book changed."""

    decisions: list[dict] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    changed: bool = False


def request_key(provider_id: str, request_id: str) -> str:
    return f"{provider_id}/{request_id}"


def decide(
    book: AccountBook, provider_id: str, request: dict, programs: ProgramCatalogue, now: datetime,
    outcome: Outcome,
) -> None:
    """Decide one request for an account the utility has published (exactly once per request id)."""
    key = request_key(provider_id, request["request_id"])
    if key in book.decided:
        return
    book.decided.add(key)
    outcome.changed = True
    day = local_date(request["requested_at"])
    program = programs.programs.get(request["program_id"])
    failures = program_failures(program, request["program_id"], provider_id, day)
    if program is None:
        outcome.decisions.append(_decision(provider_id, request, failures, None, None, now))
        return
    if request["action"] == "ENROLL":
        _enroll(book, program, provider_id, request, day, failures, now, outcome)
    else:
        _disenroll(book, program, provider_id, request, day, failures, now, outcome)


def reject_unknown_account(provider_id: str, request: dict, waited: timedelta, now: datetime) -> dict:
    failure = RuleFailure(
        "UNKNOWN_ACCOUNT",
        f"the utility has not published service account {request['service_account_id']} "
        f"within {_duration(waited)} of the request",
    )
    return _decision(provider_id, request, [failure], None, None, now)


def _enroll(book, program, provider_id, request, day, failures, now, outcome) -> None:
    serial = request["thermostat_serial"]
    failures = failures + account_failures(program, book.account, day) + thermostat_failures(program, request)
    if program.eligibility.requires_data_sharing_authorization and book.active_authorization(provider_id) is None:
        failures.append(RuleFailure(
            "DATA_SHARING_NOT_AUTHORIZED",
            f"no active data-sharing authorization links service account {book.service_account_id} to {provider_id}",
        ))
    open_periods = book.open_periods(program.id, day)
    if any(p.thermostat_serial == serial for p in open_periods):
        failures.append(RuleFailure(
            "ALREADY_ENROLLED", f"thermostat {serial} is already enrolled in {program.id} on this account"
        ))
    lockout = book.lockout(program.id, day)
    if lockout is not None:
        failures.append(RuleFailure(
            "REENROLLMENT_LOCKED_OUT",
            f"the account was removed from {program.id} ({lockout.reason}); it may re-enroll from "
            f"{lockout.until + timedelta(days=1)}",
        ))
    if failures:
        outcome.decisions.append(_decision(
            provider_id, request, failures, None, lockout.until if lockout else None, now
        ))
        return
    effective = add_business_days(day, program.enrollment_effective_business_days)
    enrolled_before = any(p.program_id == program.id and p.thermostat_serial == serial for p in book.periods)
    book.periods.append(Period(program.id, provider_id, serial, request["request_id"], effective))
    outcome.decisions.append(_decision(provider_id, request, [], effective, None, now))
    post_on = bill_period(effective, book.account["bill_cycle_day"])[1]
    if program.signup_bonus is not None:
        bonus_failures = []
        if enrolled_before:
            bonus_failures.append(RuleFailure(
                "BONUS_PREVIOUSLY_ENROLLED",
                f"thermostat {serial} was enrolled in {program.id} on this account before",
            ))
        if open_periods:
            bonus_failures.append(RuleFailure(
                "BONUS_NOT_NEW_ENROLLMENT",
                f"the account is already enrolled in {program.id} with thermostat {open_periods[0].thermostat_serial}",
            ))
        if request["thermostat_source"] in program.signup_bonus.excluded_thermostat_sources:
            bonus_failures.append(RuleFailure(
                "BONUS_UTILITY_PROGRAM_THERMOSTAT", f"thermostat {serial} came from a utility program",
            ))
        _claim(book, outcome, "SIGNUP_BONUS", program, provider_id, request, effective, post_on, bonus_failures, now)
    if program.rebate is not None:
        rebate_failures = []
        if program.rebate.requires_joint_gas_customer and not book.account["joint_gas_customer"]:
            rebate_failures.append(RuleFailure(
                "REBATE_NOT_JOINT_GAS_CUSTOMER", "the account is not a joint electric and gas customer"
            ))
        if request["thermostat_source"] in program.rebate.excluded_thermostat_sources:
            rebate_failures.append(RuleFailure(
                "REBATE_THERMOSTAT_SOURCE", f"thermostats from {request['thermostat_source']} earn no rebate"
            ))
        _claim(book, outcome, "REBATE", program, provider_id, request, effective, post_on, rebate_failures, now)


def _disenroll(book, program, provider_id, request, day, failures, now, outcome) -> None:
    serial = request["thermostat_serial"]
    periods = [p for p in book.open_periods(program.id, day)
               if p.thermostat_serial == serial and p.provider_id == provider_id]
    if not periods:
        failures = failures + [RuleFailure(
            "NOT_ENROLLED", f"thermostat {serial} has no enrollment in {program.id} by {provider_id} on this account"
        )]
    if failures:
        outcome.decisions.append(_decision(provider_id, request, failures, None, None, now))
        return
    effective = add_business_days(day, program.enrollment_effective_business_days)
    for period in periods:
        period.end(effective, "DISENROLLED")
    outcome.decisions.append(_decision(provider_id, request, [], effective, None, now))
    if not book.open_periods(program.id, effective):
        cancel_claims(book, program.id, day, "the account disenrolled before the bonus was posted", now, outcome)


def cancel_claims(book: AccountBook, program_id: str | None, day: date, reason: str, now: datetime,
                  outcome: Outcome) -> None:
    """Cancel the account's claims (of one program, or all) not yet posted on ``day``."""
    for claim in [c for c in book.claims if program_id in (None, c.program_id) and day <= c.post_on]:
        book.claims.remove(claim)
        outcome.claims.append(_claim_record(
            claim.claim_id, claim.kind, "CANCEL", claim.program_id, claim.provider_id, book.service_account_id,
            claim.thermostat_serial, day, claim.post_on, [], reason, now,
        ))
        outcome.changed = True


def forget_posted_claims(book: AccountBook, today: date) -> bool:
    """Claims past their posting day can no longer be cancelled."""
    kept = [c for c in book.claims if c.post_on >= today]
    changed = len(kept) != len(book.claims)
    book.claims = kept
    return changed


def close_account(book: AccountBook, now: datetime, outcome: Outcome) -> None:
    """Service ended: every enrollment ends the day after the last day of service."""
    service_end = book.account["service_end"]
    if service_end is None:
        return
    ended = service_end + timedelta(days=1)
    for period in book.periods:
        if period.open_after(ended):
            period.end(ended, "ACCOUNT_CLOSED")
            outcome.changed = True
    cancel_claims(book, None, service_end, "the account closed before the bonus was posted", now, outcome)


def remove(book: AccountBook, program: Program, rule: str, serial: str | None, found_on: date,
           evidence: str, now: datetime, outcome: Outcome) -> None:
    """Apply a removal finding: the account's (or one thermostat's) enrollment ends on ``found_on``;
    rules with a lock-out block re-enrollment for their months."""
    periods = [p for p in book.open_periods(program.id, found_on) if serial in (None, p.thermostat_serial)]
    if not periods:
        return
    for period in periods:
        period.end(found_on, f"REMOVED_{rule}")
    rules = program.removal
    months = {"OFFLINE": rules.offline, "OVERRIDES": rules.overrides, "MINIMUM_USAGE": rules.minimum_usage}[rule]
    if months is not None and months.lockout_months:
        until = add_months(found_on, months.lockout_months) - timedelta(days=1)
        book.lockouts.append(Lockout(program.id, until, f"removed on {found_on}: {evidence}"))
    outcome.changed = True
    if not book.open_periods(program.id, found_on):
        cancel_claims(book, program.id, found_on, f"the account was removed ({rule}) before the bonus was posted",
                      now, outcome)


# -- records --------------------------------------------------------------------------------


class ClaimId(NamedTuple):
    """Which enrollment claimed a bonus or rebate; ``str()`` is the claim_id on the claim topics."""

    kind: str
    program_id: str
    service_account_id: str
    provider_id: str
    request_id: str

    def __str__(self) -> str:
        return "/".join(self)

    @classmethod
    def parse(cls, claim_id: str) -> "ClaimId":
        parts = claim_id.split("/", 4)
        if len(parts) != 5 or not all(parts) or parts[0] not in INCENTIVE_KINDS:
            raise ValueError(f"{claim_id!r} is not a claim id (<kind>/<program_id>/<service_account_id>/"
                             f"<provider_id>/<request_id>, kind one of {', '.join(INCENTIVE_KINDS)})")
        return cls(*parts)


def reversal(claim: ClaimId, thermostat_serial: str, day: date, reason: str, now: datetime) -> dict:
    """The claim that reverses a bonus or rebate found paid in error (the ledger checks that it
    was paid and that ``day`` is inside the program's reversal window)."""
    return _claim_record(str(claim), claim.kind, "REVERSE", claim.program_id, claim.provider_id,
                         claim.service_account_id, thermostat_serial, day, None, [], reason, now)


def _claim(book, outcome, kind, program, provider_id, request, effective, post_on, failures, now) -> None:
    claim_id = str(ClaimId(kind, program.id, book.service_account_id, provider_id, request["request_id"]))
    outcome.claims.append(_claim_record(
        claim_id, kind, "CLAIM", program.id, provider_id, book.service_account_id, request["thermostat_serial"],
        effective, post_on, failures, None, now,
    ))
    if not failures:
        book.claims.append(PendingClaim(claim_id, kind, program.id, provider_id, request["thermostat_serial"], post_on))


def _claim_record(claim_id, kind, action, program_id, provider_id, account_id, serial, day, post_on, failures,
                  reason, now) -> dict:
    return {
        "claim_id": claim_id, "kind": kind, "action": action, "program_id": program_id,
        "provider_id": provider_id, "service_account_id": account_id, "thermostat_serial": serial,
        "effective_date": day, "post_on": post_on, "failures": [f.to_record() for f in failures],
        "reason": reason, "claimed_at": now,
    }


def _decision(provider_id, request, failures, effective, lockout_until, now) -> dict:
    return {
        "request_id": request["request_id"], "provider_id": provider_id, "program_id": request["program_id"],
        "action": request["action"], "service_account_id": request["service_account_id"],
        "thermostat_serial": request["thermostat_serial"], "outcome": "REJECTED" if failures else "ACCEPTED",
        "effective_date": effective, "failures": [f.to_record() for f in failures], "lockout_until": lockout_until,
        "requested_at": request["requested_at"], "decided_at": now,
    }


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:g} hours" if hours >= 1 else f"{span.total_seconds():g} seconds"


# -- JSON for the state store -----------------------------------------------------------------

def _date_or_none(value: str | None) -> date | None:
    return date.fromisoformat(value) if value is not None else None


def _account_from_json(account: dict) -> dict:
    return {
        **account,
        "service_start": date.fromisoformat(account["service_start"]),
        "service_end": _date_or_none(account["service_end"]),
        "net_metering_since": _date_or_none(account["net_metering_since"]),
        "updated_at": datetime.fromisoformat(account["updated_at"]),
    }


def _request_from_json(waiting: dict) -> dict:
    request = {**waiting["request"], "requested_at": datetime.fromisoformat(waiting["request"]["requested_at"])}
    return {**waiting, "request": request, "wait_until": datetime.fromisoformat(waiting["wait_until"])}
