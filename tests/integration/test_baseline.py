"""The baseline service against the real broker: event performance computed as soon as the usage
it needs has arrived, waiting visibly while it has not, settled as INSUFFICIENT_DATA at the data
deadline, revised by a meter revision that changes a result and not by one that does not.

One baseline worker, simulated time. The usage is hand-made so every figure is worked out here:
Save Power Days event on Wednesday 2025-07-16, 14:00–18:00 in Los Angeles; the CSRL candidate
days are July 15, 14, 11, 10 and 9 (weekdays, no holiday, no earlier event).
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from gridflex.calendar import LOCAL_ZONE, local_day_bounds
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DEAD_LETTERS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_PERFORMANCE,
    EVENT_USAGE,
    METER_INTERVALS,
)
from tests.integration.conftest import (
    IsolatedSystem,
    crash_mid_stream,
    customer_account,
    new_id,
    utc,
    wait_for_records,
)

PROGRAM = "sce-save-power-days"
EVENT_DAY = date(2025, 7, 16)
START = datetime(2025, 7, 16, 14, tzinfo=LOCAL_ZONE)
END = START + timedelta(hours=4)
AFTER_EVENT = utc(2025, 7, 17, 3)  # 20:00 on the event day in Los Angeles
PAST_DEADLINE = utc(2025, 7, 24, 2)  # the event ended 2025-07-17T01:00Z; 7 days later, plus an hour
WINDOW_CLOSED = utc(2025, 9, 15, 2)  # 60 days after the end, plus an hour
# kWh per event hour (14:00–18:00) on each candidate day; every other hour uses 0.5 kWh.
EVENT_HOURS_KWH = {date(2025, 7, 9): "2.0", date(2025, 7, 10): "2.5", date(2025, 7, 11): "1.0",
                   date(2025, 7, 14): "3.0", date(2025, 7, 15): "1.5", EVENT_DAY: "1.0"}
# Window sums 8, 10, 4, 12, 6: the three highest are 12, 10 and 8, so the CSRL is 10 kWh; the
# event used 4 kWh, a reduction of 6.


@pytest.fixture(scope="module")
async def baseline(running_stack):
    system = IsolatedSystem("baseline", ())
    await system.create_topics()
    await system.tick(AFTER_EVENT)
    system.service("baseline").start()
    yield system
    system.stop()


def interval(account_id: str, start: datetime, kwh: str, *, revision: int = 0) -> dict:
    return {
        "service_account_id": account_id, "meter_id": f"M-{account_id}", "interval_start": start,
        "interval_seconds": 3600, "local_date": start.astimezone(LOCAL_ZONE).date(),
        "kwh": Decimal(kwh).quantize(Decimal("0.000000001")), "quality": "ACTUAL", "revision": revision,
        "supersedes_revision": revision - 1 if revision else None, "read_at": AFTER_EVENT,
    }


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=LOCAL_ZONE)


def day_usage(account_id: str, day: date, *, skip: set[int] = frozenset()) -> list[tuple[str, str, dict]]:
    """A local day of hourly intervals (EVENT_HOURS_KWH in the event hours, else 0.5 kWh)."""
    first, last = local_day_bounds(day)
    records, start = [], first
    while start < last:
        hour = start.astimezone(LOCAL_ZONE).hour
        kwh = EVENT_HOURS_KWH.get(day, "0.5") if 14 <= hour < 18 else "0.5"
        if hour not in skip:
            records.append((METER_INTERVALS, account_id, interval(account_id, start, kwh)))
        start += timedelta(hours=1)
    return records


def history(account_id: str, *, missing: dict[date, set[int]] | None = None) -> list[tuple[str, str, dict]]:
    """July 1–15: every day before the event day."""
    missing = missing or {}
    return [record for offset in range(15) for record in
            day_usage(account_id, date(2025, 7, 1) + timedelta(days=offset),
                      skip=missing.get(date(2025, 7, 1) + timedelta(days=offset), set()))]


def enrolled(account_id: str, **facts) -> list[tuple[str, str, dict]]:
    state = {"service_account_id": account_id, "lockouts": [], "authorizations": [], "updated_at": AFTER_EVENT,
             "enrollments": [{"program_id": PROGRAM, "provider_id": "energyhub", "thermostat_serial": f"T-{account_id}",
                              "request_id": new_id("R"), "effective_from": date(2025, 6, 1), "effective_to": None,
                              "end_reason": None}]}
    return [(CUSTOMER_ACCOUNTS, account_id, customer_account(account_id, **facts)),
            (ENROLLMENT_STATE, account_id, state)]


def lifecycle(event_id: str, status: str, *, start: datetime = START, end: datetime = END) -> tuple[str, str, dict]:
    return (EVENT_LIFECYCLE, event_id, {
        "event_id": event_id, "program_id": PROGRAM, "status": status, "revision": 1,
        "request_action": "SCHEDULE" if status == "SCHEDULED" else None, "reason": "GRID_STRESS",
        "start": start, "end": end, "setpoint_offset_f": 3, "precool": False, "targets": [],
        "issued_at": utc(2025, 7, 15, 16), "decided_at": utc(2025, 7, 15, 16), "failures": [],
        "counted_ms": int((end - start).total_seconds() * 1000), "program_year": 2025, "year_used_ms": 0,
        "year_limit_ms": None, "source_offset": None,
    })


async def results_of(system: IsolatedSystem, event_id: str, expect: int, topic: str = EVENT_PERFORMANCE,
                     timeout: float = 30.0) -> list[dict]:
    """Every record of the event on ``topic``, once ``expect`` are there (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.value for r in await system.read(topic, idle_timeout=0.5) if r.value["event_id"] == event_id]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def metric(system: IsolatedSystem, name: str, **labels: str) -> float:
    wanted = name + ("{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}" if labels else "")
    values = [float(line.rsplit(" ", 1)[1]) for line in system.services[0].metrics().splitlines()
              if line.startswith(wanted + " ")]
    return sum(values)


async def until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.3)


async def test_late_data_deadline_and_revisions(baseline):
    event_id = new_id("EV")
    late, gappy, nem, stranger = (new_id("SA") for _ in range(4))
    await baseline.publish(
        *enrolled(late), *enrolled(gappy), *enrolled(nem, net_metering_since=date(2025, 7, 12)),
        (CUSTOMER_ACCOUNTS, stranger, customer_account(stranger)),
        *history(late), *history(gappy, missing={date(2025, 7, 10): {15}}), *history(nem), *history(stranger),
        *day_usage(nem, EVENT_DAY),
    )
    await baseline.publish(lifecycle(event_id, "SCHEDULED"), lifecycle(event_id, "STARTED"),
                           lifecycle(event_id, "ENDED"))

    # Net metering from July 12, inside the look-back (July 9 to 16): ineligible at once. The
    # two others wait for the event day's usage, visibly; the account not enrolled gets nothing.
    [ineligible] = await results_of(baseline, event_id, 1)
    assert ineligible["service_account_id"] == nem and ineligible["status"] == "INELIGIBLE"
    assert ineligible["reason"].startswith("NET_METERING_ACTIVATED") and ineligible["baseline_kwh"] is None
    await until(lambda: metric(baseline, "gridflex_baseline_accounts_awaiting_data", event_id=event_id) == 2)
    assert metric(baseline, "gridflex_baseline_accounts_awaiting_data", event_id=event_id) == 2
    assert metric(baseline, "gridflex_baseline_events_awaiting_data") >= 1

    # The event day's usage arrives late: the complete account is settled, the other still waits
    # for July 10, 15:00.
    await baseline.publish(*day_usage(late, EVENT_DAY), *day_usage(gappy, EVENT_DAY))
    results = await results_of(baseline, event_id, 2)
    [settled] = [r for r in results if r["service_account_id"] == late]
    assert settled["status"] == "SETTLEABLE" and settled["revision"] == 0 and settled["method"] == "csrl-3-of-5"
    assert (settled["baseline_kwh"], settled["actual_kwh"], settled["reduction_kwh"]) == (
        Decimal("10.000000000"), Decimal("4.000000000"), Decimal("6.000000000"))
    assert settled["candidate_days"] == [date(2025, 7, 9), date(2025, 7, 10), date(2025, 7, 11),
                                         date(2025, 7, 14), date(2025, 7, 15)]
    # The hour before and after the event, for the minimum-usage rule: of every account with a result.
    hours = {r["service_account_id"]: r for r in await results_of(baseline, event_id, 2, topic=EVENT_USAGE)}
    assert set(hours) == {late, nem}
    assert (hours[late]["hour_before_kwh"], hours[late]["hour_after_kwh"]) == (Decimal("0.500000000"),
                                                                               Decimal("0.500000000"))
    await until(lambda: metric(baseline, "gridflex_baseline_accounts_awaiting_data", event_id=event_id) == 1)

    # Revisions that change nothing: an hour outside the event's, and the lowest day staying lowest.
    unchanged_before = metric(baseline, "gridflex_baseline_unchanged_results_total")
    await baseline.publish((METER_INTERVALS, late, interval(late, at(date(2025, 7, 9), 3), "0.9", revision=1)),
                           (METER_INTERVALS, late, interval(late, at(date(2025, 7, 11), 15), "1.5", revision=1)))
    await until(lambda: metric(baseline, "gridflex_baseline_unchanged_results_total") >= unchanged_before + 1)
    # A revision that changes the result: July 14, 15:00 becomes 6 kWh, so that day sums to 15
    # and the CSRL becomes (15 + 10 + 8) / 3 = 11.
    await baseline.publish((METER_INTERVALS, late, interval(late, at(date(2025, 7, 14), 15), "6.0", revision=1)))
    results = await results_of(baseline, event_id, 3)
    revised = [r for r in results if r["service_account_id"] == late]
    assert [r["revision"] for r in revised] == [0, 1]
    assert (revised[1]["baseline_kwh"], revised[1]["reduction_kwh"]) == (Decimal("11.000000000"), Decimal("7.000000000"))

    # Past the data deadline, the account missing July 10, 15:00 is settled as INSUFFICIENT_DATA,
    # saying what is missing; the interval arriving later, inside the settlement window, revises it.
    await baseline.tick(PAST_DEADLINE)
    results = await results_of(baseline, event_id, 4)
    [insufficient] = [r for r in results if r["service_account_id"] == gappy]
    assert insufficient["status"] == "INSUFFICIENT_DATA" and insufficient["revision"] == 0
    assert "2025-07-10 14:00–18:00: 1 of 4 intervals" in insufficient["reason"]
    await until(lambda: metric(baseline, "gridflex_baseline_accounts_awaiting_data", event_id=event_id) == 0)
    await baseline.publish((METER_INTERVALS, gappy, interval(gappy, at(date(2025, 7, 10), 15), "2.5")))
    results = await results_of(baseline, event_id, 5)
    [_, completed] = [r for r in results if r["service_account_id"] == gappy]
    assert completed["status"] == "SETTLEABLE" and completed["revision"] == 1
    assert completed["baseline_kwh"] == Decimal("10.000000000")

    # Once the settlement window has closed, a revision changes nothing.
    await baseline.tick(WINDOW_CLOSED)
    applied = metric(baseline, "gridflex_baseline_intervals_total", outcome="applied")
    await asyncio.sleep(2)  # the worker sees the new time on its next idle batch
    await baseline.publish((METER_INTERVALS, late, interval(late, at(date(2025, 7, 15), 15), "9.0", revision=1)))
    await until(lambda: metric(baseline, "gridflex_baseline_intervals_total", outcome="applied") > applied)
    assert len(await results_of(baseline, event_id, 6, timeout=3)) == 5

    # Nothing was refused on the way.
    assert not [r for r in await baseline.read(DEAD_LETTERS, idle_timeout=0.5)]


async def test_a_crash_while_results_stream_neither_loses_nor_changes_a_result(running_stack):
    """Usage of the look-back is in; the event day's arrives after the event ended, in chunks,
    and the worker is killed at its first result, mid-stream. Restarted, it gives every account
    exactly one result: a record re-sent after the crash is the same record (revision 0)."""
    system = IsolatedSystem("baseline-crash", ())
    await system.create_topics()
    await system.tick(AFTER_EVENT)
    try:
        event_id = new_id("EV")
        accounts = [f"SA-{index:05d}" for index in range(1500)]
        candidates = [date(2025, 7, 9), date(2025, 7, 10), date(2025, 7, 11), date(2025, 7, 14), date(2025, 7, 15)]

        def window(account_id: str, day: date) -> list[tuple[str, str, dict]]:
            return [(METER_INTERVALS, account_id, interval(account_id, at(day, hour), EVENT_HOURS_KWH[day]))
                    for hour in range(14, 18)]

        await system.publish(*(record for account_id in accounts for record in (
            *enrolled(account_id), *(r for day in candidates for r in window(account_id, day)))))
        await system.publish(lifecycle(event_id, "SCHEDULED"), lifecycle(event_id, "ENDED"))
        worker = system.service("baseline", GRIDFLEX_BASELINE_SWEEP_SLICE="100")
        event_day = [record for account_id in accounts for record in window(account_id, EVENT_DAY)]
        before = await crash_mid_stream(system, worker, event_day, EVENT_PERFORMANCE, chunk=600)
        assert 0 < before < len(accounts)
        worker.start()
        await wait_for_records(system, EVENT_PERFORMANCE, len(accounts))
        results = [r.value for r in await system.read(EVENT_PERFORMANCE, idle_timeout=1.0)]
        by_account: dict[str, set] = {}
        for result in results:
            by_account.setdefault(result["service_account_id"], set()).add(
                (result["revision"], result["status"], result["baseline_kwh"], result["reduction_kwh"]))
        assert set(by_account) == set(accounts)
        assert all(outcomes == {(0, "SETTLEABLE", Decimal("10.000000000"), Decimal("6.000000000"))}
                   for outcomes in by_account.values())
    finally:
        system.stop()
