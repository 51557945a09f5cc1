"""The `gridflex` operator command against running services on the real broker and Postgres: an
operator publishes, updates and cancels an event and hears each decision; reads an event's
coverage and the program's hours; reads an account's enrollments and statements; and checks the
services' health with `gridflex status`.

Each test runs the services it needs on isolated topics and a private Postgres schema, on a
simulated clock; the command dates its requests with that clock.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime, timedelta

import pytest

from gridflex.calendar import LOCAL_ZONE
from gridflex.topics import CUSTOMER_ACCOUNTS, ENROLLMENT_REQUESTS, EVENT_LIFECYCLE, EVENT_PERFORMANCE
from tests.integration.conftest import IsolatedSystem, customer_account, new_id, utc

NOW = utc(2025, 7, 14, 16)  # Monday July 14, 2025, 09:00 in Los Angeles
SEP = "sce-sep-2025"
SPD = "sce-save-power-days"


@pytest.fixture(scope="module")
async def dispatch(running_stack):
    system = IsolatedSystem("cli-dispatch", ("energyhub",))
    await system.create_topics()
    await system.tick(NOW)
    system.service("dispatch").start()
    yield system
    system.stop()


async def test_an_operator_publishes_updates_and_cancels_an_event_and_hears_each_decision(dispatch):
    # The operator calls a two-hour afternoon event; the id comes from the program and the start.
    code, out, err = await dispatch.command("events", "publish", SEP, "--start", "2025-07-22T14:00",
                                            "--end", "2025-07-22T16:00", "--offset", "3")
    assert code == 0, err
    event_id = f"{SEP}-20250722-1400"
    assert out.startswith(f"SCHEDULED {event_id} (revision 1)")
    assert "counted 2.00 h" in out and "of 180.00 h used this program year" in out

    # One that breaks the program's limits is refused with every rule, and exit status 1.
    code, out, err = await dispatch.command("events", "publish", SEP, "--id", new_id("EV"),
                                            "--start", "2025-07-23T09:00", "--end", "2025-07-23T17:00",
                                            "--offset", "6")
    assert code == 1 and out == ""
    assert err.startswith("REJECTED SCHEDULE")
    codes = set(re.findall(r"^  ([A-Z_]+): ", err, re.M))
    assert {"DURATION", "SETPOINT_OFFSET"} <= codes, err

    # Shortened by an hour: what is not given stays (start, offset).
    code, out, err = await dispatch.command("events", "update", event_id, "--end", "2025-07-22T15:00")
    assert code == 0, err
    assert out.startswith(f"UPDATED {event_id} (revision 2)") and "counted 1.00 h" in out

    code, out, err = await dispatch.command("events", "show", event_id)
    assert code == 0, err
    assert re.search(r"SCHEDULED .*rev 1 .*\+3 °F", out) and re.search(r"UPDATED .*rev 2 .*\+3 °F", out)

    code, out, err = await dispatch.command("events", "cancel", event_id)
    assert code == 0, err
    assert out.startswith(f"CANCELLED {event_id} (revision 3)") and "counted 0.00 h" in out

    # A cancelled event cannot be changed; an unknown one is named.
    code, _, err = await dispatch.command("events", "update", event_id, "--offset", "2")
    assert code == 1 and "EVENT_CANCELLED" in err
    code, _, err = await dispatch.command("events", "cancel", "no-such-event")
    assert code == 1 and "no event 'no-such-event' is scheduled" in err

    code, out, err = await dispatch.command("events", "hours", "--year", "2025")
    assert code == 0, err
    assert re.search(rf"^{SEP}\s+2025\s+0\.00\s+180\s+180\.00$", out, re.M), out


async def test_status_shows_each_service_ready_or_down(dispatch):
    [service] = dispatch.services
    code, out, err = await dispatch.command("status", GRIDFLEX_DISPATCH_WEB_PORT=str(service.web_port),
                                            GRIDFLEX_BASELINE_WEB_PORT="1")
    assert code == 0, err
    assert re.search(r"^kafka\s+running", out, re.M) and re.search(r"^postgres\s+running", out, re.M)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    assert rows["dispatch"][1:3] == [f"127.0.0.1:{service.web_port}", "ready"]
    assert rows["dispatch"][3].isdigit()  # records behind, from /metrics
    assert rows["dispatch"][5] == "4/4"  # every pipeline's local state restored (events, fan-out, 2 projections)
    assert rows["baseline"][1:3] == ["127.0.0.1:1", "down"]


async def test_an_operator_reads_an_accounts_enrollment_and_statements(isolated_system_factory):
    system = isolated_system_factory("cli-accounts", ("energyhub",))
    await system.create_topics()
    await system.tick(utc(2025, 6, 2, 17))
    system.service("enrollment").start()
    system.service("settlement", GRIDFLEX_SETTLEMENT_FIRST_OPEN_DAY="2025-06-01").start()
    account, serial, request_id = new_id("SA"), new_id("T"), new_id("R")

    # The utility publishes the account; EnergyHub enrolls its thermostat in Save Power Days.
    await system.publish((CUSTOMER_ACCOUNTS, account, customer_account(account)))
    await system.publish((ENROLLMENT_REQUESTS.format(provider_id="energyhub"), account, {
        "request_id": request_id, "program_id": SPD, "action": "ENROLL", "service_account_id": account,
        "thermostat_serial": serial, "thermostat_model": "T10", "controls_central_ac": True,
        "thermostat_source": "RETAIL", "requested_at": utc(2025, 6, 2, 16)}))
    out = await _until_output(system, "accounts", "show", account, expect=f"{SPD}")
    assert re.search(rf"{SPD}\s+energyhub\s+thermostat {serial}\s+2025-06-\d\d → open", out), out
    assert re.search(rf"energyhub/{request_id}\s+{SPD} ENROLL {serial}: ACCEPTED", out), out

    # An event's performance settles: 2.4 kWh at $1.25 → $3.00 on the July statement.
    event_id = new_id("EV")
    start = datetime(2025, 7, 16, 14, tzinfo=LOCAL_ZONE)
    await system.publish((EVENT_LIFECYCLE, event_id, {
        "event_id": event_id, "program_id": SPD, "status": "ENDED", "revision": 1, "request_action": None,
        "reason": "GRID_STRESS", "start": start, "end": start + timedelta(hours=4), "setpoint_offset_f": 3,
        "precool": False, "targets": [], "issued_at": utc(2025, 7, 15, 16), "decided_at": utc(2025, 7, 15, 16),
        "failures": [], "counted_ms": 4 * 3600 * 1000, "program_year": 2025, "year_used_ms": 0,
        "year_limit_ms": None, "source_offset": None}))
    await system.tick(utc(2025, 7, 17, 3))
    await system.publish((EVENT_PERFORMANCE, f"{event_id}/{account}", {
        "event_id": event_id, "program_id": SPD, "service_account_id": account, "method": "csrl-3-of-5",
        "baseline_kwh": _kwh("12.4"), "actual_kwh": _kwh("10"), "reduction_kwh": _kwh("2.4"),
        "candidate_days": [date(2025, 7, d) for d in (9, 10, 11, 14, 15)], "status": "SETTLEABLE",
        "reason": None, "revision": 0}))
    out = await _until_output(system, "accounts", "show", account, expect="3.00")
    period = re.search(r"(2025-07-\d\d) → (2025-0[78]-\d\d) OPEN\s+1\s+3\.00", out)
    assert period, out

    code, out, err = await system.command("accounts", "statement", account, period.group(1))
    assert code == 0, err
    assert out.splitlines()[0] == f"{account} bill period {period.group(1)} → {period.group(2)}: $3.00, open"
    assert re.search(rf"line \d+\s+{SPD}\s+ENERGY\s+{event_id}\s+3\.00", out), out
    assert "2.4" in out.splitlines()[2]  # the arithmetic behind the credit

    code, _, err = await system.command("accounts", "statement", account, "2024-01-01")
    assert code == 1 and "no statement" in err
    code, _, err = await system.command("accounts", "show", "SA-nobody")
    assert code == 1 and "nothing is known" in err


def _kwh(value: str):
    from decimal import Decimal
    return Decimal(value).quantize(Decimal("0.000000001"))


async def _until_output(system: IsolatedSystem, *args: str, expect: str, timeout: float = 60.0) -> str:
    """The command's output once it contains ``expect`` (projections follow the topics)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, out, err = await system.command(*args)
        if code == 0 and expect in out:
            return out
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"`gridflex {' '.join(args)}` never showed {expect!r}: {out}{err}")
        await asyncio.sleep(1)
