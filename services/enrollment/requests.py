"""What a provider may POST as an enrollment request: every field checked, every problem listed.

Pure functions. The API parses the JSON, calls :func:`parse_submission`, stores the submission,
and produces :func:`enrollment_request` of it, the same record a provider sends on Kafka.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from gridflex.calendar import iso_instant

ACTIONS = ("ENROLL", "DISENROLL")
THERMOSTAT_SOURCES = ("RETAIL", "UTILITY_PROGRAM")
MAX_TEXT = 128
# A request_id appears in a URL path (the status URL): no '/', '?', '%' or spaces.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
FIELDS = (
    "request_id", "program_id", "action", "service_account_id", "thermostat_serial", "thermostat_model",
    "controls_central_ac", "thermostat_source", "requested_at",
)


@dataclass(frozen=True)
class Problem:
    field: str  # empty for the body as a whole
    problem: str


class InvalidRequest(ValueError):
    """Input the API cannot accept; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(f"{p.field or 'body'}: {p.problem}" for p in problems))
        self.problems = problems


def parse_submission(body: Any, new_request_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> dict:
    """The enrollment request a JSON body states, as JSON values: request_id filled in when absent,
    requested_at in UTC to the millisecond when given (absent otherwise: it defaults to the time of
    submission). Raises :class:`InvalidRequest` listing every problem."""
    if not isinstance(body, dict):
        raise InvalidRequest([Problem("", "must be a JSON object")])
    problems: list[Problem] = []
    submission: dict[str, Any] = {}

    request_id = body.get("request_id")
    if request_id is None:
        submission["request_id"] = new_request_id()
    elif not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        problems.append(Problem("request_id", "must be 1-128 letters, digits, '.', '_', ':' or '-', "
                                              "starting with a letter or digit"))
    else:
        submission["request_id"] = request_id

    _text(body, "program_id", submission, problems)
    _choice(body, "action", ACTIONS, submission, problems)
    for name in ("service_account_id", "thermostat_serial", "thermostat_model"):
        _text(body, name, submission, problems)

    central_ac = body.get("controls_central_ac")
    if central_ac is None:
        problems.append(Problem("controls_central_ac", "is required"))
    elif not isinstance(central_ac, bool):
        problems.append(Problem("controls_central_ac", "must be true or false"))
    else:
        submission["controls_central_ac"] = central_ac

    _choice(body, "thermostat_source", THERMOSTAT_SOURCES, submission, problems)

    requested_at = body.get("requested_at")
    if requested_at is not None:
        instant = parse_instant(requested_at)
        if instant is None:
            problems.append(Problem("requested_at", "must be an ISO 8601 date-time with a time zone, "
                                                    "e.g. 2026-07-15T14:00:00-07:00 or 2026-07-15T21:00:00Z"))
        else:
            submission["requested_at"] = iso_instant(instant)

    problems += [Problem(name, "is not a field of an enrollment request") for name in sorted(set(body) - set(FIELDS))]
    if problems:
        raise InvalidRequest(problems)
    return submission


def parse_wait(text: str | None, longest: float) -> float:
    """The ``?wait=`` of a status query: seconds to wait for the decision, at most ``longest``."""
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise InvalidRequest([Problem("wait", f"must be a number of seconds from 0 to {longest:g}")])
    return min(seconds, longest)


def enrollment_request(submission: dict, submitted_at: datetime) -> dict:
    """The ``EnrollmentRequest`` record of a submission; requested_at defaults to ``submitted_at``."""
    requested_at = submission.get("requested_at")
    return {
        "request_id": submission["request_id"],
        "program_id": submission["program_id"],
        "action": submission["action"],
        "service_account_id": submission["service_account_id"],
        "thermostat_serial": submission["thermostat_serial"],
        "thermostat_model": submission["thermostat_model"],
        "controls_central_ac": submission["controls_central_ac"],
        "thermostat_source": submission["thermostat_source"],
        "requested_at": parse_instant(requested_at) if requested_at else submitted_at,
    }


def parse_instant(text: Any) -> datetime | None:
    """An ISO 8601 date-time with a zone, or None (no zone, not a date-time, not a string)."""
    if not isinstance(text, str):
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else None


def _text(body: dict, name: str, submission: dict, problems: list[Problem]) -> None:
    value = body.get(name)
    if value is None:
        problems.append(Problem(name, "is required"))
    elif not isinstance(value, str):
        problems.append(Problem(name, "must be a string"))
    elif not value.strip():
        problems.append(Problem(name, "must not be empty"))
    elif value != value.strip():
        # Keys and lookups compare exactly: " SA-1" would be another account.
        problems.append(Problem(name, "must not start or end with whitespace"))
    elif len(value) > MAX_TEXT:
        problems.append(Problem(name, f"must be at most {MAX_TEXT} characters"))
    else:
        submission[name] = value


def _choice(body: dict, name: str, choices: tuple[str, ...], submission: dict, problems: list[Problem]) -> None:
    value = body.get(name)
    if value is None:
        problems.append(Problem(name, "is required"))
    elif value not in choices:
        problems.append(Problem(name, f"must be one of {', '.join(choices)}"))
    else:
        submission[name] = value
