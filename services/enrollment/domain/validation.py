"""Input checks that come before any rule: a record that fails one goes to the dead-letter topic."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple


class Refusal(NamedTuple):
    reason_code: str
    reason: str
    redacted: dict | None = None  # what the dead letter keeps instead of bytes that must not be stored


def validate_account(account: dict) -> Refusal | None:
    problems = []
    if not account["service_account_id"].strip():
        problems.append("service_account_id is empty")
    if not 1 <= account["bill_cycle_day"] <= 31:
        problems.append(f"bill_cycle_day {account['bill_cycle_day']} is not 1-31")
    if account["service_end"] is not None and account["service_end"] < account["service_start"]:
        problems.append(f"service_end {account['service_end']} is before service_start {account['service_start']}")
    return Refusal("INVALID_ACCOUNT", "; ".join(problems)) if problems else None


def validate_request(request: dict, now: datetime, clock_skew: timedelta) -> Refusal | None:
    empty = [name for name in ("request_id", "program_id", "service_account_id", "thermostat_serial")
             if not request[name].strip()]
    if empty:
        return Refusal("MISSING_ID", f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty")
    if request["requested_at"] > now + clock_skew:
        return Refusal("FUTURE_TIMESTAMP", f"requested_at {request['requested_at'].isoformat()} is after now "
                       f"({now.isoformat()}) by more than {clock_skew}")
    return None
