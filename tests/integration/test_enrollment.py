"""The enrollment service against the real broker: requests in, one decision each, state out.

One enrollment worker serves the module on its own topics and its own program directory: the
real catalogue plus ``sce-sep-race``, the current SEP terms with a fund of two bonuses, so that
racing for the last bonus is cheap to set up. Each test uses its own service accounts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest

from gridflex import REPO_ROOT
from gridflex.topics import CUSTOMER_ACCOUNTS, DEAD_LETTERS, ENROLLMENT_STATE, INCENTIVES
from tests.integration.conftest import IsolatedSystem, customer_account, utc

NOW = utc(2025, 7, 1, 17)  # Tuesday July 1, 2025, 10:00 in Los Angeles
PROVIDERS = ("energyhub", "resideo", "ohmconnect")
RACE = "sce-sep-race"
FUND = Decimal("150.00")  # two $75 bonuses
WAIT_S = 3600


@pytest.fixture(scope="module")
async def enrollment(running_stack, tmp_path_factory):
    programs = tmp_path_factory.mktemp("programs")
    for source in (REPO_ROOT / "programs").glob("*.yaml"):
        (programs / source.name).write_text(source.read_text())
    sep = (REPO_ROOT / "programs" / "sce-sep-2025.yaml").read_text()
    (programs / f"{RACE}.yaml").write_text(
        sep.replace("id: sce-sep-2025", f"id: {RACE}").replace('fund: "1500000.00"', f'fund: "{FUND}"'))
    system = IsolatedSystem("enrollment", PROVIDERS)
    await system.create_topics()
    await system.tick(NOW)
    system.service(
        "enrollment", GRIDFLEX_PROGRAMS_DIR=str(programs), GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S=str(WAIT_S),
    ).start()
    yield system
    system.stop()


def new_account_id() -> str:
    return f"SA-{uuid.uuid4().hex[:10]}"




def request(account_id: str, request_id: str | None = None, serial: str | None = None, **fields) -> dict:
    base = {
        "request_id": request_id or f"R-{uuid.uuid4().hex[:8]}", "program_id": "sce-sep-2025", "action": "ENROLL",
        "service_account_id": account_id, "thermostat_serial": serial or f"T-{uuid.uuid4().hex[:8]}",
        "thermostat_model": "T10", "controls_central_ac": True, "thermostat_source": "RETAIL", "requested_at": NOW,
    }
    return {**base, **fields}


async def publish(system: IsolatedSystem, *records: tuple[str, dict]) -> None:
    async with system.producer() as producer:
        for topic, value in records:
            await producer.send(topic, value["service_account_id"], value)


def requests_topic(provider: str) -> str:
    return f"partner.{provider}.enrollment-requests.v1"


def decisions_topic(provider: str) -> str:
    return f"partner.{provider}.enrollment-decisions.v1"


async def records_for(system: IsolatedSystem, topic: str, account_ids: set[str], expect: int,
                      timeout: float = 30.0) -> list[dict]:
    """The records of ``topic`` for these accounts, once ``expect`` are there (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.value for r in await system.read(topic, idle_timeout=0.5)
                 if r.value["service_account_id"] in account_ids]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_requests_get_one_decision_each_and_the_state_is_published(enrollment):
    eligible, ineligible = new_account_id(), new_account_id()
    await publish(enrollment,
                  (CUSTOMER_ACCOUNTS, customer_account(eligible)),
                  (CUSTOMER_ACCOUNTS, customer_account(ineligible, rate_schedule="TOU-D-PRIME", programs=["CPP"])))
    accepted, rejected = request(eligible, serial="T-OK"), request(ineligible)
    await publish(enrollment, (requests_topic("energyhub"), accepted), (requests_topic("energyhub"), rejected))

    decisions = await records_for(enrollment, decisions_topic("energyhub"), {eligible, ineligible}, expect=2)
    by_account = {d["service_account_id"]: d for d in decisions}
    assert by_account[eligible]["outcome"] == "ACCEPTED"
    assert by_account[eligible]["effective_date"] == date(2025, 7, 7)  # 3rd business day, July 4 skipped
    assert by_account[ineligible]["outcome"] == "REJECTED"
    assert [f["code"] for f in by_account[ineligible]["failures"]] == ["RATE_SCHEDULE_NOT_ELIGIBLE",
                                                                       "CONFLICTING_PROGRAM"]
    # The account's enrollments are published for dispatch, baseline and settlement.
    states = await records_for(enrollment, ENROLLMENT_STATE, {eligible}, expect=1)
    [period] = states[-1]["enrollments"]
    assert (period["thermostat_serial"], period["provider_id"], period["effective_from"], period["effective_to"]) == (
        "T-OK", "energyhub", date(2025, 7, 7), None)


async def test_a_redelivered_request_id_never_gets_a_second_decision(enrollment):
    account_id = new_account_id()
    await publish(enrollment, (CUSTOMER_ACCOUNTS, customer_account(account_id)))
    once = request(account_id)
    await publish(enrollment, (requests_topic("resideo"), once), (requests_topic("resideo"), once))
    assert len(await records_for(enrollment, decisions_topic("resideo"), {account_id}, expect=1)) == 1
    await publish(enrollment, (requests_topic("resideo"), once))  # again, after it was decided
    await asyncio.sleep(3)
    assert len(await records_for(enrollment, decisions_topic("resideo"), {account_id}, expect=2, timeout=2)) == 1


async def test_a_request_waits_for_its_account_then_unknown_accounts_are_rejected(enrollment):
    late, never = new_account_id(), new_account_id()
    await publish(enrollment, (requests_topic("energyhub"), request(late)),
                  (requests_topic("energyhub"), request(never)))
    await asyncio.sleep(3)
    assert await records_for(enrollment, decisions_topic("energyhub"), {late, never}, expect=1, timeout=1) == []
    # The utility publishes one account late: its request is decided then.
    await publish(enrollment, (CUSTOMER_ACCOUNTS, customer_account(late)))
    [decided] = await records_for(enrollment, decisions_topic("energyhub"), {late}, expect=1)
    assert decided["outcome"] == "ACCEPTED"
    # The other never comes: once the wait is over, the request is rejected, not lost.
    await enrollment.tick(NOW + timedelta(seconds=WAIT_S + 60))
    [unknown] = await records_for(enrollment, decisions_topic("energyhub"), {never}, expect=1)
    assert [f["code"] for f in unknown["failures"]] == ["UNKNOWN_ACCOUNT"]
    await enrollment.tick(NOW)


async def test_concurrent_enrollments_racing_for_the_last_bonus_never_overspend_the_fund(enrollment):
    racers = [new_account_id() for _ in range(6)]
    await publish(enrollment, *[(CUSTOMER_ACCOUNTS, customer_account(a)) for a in racers])
    providers = ["energyhub", "resideo"]
    await asyncio.gather(*[
        publish(enrollment, (requests_topic(providers[i % 2]), request(a, program_id=RACE)))
        for i, a in enumerate(racers)
    ])
    incentives = await records_for(enrollment, INCENTIVES, set(racers), expect=len(racers))
    assert len(incentives) == len(racers)
    # The fund holds exactly two bonuses: the first two claims in log order get them, the others
    # are denied with the reason, and the fund never goes below zero.
    # (The decisions are keyed by account, so they are read back across partitions, not in log order.)
    assert sorted(d["outcome"] for d in incentives) == ["DENIED"] * 4 + ["GRANTED"] * 2
    assert sum(d["amount"] for d in incentives) == FUND
    assert all([f["code"] for f in d["failures"]] == ["BONUS_FUND_EXHAUSTED"]
               for d in incentives if d["outcome"] == "DENIED")
    assert sorted(d["fund_remaining"] for d in incentives) == [Decimal("0.00")] * 5 + [Decimal("75.00")]


async def test_bad_requests_are_dead_lettered_with_their_reason(enrollment):
    account_id = new_account_id()
    await publish(enrollment, (CUSTOMER_ACCOUNTS, customer_account(account_id)),
                  (requests_topic("energyhub"), request(account_id, requested_at=NOW + timedelta(days=2))))
    deadline = time.monotonic() + 30
    letters = []
    while not letters and time.monotonic() < deadline:
        letters = [r.value for r in await enrollment.read(DEAD_LETTERS, idle_timeout=0.5)
                   if r.value["service"] == "enrollment" and account_id.encode() in r.value["value"]]
        await asyncio.sleep(0.5)
    assert [letter["reason_code"] for letter in letters] == ["FUTURE_TIMESTAMP"]


async def test_an_operator_reverses_a_bonus_paid_in_error_once_and_only_inside_the_window(enrollment):
    account_id = new_account_id()
    await publish(enrollment, (CUSTOMER_ACCOUNTS, customer_account(account_id)))
    enrolled = request(account_id)
    await publish(enrollment, (requests_topic("energyhub"), enrolled))
    [granted] = await records_for(enrollment, INCENTIVES, {account_id}, expect=1)
    assert (granted["outcome"], granted["post_on"]) == ("GRANTED", date(2025, 7, 31))
    claim_id = granted["claim_id"]
    assert claim_id == f"SIGNUP_BONUS/sce-sep-2025/{account_id}/energyhub/{enrolled['request_id']}"

    # Before the bonus posts it can only be cancelled; 90 days after posting it is too late.
    code, _, err = await enrollment.command("incentives", "reverse", claim_id, "--reason", "ESA unit",
                                  "--on", "2025-07-20", "--wait", "20")
    assert code == 1 and "NOT_YET_POSTED" in err
    code, _, err = await enrollment.command("incentives", "reverse", claim_id, "--reason", "ESA unit",
                                  "--on", "2025-10-30", "--wait", "20")
    assert code == 1 and "REVERSAL_WINDOW_PASSED" in err

    code, out, err = await enrollment.command("incentives", "reverse", claim_id, "--reason", "ESA unit",
                                    "--on", "2025-10-29", "--wait", "20")
    [_, reversed_] = await records_for(enrollment, INCENTIVES, {account_id}, expect=2)
    assert (reversed_["outcome"], reversed_["amount"], reversed_["failures"], reversed_["effective_date"]) == (
        "REVERSED", Decimal("75.00"), [{"code": "PAID_IN_ERROR", "message": "ESA unit"}], date(2025, 10, 29))
    assert (code, out.strip()) == (
        0, f"reversed {claim_id}: 75.00 back; the fund has {reversed_['fund_remaining']} left"), err

    # A second reversal is refused with the first one's date; unknown claims are never sent.
    code, _, err = await enrollment.command("incentives", "reverse", claim_id, "--reason", "again",
                                  "--on", "2025-10-29", "--wait", "20")
    assert code == 1 and "ALREADY_REVERSED" in err and "as of 2025-10-29 (ESA unit)" in err
    code, _, err = await enrollment.command("incentives", "reverse", f"{claim_id}-nope", "--reason", "x")
    assert code == 1 and "no enrollment decision matches" in err
    code, _, err = await enrollment.command("incentives", "reverse", "not-a-claim", "--reason", "x")
    assert code == 2 and "is not a claim id" in err

