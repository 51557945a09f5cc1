"""The dispatch service against the real broker and Postgres: events judged against program
limits, fanned out to exactly the right thermostats, acknowledged, started and ended on time.

One dispatch worker serves the module on its own topics; the simulated clock only moves forward,
so each test uses its own events on its own days and its own accounts. The crash test runs on a
system of its own.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from gridflex.topics import CUSTOMER_ACCOUNTS, DEAD_LETTERS, ENERGY_EVENTS, ENROLLMENT_STATE, EVENT_LIFECYCLE
from tests.integration.conftest import IsolatedSystem, customer_account, new_id, utc

NOW = utc(2025, 7, 14, 16)  # Monday July 14, 2025, 09:00 in Los Angeles
PROVIDERS = ("energyhub", "resideo")


@pytest.fixture(scope="module")
async def dispatch(running_stack):
    system = IsolatedSystem("dispatch", PROVIDERS)
    await system.create_topics()
    await system.tick(NOW)
    system.service("dispatch").start()
    yield system
    system.stop()


def event_request(event_id: str, start: datetime, hours: float, *, action: str = "SCHEDULE",
                  program_id: str = "sce-sep-2025", issued_at: datetime = NOW, **fields) -> dict:
    base = {
        "event_id": event_id, "program_id": program_id, "action": action, "reason": "GRID_STRESS",
        "start": start, "end": start + timedelta(hours=hours), "issued_at": issued_at, "setpoint_offset_f": 4,
        "precool": False, "targets": [],
    }
    return {**base, **fields}


def period(provider: str, serial: str, effective_from: date, effective_to: date | None = None,
           program_id: str = "sce-sep-2025") -> dict:
    return {"program_id": program_id, "provider_id": provider, "thermostat_serial": serial,
            "request_id": new_id("R"), "effective_from": effective_from, "effective_to": effective_to,
            "end_reason": "DISENROLLED" if effective_to else None}


def account_state(account_id: str, *periods: dict) -> dict:
    return {"service_account_id": account_id, "enrollments": list(periods), "lockouts": [], "authorizations": [],
            "updated_at": NOW}


async def schedule(system: IsolatedSystem, *requests: dict) -> None:
    await system.publish(*((ENERGY_EVENTS, request["event_id"], request) for request in requests))


async def enroll(system: IsolatedSystem, account_id: str, *periods: dict, rate: str = "D") -> None:
    await system.publish((CUSTOMER_ACCOUNTS, account_id, customer_account(account_id, rate_schedule=rate)),
                  (ENROLLMENT_STATE, account_id, account_state(account_id, *periods)))


async def steps_of(system: IsolatedSystem, event_ids: set[str], expect: int, timeout: float = 30.0) -> list[dict]:
    """The lifecycle records of these events, once ``expect`` are there (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.value for r in await system.read(EVENT_LIFECYCLE, idle_timeout=0.5)
                 if r.value["event_id"] in event_ids]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def instructions_of(system: IsolatedSystem, event_id: str, expect: int, timeout: float = 30.0) -> list[tuple]:
    """(provider, action, serial, record) of every instruction of an event, once ``expect`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [(provider, r.value["action"], r.value["thermostat_serial"], r.value)
                 for provider in PROVIDERS
                 for r in await system.read(f"partner.{provider}.dispatch.v1", idle_timeout=0.3)
                 if r.value["event_id"] == event_id]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def by_action(instructions: list[tuple], action: str) -> set[tuple[str, str]]:
    return {(provider, serial) for provider, kind, serial, _ in instructions if kind == action}


async def test_requests_are_accepted_or_rejected_with_every_broken_rule_and_duplicates_change_nothing(dispatch):
    day = utc(2025, 7, 15, 19)  # Tuesday 12:00 in Los Angeles
    first, second, spd, ghost = new_id("EV"), new_id("EV"), new_id("EV"), new_id("EV")
    accepted = event_request(first, day, 3)
    await schedule(dispatch, accepted, accepted)  # a re-delivery is decided once
    await schedule(
        dispatch,
        event_request(second, day + timedelta(hours=3), 4),  # 3 h + 4 h on one day: over the 6 h limit
        event_request(spd, utc(2025, 7, 19, 16), 5, program_id="sce-save-power-days", setpoint_offset_f=5),
        event_request(ghost, day, 1, action="UPDATE"),
    )
    steps = {step["event_id"]: step for step in await steps_of(dispatch, {first, second, spd, ghost}, 4)}
    assert (steps[first]["status"], steps[first]["revision"], steps[first]["counted_ms"]) == ("SCHEDULED", 1, 3 * 3_600_000)
    assert [f["code"] for f in steps[second]["failures"]] == ["DAY_LIMIT"]
    assert "2025-07-15 already has 3 h" in steps[second]["failures"][0]["message"]
    # Save Power Days: 09:00-14:00 on a Saturday, 5 h at +5 °F breaks four rules at once.
    assert {f["code"] for f in steps[spd]["failures"]} == {"SETPOINT_OFFSET", "DURATION", "OUTSIDE_WINDOW",
                                                          "DAY_LIMIT"}
    assert [f["code"] for f in steps[ghost]["failures"]] == ["UNKNOWN_EVENT"]
    assert all(steps[e]["status"] == "REJECTED" for e in (second, spd, ghost))
    await asyncio.sleep(1.5)
    assert len(await steps_of(dispatch, {first}, 1)) == 1, "the re-delivered SCHEDULE was decided twice"

    # Giving hours back: shortening the first event to 1 h lets a 5 h event fit the same day.
    await schedule(dispatch, event_request(first, day, 1, action="UPDATE"),
                   event_request(second, day + timedelta(hours=1), 5))
    later = await steps_of(dispatch, {first, second}, 4)
    assert [(s["status"], s["revision"]) for s in later if s["event_id"] == first] == [("SCHEDULED", 1), ("UPDATED", 2)]
    assert [s["status"] for s in later if s["event_id"] == second] == ["REJECTED", "SCHEDULED"]

    # The operator's view, from the projection: hours per program and the event's steps.
    deadline = time.monotonic() + 30
    while True:
        code, out, _ = await dispatch.command("events", "show", second)
        if code == 0 and "SCHEDULED" in out or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert "REJECTED" in out and "DAY_LIMIT: sce-sep-2025 allows 6 h of events per day" in out
    code, out, _ = await dispatch.command("events", "hours", "--year", "2025")
    assert code == 0
    used = later[-1]["year_used_ms"] / 3_600_000
    row = re.search(r"^sce-sep-2025\s+2025\s+(\S+)\s+180\s+(\S+)$", out, re.MULTILINE)
    assert row and float(row[1]) == used and float(row[2]) == 180 - used, out


async def test_an_event_reaches_exactly_the_thermostats_in_effect_and_updates_and_cancels_reach_the_same(dispatch):
    event_day = date(2025, 7, 17)  # Thursday
    tou, plain, gone, future, other = (new_id("SA") for _ in range(5))
    t = {name: new_id("T") for name in ("tou", "plain1", "plain2", "gone", "future", "other")}
    await enroll(dispatch, tou, period("energyhub", t["tou"], date(2025, 7, 1)), rate="TOU-D")
    await enroll(dispatch, plain, period("resideo", t["plain1"], date(2025, 7, 1)),
                 period("resideo", t["plain2"], date(2025, 7, 2)))
    await enroll(dispatch, gone, period("energyhub", t["gone"], date(2025, 6, 1), effective_to=event_day))
    await enroll(dispatch, future, period("energyhub", t["future"], date(2025, 7, 18)))
    await enroll(dispatch, other, period("energyhub", t["other"], date(2025, 7, 1), program_id="sce-sep-legacy"))
    await asyncio.sleep(2)  # the fan-out's state has the accounts

    event_id = new_id("EV")
    start = utc(2025, 7, 18, 0)  # 17:00 in Los Angeles: the precool hour is on-peak
    await schedule(dispatch, event_request(event_id, start, 2, precool=True))
    sent = await instructions_of(dispatch, event_id, 3)
    expected = {("energyhub", t["tou"]), ("resideo", t["plain1"]), ("resideo", t["plain2"])}
    assert by_action(sent, "SCHEDULE") == expected and len(sent) == 3
    precool = {serial: (record["precool_start"], record["precool_offset_f"]) for _, _, serial, record in sent}
    assert precool[t["tou"]] == (None, 0), "a TOU account is never precooled on-peak"
    assert precool[t["plain1"]] == (start - timedelta(hours=1), -2)

    # The second resideo thermostat leaves before the event: it alone is told to stand down. A
    # thermostat enrolled after the SCHEDULE is not added.
    late = new_id("SA")
    await enroll(dispatch, late, period("energyhub", new_id("T"), date(2025, 7, 16)))
    await dispatch.publish((ENROLLMENT_STATE, plain, account_state(
        plain, period("resideo", t["plain1"], date(2025, 7, 1)),
        period("resideo", t["plain2"], date(2025, 7, 2), effective_to=event_day))))
    sent = await instructions_of(dispatch, event_id, 4)
    assert by_action(sent, "CANCEL") == {("resideo", t["plain2"])}

    await schedule(dispatch, event_request(event_id, start, 1.5, action="UPDATE", precool=True))
    sent = await instructions_of(dispatch, event_id, 6)
    assert by_action(sent, "UPDATE") == expected - {("resideo", t["plain2"])}
    assert {record["end"] for _, kind, _, record in sent if kind == "UPDATE"} == {start + timedelta(hours=1.5)}
    await schedule(dispatch, event_request(event_id, start, 1.5, action="CANCEL"))
    sent = await instructions_of(dispatch, event_id, 8)
    assert by_action(sent, "CANCEL") == expected
    assert Counter(kind for _, kind, _, _ in sent) == {"SCHEDULE": 3, "UPDATE": 2, "CANCEL": 3}

    # Targets: only the named provider's thermostats.
    targeted = new_id("EV")
    await schedule(dispatch, event_request(targeted, utc(2025, 7, 18, 20), 1, targets=["resideo"]))
    assert by_action(await instructions_of(dispatch, targeted, 1), "SCHEDULE") == {("resideo", t["plain1"])}


async def test_acknowledgments_give_coverage_and_the_silent_thermostats_are_listed_at_the_start(dispatch):
    accounts = {provider: new_id("SA") for provider in PROVIDERS}
    serials = {"energyhub": [new_id("T")], "resideo": [new_id("T"), new_id("T")]}
    for provider, account in accounts.items():
        await enroll(dispatch, account, *(period(provider, s, date(2025, 7, 1)) for s in serials[provider]))
    await asyncio.sleep(2)
    event_id = new_id("EV")
    start = utc(2025, 7, 21, 20)  # Monday 13:00 in Los Angeles
    await schedule(dispatch, event_request(event_id, start, 1))
    await asyncio.sleep(2)
    # Every thermostat of the program in effect that day: these and the other tests' ones.
    reached = by_action(await instructions_of(dispatch, event_id, 3), "SCHEDULE")
    assert {("energyhub", serials["energyhub"][0])} | {("resideo", s) for s in serials["resideo"]} <= reached
    acked, opted_out = serials["energyhub"][0], serials["resideo"][0]
    await dispatch.publish(
        ("partner.energyhub.dispatch-acks.v1", acked,
         {"event_id": event_id, "thermostat_serial": acked, "status": "ACCEPTED", "at": NOW}),
        ("partner.resideo.dispatch-acks.v1", opted_out,
         {"event_id": event_id, "thermostat_serial": opted_out, "status": "OPTED_OUT", "at": NOW}),
        # A provider cannot answer for another's thermostat: this names resideo's own (unknown) one.
        ("partner.resideo.dispatch-acks.v1", acked,
         {"event_id": event_id, "thermostat_serial": acked, "status": "REJECTED", "at": NOW}),
    )
    await dispatch.tick(start + timedelta(seconds=1))
    assert [s["status"] for s in await steps_of(dispatch, {event_id}, 2)] == ["SCHEDULED", "STARTED"]

    per_provider = Counter(provider for provider, _ in reached)
    expected = {"energyhub": str(1 / per_provider["energyhub"]), "resideo": str(1 / per_provider["resideo"])}
    deadline = time.monotonic() + 30
    while True:
        metrics = dispatch.services[0].metrics()
        coverage = dict(re.findall(
            rf'gridflex_dispatch_ack_coverage_ratio{{event_id="{event_id}",provider="(\w+)"}} (\S+)', metrics))
        silent_at_start = dict(re.findall(
            rf'gridflex_dispatch_unacknowledged_at_start{{event_id="{event_id}",provider="(\w+)"}} (\S+)', metrics))
        if (coverage == expected and silent_at_start) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert coverage == expected
    assert silent_at_start == {provider: f"{count - 1}.0" for provider, count in per_provider.items()}
    code, out, _ = await dispatch.command("events", "unacknowledged", event_id)
    listed = {tuple(line.split("\t")[:2]) for line in out.splitlines()}
    assert code == 0 and listed == reached - {("energyhub", acked), ("resideo", opted_out)}
    assert ("resideo", serials["resideo"][1]) in listed


async def test_bad_event_records_are_dead_lettered_with_their_reason(dispatch):
    event_id = new_id("EV")
    async with dispatch.producer() as producer:
        await producer.send_bytes(ENERGY_EVENTS, event_id.encode(), b"not avro")
        await producer.send(ENERGY_EVENTS, "some-other-key", event_request(event_id, utc(2025, 7, 22, 20), 1))
    deadline = time.monotonic() + 30
    while True:
        letters = [r.value for r in await dispatch.read(DEAD_LETTERS, idle_timeout=0.5)
                   if r.value["service"] == "dispatch" and r.value["source_topic"].startswith(ENERGY_EVENTS)]
        if len(letters) >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert sorted(letter["reason_code"] for letter in letters) == ["KEY_MISMATCH", "UNDECODABLE"]


async def test_a_worker_down_at_the_start_emits_started_and_ended_once_when_it_is_back(isolated_system_factory):
    system = isolated_system_factory("dispatch-crash", PROVIDERS)
    await system.create_topics()
    await system.tick(NOW)
    serials = [new_id("T") for _ in range(40)]
    for index, serial in enumerate(serials):
        account = f"SA-crash-{index}"
        await enroll(system, account, period(PROVIDERS[index % 2], serial, date(2025, 7, 1)))
    worker = system.service("dispatch").start()
    event_id = new_id("EV")
    start = NOW + timedelta(hours=2)
    await schedule(system, event_request(event_id, start, 1))
    assert len(await instructions_of(system, event_id, len(serials))) >= len(serials)
    worker.kill()

    await system.tick(start + timedelta(hours=3))  # the start and the end pass while it is down
    worker.start()
    steps = await steps_of(system, {event_id}, 3)
    await asyncio.sleep(2)
    steps = await steps_of(system, {event_id}, 3)
    assert [s["status"] for s in steps] == ["SCHEDULED", "STARTED", "ENDED"]
    sent = await instructions_of(system, event_id, len(serials))
    assert {serial for _, _, serial, _ in sent} == set(serials)
    # At-least-once: an instruction sent again after the crash is the same record.
    assert len({(serial, repr(record)) for _, _, serial, record in sent}) == len(serials)
