"""Telemetry's revision memory: restored from its changelog when the disk is lost, expired with
the revision window."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from gridflex.topics import METER_INTERVALS, METER_READS
from tests.integration.test_telemetry import NOW, a_read, dead_letters_for, intervals_of, new_account, send_reads


async def changelog_records(system) -> dict[str, bytes | None]:
    """The seen-intervals changelog, latest value per key (None: deleted)."""
    name = f"gridflex-telemetry{system.suffix}-{METER_READS}-seen-intervals-changelog"
    consumer = AIOKafkaConsumer(name, bootstrap_servers=system.settings.kafka_bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        latest: dict[str, bytes | None] = {}
        while batches := await consumer.getmany(timeout_ms=1500):
            for messages in batches.values():
                latest.update((m.key.decode(), m.value) for m in messages)
        return latest
    finally:
        await consumer.stop()


async def test_a_worker_that_lost_its_disk_restores_revisions_from_the_changelog(isolated_system_factory, tmp_path):
    system = isolated_system_factory("restore")
    await system.create_topics()
    await system.tick(NOW)
    account = new_account()
    first = system.service("telemetry", GRIDFLEX_DATA_DIR=str(tmp_path / "first-disk")).start()
    await send_reads(system, a_read(account, quality="ESTIMATED", value=Decimal("1000")))
    assert len(await intervals_of(system, account, expect=1)) == 1
    first.stop()

    # A replacement worker on an empty disk: the same estimate again, its correction, a marker.
    system.service("telemetry", GRIDFLEX_DATA_DIR=str(tmp_path / "new-disk")).start()
    await send_reads(system, a_read(account, quality="ESTIMATED", value=Decimal("1000")),
                     a_read(account, revision=1, value=Decimal("1250")), a_read(account, hour=21))
    intervals = await intervals_of(system, account, expect=3)
    # The repeat is known to be a duplicate, and the correction names the revision it supersedes.
    assert [(i["interval_start"].hour, i["revision"], i["supersedes_revision"]) for i in intervals] == [
        (20, 0, None), (20, 1, 0), (21, 0, None),
    ]


async def test_days_that_leave_the_revision_window_are_forgotten(isolated_system_factory):
    system = isolated_system_factory("expiry")
    await system.create_topics()
    await system.tick(NOW)
    account = new_account()
    system.service("telemetry").start()
    old_read = a_read(account)  # 2025-07-15, the day before NOW
    await send_reads(system, old_read)
    assert len(await intervals_of(system, account, expect=1)) == 1
    day_key = f"2025-07-15/{old_read['meter_id']}"
    assert (await changelog_records(system))[day_key] is not None

    # 61 days later, the next batch forgets that day and tells the changelog (a tombstone).
    later = NOW + timedelta(days=61)
    await system.tick(later)
    marker = a_read(account, interval_start=later - timedelta(hours=2), read_at=later)
    await send_reads(system, marker)
    assert len(await intervals_of(system, account, expect=2)) == 2
    assert (await changelog_records(system))[day_key] is None
    # A read of the forgotten day can no longer be reconciled: it is a dead letter, not a new interval.
    await send_reads(system, old_read)
    letters = await dead_letters_for(system, {account.encode()})
    assert letters[account.encode()]["reason_code"] == "OUTSIDE_REVISION_WINDOW"
    assert len(await intervals_of(system, account, expect=3, timeout=2)) == 2


async def intervals_by_account(system, accounts: list[str], expect: int, timeout: float = 60.0) -> dict[str, list[dict]]:
    """The clean intervals of several accounts, once each has ``expect`` (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[dict]] = {account: [] for account in accounts}
        for record in await system.read(METER_INTERVALS, idle_timeout=0.5):
            if record.key in found:
                found[record.key].append(record.value)
        if all(len(values) >= expect for values in found.values()) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_a_second_worker_takes_over_partitions_with_their_revision_memory(isolated_system_factory):
    system = isolated_system_factory("rebalance")
    await system.create_topics()
    await system.tick(NOW)
    accounts = [new_account() for _ in range(24)]  # spread over every partition
    estimates = [a_read(account, quality="ESTIMATED", value=Decimal("1000")) for account in accounts]
    system.service("telemetry").start()
    await send_reads(system, *estimates)
    assert all(len(found) == 1 for found in (await intervals_by_account(system, accounts, expect=1)).values())

    # A second worker joins the group: the partitions are split between the two.
    second = system.service("telemetry", GRIDFLEX_INSTANCE_ID="telemetry-1").start()
    await send_reads(system, *estimates, *(a_read(account, revision=1, value=Decimal("1250")) for account in accounts))
    # Whichever worker owns an account's partition now, it knew the estimate: the repeat is
    # dropped and the correction supersedes revision 0.
    for account, intervals in (await intervals_by_account(system, accounts, expect=2)).items():
        assert [(i["revision"], i["supersedes_revision"]) for i in intervals] == [(0, None), (1, 0)], account
    # And the second worker did take part.
    [consumed] = [float(line.rsplit(" ", 1)[1]) for line in second.metrics().splitlines()
                  if line.startswith('gridflex_records_in_total{service="telemetry",topic="utility.meter-reads.v1"}')]
    assert consumed > 0


async def test_a_graceful_stop_commits_everything_it_emitted(isolated_system_factory):
    system = isolated_system_factory("stop")
    await system.create_topics()
    await system.tick(NOW)
    accounts = [new_account() for _ in range(12)]
    worker = system.service("telemetry").start()
    await send_reads(system, *(a_read(account, hour=hour) for account in accounts for hour in range(24)))
    assert all(len(found) == 24 for found in (await intervals_by_account(system, accounts, expect=24)).values())

    started = time.monotonic()
    worker.stop()
    assert worker.process.returncode is not None and worker.process.returncode >= 0, "stopped by SIGTERM, not killed"
    assert time.monotonic() - started < 20
    # Its consumer group committed up to the end of every partition: a restart reads nothing again.
    source = f"{METER_READS}{system.suffix}"
    consumer = AIOKafkaConsumer(source, bootstrap_servers=system.settings.kafka_bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=system.settings.kafka_bootstrap)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(source, p) for p in consumer.partitions_for_topic(source)])
        offsets = await admin.list_consumer_group_offsets(f"gridflex-telemetry{system.suffix}-{METER_READS}")
    finally:
        await consumer.stop()
        await admin.close()
    # (A partition that never held a record has nothing to commit.)
    assert {tp: offsets[tp].offset for tp in offsets} == {tp: end for tp, end in ends.items() if end}
