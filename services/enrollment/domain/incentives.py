"""Sign-up bonuses and rebates: claims decided in log order against each program's fund.

Claims of every account arrive on one partition, so deciding them one after another is what
makes the fund atomic: two enrollments racing for the last bonus are ordered by the log, the
first is granted and the second denied, and the fund never goes below zero. The ledger reads and
writes a key-value store (the pipeline's changelog-backed store; a dict in tests).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple, Protocol

from gridflex.programs import Program, ProgramCatalogue
from services.enrollment.domain.eligibility import RuleFailure

ZERO = Decimal("0.00")


class KeyValue(Protocol):
    def get(self, key: str): ...
    def put(self, key: str, value) -> None: ...


class ClaimRefused(NamedTuple):
    """A cancellation or reversal that cannot apply (for the dead-letter topic)."""

    reason_code: str
    reason: str


class IncentiveLedger:
    """The funds, the serials and accounts already paid, and every claim's outcome."""

    def __init__(self, store: KeyValue, programs: ProgramCatalogue):
        self.store = store
        self.programs = programs

    def fund_remaining(self, program: Program) -> Decimal:
        remaining = self.store.get(f"fund/{program.id}")
        return Decimal(remaining) if remaining is not None else program.signup_bonus.fund

    def decide(self, claim: dict, now: datetime) -> dict | ClaimRefused | None:
        """The IncentiveDecision a claim, cancellation or reversal produces; None when the claim
        was already decided (a re-delivery); ClaimRefused when it cannot apply."""
        program = self.programs.programs.get(claim["program_id"])
        if program is None:
            return ClaimRefused("PROGRAM_UNKNOWN", f"program {claim['program_id']!r} is not in the catalogue")
        terms = program.signup_bonus if claim["kind"] == "SIGNUP_BONUS" else program.rebate
        if terms is None:
            return ClaimRefused("NO_SUCH_INCENTIVE", f"{program.id} offers no {claim['kind'].lower().replace('_', ' ')}")
        action = claim["action"]
        if action == "CLAIM":
            return self._claim(claim, program, terms, now)
        if action == "CANCEL":
            return self._cancel(claim, program, now)
        return self._reverse(claim, program, terms, now)

    def _claim(self, claim, program, terms, now):
        if self.store.get(f"claim/{claim['claim_id']}") is not None:
            return None
        failures = [RuleFailure(f["code"], f["message"]) for f in claim["failures"]]
        serial, account = claim["thermostat_serial"], claim["service_account_id"]
        kind = claim["kind"]
        if self.store.get(f"paid-serial/{kind}/{program.id}/{serial}") is not None:
            noun = "a sign-up bonus" if kind == "SIGNUP_BONUS" else "a rebate"
            failures.append(RuleFailure("THERMOSTAT_ALREADY_PAID", f"thermostat {serial} was already paid {noun}"))
        remaining = None
        if kind == "SIGNUP_BONUS":
            if self.store.get(f"paid-account/{program.id}/{account}") is not None:
                failures.append(RuleFailure(
                    "BONUS_ACCOUNT_ALREADY_PAID", f"service account {account} already earned the sign-up bonus"
                ))
            remaining = self.fund_remaining(program)
            if not failures and remaining < terms.amount:
                failures.append(RuleFailure(
                    "BONUS_FUND_EXHAUSTED", f"the bonus fund has {remaining} left, less than the {terms.amount} bonus"
                ))
        granted = not failures
        if granted:
            self.store.put(f"paid-serial/{kind}/{program.id}/{serial}", claim["claim_id"])
            if kind == "SIGNUP_BONUS":
                self.store.put(f"paid-account/{program.id}/{account}", claim["claim_id"])
                remaining -= terms.amount
                self.store.put(f"fund/{program.id}", str(remaining))
        amount = terms.amount if granted else ZERO
        self.store.put(f"claim/{claim['claim_id']}", {
            "outcome": "GRANTED" if granted else "DENIED", "amount": str(amount),
            "post_on": claim["post_on"].isoformat(), "effective_date": claim["effective_date"].isoformat(),
        })
        return _decision(claim, "GRANTED" if granted else "DENIED", amount, claim["effective_date"],
                         claim["post_on"], failures, remaining, now)

    def _cancel(self, claim, program, now):
        recorded = self.store.get(f"claim/{claim['claim_id']}")
        if recorded is None or recorded["outcome"] != "GRANTED":
            return None  # denied claims have nothing to cancel; a repeated cancellation is done already
        post_on = date.fromisoformat(recorded["post_on"])
        if claim["effective_date"] > post_on:
            return ClaimRefused(
                "ALREADY_POSTED", f"{claim['claim_id']} was posted on {post_on}; a cancellation on "
                f"{claim['effective_date']} comes too late (reverse it instead)",
            )
        amount = self._release(claim, program, recorded, "CANCELLED")
        return _decision(claim, "CANCELLED", amount, claim["effective_date"], post_on,
                         [RuleFailure("CANCELLED", claim["reason"] or "cancelled before posting")],
                         self._remaining(claim, program), now)

    def _reverse(self, claim, program, terms, now):
        recorded = self.store.get(f"claim/{claim['claim_id']}")
        if recorded is None or recorded["outcome"] not in ("GRANTED", "REVERSED"):
            return ClaimRefused("NOT_PAID", f"{claim['claim_id']} was never granted, so there is nothing to reverse")
        if recorded["outcome"] == "REVERSED":
            if recorded["reversed_by"] == claim["claimed_at"].isoformat():
                return None  # the same reversal, re-delivered
            return ClaimRefused("ALREADY_REVERSED", f"{claim['claim_id']} was reversed already, as of "
                                f"{recorded['reversed_on']} ({recorded['reversal_reason']})")
        post_on = date.fromisoformat(recorded["post_on"])
        day = claim["effective_date"]
        window = getattr(terms, "reversal_days", None)
        if day <= post_on:
            return ClaimRefused("NOT_YET_POSTED", f"{claim['claim_id']} posts on {post_on}: cancel it instead")
        if window is not None and day > post_on + timedelta(days=window):
            return ClaimRefused(
                "REVERSAL_WINDOW_PASSED",
                f"{claim['claim_id']} was posted on {post_on}; reversals are allowed for {window} days",
            )
        amount = self._release(claim, program, recorded, "REVERSED")
        return _decision(claim, "REVERSED", amount, day, post_on,
                         [RuleFailure("PAID_IN_ERROR", claim["reason"] or "paid in error")],
                         self._remaining(claim, program), now)

    def _release(self, claim, program, recorded, outcome) -> Decimal:
        """Return the amount to the fund. A cancelled bonus was never paid, so its serial and
        account may earn one later; a reversed one was paid, so they stay marked."""
        amount = Decimal(recorded["amount"])
        kind = claim["kind"]
        if kind == "SIGNUP_BONUS":
            self.store.put(f"fund/{program.id}", str(self.fund_remaining(program) + amount))
        if outcome == "CANCELLED":
            self.store.put(f"paid-serial/{kind}/{program.id}/{claim['thermostat_serial']}", None)
            if kind == "SIGNUP_BONUS":
                self.store.put(f"paid-account/{program.id}/{claim['service_account_id']}", None)
        if outcome == "REVERSED":
            recorded = {**recorded, "reversed_by": claim["claimed_at"].isoformat(),
                        "reversed_on": claim["effective_date"].isoformat(), "reversal_reason": claim["reason"]}
        self.store.put(f"claim/{claim['claim_id']}", {**recorded, "outcome": outcome})
        return amount

    def _remaining(self, claim, program) -> Decimal | None:
        return self.fund_remaining(program) if claim["kind"] == "SIGNUP_BONUS" else None


def _decision(claim, outcome, amount, day, post_on, failures, remaining, now) -> dict:
    return {
        "claim_id": claim["claim_id"], "kind": claim["kind"], "outcome": outcome,
        "program_id": claim["program_id"], "provider_id": claim["provider_id"],
        "service_account_id": claim["service_account_id"], "thermostat_serial": claim["thermostat_serial"],
        "amount": amount, "effective_date": day, "post_on": post_on,
        "failures": [f.to_record() for f in failures], "fund_remaining": remaining, "decided_at": now,
    }
