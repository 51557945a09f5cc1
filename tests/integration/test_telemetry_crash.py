"""Telemetry killed with SIGKILL mid-stream and restarted: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal


from gridflex.intervals import IntervalRevisions
from gridflex.topics import METER_INTERVALS, METER_READS
from tests.integration.conftest import crash_mid_stream, utc, wait_for_records

ACCOUNTS = 400
HOURS = 120
REVISED_HOURS = 10  # each account's first 10 hours get a revision 1 after everything else


def reads() -> list[dict]:
    start = utc(2025, 6, 1, 7, 0)
    first_pass = [
        {
            "service_account_id": f"SA-{account:04d}", "meter_id": f"M-{account:04d}",
            "interval_start": start + timedelta(hours=hour), "interval_seconds": 3600,
            "value": Decimal(500 + (account * 7 + hour * 13) % 900), "unit": "WH", "quality": "ESTIMATED",
            "revision": 0, "read_at": start + timedelta(hours=hour + 1), "source": "AMI",
        }
        for hour in range(HOURS) for account in range(ACCOUNTS)
    ]
    corrections = [
        {**read, "revision": 1, "quality": "ACTUAL", "value": read["value"] + 1}
        for read in first_pass if read["interval_start"] < start + timedelta(hours=REVISED_HOURS)
    ]
    return first_pass + corrections


async def test_a_crash_mid_stream_loses_nothing_and_downstream_sees_each_revision_once(isolated_system_factory):
    system = isolated_system_factory("crash")
    await system.create_topics()
    await system.tick(utc(2025, 7, 1))
    # 48,000 reads, then 4,000 corrections.
    expected = reads()
    identities = {(r["meter_id"], r["interval_start"], r["revision"]) for r in expected}

    # The service starts on the arriving input; once part of it is out, it is killed without warning.
    service = system.service("telemetry")
    inputs = [(METER_READS, read["service_account_id"], read) for read in expected]
    emitted_before_crash = await crash_mid_stream(system, service, inputs, METER_INTERVALS)
    assert 0 < emitted_before_crash < len(expected), "the crash must land mid-stream"

    # Restarted on the same consumer group and state, it finishes the input.
    service.start()
    await wait_for_records(system, METER_INTERVALS, len(expected))
    await asyncio.sleep(2)  # let any straggling re-emissions land before reading
    output = sorted(await system.read(METER_INTERVALS, idle_timeout=2), key=lambda r: (r.partition, r.offset))

    # No interval revision is missing.
    emitted = Counter((r.value["meter_id"], r.value["interval_start"], r.value["revision"]) for r in output)
    assert set(emitted) == identities
    # Anything emitted twice was the very same record (same identity, same content).
    by_identity: dict = {}
    for record in output:
        value = record.value
        identity = (value["meter_id"], value["interval_start"], value["revision"])
        assert by_identity.setdefault(identity, value) == value
    # A downstream reader keeps each interval revision exactly once.
    downstream = IntervalRevisions()
    accepted = [r.value for r in output if downstream.accept(r.value)]
    assert len(accepted) == len(identities)
    # Each correction names the revision it supersedes.
    assert all(r.value["supersedes_revision"] == 0 for r in output if r.value["revision"] == 1)
