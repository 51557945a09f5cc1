"""RFC 3339 instants and ISO 8601 durations as OpenADR writes them, in gridflex's precision
(timestamp-millis, UTC)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# Years and months have no fixed length: an event's window must be exact, so they are refused.
DURATION = re.compile(
    r"^(?P<sign>-?)P(?=\d|T\d)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
NOW_MARKERS = ("0001-01-01",)  # the User Guide's 'now'
INFINITY = "P9999Y"


class TimingError(ValueError):
    """An instant or duration gridflex cannot use; the message says why."""


def parse_instant(text: object, field: str) -> datetime:
    """An RFC 3339 date-time with its offset, as UTC to the millisecond."""
    if not isinstance(text, str):
        raise TimingError(f"{field} must be an RFC 3339 date-time string")
    if text.startswith(NOW_MARKERS):
        raise TimingError(f"{field} {text!r} means 'now'; gridflex events need their start written out")
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise TimingError(f"{field} {text!r} is not an RFC 3339 date-time") from None
    if instant.tzinfo is None:
        raise TimingError(f"{field} {text!r} has no UTC offset (write e.g. 2025-07-15T19:00:00Z)")
    instant = instant.astimezone(timezone.utc)
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def parse_duration(text: object, field: str) -> timedelta:
    if not isinstance(text, str):
        raise TimingError(f"{field} must be an ISO 8601 duration string such as PT3H")
    if text == INFINITY:
        raise TimingError(f"{field} {INFINITY} (no end) is not allowed: gridflex events end")
    match = DURATION.fullmatch(text)
    if match is None:
        raise TimingError(f"{field} {text!r} is not an ISO 8601 duration such as PT3H")
    if match["years"] or match["months"]:
        raise TimingError(f"{field} {text!r} counts years or months, which have no fixed length; use D, H, M, S")
    if match["sign"]:
        raise TimingError(f"{field} {text!r} is negative")
    return timedelta(
        weeks=int(match["weeks"] or 0), days=int(match["days"] or 0), hours=int(match["hours"] or 0),
        minutes=int(match["minutes"] or 0), seconds=float(match["seconds"] or 0),
    )


def format_instant(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_duration(span: timedelta) -> str:
    """The shortest ISO 8601 form: PT3H, PT1H30M, P1DT2H, PT0S."""
    milliseconds = round(span.total_seconds() * 1000)
    if milliseconds < 0:
        raise ValueError("negative duration")
    days, rest = divmod(milliseconds, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = rest / 1000
    time_part = "".join(
        f"{value}{unit}" for value, unit in ((hours, "H"), (minutes, "M")) if value
    ) + (f"{seconds:g}S" if seconds else "")
    text = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    return text if text != "P" else "PT0S"
