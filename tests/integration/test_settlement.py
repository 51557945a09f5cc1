"""The settlement service against the real broker and Postgres: event performance becomes exact
ledger lines once, however often it is delivered; a revision posts the difference; a SIGKILL
mid-batch leaves the ledger exact; bill periods close with capacity credits and bonuses; the
API shows each caller only what it may read; the ledger balances.

Save Power Days pays $1.25 per kWh reduced, at most $60.00 a year; the SEP (2025 terms) pays
$0.40984 per enrolled summer day, at most $12.50 per bill period, and a $75 sign-up bonus.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import asyncpg
import pytest

from gridflex.calendar import LOCAL_ZONE
from gridflex.db import Database
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DEAD_LETTERS,
    ENROLLMENT_STATE,
    EVENT_LIFECYCLE,
    EVENT_PERFORMANCE,
    INCENTIVES,
)
from tests.integration.conftest import IsolatedSystem, customer_account, new_id, utc

SPD = "sce-save-power-days"
SEP = "sce-sep-2025"
EVENT_START = datetime(2025, 7, 16, 14, tzinfo=LOCAL_ZONE)
AFTER_EVENT = utc(2025, 7, 17, 3)
JULY_CLOSED = utc(2025, 8, 1, 8)  # 01:00 on August 1 in Los Angeles: July's bill periods (cycle day 1) closed


@pytest.fixture(scope="module")
async def settlement(running_stack):
    system = IsolatedSystem("settlement", ())
    await system.create_topics()
    await system.tick(AFTER_EVENT)
    system.service("settlement", GRIDFLEX_SETTLEMENT_FIRST_OPEN_DAY="2025-06-01").start()
    yield system
    system.stop()


def enrolled(account_id: str, program: str, provider: str = "energyhub", since: date = date(2025, 6, 1),
             until: date | None = None) -> list[tuple[str, str, dict]]:
    return [
        (CUSTOMER_ACCOUNTS, account_id, customer_account(account_id)),
        (ENROLLMENT_STATE, account_id, {
            "service_account_id": account_id, "lockouts": [], "authorizations": [], "updated_at": utc(2025, 5, 20),
            "enrollments": [{"program_id": program, "provider_id": provider, "thermostat_serial": f"T-{account_id}",
                             "request_id": f"R-{account_id}", "effective_from": since, "effective_to": until,
                             "end_reason": None}]}),
    ]


def lifecycle(event_id: str, program: str = SPD, start: datetime = EVENT_START) -> tuple[str, str, dict]:
    end = start + timedelta(hours=4)
    return (EVENT_LIFECYCLE, event_id, {
        "event_id": event_id, "program_id": program, "status": "ENDED", "revision": 1, "request_action": None,
        "reason": "GRID_STRESS", "start": start, "end": end, "setpoint_offset_f": 3, "precool": False,
        "targets": [], "issued_at": utc(2025, 7, 15, 16), "decided_at": utc(2025, 7, 15, 16), "failures": [],
        "counted_ms": 4 * 3600 * 1000, "program_year": 2025, "year_used_ms": 0, "year_limit_ms": None,
        "source_offset": None,
    })


def kwh(value: str) -> Decimal:
    return Decimal(value).quantize(Decimal("0.000000001"))


def performance(event_id: str, account_id: str, reduction: str, revision: int = 0, program: str = SPD,
                status: str = "SETTLEABLE") -> tuple[str, str, dict]:
    baseline = kwh(reduction) + kwh("10")
    settleable = status == "SETTLEABLE"
    return (EVENT_PERFORMANCE, f"{event_id}/{account_id}", {
        "event_id": event_id, "program_id": program, "service_account_id": account_id, "method": "csrl-3-of-5",
        "baseline_kwh": baseline if settleable else None,
        "actual_kwh": baseline - kwh(reduction) if settleable else None,
        "reduction_kwh": kwh(reduction) if settleable else None,
        "candidate_days": [date(2025, 7, d) for d in (9, 10, 11, 14, 15)], "status": status,
        "reason": None if settleable else "MISSING_USAGE", "revision": revision,
    })


def credit(reduction: str) -> int:
    """What Save Power Days pays for a reduction, in cents (rounded half-up once)."""
    return int((kwh(reduction) * Decimal("1.25")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) * 100)


async def query(system: IsolatedSystem, sql: str, *args):
    connection = await asyncpg.connect(system.settings.database_url)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def lines_of(system: IsolatedSystem, account_ids: list[str]) -> list[asyncpg.Record]:
    return await query(system, "SELECT * FROM ledger_lines WHERE service_account_id = ANY($1::text[]) ORDER BY line_id",
                       account_ids)


async def until(check, timeout: float = 60.0):
    """Poll ``check`` (async, returns a value or None) until it gives something."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.3)


async def settled_count(system: IsolatedSystem, account_ids: list[str], count: int, timeout: float = 60.0):
    async def check():
        lines = await lines_of(system, account_ids)
        return lines if len(lines) >= count else None
    return await until(check, timeout) or await lines_of(system, account_ids)


async def assert_ledger_balances(system: IsolatedSystem) -> None:
    unbalanced = await query(system, "SELECT line_id FROM ledger_entries GROUP BY line_id HAVING sum(amount_cents) <> 0"
                                     " OR count(*) <> 2")
    assert unbalanced == []
    [total] = await query(system, "SELECT coalesce(sum(balance_cents), 0) AS total FROM ledger_balances")
    assert total["total"] == 0
    [orphans] = await query(system, "SELECT count(*) AS n FROM ledger_lines l WHERE NOT EXISTS"
                                    " (SELECT 1 FROM ledger_entries e WHERE e.line_id = l.line_id)")
    assert orphans["n"] == 0


async def test_energy_credits_post_once_however_often_delivered(settlement):
    event, accounts = new_id("spd"), [new_id("acct") for _ in range(3)]
    reductions = ["6.000000001", "2.345", "0.004"]  # $7.50, $2.93 (2.93125), $0.01 (0.005 rounds half up)
    await settlement.publish(*[r for a in accounts for r in enrolled(a, SPD)], lifecycle(event))
    # Each performance is delivered twice (the baseline re-emits after a crash).
    records = [performance(event, a, r) for a, r in zip(accounts, reductions)]
    await settlement.publish(*records, *records)

    lines = await settled_count(settlement, accounts, 3)
    await asyncio.sleep(2)  # the duplicates have been read by now; they must not add lines
    lines = await lines_of(settlement, accounts)
    assert {line["service_account_id"]: line["amount_cents"] for line in lines} == {
        a: credit(r) for a, r in zip(accounts, reductions)}
    assert [credit(r) for r in reductions] == [750, 293, 1]
    [first] = [line for line in lines if line["service_account_id"] == accounts[0]]
    assert (first["credit_type"], first["event_id"], first["provider_id"]) == ("ENERGY", event, "energyhub")
    assert (first["bill_period_start"], first["bill_period_end"]) == (date(2025, 7, 1), date(2025, 7, 31))
    cause = json.loads(first["cause"])
    assert cause["reduction_kwh"] == "6.000000001" and cause["rate_per_kwh"] == "1.25"
    assert cause["baseline_kwh"] == "16.000000001" and cause["actual_kwh"] == "10.000000000"
    assert cause["caps_applied"] == []

    # The contract's view shows the same credits, one row per line.
    view = await query(settlement, "SELECT * FROM customer_credits WHERE service_account_id = ANY($1::text[])"
                                   " ORDER BY entry_id", accounts)
    assert sorted(row["amount_cents"] for row in view) == [1, 293, 750]
    await assert_ledger_balances(settlement)

    # A restart reads from the positions stored with the lines: nothing posts twice.
    worker = settlement.services[0]
    worker.stop()
    worker.start()
    await settlement.publish(records[0])  # and a third delivery after the restart
    await asyncio.sleep(3)
    assert len(await lines_of(settlement, accounts)) == 3


async def test_a_revision_posts_the_difference_and_the_year_cap_holds(settlement):
    account, events = new_id("acct"), [new_id("spd") for _ in range(3)]
    days = [EVENT_START + timedelta(days=n) for n in (0, 1, 2)]
    await settlement.publish(*enrolled(account, SPD), *[lifecycle(e, start=d) for e, d in zip(events, days)])
    # 40 kWh earns $50.00; the next event's 12 kWh ($15.00) reaches the $60 cap: $10.00 posts.
    # (Posting order is the order settlement reads them: the second is sent once the first posted.)
    await settlement.publish(performance(events[0], account, "40"))
    await settled_count(settlement, [account], 1)
    await settlement.publish(performance(events[1], account, "12"))
    lines = await settled_count(settlement, [account], 2)
    assert [line["amount_cents"] for line in lines] == [5000, 1000]
    capped = json.loads(lines[1]["cause"])["caps_applied"]
    assert capped == [{"cap": "per_year", "limit": "60.00", "already_paid": "50.00",
                       "reduced_from": "15.00", "reduced_to": "10.00"}]

    # Revised meter data lowers the first event to 20 kWh ($25.00): its line is reversed and a
    # new one posted; the room it frees is not given back to the already-capped second event.
    await settlement.publish(performance(events[0], account, "20", revision=1))
    lines = await settled_count(settlement, [account], 4)
    assert [(line["amount_cents"], line["reverses_line_id"]) for line in lines] == [
        (5000, None), (1000, None), (-5000, lines[0]["line_id"]), (2500, None)]
    assert lines[2]["idempotency_key"] == f"energy/{events[0]}/{account}#r0/reversed"
    # A third event now has $25.00 of room left under the cap.
    await settlement.publish(performance(events[2], account, "30"))
    lines = await settled_count(settlement, [account], 5)
    assert lines[4]["amount_cents"] == 2500
    [total] = await query(settlement, "SELECT sum(amount_cents) AS cents FROM customer_credits"
                                      " WHERE service_account_id = $1", account)
    assert total["cents"] == 6000  # exactly the yearly cap

    # A revision to INSUFFICIENT_DATA withdraws the credit: a reversal only.
    await settlement.publish(performance(events[1], account, "0", revision=1, status="INSUFFICIENT_DATA"))
    lines = await settled_count(settlement, [account], 6)
    assert lines[5]["amount_cents"] == -1000 and lines[5]["reverses_line_id"] == lines[1]["line_id"]
    await assert_ledger_balances(settlement)


async def test_sigkill_mid_batch_leaves_the_ledger_exact(settlement):
    event, accounts = new_id("spd"), [new_id("acct") for _ in range(6000)]
    await settlement.publish(*[r for a in accounts for r in enrolled(a, SPD)], lifecycle(event))
    reductions = {a: f"{1 + i % 7}.{i % 1000:03d}" for i, a in enumerate(accounts)}
    worker = settlement.services[0]
    async with settlement.producer() as producer:
        for index, account in enumerate(accounts):
            await producer.send(*performance(event, account, reductions[account]))
            if index == 3000:
                await producer.flush()
                # Killed as soon as the first of this event's lines is in the ledger.
                async def posted():
                    [row] = await query(settlement, "SELECT count(*) AS n FROM ledger_lines WHERE event_id = $1", event)
                    return row["n"] or None
                assert await until(posted)
                worker.kill()
    worker.start()
    lines = await settled_count(settlement, accounts, len(accounts), timeout=120)
    assert len(lines) == len(accounts)
    assert sorted(line["service_account_id"] for line in lines) == sorted(accounts)
    assert sum(line["amount_cents"] for line in lines) == sum(credit(r) for r in reductions.values())
    await assert_ledger_balances(settlement)


async def test_bill_periods_close_with_capacity_bonus_and_statements(settlement):
    account, other, claim = new_id("acct"), new_id("acct"), new_id("claim")
    await settlement.publish(*enrolled(account, SEP, "resideo"), *enrolled(other, SEP, "energyhub",
                                                                             since=date(2025, 7, 10)))
    await settlement.publish((INCENTIVES, account, {
        "claim_id": claim, "kind": "SIGNUP_BONUS", "outcome": "GRANTED", "program_id": SEP,
        "provider_id": "resideo", "service_account_id": account, "thermostat_serial": f"T-{account}",
        "amount": Decimal("75.00"), "effective_date": date(2025, 6, 1), "post_on": date(2025, 6, 30),
        "failures": [], "fund_remaining": Decimal("1499925.00"), "decided_at": utc(2025, 5, 27),
    }))
    await asyncio.sleep(2)
    # June 1 to July 16 closed when the service started (the clock was already at July 17), before
    # these accounts were known: June's capacity credit and the bonus due on June 30 are credited
    # late, on the open July statement, and their causes name June. The clock then passes the
    # end of July 31: July's bill periods close on time.
    await settlement.tick(JULY_CLOSED)
    lines = await settled_count(settlement, [account, other], 4)
    by = {(line["service_account_id"], line["credit_type"], json.loads(line["cause"]).get("bill_period_start")):
          (line["amount_cents"], line["bill_period_start"]) for line in lines}
    july = date(2025, 7, 1)
    assert by == {
        (account, "CAPACITY", "2025-06-01"): (1230, july),  # 30 days × $0.40984 = $12.2952
        (account, "SIGNUP_BONUS", None): (7500, july),      # due at June's close, granted after it
        (account, "CAPACITY", "2025-07-01"): (1250, july),  # 31 days = $12.70504, capped at $12.50
        (other, "CAPACITY", "2025-07-01"): (902, july),     # July 10–31: 22 days = $9.01648
    }
    statements = await query(settlement, "SELECT * FROM bill_statements WHERE service_account_id = $1"
                             " ORDER BY bill_period_start", account)
    assert [(s["bill_period_start"], s["line_count"], s["total_cents"]) for s in statements] == [(july, 3, 9980)]

    # The HTTP API: each provider reads only its own customers' lines; an operator reads all.
    database = Database(settlement.settings.database_url)
    try:
        resideo = await database.mint_credential("resideo")
        energyhub = await database.mint_credential("energyhub")
        operator = await database.mint_credential("billing", "operator")
    finally:
        await database.close()
    port = settlement.services[0].web_port

    def get(path: str, token: str | None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    status, body = get(f"/v1/accounts/{account}/statements/2025-07-01", resideo)
    statement = json.loads(body)
    assert status == 200 and statement["status"] == "CLOSED" and statement["total"] == "99.80"
    assert sorted((line["credit_type"], line["amount"]) for line in statement["lines"]) == [
        ("CAPACITY", "12.30"), ("CAPACITY", "12.50"), ("SIGNUP_BONUS", "75.00")]
    causes = {line["amount"]: line["cause"] for line in statement["lines"]}
    assert causes["12.30"]["season_days_enrolled"] == 30
    assert causes["12.50"]["caps_applied"][0]["cap"] == "per_bill_period"
    assert get(f"/v1/accounts/{account}/statements/2025-07-01", energyhub)[0] == 404  # not its customer
    assert get(f"/v1/accounts/{account}/statements/2025-07-01", None)[0] == 401
    assert get(f"/v1/accounts/{account}/statements/2025-07-01", "not-a-token")[0] == 401
    assert get(f"/v1/accounts/{account}/statements/June", operator)[0] == 400
    assert get(f"/v1/accounts/{account}/statements/2025-07-01", operator)[0] == 200
    assert get(f"/v1/accounts/{account}/statements", operator)[0] == 200

    status, body = get("/v1/exports/customer-credits.csv?bill_period_end_from=2025-06-30&bill_period_end_to=2025-07-31",
                       energyhub)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert status == 200 and {row["service_account_id"] for row in rows if row["credit_type"] == "CAPACITY"} >= {other}
    assert account not in {row["service_account_id"] for row in rows}
    status, body = get("/v1/programs/totals?year=2025", operator)
    assert status == 200 and "programs" in json.loads(body)
    assert "programs" not in json.loads(get("/v1/programs/totals", energyhub)[1])
    await assert_ledger_balances(settlement)


async def test_bad_input_goes_to_dead_letters(settlement):
    event, account = new_id("spd"), new_id("acct")
    await settlement.publish(*enrolled(account, SPD), lifecycle(event))
    _, _, value = performance(event, account, "1")
    await settlement.publish(
        (EVENT_PERFORMANCE, "wrong-key", value),
        performance(new_id("never-dispatched"), account, "1"),
    )
    async with settlement.producer() as producer:
        await producer.send_bytes(EVENT_PERFORMANCE, b"x/y", b"not avro")

    async def dead_letters():
        found = {r.value["reason_code"] for r in await settlement.read(DEAD_LETTERS, idle_timeout=0.5)
                 if r.value["service"] == "settlement"}
        return found if len(found) >= 2 else None
    assert await until(dead_letters) == {"KEY_MISMATCH", "UNDECODABLE"}
    # A performance of an event settlement has not seen waits, visibly, instead of being lost.
    async def waiting():
        rows = await query(settlement, "SELECT reason FROM settlement_results WHERE service_account_id = $1", account)
        return rows or None
    assert [row["reason"] for row in await until(waiting)] == ["UNKNOWN_EVENT"]
    assert await lines_of(settlement, [account]) == []


async def test_the_ledger_refuses_updates_deletes_and_unbalanced_entries(settlement):
    account, event = new_id("acct"), new_id("spd")
    await settlement.publish(*enrolled(account, SPD), lifecycle(event), performance(event, account, "2"))
    [line] = await settled_count(settlement, [account], 1)
    connection = await asyncpg.connect(settlement.settings.database_url)
    try:
        for statement in ("UPDATE ledger_lines SET amount_cents = 1 WHERE line_id = $1",
                          "DELETE FROM ledger_entries WHERE line_id = $1"):
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                await connection.execute(statement, line["line_id"])
        with pytest.raises(asyncpg.CheckViolationError, match="unbalanced"):
            await connection.execute(
                "INSERT INTO ledger_entries (line_id, ledger_account, ledger_account_id, amount_cents)"
                " VALUES ($1, 'CUSTOMER_CREDIT', $2, -5)", line["line_id"], account)
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(
                "INSERT INTO ledger_lines SELECT nextval('ledger_line_ids'), idempotency_key, service_account_id,"
                " program_id, provider_id, credit_type, event_id, bill_period_start, bill_period_end, cap_year,"
                " cap_period_start, amount_cents, reverses_line_id, cause, posted_at FROM ledger_lines"
                " WHERE line_id = $1", line["line_id"])
    finally:
        await connection.close()


async def test_a_result_keeps_its_inputs_once_and_the_api_still_shows_them(settlement):
    account, capped, event = new_id("acct"), new_id("acct"), new_id("spd")
    await settlement.publish(*enrolled(account, SPD), *enrolled(capped, SPD), lifecycle(event))
    # 2 kWh earns $2.50; 60 kWh earns $75.00, capped at the $60.00 a year.
    await settlement.publish(performance(event, account, "2"), performance(event, capped, "60"))
    lines = await settled_count(settlement, [account, capped], 2)
    assert sorted(line["amount_cents"] for line in lines) == [250, 6000]

    # Each result names its line, whose cause holds the inputs: they are not stored twice.
    results = await query(settlement, "SELECT r.service_account_id, r.line_id, r.detail, l.cause::text AS cause"
                                      " FROM settlement_results r LEFT JOIN ledger_lines l ON l.line_id = r.line_id"
                                      " WHERE r.event_id = $1", event)
    assert len(results) == 2 and all(row["line_id"] is not None and row["detail"] is None for row in results)
    causes = {row["service_account_id"]: json.loads(row["cause"]) for row in results}
    assert causes[capped]["caps_applied"][0]["reduced_to"] == "60.00" and causes[account]["reduction_kwh"] == "2.000000000"

    # The event's settlement (API) still counts the capped account, from its line's cause.
    database = Database(settlement.settings.database_url)
    try:
        operator = await database.mint_credential("billing", "operator")
    finally:
        await database.close()
    request = urllib.request.Request(f"http://127.0.0.1:{settlement.services[0].web_port}/v1/events/{event}/settlement",
                                     headers={"Authorization": f"Bearer {operator}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    [settleable] = body["by_status"]
    assert (settleable["status"], settleable["accounts"], settleable["accounts_capped"], settleable["earned"],
            settleable["paid"]) == ("SETTLEABLE", 2, 1, "77.50", "62.50")

    # A revision to INSUFFICIENT_DATA reverses the line: the result, left without a line, keeps its inputs.
    await settlement.publish(performance(event, account, "0", revision=1, status="INSUFFICIENT_DATA"))
    lines = await settled_count(settlement, [account, capped], 3)
    assert lines[-1]["amount_cents"] == -250
    [row] = await query(settlement, "SELECT status, line_id, detail::text FROM settlement_results"
                                    " WHERE service_account_id = $1", account)
    assert (row["status"], row["line_id"]) == ("INSUFFICIENT_DATA", None)
    assert json.loads(row["detail"])["performance_revision"] == 1
    await assert_ledger_balances(settlement)
