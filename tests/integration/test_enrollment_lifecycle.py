"""An enrollment's life against the real broker and Postgres, through a real `enrollment` worker:
data-sharing authorizations (ohm-hours), the HTTP API end to end, removal for a thermostat
offline 30 days, the annual review's lock-out, and a SIGKILL while thousands of requests and
bonuses are decided.

One worker serves most of this module on its own topics; its simulated clock only moves forward,
so each test starts later than the one before it (the dates say when). The annual review and the
crash each get a worker of their own: the review moves the clock on to 2027 and the crash kills
its worker. Every test uses its own service accounts, thermostats and request ids.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable

import aiohttp
import pytest

from gridflex import REPO_ROOT
from gridflex.processes import ServiceProcess
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DATA_SHARING_AUTHORIZATIONS,
    DEAD_LETTERS,
    DEVICE_STATUS,
    ENROLLMENT_DECISIONS,
    ENROLLMENT_REQUESTS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_USAGE,
    INCENTIVES,
    REMOVAL_FINDINGS,
)
from services.enrollment.projection import Database
from tests.integration.conftest import IsolatedSystem, crash_mid_stream, customer_account, new_id, utc

NOW = utc(2025, 7, 1, 17)  # Tuesday July 1, 2025, 10:00 in Los Angeles
PROVIDERS = ("energyhub", "resideo", "ohmconnect")
SEP = "sce-sep-2025"
OHM = "ohm-hours"
SETTLE_S = 2.0  # time for a pipeline to take in what was just published (no output tells when)
CLOCK_GAUGE = re.compile(r'^gridflex_clock_now_seconds\{service="enrollment"\} (\S+)$', re.M)


# -- the worker -------------------------------------------------------------------------------


@dataclass
class Worker:
    system: IsolatedSystem
    process: ServiceProcess
    tokens: dict[str, str]

    async def advance(self, now: datetime) -> None:
        """Tick the simulated clock and wait until the worker has read the tick, so that input
        stamped with the new time is never taken for input from the future."""
        await self.system.tick(now)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = CLOCK_GAUGE.search(await asyncio.to_thread(self.process.metrics))
            if match and float(match.group(1)) >= now.timestamp():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the enrollment worker did not read the tick {now.isoformat()} within 30 s")

    async def call(self, method: str, path: str, provider: str, **options) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.tokens[provider]}"}
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"http://127.0.0.1:{self.process.web_port}{path}",
                                       headers=headers, **options) as response:
                return response.status, await response.json(content_type=None)


async def start_worker(system: IsolatedSystem, start: datetime, **env: str) -> Worker:
    await system.create_topics()
    await system.tick(start)
    database = Database(system.settings.database_url)
    tokens = {provider: await database.mint_credential(provider) for provider in system.providers}
    await database.close()
    return Worker(system, system.service("enrollment", **env).start(), tokens)


@pytest.fixture(scope="module")
async def lifecycle(running_stack):
    system = IsolatedSystem("enrollment-lifecycle", PROVIDERS)
    worker = await start_worker(system, NOW)
    yield worker
    system.stop()


# -- records ----------------------------------------------------------------------------------




def enrollment_request(account_id: str, requested_at: datetime, serial: str, program_id: str = SEP,
                       **fields) -> dict:
    base = {
        "request_id": new_id("R"), "program_id": program_id, "action": "ENROLL", "service_account_id": account_id,
        "thermostat_serial": serial, "thermostat_model": "T10", "controls_central_ac": True,
        "thermostat_source": "RETAIL", "requested_at": requested_at,
    }
    return {**base, **fields}


def authorization(account_id: str, authorization_id: str, status: str, requested_at: datetime,
                  updated_at: datetime, information: dict | None = None) -> dict:
    return {
        "authorization_id": authorization_id, "service_account_id": account_id, "status": status,
        "requested_at": requested_at, "updated_at": updated_at, "scopes": ["METER", "INTERVAL_USAGE"],
        "customer_information": information or {},
    }


def device_status(account_id: str, serial: str, provider: str, change: str, observed_at: datetime,
                  event_id: str | None = None) -> dict:
    return {
        "provider_id": provider, "thermostat_serial": serial, "service_account_id": account_id,
        "observed_at": observed_at, "change": change, "online": change != "WENT_OFFLINE",
        "override": change == "OVERRIDE", "event_id": event_id, "hvac_mode": "COOL",
        "cool_setpoint_f": 76.0, "indoor_temp_f": 78.5,
    }


def dispatched(event_id: str, start: datetime, end: datetime, targets: list[str], status: str = "SCHEDULED",
               revision: int = 1) -> dict:
    """A step of an event's lifecycle, as the dispatch service publishes it."""
    return {
        "event_id": event_id, "program_id": SEP, "status": status, "revision": revision,
        "request_action": {"SCHEDULED": "SCHEDULE", "UPDATED": "UPDATE", "CANCELLED": "CANCEL"}[status],
        "reason": "GRID_STRESS", "start": start, "end": end, "setpoint_offset_f": 4, "precool": False,
        "targets": targets, "issued_at": start - timedelta(days=1), "decided_at": start - timedelta(days=1),
        "failures": [], "counted_ms": 0 if status == "CANCELLED" else (end - start) // timedelta(milliseconds=1),
        "program_year": start.year, "year_used_ms": 0, "year_limit_ms": None, "source_offset": None,
    }


def window_usage(account_id: str, event_id: str, before: str | None, after: str | None) -> tuple[str, str, dict]:
    """The baseline service's measure of an account's usage in the hour before and after an event."""
    return by_account(EVENT_USAGE, {
        "event_id": event_id, "program_id": SEP, "service_account_id": account_id,
        "event_start": utc(2025, 9, 1), "event_end": utc(2025, 9, 1, 2),
        "hour_before_kwh": Decimal(before) if before is not None else None,
        "hour_after_kwh": Decimal(after) if after is not None else None, "revision": 0,
    })


def by_account(topic: str, value: dict) -> tuple[str, str, dict]:
    return topic, value["service_account_id"], value


def requests_of(provider: str) -> str:
    return ENROLLMENT_REQUESTS.format(provider_id=provider)


def decisions_of(provider: str) -> str:
    return ENROLLMENT_DECISIONS.format(provider_id=provider)


def grants_of(provider: str) -> str:
    return DATA_SHARING_AUTHORIZATIONS.format(provider_id=provider)


def codes(record: dict) -> list[str]:
    return [failure["code"] for failure in record["failures"]]


# -- reading outputs --------------------------------------------------------------------------


async def collect(system: IsolatedSystem, topic: str, match: Callable[[dict], bool],
                  done: Callable[[list[dict]], bool], timeout: float = 30.0) -> list[dict]:
    """The values on ``topic`` that ``match``, in partition order, once ``done(values)`` (or the
    timeout passes: the caller's assertions then say what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.value for r in await system.read(topic, idle_timeout=0.3) if match(r.value)]
        if done(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def decisions_on(system: IsolatedSystem, provider: str, *requests: dict) -> list[dict]:
    """The decisions on these requests, in the order of ``requests``, once each has one."""
    ids = {r["request_id"] for r in requests}
    found = await collect(system, decisions_of(provider), lambda d: d["request_id"] in ids,
                          lambda found: {d["request_id"] for d in found} >= ids)
    first = {}
    for decision in found:
        first.setdefault(decision["request_id"], decision)
    return [first.get(r["request_id"]) for r in requests]


async def states_of(system: IsolatedSystem, account_id: str, until: Callable[[dict], bool] = lambda s: True,
                    timeout: float = 30.0) -> list[dict]:
    """The account's records on the state topic (oldest first), once the latest satisfies ``until``."""
    return await collect(system, ENROLLMENT_STATE, lambda s: s["service_account_id"] == account_id,
                         lambda found: bool(found) and until(found[-1]), timeout)


async def findings_for(system: IsolatedSystem, account_ids: set[str], expect: int, timeout: float = 30.0) -> list[dict]:
    return await collect(system, REMOVAL_FINDINGS, lambda f: f["service_account_id"] in account_ids,
                         lambda found: len(found) >= expect, timeout)


def period(record: dict) -> tuple:
    return (record["program_id"], record["provider_id"], record["thermostat_serial"], record["request_id"],
            record["effective_from"], record["effective_to"], record["end_reason"])


# == ohm-hours: data-sharing authorizations ====================================================


async def test_ohm_hours_enrolls_only_under_an_active_authorization_and_revoking_it_ends_the_enrollment(lifecycle):
    system = lifecycle.system
    await lifecycle.advance(NOW)
    account_id, serial, grant = new_id("SA"), new_id("T"), new_id("AU")

    # The utility publishes the household; the customer authorizes data sharing, still pending.
    await system.publish(by_account(CUSTOMER_ACCOUNTS, customer_account(account_id)),
                  by_account(grants_of("ohmconnect"), authorization(
                      account_id, grant, "PENDING", NOW - timedelta(hours=2), NOW - timedelta(hours=2))))
    [state] = await states_of(system, account_id)
    assert state["authorizations"] == [{
        "authorization_id": grant, "provider_id": "ohmconnect", "status": "PENDING",
        "requested_at": NOW - timedelta(hours=2), "reauthorization_required": False,
    }]
    assert state["enrollments"] == []

    # While it is pending, OhmConnect's enrollment request is refused with the reason.
    too_early = enrollment_request(account_id, NOW - timedelta(hours=1), serial, OHM)
    await system.publish(by_account(requests_of("ohmconnect"), too_early))
    [refused] = await decisions_on(system, "ohmconnect", too_early)
    assert (refused["outcome"], codes(refused), refused["effective_date"]) == (
        "REJECTED", ["DATA_SHARING_NOT_AUTHORIZED"], None)

    # The utility confirms it (with what it may share: meter id, interval length, other programs).
    shared = {"meter_id": "M-889911", "meter_interval_seconds": "900", "other_programs": "ESA"}
    await system.publish(by_account(grants_of("ohmconnect"), authorization(
        account_id, grant, "ACTIVE", NOW - timedelta(hours=2), NOW - timedelta(minutes=30), shared)))
    await states_of(system, account_id, lambda s: s["authorizations"][0]["status"] == "ACTIVE")

    # Now the request is accepted, effective on the third business day (July 4 is a holiday).
    enroll = enrollment_request(account_id, NOW, serial, OHM)
    await system.publish(by_account(requests_of("ohmconnect"), enroll))
    [accepted] = await decisions_on(system, "ohmconnect", enroll)
    assert (accepted["outcome"], accepted["failures"], accepted["effective_date"]) == (
        "ACCEPTED", [], date(2025, 7, 7))
    states = await states_of(system, account_id, lambda s: s["enrollments"])
    assert [period(p) for p in states[-1]["enrollments"]] == [
        (OHM, "ohmconnect", serial, enroll["request_id"], date(2025, 7, 7), None, None)]

    # On July 9 the customer revokes it at the utility: the enrollment ends that day.
    revoked_at = utc(2025, 7, 9, 17)
    await lifecycle.advance(revoked_at)
    await system.publish(by_account(grants_of("ohmconnect"), authorization(
        account_id, grant, "REVOKED", NOW - timedelta(hours=2), revoked_at)))
    states = await states_of(system, account_id, lambda s: s["authorizations"][0]["status"] == "REVOKED")
    assert [period(p) for p in states[-1]["enrollments"]] == [
        (OHM, "ohmconnect", serial, enroll["request_id"], date(2025, 7, 7), date(2025, 7, 9), "AUTHORIZATION_ENDED")]
    assert states[-1]["authorizations"][0]["reauthorization_required"] is False

    # Without an active authorization, enrolling again is refused.
    again = enrollment_request(account_id, revoked_at, serial, OHM)
    await system.publish(by_account(requests_of("ohmconnect"), again))
    [refused_again] = await decisions_on(system, "ohmconnect", again)
    assert (refused_again["outcome"], codes(refused_again)) == ("REJECTED", ["DATA_SHARING_NOT_AUTHORIZED"])


async def test_an_authorization_pending_past_seven_days_is_flagged_for_re_authorization(lifecycle):
    system = lifecycle.system
    start = utc(2025, 7, 10, 17)
    await lifecycle.advance(start)
    waiting, stale = new_id("SA"), new_id("SA")
    waiting_grant, stale_grant = new_id("AU"), new_id("AU")

    # One authorization is requested now; another was requested 8 days ago and is relayed only now.
    await system.publish(
        by_account(CUSTOMER_ACCOUNTS, customer_account(waiting)),
        by_account(CUSTOMER_ACCOUNTS, customer_account(stale)),
        by_account(grants_of("ohmconnect"), authorization(waiting, waiting_grant, "PENDING", start, start)),
        by_account(grants_of("ohmconnect"), authorization(
            stale, stale_grant, "PENDING", start - timedelta(days=8), start - timedelta(days=8))),
    )
    [fresh] = await states_of(system, waiting)
    assert [(a["authorization_id"], a["status"], a["reauthorization_required"]) for a in fresh["authorizations"]] == [
        (waiting_grant, "PENDING", False)]
    # Pending for more than 7 days on arrival: flagged at once.
    [late] = await states_of(system, stale)
    assert [(a["authorization_id"], a["status"], a["reauthorization_required"]) for a in late["authorizations"]] == [
        (stale_grant, "PENDING", True)]

    # Exactly 7 days later it is not flagged yet ("past 7 days")...
    await lifecycle.advance(start + timedelta(days=7))
    await asyncio.sleep(SETTLE_S + 1)  # the deadline check runs every second without input
    assert len(await states_of(system, waiting, timeout=0)) == 1

    # ...a minute later it is, and the state record says so.
    await lifecycle.advance(start + timedelta(days=7, minutes=1))
    states = await states_of(system, waiting, lambda s: s["authorizations"][0]["reauthorization_required"])
    assert [(a["authorization_id"], a["status"], a["reauthorization_required"])
            for a in states[-1]["authorizations"]] == [(waiting_grant, "PENDING", True)]
    assert len(states) == 2

    # The utility confirms it after all: active, and no longer flagged.
    await system.publish(by_account(grants_of("ohmconnect"), authorization(
        waiting, waiting_grant, "ACTIVE", start, start + timedelta(days=7, minutes=2))))
    states = await states_of(system, waiting, lambda s: s["authorizations"][0]["status"] == "ACTIVE")
    assert states[-1]["authorizations"][0]["reauthorization_required"] is False


async def test_authorizations_carrying_personal_data_or_a_utility_credential_are_dead_lettered(lifecycle):
    system = lifecycle.system
    account_id = new_id("SA")
    topic = grants_of("ohmconnect")
    refused = [
        ({"meter_id": "M-1", "ssn": "123-45-6789"}, "FORBIDDEN_PERSONAL_DATA",
         "customer_information field 'ssn' is social security or payment data"),
        ({"meter_id": "M-1", "autopay": "4111 1111 1111 1111"}, "FORBIDDEN_PERSONAL_DATA",
         "customer_information field 'autopay' holds what looks like a social security or card number"),
        ({"sce_username": "jdoe", "sce_password": "hunter2"}, "UTILITY_CREDENTIAL_REFUSED",
         "customer_information field 'sce_username' looks like a credential; utility credentials are never accepted"),
    ]
    at = utc(2025, 7, 17, 16)
    await system.publish(by_account(CUSTOMER_ACCOUNTS, customer_account(account_id)), *[
        by_account(topic, authorization(account_id, new_id("AU-bad"), "PENDING", at, at, information))
        for information, _, _ in refused
    ])
    # Then a record with only what the utility may share, on the same partition after them.
    allowed = new_id("AU")
    await system.publish(by_account(topic, authorization(
        account_id, allowed, "PENDING", at, at, {"meter_id": "M-1", "gas_account": "yes"})))

    # Each refused record is a dead letter with its reason, key the source topic.
    letters = await collect(
        system, DEAD_LETTERS,
        lambda letter: letter["service"] == "enrollment" and account_id.encode() in letter["value"],
        lambda found: len(found) >= len(refused))
    assert [(letter["reason_code"], letter["reason"]) for letter in letters] == [
        (code, f"{reason} (the offending fields are removed from this copy)") for _, code, reason in refused]
    # The dead letters keep the records without what must never be stored.
    for letter in letters:
        for secret in (b"123-45-6789", b"4111 1111 1111 1111", b"jdoe", b"hunter2"):
            assert secret not in letter["value"]
    assert [b"M-1" in letter["value"] for letter in letters] == [True, True, False]
    assert {letter["source_topic"] for letter in letters} == {f"{topic}{system.suffix}"}
    assert {letter["key"] for letter in letters} == {account_id.encode()}
    # Nothing of them reached the account: only the allowed authorization is on its state.
    [state] = await states_of(system, account_id)
    assert [a["authorization_id"] for a in state["authorizations"]] == [allowed]
    assert len(await collect(system, DEAD_LETTERS, lambda letter: account_id.encode() in letter["value"],
                             lambda found: True)) == len(refused)


# == the HTTP API end to end ====================================================================


async def test_a_request_posted_over_http_is_decided_by_the_worker_and_served_back(lifecycle):
    system = lifecycle.system
    await lifecycle.advance(utc(2025, 7, 21, 17))  # Monday July 21, 10:00 in Los Angeles
    eligible, ineligible = new_id("SA"), new_id("SA")
    await system.publish(by_account(CUSTOMER_ACCOUNTS, customer_account(eligible)),
                  by_account(CUSTOMER_ACCOUNTS, customer_account(ineligible, programs=["SDP"])))

    # EnergyHub POSTs two requests with its own token.
    bodies = [{
        "request_id": new_id("req"), "program_id": SEP, "action": "ENROLL", "service_account_id": account,
        "thermostat_serial": new_id("T"), "thermostat_model": "Ecobee3 lite", "controls_central_ac": True,
        "thermostat_source": "RETAIL", "requested_at": "2025-07-21T10:00:00-07:00",
    } for account in (eligible, ineligible)]
    for body in bodies:
        status, answer = await lifecycle.call("POST", "/v1/providers/energyhub/enrollment-requests", "energyhub",
                                              json=body)
        assert (status, answer["request_id"]) == (202, body["request_id"])
    accepted_body, rejected_body = bodies

    # The worker decides them; the status URL serves each decision once it is projected.
    def status_path(body: dict) -> str:
        return f"/v1/providers/energyhub/enrollment-requests/{body['request_id']}?wait=30"

    status, accepted = await lifecycle.call("GET", status_path(accepted_body), "energyhub")
    assert status == 200
    assert accepted == {
        "status": "DECIDED", "request_id": accepted_body["request_id"], "program_id": SEP, "action": "ENROLL",
        "service_account_id": eligible, "thermostat_serial": accepted_body["thermostat_serial"],
        "outcome": "ACCEPTED", "effective_date": "2025-07-24", "failures": [], "lockout_until": None,
        "requested_at": "2025-07-21T17:00:00.000Z", "decided_at": "2025-07-21T17:00:00.000Z",
    }
    status, rejected = await lifecycle.call("GET", status_path(rejected_body), "energyhub")
    assert (status, rejected["outcome"], rejected["effective_date"]) == (200, "REJECTED", None)
    assert rejected["failures"] == [{
        "code": "CONFLICTING_PROGRAM",
        "message": f"the account is enrolled in Summer Discount Plan (SDP), which excludes {SEP}",
    }]

    # The account and the thermostat show the enrollment period the worker published.
    expected_period = {
        "program_id": SEP, "provider_id": "energyhub", "thermostat_serial": accepted_body["thermostat_serial"],
        "request_id": accepted_body["request_id"], "effective_from": "2025-07-24", "effective_to": None,
        "end_reason": None,
    }
    deadline = time.monotonic() + 30
    while True:
        status, account = await lifecycle.call("GET", f"/v1/providers/energyhub/accounts/{eligible}", "energyhub")
        if (status == 200 and account["enrollments"]) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert status == 200
    assert account["enrollments"] == [expected_period]
    assert (account["lockouts"], account["authorizations"]) == ([], [])
    assert [(d["request_id"], d["outcome"]) for d in account["decisions"]] == [(accepted_body["request_id"], "ACCEPTED")]
    status, thermostat = await lifecycle.call(
        "GET", f"/v1/providers/energyhub/thermostats/{accepted_body['thermostat_serial']}", "energyhub")
    assert status == 200
    assert thermostat["enrollments"] == [{"service_account_id": eligible, **expected_period}]
    assert [d["request_id"] for d in thermostat["decisions"]] == [accepted_body["request_id"]]
    # The rejected account has a decision and no period.
    status, refused_account = await lifecycle.call(
        "GET", f"/v1/providers/energyhub/accounts/{ineligible}", "energyhub")
    assert (status, refused_account["enrollments"]) == (200, [])
    assert [d["outcome"] for d in refused_account["decisions"]] == ["REJECTED"]


# == removal rule (a): offline 30 consecutive days in season =====================================


async def test_a_thermostat_offline_30_days_in_season_is_removed_without_a_lockout(lifecycle):
    system = lifecycle.system
    start = utc(2025, 7, 22, 17)  # Tuesday July 22
    await lifecycle.advance(start)
    account_id, serial = new_id("SA"), new_id("T")
    enroll = enrollment_request(account_id, start, serial)
    await system.publish(by_account(CUSTOMER_ACCOUNTS, customer_account(account_id)),
                  by_account(requests_of("energyhub"), enroll))
    [accepted] = await decisions_on(system, "energyhub", enroll)
    assert (accepted["outcome"], accepted["effective_date"]) == ("ACCEPTED", date(2025, 7, 25))
    await states_of(system, account_id, lambda s: s["enrollments"])
    await asyncio.sleep(SETTLE_S)  # the participation pipeline learns the account is enrolled

    # Telemetry reports the thermostat offline on Monday July 28 (noon in Los Angeles).
    await system.publish(by_account(DEVICE_STATUS, device_status(
        account_id, serial, "energyhub", "WENT_OFFLINE", utc(2025, 7, 28, 19))))
    await asyncio.sleep(SETTLE_S)

    # On August 26 (29 days) nothing is found yet.
    await lifecycle.advance(utc(2025, 8, 26, 17))
    await asyncio.sleep(SETTLE_S + 1)
    assert await findings_for(system, {account_id}, expect=1, timeout=0) == []

    # On August 27 (30 days) the removal finding is published...
    await lifecycle.advance(utc(2025, 8, 27, 17))
    [finding] = await findings_for(system, {account_id}, expect=1)
    assert finding == {
        "service_account_id": account_id, "program_id": SEP, "thermostat_serial": serial, "rule": "OFFLINE",
        "found_on": date(2025, 8, 27), "year": 2025,
        "evidence": f"thermostat {serial} offline since 2025-07-28, 30 consecutive days inside April 1 to October 31",
    }
    # ...and the enrollment ends that day, removed for it. Rule (a) carries no lock-out
    # (PROGRAMS.md: only (b) and (c) block re-enrollment).
    states = await states_of(system, account_id, lambda s: s["enrollments"][0]["effective_to"] is not None)
    assert [period(p) for p in states[-1]["enrollments"]] == [
        (SEP, "energyhub", serial, enroll["request_id"], date(2025, 7, 25), date(2025, 8, 27), "REMOVED_OFFLINE")]
    assert states[-1]["lockouts"] == []

    # So the customer may enroll again at once (effective after Labor Day, September 1)...
    again = enrollment_request(account_id, utc(2025, 8, 27, 17), serial)
    await system.publish(by_account(requests_of("energyhub"), again))
    [reenrolled] = await decisions_on(system, "energyhub", again)
    assert (reenrolled["outcome"], reenrolled["failures"], reenrolled["effective_date"], reenrolled["lockout_until"]) \
        == ("ACCEPTED", [], date(2025, 9, 2), None)
    # ...but the bonus was paid on the first enrollment (posted July 31, before the removal) and
    # is not paid again.
    incentives = await collect(system, INCENTIVES, lambda d: d["service_account_id"] == account_id,
                               lambda found: len(found) >= 2)
    assert [(d["outcome"], d["amount"], d["post_on"]) for d in incentives] == [
        ("GRANTED", Decimal("75.00"), date(2025, 7, 31)), ("DENIED", Decimal("0.00"), date(2025, 9, 30))]
    assert codes(incentives[1]) == ["BONUS_PREVIOUSLY_ENROLLED", "THERMOSTAT_ALREADY_PAID", "BONUS_ACCOUNT_ALREADY_PAID"]


# == removal rules (b) and (c): the annual review and its 12-month lock-out ======================


async def test_the_annual_review_removes_for_overrides_and_minimum_usage_and_locks_out_for_12_months(
        isolated_system_factory):
    system = isolated_system_factory("enrollment-review", ("energyhub", "resideo"))
    start = utc(2025, 9, 2, 17)  # Tuesday September 2, 2025
    worker = await start_worker(system, start)
    # Four Resideo customers, enrolled from Friday September 5.
    over, usage, fine, late = (new_id("SA") for _ in range(4))
    serials = {account: new_id("T") for account in (over, usage, fine, late)}
    enrolls = {account: enrollment_request(account, start, serials[account]) for account in serials}
    await system.publish(*[by_account(CUSTOMER_ACCOUNTS, customer_account(account)) for account in serials],
                  *[by_account(requests_of("resideo"), enrolls[account]) for account in serials])
    decided = await decisions_on(system, "resideo", *enrolls.values())
    assert [(d["outcome"], d["effective_date"]) for d in decided] == [("ACCEPTED", date(2025, 9, 5))] * 4

    # The 2025 events that reach them: EV1 on September 10 and EV2 (moved by an update) on
    # September 17, 14:00-16:00 in Los Angeles. EV3 was cancelled; EV4 was for EnergyHub only.
    ev1, ev2, ev3, ev4 = (new_id("EV") for _ in range(4))
    ev1_start, ev2_start = utc(2025, 9, 10, 21), utc(2025, 9, 17, 21)
    await system.publish(
        (EVENT_LIFECYCLE, ev1, dispatched(ev1, ev1_start, ev1_start + timedelta(hours=2), ["resideo"])),
        (EVENT_LIFECYCLE, ev2, dispatched(ev2, utc(2025, 9, 17, 20), utc(2025, 9, 17, 22), ["resideo"])),
        (EVENT_LIFECYCLE, ev2, dispatched(ev2, ev2_start, ev2_start + timedelta(hours=2), ["resideo"], "UPDATED", 2)),
        (EVENT_LIFECYCLE, ev3, dispatched(ev3, utc(2025, 9, 20, 21), utc(2025, 9, 20, 23), [])),
        (EVENT_LIFECYCLE, ev3, dispatched(ev3, utc(2025, 9, 20, 21), utc(2025, 9, 20, 23), [], "CANCELLED", 2)),
        (EVENT_LIFECYCLE, ev4, dispatched(ev4, utc(2025, 9, 24, 21), utc(2025, 9, 24, 23), ["energyhub"])),
    )
    for account in serials:
        await states_of(system, account, lambda s: s["enrollments"])
    await asyncio.sleep(SETTLE_S)  # enrollments and events known to the participation pipeline

    def override(account: str, event_id: str, at: datetime) -> tuple[str, str, dict]:
        return by_account(DEVICE_STATUS, device_status(account, serials[account], "resideo", "OVERRIDE", at, event_id))

    await system.publish(
        # (b) overrode both events within their first hour (EV2 at 59 minutes); 2.0 kWh before EV1.
        override(over, ev1, ev1_start + timedelta(minutes=10)), override(over, ev2, ev2_start + timedelta(minutes=59)),
        window_usage(over, ev1, "2.0", None),
        # (c) at most 1.2 kWh in the hour before or after an event (the baseline service's measure).
        window_usage(usage, ev1, "1.2", "0.8"), window_usage(usage, ev2, None, "1.2"),
        # Neither: overrode one event of two; exactly 1.5 kWh in the hour after EV2.
        override(fine, ev1, ev1_start + timedelta(minutes=5)), window_usage(fine, ev2, "0.1", "1.500000000"),
        # Neither: overrode EV2 only after its first hour; 1.6 kWh before EV2.
        override(late, ev1, ev1_start + timedelta(minutes=10)), override(late, ev2, ev2_start + timedelta(minutes=61)),
        window_usage(late, ev2, "1.6", None),
    )
    await asyncio.sleep(SETTLE_S)

    # January 30, 2026: the review of 2025 is not due yet.
    await worker.advance(utc(2026, 1, 30, 18))
    await asyncio.sleep(SETTLE_S + 1)
    assert await findings_for(system, set(serials), expect=1, timeout=0) == []

    # January 31: reviewed. Exactly two findings, on the review day.
    await worker.advance(utc(2026, 1, 31, 18))
    await findings_for(system, set(serials), expect=2)
    await asyncio.sleep(SETTLE_S)
    findings = await findings_for(system, set(serials), expect=3, timeout=0)
    overrides_evidence = "overrode all 2 events dispatched in 2025, each within its first 60 minutes"
    usage_evidence = ("the meter never registered 1.5 kWh in the 60 minutes before or after any of the 2 events "
                      "of 2025 (most: 1.200000000 kWh)")
    assert sorted((f["service_account_id"], f["rule"], f["thermostat_serial"], f["found_on"], f["year"], f["evidence"])
                  for f in findings) == sorted([
                      (over, "OVERRIDES", None, date(2026, 1, 31), 2025, overrides_evidence),
                      (usage, "MINIMUM_USAGE", None, date(2026, 1, 31), 2025, usage_evidence)])

    # Both enrollments end on the review day and lock the account out for 12 months.
    for account, rule, evidence in ((over, "OVERRIDES", overrides_evidence), (usage, "MINIMUM_USAGE", usage_evidence)):
        states = await states_of(system, account, lambda s: s["lockouts"])
        assert [period(p) for p in states[-1]["enrollments"]] == [(
            SEP, "resideo", serials[account], enrolls[account]["request_id"], date(2025, 9, 5), date(2026, 1, 31),
            f"REMOVED_{rule}")]
        assert states[-1]["lockouts"] == [
            {"program_id": SEP, "until": date(2027, 1, 30), "reason": f"removed on 2026-01-31: {evidence}"}]
    # The other two stay enrolled.
    for account in (fine, late):
        [state] = await states_of(system, account, timeout=0)
        assert [(p["effective_to"], p["end_reason"]) for p in state["enrollments"]] == [(None, None)]

    # A new request inside the lock-out is refused with its reason and the lock-out's last day.
    await worker.advance(utc(2026, 2, 2, 18))
    inside = enrollment_request(over, utc(2026, 2, 2, 18), new_id("T"))
    await system.publish(by_account(requests_of("resideo"), inside))
    [refused] = await decisions_on(system, "resideo", inside)
    assert (refused["outcome"], refused["lockout_until"], refused["effective_date"]) == (
        "REJECTED", date(2027, 1, 30), None)
    assert refused["failures"] == [{
        "code": "REENROLLMENT_LOCKED_OUT",
        "message": f"the account was removed from {SEP} (removed on 2026-01-31: {overrides_evidence}); "
                   "it may re-enroll from 2027-01-31",
    }]

    # On its last day it still applies; the day after, the account may enroll again.
    await worker.advance(utc(2027, 1, 31, 18))
    last_day = enrollment_request(over, utc(2027, 1, 30, 18), new_id("T"))
    day_after = enrollment_request(over, utc(2027, 1, 31, 18), new_id("T"))
    await system.publish(by_account(requests_of("resideo"), last_day), by_account(requests_of("resideo"), day_after))
    still_locked, allowed = await decisions_on(system, "resideo", last_day, day_after)
    assert (still_locked["outcome"], codes(still_locked), still_locked["lockout_until"]) == (
        "REJECTED", ["REENROLLMENT_LOCKED_OUT"], date(2027, 1, 30))
    assert (allowed["outcome"], allowed["failures"], allowed["effective_date"]) == ("ACCEPTED", [], date(2027, 2, 3))


# == a crash mid-stream ==========================================================================

CRASH_PROGRAM = "sce-sep-crash"
CRASH_ACCOUNTS = 1500
BONUSES_IN_FUND = 1000
BONUS = Decimal("75.00")


def crash_inputs() -> tuple[list[tuple[str, str, dict]], dict[str, tuple]]:
    """3,750 inputs: 1,500 accounts, then their requests (some twice), then second thermostats.
    Returns them and each request's expected (provider, outcome, failure codes)."""
    accounts, first, again, second, expected = [], [], [], [], {}
    serial_of = {}
    for i in range(CRASH_ACCOUNTS):
        account_id = f"SA-crash-{i:05d}-{uuid.uuid4().hex[:6]}"
        provider = ("energyhub", "resideo")[i % 2]
        ineligible = i % 10 == 7
        accounts.append(by_account(CUSTOMER_ACCOUNTS, customer_account(
            account_id, rate_schedule="TOU-D-PRIME" if ineligible else "TOU-D")))
        # Every 50th account's thermostat was sold before to the household next door: one serial, two accounts.
        serial_of[i] = serial_of[i - 1] if i % 50 == 4 else new_id("T")
        request = enrollment_request(account_id, NOW, serial_of[i], CRASH_PROGRAM,
                                     thermostat_source="UTILITY_PROGRAM" if i % 10 == 1 else "RETAIL")
        first.append(by_account(requests_of(provider), request))
        expected[request["request_id"]] = (provider, "REJECTED", ["RATE_SCHEDULE_NOT_ELIGIBLE"]) if ineligible \
            else (provider, "ACCEPTED", [])
        if i % 5 == 0:
            again.append(by_account(requests_of(provider), request))  # re-delivered: still one decision
        if i % 3 == 0 and not ineligible:
            extra = enrollment_request(account_id, NOW, new_id("T"), CRASH_PROGRAM)
            second.append(by_account(requests_of(provider), extra))
            expected[extra["request_id"]] = (provider, "ACCEPTED", [])
    return accounts + first + again + second, expected


async def test_a_crash_mid_stream_decides_each_request_once_and_never_overspends_the_bonus_fund(
        isolated_system_factory, tmp_path):
    programs = tmp_path / "programs"
    programs.mkdir()
    for source in (REPO_ROOT / "programs").glob("*.yaml"):
        (programs / source.name).write_text(source.read_text())
    sep = (REPO_ROOT / "programs" / f"{SEP}.yaml").read_text()
    assert 'fund: "1500000.00"' in sep
    (programs / f"{CRASH_PROGRAM}.yaml").write_text(sep.replace(f"id: {SEP}", f"id: {CRASH_PROGRAM}").replace(
        'fund: "1500000.00"', f'fund: "{BONUS * BONUSES_IN_FUND}"'))
    system = isolated_system_factory("enrollment-crash", ("energyhub", "resideo"))
    await system.create_topics()
    await system.tick(NOW)
    inputs, expected = crash_inputs()
    assert (len(inputs), len(expected)) == (3750, 1950)

    # The worker starts on the arriving input and is killed without warning once decisions come out.
    service = system.service("enrollment", GRIDFLEX_PROGRAMS_DIR=str(programs))
    before = await crash_mid_stream(system, service, inputs, decisions_of("energyhub"))
    assert 0 < before < len(expected), "the crash must land mid-stream"

    # Restarted on the same consumer groups and state, it finishes.
    service.start()
    accounts = {value["service_account_id"] for _, _, value in inputs}
    claims_expected = sum(1 for _, outcome, _ in expected.values() if outcome == "ACCEPTED")
    assert claims_expected == 1800

    async def decisions() -> list[dict]:
        found = []
        for provider in ("energyhub", "resideo"):
            found += [r.value for r in await system.read(decisions_of(provider), idle_timeout=1.0)]
        return found

    deadline = time.monotonic() + 90
    while True:
        decided, incentives = await decisions(), [r.value for r in await system.read(INCENTIVES, idle_timeout=1.0)]
        complete = (len({d["request_id"] for d in decided}) >= len(expected)
                    and len({d["claim_id"] for d in incentives}) >= claims_expected)
        if complete or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(SETTLE_S)  # let any straggling re-emissions land before the final read
    decided = await decisions()
    incentives = [r.value for r in await system.read(INCENTIVES, idle_timeout=1.0)]

    # Exactly one decision per request id: a copy re-emitted after the crash is the very same decision.
    copies: dict[str, list[dict]] = defaultdict(list)
    for decision in decided:
        copies[decision["request_id"]].append(decision)
    assert set(copies) == set(expected)
    assert [request_id for request_id, found in copies.items() if any(d != found[0] for d in found)] == []
    assert {request_id: (d[0]["provider_id"], d[0]["outcome"], codes(d[0])) for request_id, d in copies.items()} \
        == expected
    assert {d[0]["effective_date"] for d in copies.values() if d[0]["outcome"] == "ACCEPTED"} == {date(2025, 7, 7)}

    # One incentive decision per claim (copies identical), none for a rejected request.
    claims: dict[str, list[dict]] = defaultdict(list)
    for decision in incentives:
        claims[decision["claim_id"]].append(decision)
    assert len(claims) == claims_expected
    assert [claim_id for claim_id, found in claims.items() if any(d != found[0] for d in found)] == []
    once = [found[0] for found in claims.values()]
    assert {d["service_account_id"] for d in once} <= accounts
    outcomes = Counter(d["outcome"] for d in once)
    assert outcomes == {"GRANTED": BONUSES_IN_FUND, "DENIED": claims_expected - BONUSES_IN_FUND}
    granted = [d for d in once if d["outcome"] == "GRANTED"]
    # Never two bonuses for one account or one thermostat serial.
    assert max(Counter(d["service_account_id"] for d in granted).values()) == 1
    assert max(Counter(d["thermostat_serial"] for d in granted).values()) == 1
    # The fund is spent exactly, one $75 step at a time, and never goes below zero.
    assert sum(d["amount"] for d in granted) == BONUS * BONUSES_IN_FUND
    assert sorted(d["fund_remaining"] for d in granted) == [BONUS * n for n in range(BONUSES_IN_FUND)]
    assert min(d["fund_remaining"] for d in once) == Decimal("0.00")
    # Every denial says why.
    denials = Counter(tuple(codes(d)) for d in once if d["outcome"] == "DENIED")
    utility_thermostats = sum(n for reasons, n in denials.items() if "BONUS_UTILITY_PROGRAM_THERMOSTAT" in reasons)
    second_thermostats = sum(n for reasons, n in denials.items() if "BONUS_NOT_NEW_ENROLLMENT" in reasons)
    fund_or_serial = sum(n for reasons, n in denials.items()
                         if reasons in (("BONUS_FUND_EXHAUSTED",), ("THERMOSTAT_ALREADY_PAID",)))
    assert (utility_thermostats, second_thermostats, fund_or_serial) == (150, 450, 200)
