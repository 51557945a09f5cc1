"""The Green Button sample year through telemetry and the baseline service, checked against the
programs' baselines worked out directly from the XML files.

Six households (the six hourly profiles of 2011) send a month of meter reads in Wh on
``utility.meter-reads.v1``: the real telemetry worker validates them into kWh intervals, the real
baseline worker keeps them, and four invented events end. Every event performance is compared
with a plain implementation of PROGRAMS.md written here (exact fractions, rounded once).

The year is replayed 730 weeks later, as the demo does (demo/greenbutton.py): 2011-08-30 is
2025-08-26, and every day keeps its weekday. The events, in Los Angeles time:

- E1 ohm-hours, Tue 2025-08-26 17:00–20:00: a hot day, the day-of factor clamped up at 1.2 for some;
- E2 Save Power Days, Wed 2025-08-27 14:00–18:00: the accounts in both programs skip August 26;
- E3 Save Power Days, Thu 2025-09-04 14:00–18:00: Labor Day (September 1) and E2's day are skipped;
- E4 ohm-hours, Tue 2025-09-09 17:00–20:00: a cool day, the factor clamped down at 0.8 for some;
  the accounts in both programs also skip E2's and E3's days.

The sample files are not in the repository: they ship with the shared workspace (``../shared``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest

from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE, is_business_day
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DEAD_LETTERS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_PERFORMANCE,
    EVENT_USAGE,
    METER_INTERVALS,
    METER_READS,
)
from scripts.derive_demo_data import PROFILES, read_profile
from tests.integration.conftest import IsolatedSystem, customer_account, records_on, utc, wait_for_records

GREEN_BUTTON = REPO_ROOT.parent / "shared" / "data" / "greenbutton"
REPLAY = timedelta(weeks=730)  # the demo's shift: 2011 → 2025, weekdays kept
FIRST_DAY, LAST_DAY = date(2025, 8, 11), date(2025, 9, 10)  # the replayed days sent (local)
NOW = utc(2025, 9, 11, 19)  # noon on September 11 in Los Angeles: every read has ended, none is 60 days old
SPD, OHM = "sce-save-power-days", "ohm-hours"
PROVIDER = {SPD: "energyhub", OHM: "ohmconnect"}
ENROLLED_FROM = date(2025, 6, 1)

# Each household's programs: two in both, two in Save Power Days only, two in ohm-hours only.
HOUSEHOLDS = {
    "inland_single_family": (SPD, OHM), "inland_multi_family": (SPD, OHM),
    "desert_single_family": (SPD,), "desert_multi_family": (SPD,),
    "coastal_multi_family": (OHM,), "mountain_multi_family": (OHM,),
}


@dataclass(frozen=True)
class Event:
    name: str
    program_id: str
    day: date
    start_hour: int
    end_hour: int

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, self.start_hour, tzinfo=LOCAL_ZONE)

    @property
    def end(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, self.end_hour, tzinfo=LOCAL_ZONE)


EVENTS = (
    Event("E1", OHM, date(2025, 8, 26), 17, 20),
    Event("E2", SPD, date(2025, 8, 27), 14, 18),
    Event("E3", SPD, date(2025, 9, 4), 14, 18),
    Event("E4", OHM, date(2025, 9, 9), 17, 20),
)

# The programs' baseline rules (programs/*.yaml), restated for the oracle.
CANDIDATE_DAYS = {SPD: 5, OHM: 10}
SEARCH_DAYS = 45
RATIO_HOURS_BEFORE, RATIO_BOUNDS = 2, (Fraction(8, 10), Fraction(12, 10))  # ohm-hours only


# -- the sample year, replayed ---------------------------------------------------------------------

def replayed_year() -> dict[str, dict[tuple[date, int], int]]:
    """Per profile: Wh by (replayed local day, local hour), for the days sent."""
    if not GREEN_BUTTON.is_dir():
        pytest.skip("../shared/data/greenbutton is absent: the Green Button sample year ships with the shared "
                    "workspace, not the repo")
    year = {}
    for profile in HOUSEHOLDS:
        hours = {}
        for epoch, wh in read_profile(GREEN_BUTTON / PROFILES[profile]):
            local = datetime.fromtimestamp(epoch, timezone.utc).astimezone(LOCAL_ZONE)
            day = local.date() + REPLAY
            if FIRST_DAY <= day <= LAST_DAY:
                hours[day, local.hour] = wh  # no DST change in the replayed days: one reading per clock hour
        assert len(hours) == 24 * ((LAST_DAY - FIRST_DAY).days + 1), f"{profile}: hours missing from the file"
        year[profile] = hours
    return year


# -- the oracle: PROGRAMS.md, plainly ----------------------------------------------------------------

def kwh(wh: dict[tuple[date, int], int], day: date, first_hour: int, end_hour: int) -> Fraction:
    return Fraction(sum(wh[day, hour] for hour in range(first_hour, end_hour)), 1000)


def to_decimal(value: Fraction) -> Decimal:
    """Nine decimal places, half up (values here are never negative)."""
    scaled = value * 10**9
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    return Decimal(whole + (2 * rest >= scaled.denominator)).scaleb(-9)


def dispatched_days(profile: str) -> set[date]:
    return {event.day for event in EVENTS if event.program_id in HOUSEHOLDS[profile]}


def candidates(event: Event, profile: str) -> list[date]:
    """The most recent weekdays before the event day that are neither tariff holidays nor days
    the household was dispatched, most recent first."""
    found, excluded = [], dispatched_days(profile)
    for back in range(1, SEARCH_DAYS + 1):
        day = event.day - timedelta(days=back)
        if is_business_day(day) and day not in excluded and len(found) < CANDIDATE_DAYS[event.program_id]:
            found.append(day)
    return found


def expected(event: Event, profile: str, wh: dict[tuple[date, int], int]) -> dict:
    days = candidates(event, profile)
    windows = [kwh(wh, day, event.start_hour, event.end_hour) for day in days]
    if event.program_id == SPD:  # CSRL: the average of the three highest of five
        baseline = sum(sorted(windows, reverse=True)[:3]) / 3
        factor = None
    else:  # the average of ten, scaled by the day-of usage in the two hours before the start
        baseline = sum(windows) / len(windows)
        before = event.start_hour - RATIO_HOURS_BEFORE
        usual = sum(kwh(wh, day, before, event.start_hour) for day in days) / len(days)
        factor = min(max(kwh(wh, event.day, before, event.start_hour) / usual, RATIO_BOUNDS[0]), RATIO_BOUNDS[1])
        baseline *= factor
    actual = kwh(wh, event.day, event.start_hour, event.end_hour)
    return {
        "status": "SETTLEABLE", "candidate_days": sorted(days), "baseline_kwh": to_decimal(baseline),
        "actual_kwh": to_decimal(actual), "reduction_kwh": to_decimal(max(baseline - actual, Fraction(0))),
        "factor": factor,
        "hour_before_kwh": to_decimal(kwh(wh, event.day, event.start_hour - 1, event.start_hour)),
        "hour_after_kwh": to_decimal(kwh(wh, event.day, event.end_hour, event.end_hour + 1)),
    }


# -- records ---------------------------------------------------------------------------------------

def meter_reads(account_id: str, wh: dict[tuple[date, int], int]) -> list[tuple[str, str, dict]]:
    """The household's hours as the utility sends them: UTC starts, Wh, read the next morning."""
    reads = []
    for (day, hour), value in sorted(wh.items()):
        start = datetime(day.year, day.month, day.day, hour, tzinfo=LOCAL_ZONE).astimezone(timezone.utc)
        read_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), LOCAL_ZONE) + timedelta(hours=6)
        reads.append((METER_READS, account_id, {
            "service_account_id": account_id, "meter_id": f"M-{account_id}", "interval_start": start,
            "interval_seconds": 3600, "value": Decimal(value), "unit": "WH", "quality": "ACTUAL", "revision": 0,
            "read_at": read_at, "source": "GREEN_BUTTON",
        }))
    return reads


def enrolled(account_id: str, programs: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    state = {
        "service_account_id": account_id, "lockouts": [], "updated_at": utc(2025, 6, 1, 7),
        "enrollments": [{"program_id": program, "provider_id": PROVIDER[program],
                         "thermostat_serial": f"T-{account_id}-{program}", "request_id": f"R-{uuid.uuid4().hex[:8]}",
                         "effective_from": ENROLLED_FROM, "effective_to": None, "end_reason": None}
                        for program in programs],
        "authorizations": [{"authorization_id": f"A-{account_id}", "provider_id": PROVIDER[OHM], "status": "ACTIVE",
                            "requested_at": utc(2025, 5, 20, 17), "reauthorization_required": False}]
        if OHM in programs else [],
    }
    return [(CUSTOMER_ACCOUNTS, account_id, customer_account(account_id)), (ENROLLMENT_STATE, account_id, state)]


def lifecycle(event_id: str, event: Event) -> list[tuple[str, str, dict]]:
    """SCHEDULED the day before, then STARTED and ENDED, as the dispatch service writes them."""
    issued = event.start - timedelta(days=1)
    counted = int((event.end - event.start).total_seconds() * 1000)
    return [(EVENT_LIFECYCLE, event_id, {
        "event_id": event_id, "program_id": event.program_id, "status": status, "revision": 1,
        "request_action": "SCHEDULE" if status == "SCHEDULED" else None, "reason": "GRID_STRESS",
        "start": event.start, "end": event.end, "setpoint_offset_f": 3, "precool": False,
        "targets": [PROVIDER[event.program_id]], "issued_at": issued, "decided_at": issued, "failures": [],
        "counted_ms": counted, "program_year": 2025, "year_used_ms": 0, "year_limit_ms": None, "source_offset": None,
    }) for status in ("SCHEDULED", "STARTED", "ENDED")]


async def records_of(system: IsolatedSystem, topic: str, event_id: str, expect: int, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r.value for r in await system.read(topic, idle_timeout=0.5) if r.value["event_id"] == event_id]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def applied(system: IsolatedSystem) -> float:
    """Intervals the baseline worker has added to its usage."""
    wanted = 'gridflex_baseline_intervals_total{outcome="applied"} '
    return sum(float(line.rsplit(" ", 1)[1]) for line in system.services[1].metrics().splitlines()
               if line.startswith(wanted))


# -- the test --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_year():
    return replayed_year()


@pytest.fixture(scope="module")
async def pipeline(sample_year, running_stack):
    system = IsolatedSystem("baseline-greenbutton", ())
    await system.create_topics()
    await system.tick(NOW)
    system.service("telemetry").start()
    system.service("baseline").start()
    yield system
    system.stop()


async def test_the_sample_year_settles_every_event_as_the_programs_compute_it(pipeline, sample_year):
    accounts = {profile: f"SA-{profile.replace('_', '-')}-{uuid.uuid4().hex[:6]}" for profile in HOUSEHOLDS}
    event_ids = {event.name: f"EV-{event.name}-{uuid.uuid4().hex[:8]}" for event in EVENTS}
    oracle = {(event.name, profile): expected(event, profile, sample_year[profile])
              for event in EVENTS for profile in HOUSEHOLDS if event.program_id in HOUSEHOLDS[profile]}
    # The scenario reaches what the methods do at their edges: the day-of factor clamped up, clamped
    # down and free, and a household that used more than its baseline.
    factors = {result["factor"] for result in oracle.values() if result["factor"] is not None}
    assert {*RATIO_BOUNDS} <= factors and factors - {*RATIO_BOUNDS}
    assert any(result["reduction_kwh"] == 0 for result in oracle.values())

    # The households enroll; then a month of their meter reads arrives.
    await pipeline.publish(*[record for profile, programs in HOUSEHOLDS.items()
                             for record in enrolled(accounts[profile], programs)])
    reads = [read for profile in HOUSEHOLDS for read in meter_reads(accounts[profile], sample_year[profile])]
    await pipeline.publish(*reads)

    # Telemetry passes every read, and the baseline worker has them all before any event ends
    # (the clock is past the early events' data deadlines: a gap would settle them at once).
    await wait_for_records(pipeline, METER_INTERVALS, len(reads), timeout=60)
    assert await records_on(pipeline.settings, METER_INTERVALS) == len(reads)
    deadline = time.monotonic() + 60
    while applied(pipeline) < len(reads) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert applied(pipeline) == len(reads)

    # The events end one after the other, as they would: each is settled before the next is
    # scheduled, so every earlier event is known when a look-back is taken.
    results, hours = {}, {}
    for event in EVENTS:
        taking_part = [profile for profile in HOUSEHOLDS if event.program_id in HOUSEHOLDS[profile]]
        await pipeline.publish(*lifecycle(event_ids[event.name], event))
        for record in await records_of(pipeline, EVENT_PERFORMANCE, event_ids[event.name], len(taking_part)):
            results[event.name, record["service_account_id"]] = record
        for record in await records_of(pipeline, EVENT_USAGE, event_ids[event.name], len(taking_part)):
            hours[event.name, record["service_account_id"]] = record

    # Each event reached exactly its program's households, once, with the file's figures.
    assert sorted(results) == sorted((name, accounts[profile]) for name, profile in oracle)
    for (name, profile), want in oracle.items():
        got = results[name, accounts[profile]]
        event = next(event for event in EVENTS if event.name == name)
        assert got["revision"] == 0 and got["program_id"] == event.program_id
        assert got["method"] == ("csrl-3-of-5" if event.program_id == SPD else "average-10-of-10")
        assert {field: got[field] for field in ("status", "candidate_days", "baseline_kwh", "actual_kwh",
                                                "reduction_kwh")} == {
            field: want[field] for field in ("status", "candidate_days", "baseline_kwh", "actual_kwh",
                                             "reduction_kwh")}, f"{name} {profile}"
        usage = hours[name, accounts[profile]]
        assert (usage["hour_before_kwh"], usage["hour_after_kwh"]) == (want["hour_before_kwh"],
                                                                       want["hour_after_kwh"]), f"{name} {profile}"

    # Nothing was refused on the way.
    assert not await pipeline.read(DEAD_LETTERS, idle_timeout=0.5)
