"""Telemetry ingestion against the real broker: clean output, dead letters, dedup, revisions.

One telemetry worker serves the whole module on its own topics; each test uses its own service
accounts, so tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from decimal import Decimal

import pytest
from fastavro import schemaless_writer

from gridflex.codec import SchemaRegistry
from gridflex.processes import isolated_topics
from gridflex.topics import DEAD_LETTERS, DEVICE_STATUS, METER_INTERVALS, METER_READS
from tests.integration.conftest import IsolatedSystem, utc

NOW = utc(2025, 7, 16, 12, 0)
PROVIDERS = ("acme-energy", "globex")


@pytest.fixture(scope="module")
async def telemetry(running_stack):
    system = IsolatedSystem("telemetry", PROVIDERS)
    await system.create_topics()
    # The simulated clock: the service validates "not in the future" against this tick.
    await system.tick(NOW)
    system.service("telemetry").start()
    yield system
    system.stop()


def a_read(account: str, hour: int = 20, **changes) -> dict:
    read = {
        "service_account_id": account, "meter_id": f"M-{account}", "interval_start": utc(2025, 7, 15, hour, 0),
        "interval_seconds": 3600, "value": Decimal("1432"), "unit": "WH", "quality": "ACTUAL", "revision": 0,
        "read_at": utc(2025, 7, 16, 6, 0), "source": "AMI",
    }
    return {**read, **changes}


def new_account() -> str:
    return f"SA-{uuid.uuid4().hex[:10]}"


async def send_reads(system: IsolatedSystem, *reads: dict) -> None:
    async with system.producer() as producer:
        for read in reads:
            await producer.send(METER_READS, read["service_account_id"], read)


async def intervals_of(system: IsolatedSystem, account: str, expect: int, timeout: float = 30.0) -> list[dict]:
    """The clean intervals of one account, once ``expect`` of them are out (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.value for r in await system.read(METER_INTERVALS, idle_timeout=0.5) if r.key == account]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def dead_letters_for(system: IsolatedSystem, keys: set[bytes], timeout: float = 30.0) -> dict[bytes, dict]:
    deadline = time.monotonic() + timeout
    while True:
        letters = {r.value["key"]: r.value for r in await system.read(DEAD_LETTERS, idle_timeout=0.5)}
        found = {key: letters[key] for key in keys if key in letters}
        if len(found) == len(keys) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_a_valid_read_comes_out_clean_in_kwh(telemetry):
    account = new_account()
    # The utility sends 1,432 Wh for 20:00-21:00 UTC on July 15.
    await send_reads(telemetry, a_read(account))
    # Telemetry emits it in kWh, on its Los Angeles day, as revision 0.
    [interval] = await intervals_of(telemetry, account, expect=1)
    assert interval["kwh"] == Decimal("1.432")
    assert interval["local_date"].isoformat() == "2025-07-15"
    assert (interval["revision"], interval["supersedes_revision"]) == (0, None)


REJECTED = {
    "NEGATIVE_VALUE": {"value": Decimal("-3")},
    "UNKNOWN_UNIT": {"unit": "MWH"},
    "VALUE_TOO_LARGE": {"value": Decimal("900000")},
    "BAD_INTERVAL_LENGTH": {"interval_seconds": 300},
    "MISALIGNED_INTERVAL": {"interval_start": utc(2025, 7, 15, 20, 7)},
    "FUTURE_TIMESTAMP": {"interval_start": utc(2025, 7, 16, 13, 0)},
    "TIMESTAMP_TOO_OLD": {"interval_start": utc(1999, 6, 1, 0, 0)},
    "OUTSIDE_REVISION_WINDOW": {"interval_start": utc(2025, 5, 1, 20, 0)},  # 76 days before NOW
    "MISSING_ID": {"meter_id": ""},
}


async def test_each_validation_rule_sends_its_record_to_the_dead_letter_topic(telemetry):
    # One account per broken rule, so each dead letter can be matched to its cause by key.
    accounts = {reason: new_account() for reason in REJECTED}
    await send_reads(telemetry, *(a_read(accounts[reason], **changes) for reason, changes in REJECTED.items()))
    letters = await dead_letters_for(telemetry, {account.encode() for account in accounts.values()})
    for reason, account in accounts.items():
        letter = letters[account.encode()]
        assert letter["reason_code"] == reason, letter["reason"]
        assert letter["service"] == "telemetry"
        assert letter["source_topic"] == f"{METER_READS}{telemetry.suffix}"
        assert letter["value"][:2] == b"\xc3\x01"  # the original bytes, untouched
    # None of them came out clean.
    for account in accounts.values():
        assert await intervals_of(telemetry, account, expect=1, timeout=1) == []


async def test_undecodable_bytes_and_unknown_schemas_are_dead_letters_not_crashes(telemetry):
    garbage, unknown = new_account(), new_account()
    async with telemetry.producer() as producer:
        await producer.send_bytes(METER_READS, garbage.encode(), b"not avro at all")
        await producer.send_bytes(METER_READS, unknown.encode(), b"\xc3\x01" + bytes(8) + b"\x02")
    letters = await dead_letters_for(telemetry, {garbage.encode(), unknown.encode()})
    assert letters[garbage.encode()]["reason_code"] == "UNDECODABLE"
    assert letters[garbage.encode()]["value"] == b"not avro at all"
    assert letters[unknown.encode()]["reason_code"] == "UNKNOWN_SCHEMA"
    # The service still works afterwards.
    account = new_account()
    await send_reads(telemetry, a_read(account))
    assert len(await intervals_of(telemetry, account, expect=1)) == 1


async def test_an_exact_duplicate_is_dropped(telemetry):
    account = new_account()
    # The same read twice, then a later hour as a marker (same key, same partition, so processed after).
    await send_reads(telemetry, a_read(account), a_read(account), a_read(account, hour=21))
    # Once the marker is out, the duplicate has been processed: only one 20:00 interval exists.
    intervals = await intervals_of(telemetry, account, expect=2)
    assert [i["interval_start"].hour for i in intervals] == [20, 21]


async def test_a_higher_revision_supersedes_and_a_late_lower_one_is_dropped(telemetry):
    account = new_account()
    # An estimate, its correction, then the estimate again (late), then a marker.
    estimate = a_read(account, quality="ESTIMATED", value=Decimal("1000"))
    correction = a_read(account, revision=1, value=Decimal("1250"))
    await send_reads(telemetry, estimate, correction, estimate, a_read(account, hour=21))
    intervals = await intervals_of(telemetry, account, expect=3)
    assert [(i["interval_start"].hour, i["revision"], i["supersedes_revision"], i["kwh"]) for i in intervals] == [
        (20, 0, None, Decimal("1")),
        (20, 1, 0, Decimal("1.25")),
        (21, 0, None, Decimal("1.432")),
    ]


async def test_the_same_revision_with_different_content_is_a_dead_letter(telemetry):
    account = new_account()
    await send_reads(telemetry, a_read(account), a_read(account, value=Decimal("999")))
    letters = await dead_letters_for(telemetry, {account.encode()})
    assert letters[account.encode()]["reason_code"] == "CONFLICTING_REVISION"


async def test_a_read_written_with_an_older_schema_version_still_decodes(telemetry):
    account = new_account()
    # A producer still on MeterRead version 1 (no `source` field), kept in schemas/history.
    registry = SchemaRegistry.from_directory(telemetry.settings.schemas_dir)
    old = next(v for v in registry.by_fingerprint.values()
               if v.name == "gridflex.utility.MeterRead" and v is not registry.current[v.name])
    body = io.BytesIO()
    schemaless_writer(body, old.parsed, {k: v for k, v in a_read(account).items() if k != "source"})
    async with telemetry.producer() as producer:
        await producer.send_bytes(METER_READS, account.encode(), old.header + body.getvalue())
    [interval] = await intervals_of(telemetry, account, expect=1)
    assert interval["kwh"] == Decimal("1.432")


async def test_thermostat_states_become_device_status_per_provider(telemetry):
    serial = f"T-{uuid.uuid4().hex[:8]}"
    state = {
        "thermostat_serial": serial, "service_account_id": new_account(), "observed_at": utc(2025, 7, 15, 20, 0),
        "online": True, "hvac_mode": "COOL", "cool_setpoint_f": 76.0, "indoor_temp_f": 75.0, "event_id": None,
        "override": False,
    }
    offline = {**state, "observed_at": utc(2025, 7, 15, 21, 0), "online": False}
    # Two state records from one provider's thermostat: first sight, then offline.
    topic = f"partner.{PROVIDERS[1]}.thermostat-state.v1"
    deadline = time.monotonic() + 60
    changes: list[dict] = []
    async with telemetry.producer() as producer:
        await producer.send(topic, serial, state)
        await producer.send(topic, serial, offline)
    while time.monotonic() < deadline and len(changes) < 2:
        await asyncio.sleep(1)
        changes = [r.value for r in await telemetry.read(DEVICE_STATUS, idle_timeout=0.5) if r.value["thermostat_serial"] == serial]
    # The provider is named by the topic it wrote to, never by the record.
    assert [(c["change"], c["provider_id"]) for c in changes] == [("FIRST_SEEN", "globex"), ("WENT_OFFLINE", "globex")]


async def test_metrics_show_throughput_rejects_revisions_latency_and_lag(telemetry):
    # A clean read, a negative one and a correction go through the worker.
    account, rejected = new_account(), new_account()
    await send_reads(telemetry, a_read(rejected, value=Decimal("-1")), a_read(account),
                     a_read(account, revision=1, value=Decimal("1500")))
    await intervals_of(telemetry, account, expect=2)
    await dead_letters_for(telemetry, {rejected.encode()})
    await asyncio.sleep(2)  # past one commit interval
    # Its /metrics page reports what an on-call engineer needs.
    metrics = telemetry.services[0].metrics()
    suffixed = f"{METER_READS}{telemetry.suffix}"
    for line_start in (
        'gridflex_records_in_total{service="telemetry",topic="utility.meter-reads.v1"}',
        'gridflex_records_out_total{service="telemetry",topic="gridflex.telemetry.meter-intervals.v1"}',
        'gridflex_dead_letters_total{reason_code="NEGATIVE_VALUE",service="telemetry",source_topic="utility.meter-reads.v1"}',
        'gridflex_telemetry_intervals_total{verdict="revision"}',
        'gridflex_telemetry_intervals_total{verdict="duplicate"}',
        'gridflex_record_latency_seconds_count{service="telemetry",topic="utility.meter-reads.v1"}',
        'gridflex_consumer_lag{',
        'gridflex_last_commit_timestamp_seconds{',
    ):
        # Per-partition gauges: some partition of this run's input topic carries them.
        lines = [line for line in metrics.splitlines() if line.startswith(line_start)
                 and ("partition=" not in line or f'topic="{suffixed}"' in line)]
        assert lines, f"{line_start} is not exported"


async def test_a_provider_onboarded_while_running_is_read_without_restart(telemetry):
    # `gridflex partner add initech` while the worker runs: its topics appear, nothing restarts.
    await isolated_topics(telemetry.settings, ("initech",))
    serial = f"T-{uuid.uuid4().hex[:8]}"
    state = {
        "thermostat_serial": serial, "service_account_id": new_account(), "observed_at": utc(2025, 7, 15, 20, 0),
        "online": True, "hvac_mode": "COOL", "cool_setpoint_f": 76.0, "indoor_temp_f": 75.0, "event_id": None,
        "override": False,
    }
    async with telemetry.producer() as producer:
        await producer.send("partner.initech.thermostat-state.v1", serial, state)
    deadline = time.monotonic() + 60
    changes: list[dict] = []
    while time.monotonic() < deadline and not changes:
        await asyncio.sleep(1)
        changes = [r.value for r in await telemetry.read(DEVICE_STATUS, idle_timeout=0.5) if r.value["thermostat_serial"] == serial]
    assert [(c["change"], c["provider_id"]) for c in changes] == [("FIRST_SEEN", "initech")]
