"""How a consumer of ``gridflex.telemetry.meter-intervals.v1`` keeps each interval revision once.

Telemetry delivers at least once: after a crash it may emit a record again, always with the
same identity (meter, interval start, revision). A consumer keeps the highest revision it has
applied per interval and drops anything not higher.
"""

from __future__ import annotations

from datetime import datetime


class IntervalRevisions:
    """The highest revision applied per (meter_id, interval_start)."""

    def __init__(self) -> None:
        self._applied: dict[tuple[str, datetime], int] = {}

    def accept(self, interval: dict) -> bool:
        """True when ``interval`` is new or a higher revision; records it as applied."""
        identity = (interval["meter_id"], interval["interval_start"])
        applied = self._applied.get(identity)
        if applied is not None and interval["revision"] <= applied:
            return False
        self._applied[identity] = interval["revision"]
        return True
