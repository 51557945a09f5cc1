"""Telemetry ingestion rules: validate meter reads and thermostat states, reconcile revisions.

Pure Python over plain records (the dicts the codec decodes): no Kafka, no asyncio, no database.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Callable, NamedTuple

from gridflex.calendar import local_date

KWH_PER_UNIT = {"WH": Decimal("0.001"), "KWH": Decimal("1")}
INTERVAL_LENGTHS = {900: timedelta(seconds=900), 3600: timedelta(seconds=3600)}
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a cache key per batch
class TelemetryLimits:
    """What a plausible record looks like; every bound is a setting."""

    max_demand_kw: Decimal = Decimal("500")  # a meter cannot deliver more than this on average over an interval
    clock_skew: timedelta = timedelta(minutes=5)  # how far ahead of "now" a timestamp may be
    revision_days: int = 60  # how long an interval's revisions are tracked (the settlement window)
    setpoint_range_f: tuple[float, float] = (40.0, 99.0)
    indoor_temp_range_f: tuple[float, float] = (-20.0, 140.0)


@dataclass(frozen=True)
class Rejection:
    """Why a record cannot be accepted: a machine-readable code and a human sentence."""

    reason_code: str
    reason: str


class MeterInterval(NamedTuple):
    """A validated meter interval, energy in kWh. Identity: (meter_id, interval_start, revision).

    A named tuple rather than a frozen dataclass: one is made per meter read, and building a
    tuple costs a fraction of a frozen dataclass's field-by-field ``__setattr__``.
    """

    service_account_id: str
    meter_id: str
    interval_start: datetime
    interval_seconds: int
    kwh: Decimal
    quality: str
    revision: int
    read_at: datetime
    local_date: date  # the utility's calendar day of interval_start

    @property
    def day_key(self) -> str:
        """Revision state is kept per local day and meter, so one batch touches few keys; the
        date comes first so that expired days are a key range."""
        return f"{self.local_date.isoformat()}/{self.meter_id}"

    @property
    def slot(self) -> str:
        return str(int(self.interval_start.timestamp() * 1000))

    @property
    def content_digest(self) -> str:
        """What makes two reads of the same interval and revision the same read."""
        text = f"{self.service_account_id}|{self.interval_seconds}|{self.kwh.normalize()}|{self.quality}"
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def as_record(self, supersedes_revision: int | None) -> dict:
        return {
            "service_account_id": self.service_account_id,
            "meter_id": self.meter_id,
            "interval_start": self.interval_start,
            "interval_seconds": self.interval_seconds,
            "local_date": self.local_date,
            "kwh": self.kwh,
            "quality": self.quality,
            "revision": self.revision,
            "supersedes_revision": supersedes_revision,
            "read_at": self.read_at,
        }


def validate_meter_read(read: dict, now: datetime, limits: TelemetryLimits) -> MeterInterval | Rejection:
    """Accept a ``MeterRead`` as a kWh interval, or name every rule it breaks."""
    bounds = _bounds(now, limits)
    problems: list[Rejection] = []
    for name in ("service_account_id", "meter_id"):
        if not read[name].strip():
            problems.append(Rejection("MISSING_ID", f"{name} is empty"))
    unit = read["unit"].strip().upper()
    kwh_per_unit = KWH_PER_UNIT.get(unit)
    if kwh_per_unit is None:
        problems.append(Rejection("UNKNOWN_UNIT", f"unit {read['unit']!r} is not one of WH, KWH"))
    value: Decimal = read["value"]
    seconds = read["interval_seconds"]
    length = INTERVAL_LENGTHS.get(seconds)
    start: datetime = read["interval_start"]
    if not value.is_finite():
        problems.append(Rejection("NOT_FINITE", f"value {value} is not a finite number"))
    elif value < 0:
        problems.append(Rejection("NEGATIVE_VALUE", f"value {value} {unit} is negative"))
    elif kwh_per_unit is not None and length is not None and value * kwh_per_unit > bounds.most_kwh[seconds]:
        problems.append(Rejection(
            "VALUE_TOO_LARGE",
            f"value {value} {unit} exceeds the physical maximum of {bounds.most_kwh[seconds]} kWh "
            f"for a {seconds} s interval",
        ))
    if length is None:
        problems.append(Rejection("BAD_INTERVAL_LENGTH", f"interval_seconds {seconds} is not 900 or 3600"))
    elif int(start.timestamp()) % seconds:
        problems.append(Rejection(
            "MISALIGNED_INTERVAL", f"interval_start {start.isoformat()} is not aligned to {seconds} s"
        ))
    if read["revision"] < 0:
        problems.append(Rejection("NEGATIVE_REVISION", f"revision {read['revision']} is negative"))
    if length is not None and start + length > bounds.latest:
        problems.append(Rejection(
            "FUTURE_TIMESTAMP", f"interval ending {(start + length).isoformat()} has not ended at {now.isoformat()}"
        ))
    elif read["read_at"] > bounds.latest:
        problems.append(Rejection("FUTURE_TIMESTAMP", f"read_at {read['read_at'].isoformat()} is after {now.isoformat()}"))
    if start < EARLIEST_TIMESTAMP:
        problems.append(Rejection("TIMESTAMP_TOO_OLD", f"interval_start {start.isoformat()} is before 2000"))
    elif (day := _local_date(start)) < bounds.first_tracked_day:
        problems.append(Rejection(
            "OUTSIDE_REVISION_WINDOW",
            f"interval_start {start.isoformat()} is more than {limits.revision_days} days before {now.isoformat()}; "
            "intervals that old are settled and their revisions no longer tracked",
        ))
    if problems:
        return _combined(problems)
    return MeterInterval(
        read["service_account_id"], read["meter_id"], start, seconds, value * kwh_per_unit, read["quality"],
        read["revision"], read["read_at"], day,
    )


@lru_cache(maxsize=8192)
def _local_date(start: datetime) -> date:
    """Every meter reports the same interval starts: their local day is looked up, not recomputed."""
    return local_date(start)


@dataclass(frozen=True)
class _Bounds:
    """The limits as they apply at one "now": computed once per batch, not per read."""

    latest: datetime  # no timestamp may be later
    first_tracked_day: date
    most_kwh: dict[int, Decimal]  # the physical maximum per interval length


@lru_cache(maxsize=64)
def _bounds(now: datetime, limits: TelemetryLimits) -> _Bounds:
    return _Bounds(
        latest=now + limits.clock_skew,
        first_tracked_day=first_tracked_day(now, limits),
        most_kwh={seconds: limits.max_demand_kw * seconds / 3600 for seconds in INTERVAL_LENGTHS},
    )


def first_tracked_day(now: datetime, limits: TelemetryLimits) -> date:
    """The oldest local day whose intervals are still accepted; state for earlier days expires."""
    return local_date(now) - timedelta(days=limits.revision_days)


class Verdict(str, Enum):
    NEW = "new"  # first sight of the interval: emit
    REVISION = "revision"  # a higher revision: emit, marked as superseding the lower
    REPLAY = "replay"  # the very record that set the state, read again after a crash: emit again, same identity
    DUPLICATE = "duplicate"  # an exact repeat from another position: drop, count
    STALE = "stale"  # a lower revision arriving late: drop, count
    CONFLICT = "conflict"  # the same revision with different content: dead letter


class SeenInterval(NamedTuple):
    """What the service remembers of an interval: the revision it emitted and where it came from.

    (A named tuple, like MeterInterval: one is made per read.)"""

    revision: int
    digest: str
    partition: int
    offset: int
    supersedes: int | None

    def to_state(self) -> list:
        return list(self)

    @classmethod
    def from_state(cls, state: list) -> "SeenInterval":
        return cls(*state)


def reconcile(seen: SeenInterval | None, interval: MeterInterval, partition: int, offset: int) -> tuple[Verdict, SeenInterval]:
    """Decide what to do with an interval given what was seen before; returns the new memory."""
    if seen is not None and (seen.partition, seen.offset) == (partition, offset):
        return Verdict.REPLAY, seen
    if seen is None:
        return Verdict.NEW, SeenInterval(interval.revision, interval.content_digest, partition, offset, None)
    if interval.revision > seen.revision:
        return Verdict.REVISION, SeenInterval(interval.revision, interval.content_digest, partition, offset, seen.revision)
    if interval.revision < seen.revision:
        return Verdict.STALE, seen
    if interval.content_digest == seen.digest:
        return Verdict.DUPLICATE, seen
    return Verdict.CONFLICT, seen


@dataclass
class MeterReadsOutcome:
    """What one partition's batch of meter reads comes to."""

    intervals: list[dict] = field(default_factory=list)  # clean MeterInterval records to emit
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)  # (input offset, why)
    days: dict[str, dict] = field(default_factory=dict)  # remembered days that changed: day key → slots
    verdicts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))


def ingest_meter_reads(
    reads: list[tuple[int, dict]], partition: int, remembered: Callable[[str], dict | None],
    now: datetime, limits: TelemetryLimits,
) -> MeterReadsOutcome:
    """Validate and reconcile one partition's reads, given in offset order as (offset, read).

    ``remembered(day_key)`` returns the remembered slots of a meter day
    (``{interval_start_ms: SeenInterval state}``) or None. Reads are grouped by meter day, so
    each day is looked up and rewritten once per batch.
    """
    outcome = MeterReadsOutcome()
    by_day: dict[str, list[tuple[int, MeterInterval]]] = defaultdict(list)
    for offset, read in reads:
        result = validate_meter_read(read, now, limits)
        if isinstance(result, Rejection):
            outcome.rejections.append((offset, result))
        else:
            by_day[result.day_key].append((offset, result))
    for day_key, items in by_day.items():
        day = remembered(day_key) or {}
        changed = False
        for offset, interval in items:
            slot = interval.slot
            state = day.get(slot)
            verdict, seen = reconcile(SeenInterval.from_state(state) if state else None, interval, partition, offset)
            outcome.verdicts[verdict] += 1
            if verdict is Verdict.CONFLICT:
                outcome.rejections.append((offset, conflict_rejection(interval)))
            elif verdict in (Verdict.NEW, Verdict.REVISION, Verdict.REPLAY):
                outcome.intervals.append(interval.as_record(seen.supersedes))
                if verdict is not Verdict.REPLAY:
                    day[slot] = seen.to_state()
                    changed = True
        if changed:
            outcome.days[day_key] = day
    return outcome


def conflict_rejection(interval: MeterInterval) -> Rejection:
    return Rejection(
        "CONFLICTING_REVISION",
        f"meter {interval.meter_id} interval {interval.interval_start.isoformat()} revision {interval.revision} "
        "was already received with different content; send a higher revision to correct it",
    )


# -- thermostats ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSnapshot:
    """The last accepted state of a thermostat, as remembered between records."""

    observed_at_ms: int
    online: bool
    override: bool
    event_id: str | None

    def to_state(self) -> list:
        return [self.observed_at_ms, self.online, self.override, self.event_id]

    @classmethod
    def from_state(cls, state: list) -> "DeviceSnapshot":
        return cls(*state)


def validate_thermostat_state(state: dict, now: datetime, limits: TelemetryLimits) -> Rejection | None:
    problems: list[Rejection] = []
    for name in ("thermostat_serial", "service_account_id"):
        if not state[name].strip():
            problems.append(Rejection("MISSING_ID", f"{name} is empty"))
    low, high = limits.setpoint_range_f
    setpoint = state["cool_setpoint_f"]
    if setpoint is not None and not low <= setpoint <= high:
        problems.append(Rejection("IMPLAUSIBLE_SETPOINT", f"cool_setpoint_f {setpoint} is outside {low}-{high} °F"))
    low, high = limits.indoor_temp_range_f
    indoor = state["indoor_temp_f"]
    if indoor is not None and not low <= indoor <= high:
        problems.append(Rejection("IMPLAUSIBLE_TEMPERATURE", f"indoor_temp_f {indoor} is outside {low}-{high} °F"))
    observed = state["observed_at"]
    if observed > now + limits.clock_skew:
        problems.append(Rejection("FUTURE_TIMESTAMP", f"observed_at {observed.isoformat()} is after {now.isoformat()}"))
    elif observed < EARLIEST_TIMESTAMP:
        problems.append(Rejection("TIMESTAMP_TOO_OLD", f"observed_at {observed.isoformat()} is before 2000"))
    return _combined(problems) if problems else None


DEVICE_CHANGE_KINDS = ("FIRST_SEEN", "WENT_ONLINE", "WENT_OFFLINE", "OVERRIDE")


def device_changes(previous: DeviceSnapshot | None, state: dict) -> tuple[list[str], DeviceSnapshot | None]:
    """The status changes a new thermostat state brings, and the snapshot to remember.

    Returns no snapshot when the state is older than the one remembered (out of order: ignored).
    """
    observed_ms = int(state["observed_at"].timestamp() * 1000)
    if previous is not None and observed_ms <= previous.observed_at_ms:
        return [], None
    snapshot = DeviceSnapshot(observed_ms, state["online"], state["override"], state["event_id"])
    changes: list[str] = []
    if previous is None:
        changes.append("FIRST_SEEN")
    elif state["online"] != previous.online:
        changes.append("WENT_ONLINE" if state["online"] else "WENT_OFFLINE")
    starts_override = state["override"] and (
        previous is None or not previous.override or previous.event_id != state["event_id"]
    )
    if starts_override:
        changes.append("OVERRIDE")
    return changes, snapshot


def device_status(provider_id: str, state: dict, change: str) -> dict:
    return {
        "provider_id": provider_id,
        "thermostat_serial": state["thermostat_serial"],
        "service_account_id": state["service_account_id"],
        "observed_at": state["observed_at"],
        "change": change,
        "online": state["online"],
        "override": state["override"],
        "event_id": state["event_id"],
        "hvac_mode": state["hvac_mode"],
        "cool_setpoint_f": state["cool_setpoint_f"],
        "indoor_temp_f": state["indoor_temp_f"],
    }


def _combined(problems: list[Rejection]) -> Rejection:
    """One dead-letter reason for every rule broken: the first rule's code, all the sentences."""
    return Rejection(problems[0].reason_code, "; ".join(p.reason for p in problems))
