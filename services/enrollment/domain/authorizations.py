"""Data-sharing authorizations (ohm-hours): what an aggregator may relay, and how status moves.

The customer authorizes at the utility; the aggregator relays the status per linked service
account. The product never accepts a utility credential, a social security number or payment
data: a record carrying one is refused whole, before anything of it is stored, and its dead
letter keeps a copy without the offending fields (:func:`redacted`), never the original bytes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import NamedTuple

from services.enrollment.domain.accounts import ACTIVE, AccountBook, Authorization

PENDING = "PENDING"
TRANSITIONS = {PENDING: {ACTIVE, "REVOKED", "EXPIRED"}, ACTIVE: {"REVOKED", "EXPIRED"}, "REVOKED": set(), "EXPIRED": set()}

_CREDENTIAL_NAMES = re.compile(r"pass(word|code|phrase)?|pwd|credential|secret|token|username|login|pin\b", re.I)
_PERSONAL_NAMES = re.compile(
    r"ssn|social.?security|tax.?id|\btin\b|card|cvv|cvc|iban|routing|bank|payment|billing.?account.?number", re.I
)
_SSN_VALUE = re.compile(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b")
_CARD_VALUE = re.compile(r"\b(?:\d[ -]?){13,19}\b")


class AuthorizationRefused(NamedTuple):
    reason_code: str
    reason: str


def screen(record: dict) -> AuthorizationRefused | None:
    """Refuse a record that carries a utility credential, a social security number or payment data."""
    for name, value in record["customer_information"].items():
        refusal = _forbidden(name, value)
        if refusal is not None:
            return refusal
    return None


def redacted(record: dict) -> dict:
    """The record without the fields :func:`screen` refuses: what a dead letter may keep of it."""
    kept = {name: value for name, value in record["customer_information"].items() if _forbidden(name, value) is None}
    return {**record, "customer_information": kept}


def _forbidden(name: str, value: str) -> AuthorizationRefused | None:
    if _CREDENTIAL_NAMES.search(name):
        return AuthorizationRefused(
            "UTILITY_CREDENTIAL_REFUSED", f"customer_information field {name!r} looks like a credential; "
            "utility credentials are never accepted",
        )
    if _PERSONAL_NAMES.search(name):
        return AuthorizationRefused(
            "FORBIDDEN_PERSONAL_DATA", f"customer_information field {name!r} is social security or payment data",
        )
    if _SSN_VALUE.search(value) or any(_luhn(match.group()) for match in _CARD_VALUE.finditer(value)):
        return AuthorizationRefused(
            "FORBIDDEN_PERSONAL_DATA",
            f"customer_information field {name!r} holds what looks like a social security or card number",
        )
    return None


def _luhn(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return len(digits) >= 13 and total % 10 == 0


def apply(book: AccountBook, provider_id: str, record: dict, pending_limit: timedelta, now: datetime
          ) -> AuthorizationRefused | bool:
    """Apply a relayed status; True when the book changed. A stale update (older than what is
    known) changes nothing; an impossible transition is refused."""
    known = book.authorizations.get(record["authorization_id"])
    if known is not None and known.provider_id != provider_id:
        return AuthorizationRefused(
            "AUTHORIZATION_OF_ANOTHER_PROVIDER", f"authorization {record['authorization_id']} belongs to another provider"
        )
    status = record["status"]
    if known is None:
        if status not in (PENDING, ACTIVE):
            return AuthorizationRefused(
                "ILLEGAL_TRANSITION", f"authorization {record['authorization_id']} is unknown; it cannot start as {status}"
            )
        book.authorizations[record["authorization_id"]] = Authorization(
            record["authorization_id"], provider_id, status, record["requested_at"], record["updated_at"],
            reauthorization_required=status == PENDING and now - record["requested_at"] > pending_limit,
        )
        return True
    if record["updated_at"] <= known.updated_at or status == known.status:
        return False
    if status not in TRANSITIONS[known.status]:
        return AuthorizationRefused(
            "ILLEGAL_TRANSITION", f"authorization {known.authorization_id} is {known.status}; it cannot become {status}"
        )
    known.status, known.updated_at, known.reauthorization_required = status, record["updated_at"], False
    return True


def flag_overdue(book: AccountBook, pending_limit: timedelta, now: datetime) -> bool:
    """Flag authorizations pending longer than the limit for re-authorization; True when any changed."""
    changed = False
    for authorization in book.authorizations.values():
        overdue = authorization.status == PENDING and now - authorization.requested_at > pending_limit
        if overdue and not authorization.reauthorization_required:
            authorization.reauthorization_required = True
            changed = True
    return changed


def end_unauthorized(book: AccountBook, programs, provider_id: str, day, outcome) -> None:
    """Without an active authorization, the provider's data-sharing programs end on ``day``."""
    if book.active_authorization(provider_id) is not None:
        return
    for period in book.periods:
        program = programs.programs.get(period.program_id)
        if (period.provider_id == provider_id and period.open_after(day) and program is not None
                and program.eligibility.requires_data_sharing_authorization):
            period.end(day, "AUTHORIZATION_ENDED")
            outcome.changed = True
