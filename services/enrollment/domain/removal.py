"""Removal rules (PROGRAMS.md, sce-sep-2025): what an account did, and when it breaks a rule.

(a) a thermostat offline for the program's number of consecutive days inside its season
    (April 1 to October 31): found on the day the streak reaches that length;
(b) the customer overrode every event dispatched to the account in a calendar year, each within
    the event's first hour; (c) the meter never registered the minimum usage in the hour before
    or after any of those events. (b) and (c) are judged at the annual review of the year.

:class:`Participation` is what one account did (from device status, the usage around each event
that the baseline service measures, and its enrollments); the functions here judge it against a
program and never touch Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from gridflex.calendar import local_date
from gridflex.programs import Program


class Event(NamedTuple):
    """An energy event as scheduled (the latest SCHEDULE or UPDATE; a cancelled event is gone)."""

    event_id: str
    program_id: str
    start: datetime
    end: datetime
    targets: tuple[str, ...]  # provider ids; empty = every provider


class Finding(NamedTuple):
    program_id: str
    rule: str  # OFFLINE, OVERRIDES, MINIMUM_USAGE
    thermostat_serial: str | None
    found_on: date
    year: int
    evidence: str

    def to_record(self, service_account_id: str) -> dict:
        return {"service_account_id": service_account_id, **self._asdict()}


@dataclass
class Participation:
    """One account's enrollments and what its thermostats and meter did around events."""

    enrollments: list[dict] = field(default_factory=list)  # EnrollmentPeriod records, latest state
    offline_since: dict[str, str] = field(default_factory=dict)  # serial → ISO instant it went offline
    overrides: dict[str, str] = field(default_factory=dict)  # event_id → ISO instant of the first override
    # event_id → [revision, kWh in the window before, kWh in the window after] (None: not metered
    # in full), from the baseline service's gridflex.baseline.event-usage.v1; the highest revision
    usage: dict[str, list] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)  # findings already published (their keys)

    def to_state(self) -> dict:
        return {"enrollments": self.enrollments, "offline_since": self.offline_since,
                "overrides": self.overrides, "usage": self.usage, "found": self.found}

    @classmethod
    def from_state(cls, state: dict | None) -> "Participation":
        if state is None:
            return cls()
        enrollments = [{**p, "effective_from": date.fromisoformat(p["effective_from"]),
                        "effective_to": date.fromisoformat(p["effective_to"]) if p["effective_to"] else None}
                       for p in state["enrollments"]]
        # Entries of another form are what this service tracked from raw intervals before the
        # baseline service published the windows; the event-usage topic brings them back.
        usage = {event_id: entry for event_id, entry in state["usage"].items() if isinstance(entry, list)}
        return cls(enrollments, state["offline_since"], state["overrides"], usage, state["found"])

    def provider_in_effect(self, program_id: str, day: date) -> str | None:
        """The provider of an enrollment in the program in effect on ``day``, if any."""
        for period in self.enrollments:
            if (period["program_id"] == program_id and period["effective_from"] <= day
                    and (period["effective_to"] is None or day < period["effective_to"])):
                return period["provider_id"]
        return None


# -- what happened ---------------------------------------------------------------------------------

def record_device_status(participation: Participation, status: dict) -> bool:
    """A connectivity change or an override; True when it changed what is remembered."""
    serial, change = status["thermostat_serial"], status["change"]
    observed = status["observed_at"].isoformat()
    if change == "WENT_OFFLINE" or (change == "FIRST_SEEN" and not status["online"]):
        if serial not in participation.offline_since:
            participation.offline_since[serial] = observed
            return True
    elif change == "WENT_ONLINE" or (change == "FIRST_SEEN" and status["online"]):
        return participation.offline_since.pop(serial, None) is not None
    if change == "OVERRIDE" and status["event_id"] and status["event_id"] not in participation.overrides:
        participation.overrides[status["event_id"]] = observed
        return True
    return False


def record_window_usage(participation: Participation, usage: dict) -> bool:
    """Remember the usage before and after an event (an EventWindowUsage record; a higher
    revision replaces an earlier one, a lower or repeated one changes nothing); True when it did."""
    known = participation.usage.get(usage["event_id"])
    if known is not None and known[0] >= usage["revision"]:
        return False
    participation.usage[usage["event_id"]] = [
        usage["revision"], *(str(kwh) if kwh is not None else None
                             for kwh in (usage["hour_before_kwh"], usage["hour_after_kwh"]))]
    return True


# -- judging -----------------------------------------------------------------------------------------

def offline_findings(participation: Participation, program: Program, today: date) -> list[tuple[str, Finding]]:
    """(key, finding) for each thermostat offline long enough inside the season, found on the day
    its streak reached the program's length."""
    rule = program.removal.offline if program.removal else None
    if rule is None:
        return []
    findings = []
    for serial, since in participation.offline_since.items():
        offline_day = local_date(datetime.fromisoformat(since))
        season_start = date(offline_day.year, *rule.season_start)
        season_end = date(offline_day.year, *rule.season_end)
        first = max(offline_day, season_start)
        found_on = first + timedelta(days=rule.min_consecutive_days)
        if found_on > today or found_on - timedelta(days=1) > season_end:
            continue  # not yet, or the streak would not fit inside this year's season
        if participation.provider_in_effect(program.id, found_on - timedelta(days=1)) is None:
            continue
        key = f"{program.id}/OFFLINE/{serial}/{since}"
        if key not in participation.found:
            findings.append((key, Finding(
                program.id, "OFFLINE", serial, found_on, found_on.year,
                f"thermostat {serial} offline since {offline_day}, {rule.min_consecutive_days} consecutive days "
                f"inside {season_start:%B} {season_start.day} to {season_end:%B} {season_end.day}",
            )))
    return findings


def annual_findings(participation: Participation, program: Program, year: int, events: list[Event],
                    review_day: date) -> list[tuple[str, Finding]]:
    """Overrides and minimum usage over the events dispatched to the account in ``year``."""
    removal = program.removal
    if removal is None or (removal.overrides is None and removal.minimum_usage is None):
        return []
    dispatched = []
    for event in events:
        day = local_date(event.start)
        provider = participation.provider_in_effect(program.id, day)
        if (event.program_id == program.id and day.year == year and provider is not None
                and (not event.targets or provider in event.targets)):
            dispatched.append(event)
    if not dispatched:
        return []  # no event reached the account: nothing to review
    findings = []
    rule = removal.overrides
    if rule is not None:
        window = timedelta(minutes=rule.within_first_minutes)
        overridden = [e for e in dispatched if e.event_id in participation.overrides
                      and e.start <= datetime.fromisoformat(participation.overrides[e.event_id]) < e.start + window]
        if len(overridden) == len(dispatched):
            findings.append((f"{program.id}/OVERRIDES/{year}", Finding(
                program.id, "OVERRIDES", None, review_day, year,
                f"overrode all {len(dispatched)} events dispatched in {year}, each within its first "
                f"{rule.within_first_minutes} minutes",
            )))
    rule = removal.minimum_usage
    if rule is not None:
        best = max((_window_kwh(participation, e) for e in dispatched), default=Decimal(0))
        if best < rule.min_kwh:
            findings.append((f"{program.id}/MINIMUM_USAGE/{year}", Finding(
                program.id, "MINIMUM_USAGE", None, review_day, year,
                f"the meter never registered {rule.min_kwh} kWh in the {rule.window_minutes} minutes before or "
                f"after any of the {len(dispatched)} events of {year} (most: {best} kWh)",
            )))
    return [(key, finding) for key, finding in findings if key not in participation.found]


def _window_kwh(participation: Participation, event: Event) -> Decimal:
    """The larger of the usage in the window before and the window after the event (an hour
    not metered in full counts as none)."""
    _, *windows = participation.usage.get(event.event_id) or [0, None, None]
    return max((Decimal(kwh) for kwh in windows if kwh is not None), default=Decimal(0))


def review_day(program: Program, year: int) -> date | None:
    """The day ``year`` is reviewed (in the following January), if the program has annual rules."""
    if program.removal is None:
        return None
    return date(year + 1, *program.removal.annual_review_by)
