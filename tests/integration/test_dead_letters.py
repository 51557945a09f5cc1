"""`gridflex dead-letters` against the real broker: an operator lists, shows and replays the
records a real telemetry worker refused, and a second replay is refused.

One telemetry worker serves the module on its own topics (an isolated system's suffix); each test
uses its own service accounts and names dead letters by their place, so tests never see each
other's records.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gridflex.batch import dead_letter_record
from gridflex.kafka_io import Codecs
from gridflex.topics import DEAD_LETTERS, METER_READS
from tests.integration.conftest import IsolatedSystem, utc

NOW = utc(2025, 7, 16, 12, 0)


@pytest.fixture(scope="module")
async def telemetry(running_stack):
    system = IsolatedSystem("dead-letters", ())
    await system.create_topics()
    # The simulated clock: the service validates "not in the future" against this tick.
    await system.tick(NOW)
    system.service("telemetry").start()
    yield system
    system.stop()


def a_read(account: str, **changes) -> dict:
    read = {
        "service_account_id": account, "meter_id": f"M-{account}", "interval_start": utc(2025, 7, 15, 20, 0),
        "interval_seconds": 3600, "value": Decimal("1432"), "unit": "WH", "quality": "ACTUAL", "revision": 0,
        "read_at": utc(2025, 7, 16, 6, 0), "source": "AMI",
    }
    return {**read, **changes}


def new_account() -> str:
    return f"SA-{uuid.uuid4().hex[:10]}"


async def dead_letters_of(system: IsolatedSystem, key: bytes, count: int, timeout: float = 30.0) -> list:
    """The dead-letter records (with their place) of one account, once ``count`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in await system.read(DEAD_LETTERS, idle_timeout=0.5) if r.value["key"] == key]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def source_records(system: IsolatedSystem, topic: str, key: bytes) -> list:
    """Every record of ``key`` on a catalogue topic, headers included, read to the topic's end."""
    name = f"{topic}{system.suffix}"
    consumer = AIOKafkaConsumer(bootstrap_servers=system.settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for p in range(Codecs(system.settings).catalogue.spec(topic).partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found += [m for m in messages if m.key == key]
        return found
    finally:
        await consumer.stop()


async def test_an_operator_lists_shows_and_replays_dead_letters_once(telemetry):
    garbage_account, negative_account = new_account(), new_account()
    # A partner sends bytes that are not Avro, and a read with a negative value.
    async with telemetry.producer() as producer:
        await producer.send_bytes(METER_READS, garbage_account.encode(), b"not avro at all")
    await telemetry.publish((METER_READS, negative_account, a_read(negative_account, value=Decimal("-5"))))
    # Telemetry refuses both: two dead letters.
    [garbage] = await dead_letters_of(telemetry, garbage_account.encode(), 1)
    [negative] = await dead_letters_of(telemetry, negative_account.encode(), 1)
    garbage_ref, negative_ref = f"{garbage.partition}:{garbage.offset}", f"{negative.partition}:{negative.offset}"

    # `list` shows both with their reasons, never their keys or values.
    code, out, err = await telemetry.command("dead-letters", "list")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "UNDECODABLE" in rows[garbage_ref] and "NEGATIVE_VALUE" in rows[negative_ref]
    assert f"{METER_READS}{telemetry.suffix}[{negative.value['source_partition']}]@" in rows[negative_ref]
    assert garbage_account not in out and negative_account not in out and "not avro" not in out
    # --json for scripts, filtered by reason code and by the topic's catalogue name.
    code, out, err = await telemetry.command("dead-letters", "list", "--json", "--reason-code", "undecodable",
                                             "--source-topic", METER_READS, "--since", "2025-07-16")
    assert code == 0, err
    listed = [json.loads(line) for line in out.splitlines()]
    assert garbage_ref in {entry["dead_letter"] for entry in listed}
    assert {entry["reason_code"] for entry in listed} == {"UNDECODABLE"}
    assert all("value" not in entry and "key" not in entry for entry in listed)
    # The summary counts per service and reason code.
    code, out, err = await telemetry.command("dead-letters", "summary", "--json", "--service", "telemetry")
    counts = {(row["service"], row["reason_code"]): row["count"] for row in map(json.loads, out.splitlines())}
    assert counts[("telemetry", "UNDECODABLE")] >= 1 and counts[("telemetry", "NEGATIVE_VALUE")] >= 1

    # `show` prints one record in full: the read decoded with the codec, the garbage as text.
    code, out, err = await telemetry.command("dead-letters", "show", negative_ref)
    assert code == 0, err
    assert "avro (gridflex.utility.MeterRead)" in out and f'"service_account_id": "{negative_account}"' in out
    assert '"value": "-5.000000"' in out and "replays        none" in out
    code, out, err = await telemetry.command("dead-letters", "show", garbage_ref, "--json")
    shown = json.loads(out)
    assert shown["value"]["decoded"] == "not avro at all" and shown["key"]["decoded"] == garbage_account

    # A dry run says what would be replayed and sends nothing.
    code, out, err = await telemetry.command("dead-letters", "replay", garbage_ref, "--dry-run")
    assert code == 0, err
    assert "dry run: 1 to replay" in err
    assert len(await source_records(telemetry, METER_READS, garbage_account.encode())) == 1

    # The replay puts the original bytes back on their source partition, naming the dead letter.
    code, out, err = await telemetry.command("dead-letters", "replay", garbage_ref, "--yes")
    assert code == 0, err
    original, replayed = await source_records(telemetry, METER_READS, garbage_account.encode())
    assert (replayed.value, replayed.key, replayed.partition) == (original.value, original.key, original.partition)
    headers = dict(replayed.headers)
    assert headers["gridflex-replayed-from"] == garbage_ref.encode()
    assert headers["gridflex-dead-letter-topic"] == f"{DEAD_LETTERS}{telemetry.suffix}".encode()
    assert f"replayed {garbage_ref} -> {METER_READS}{telemetry.suffix}[{original.partition}]@{replayed.offset}" in out

    # A second replay is refused (exit 1, nothing sent), and `show` tells where the first went.
    code, out, err = await telemetry.command("dead-letters", "replay", garbage_ref, "--yes")
    assert code == 1
    assert "replayed before" in out and "--force" in out
    assert len(await source_records(telemetry, METER_READS, garbage_account.encode())) == 2
    code, out, err = await telemetry.command("dead-letters", "show", garbage_ref)
    assert f"replays        1:\n  {METER_READS}{telemetry.suffix}[{original.partition}]@{replayed.offset}" in out

    # --force replays it again.
    code, out, err = await telemetry.command("dead-letters", "replay", garbage_ref, "--yes", "--force")
    assert code == 0, err
    assert len(await source_records(telemetry, METER_READS, garbage_account.encode())) == 3

    # The service refuses the replayed garbage again: each replay is a new dead letter, of its replay.
    letters = await dead_letters_of(telemetry, garbage_account.encode(), 3)
    assert sorted(r.value["source_offset"] for r in letters)[1] == replayed.offset


async def test_a_dead_letter_whose_source_topic_is_gone_is_not_replayed(telemetry):
    # A dead letter of a topic that no longer exists (written with the codec, as a service would).
    gone = f"partner.gone-{uuid.uuid4().hex[:6]}.enrollment-requests.v1{telemetry.suffix}"
    await telemetry.publish((DEAD_LETTERS, gone, dead_letter_record(
        "enrollment", gone, 0, 7, b"SA-1", b"\xc3\x01", "UNKNOWN_ACCOUNT", "account SA-1 is not known", NOW)))
    code, out, err = await telemetry.command("dead-letters", "list", "--json", "--service", "enrollment",
                                             "--source-topic", gone)
    [entry] = [json.loads(line) for line in out.splitlines()]
    # Replay refuses it, says why, and does not create the topic.
    code, out, err = await telemetry.command("dead-letters", "replay", entry["dead_letter"], "--yes", "--json")
    assert code == 1
    [outcome] = [json.loads(line) for line in out.splitlines()]
    assert outcome["outcome"] == "unreplayable" and outcome["reason"] == f"topic {gone} does not exist"
    consumer = AIOKafkaConsumer(bootstrap_servers=telemetry.settings.kafka_bootstrap)
    await consumer.start()
    try:
        assert gone not in await consumer.topics()
    finally:
        await consumer.stop()
    # Asking for nothing in particular is refused: replaying everything takes --all.
    code, _, err = await telemetry.command("dead-letters", "replay")
    assert code == 2 and "--all" in err
