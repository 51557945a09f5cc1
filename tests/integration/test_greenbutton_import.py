"""``gridflex import greenbutton`` against the real broker: the reads it publishes on
``utility.meter-reads.v1`` decode as MeterRead with the file's values, a re-import publishes the
same records, and telemetry keeps one clean interval per meter interval however often a file
is imported.

The command runs as a process on each system's private topics (``GRIDFLEX_TOPIC_SUFFIX``), as
an operator runs it. Expected values are read from the XML with ElementTree, not with the parser.
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from gridflex.calendar import LOCAL_ZONE
from gridflex.topics import DEAD_LETTERS, METER_INTERVALS, METER_READS
from tests.integration.conftest import IsolatedSystem, new_id, utc

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "greenbutton"
ONE_DAY = FIXTURES / "default_namespace.xml"  # 24 hourly reads of 2025-07-14 (Los Angeles), 21,008 Wh
SAMPLE_YEAR = REPO.parent / "shared" / "data" / "greenbutton" / \
    "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml"
NOW = utc(2025, 7, 16, 12)  # two days after the fixture's day: inside telemetry's 60-day revision window
ESPI = "{http://naesb.org/espi}"


def wh_by_start(path: Path) -> dict[datetime, Decimal]:
    """Start → Wh of every IntervalReading (multiplier 0 in these files), read with ElementTree."""
    root = ET.parse(path).getroot()
    [reading_type] = root.iter(f"{ESPI}ReadingType")
    assert reading_type.findtext(f"{ESPI}powerOfTenMultiplier") == "0"
    return {datetime.fromtimestamp(int(r.findtext(f"{ESPI}timePeriod/{ESPI}start")), timezone.utc):
            Decimal(r.findtext(f"{ESPI}value")) for r in root.iter(f"{ESPI}IntervalReading")}


async def import_greenbutton(system: IsolatedSystem, *args: str) -> tuple[int, str, str]:
    """`gridflex import greenbutton …` on this system's topics: (exit code, stdout, stderr)."""
    return await system.command("import", "greenbutton", *args)


async def reads_of(system: IsolatedSystem, account: str) -> list:
    return [record for record in await system.read(METER_READS, idle_timeout=1.0) if record.key == account]


@pytest.fixture(scope="module")
async def topics_only(running_stack):
    system = IsolatedSystem("greenbutton-import", ())
    await system.create_topics()
    yield system


@pytest.fixture(scope="module")
async def with_telemetry(running_stack):
    system = IsolatedSystem("greenbutton-telemetry", ())
    await system.create_topics()
    await system.tick(NOW)  # telemetry validates "not in the future" and the revision window against this
    system.service("telemetry").start()
    yield system
    system.stop()


async def test_an_import_publishes_the_files_reads_as_meter_reads(topics_only):
    account = new_id("SA")
    expected = wh_by_start(ONE_DAY)
    # The operator imports one day of hourly reads for the account.
    code, out, err = await import_greenbutton(topics_only, str(ONE_DAY), "--service-account", account)
    assert code == 0, err
    assert f"published 24 reads of 1 meter(s) for {account}" in out

    # The topic holds 24 MeterReads keyed by the account, with the file's values in Wh.
    records = await reads_of(topics_only, account)
    assert len(records) == 24
    assert {r.value["interval_start"]: r.value["value"] for r in records} == expected
    assert sum(r.value["value"] for r in records) == Decimal(21008)
    for record in records:
        read = record.value
        assert (read["service_account_id"], read["meter_id"]) == (account, "greenbutton:RetailCustomer/1/UsagePoint/1")
        assert (read["interval_seconds"], read["unit"], read["quality"], read["revision"], read["source"]) == (
            3600, "WH", "ACTUAL", 0, "GREEN_BUTTON")
        assert read["read_at"] == read["interval_start"] + timedelta(hours=1)

    # Importing the same file again publishes the very same keys and values.
    code, _, err = await import_greenbutton(topics_only, str(ONE_DAY), "--service-account", account)
    assert code == 0, err
    again = await reads_of(topics_only, account)  # one key, one partition: in publishing order
    assert len(again) == 48
    assert [(r.key, r.value) for r in again[24:]] == [(r.key, r.value) for r in again[:24]]


async def test_a_refused_file_publishes_nothing(topics_only):
    account = new_id("SA")
    code, out, err = await import_greenbutton(topics_only, str(FIXTURES / "gas.xml"), "--service-account", account)
    assert code == 1
    assert "refused: gas.xml: UsagePoint RetailCustomer/9/UsagePoint/1: ServiceCategory kind 1 (natural gas)" in err
    assert await reads_of(topics_only, account) == []


@pytest.mark.skipif(not SAMPLE_YEAR.is_file(), reason=(
    f"{SAMPLE_YEAR.parent} is absent: the Green Button sample year ships with the shared workspace (CI has it)"))
async def test_a_sample_year_arrives_whole_across_both_dst_changes(topics_only):
    account = new_id("SA")
    expected = wh_by_start(SAMPLE_YEAR)
    code, out, err = await import_greenbutton(topics_only, str(SAMPLE_YEAR), "--service-account", account)
    assert code == 0, err
    assert re.search(r"published 8,760 reads of 1 meter\(s\) .* \([\d,]+ reads/s\)", out), out

    # 8,760 hourly reads, each the file's value, totalling the file's own sum (4,425.305 kWh)
    records = await reads_of(topics_only, account)
    assert len(records) == 8760
    got = {r.value["interval_start"]: r.value["value"] for r in records}
    assert got == expected and sum(got.values()) == sum(expected.values()) == Decimal(4425305)
    # UTC starts, no hour lost or doubled: the local DST days have 23 and 25 hours
    per_day = Counter(start.astimezone(LOCAL_ZONE).date() for start in got)
    assert (per_day[date(2011, 3, 13)], per_day[date(2011, 11, 6)]) == (23, 25)
    assert set(per_day.values()) == {23, 24, 25} and len(per_day) == 365


def duplicates_dropped(system: IsolatedSystem) -> float:
    wanted = 'gridflex_telemetry_intervals_total{verdict="duplicate"} '
    return sum(float(line.rsplit(" ", 1)[1]) for line in system.services[0].metrics().splitlines()
               if line.startswith(wanted))


async def intervals_of(system: IsolatedSystem, account: str) -> list[dict]:
    return [r.value for r in await system.read(METER_INTERVALS, idle_timeout=1.0) if r.key == account]


async def test_telemetry_keeps_one_interval_per_hour_however_often_a_file_is_imported(with_telemetry):
    account = new_id("SA")
    dropped_before = duplicates_dropped(with_telemetry)
    # The file is imported, then imported again (an operator re-running the same command).
    for _ in range(2):
        code, _, err = await import_greenbutton(with_telemetry, str(ONE_DAY), "--service-account", account)
        assert code == 0, err

    # Telemetry drops the 24 repeats as duplicates of the same meter interval and revision ...
    deadline = time.monotonic() + 60
    while duplicates_dropped(with_telemetry) - dropped_before < 24 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert duplicates_dropped(with_telemetry) - dropped_before == 24

    # ... and has emitted each hour once, in kWh, on its Los Angeles day; nothing was refused.
    intervals = await intervals_of(with_telemetry, account)
    assert len(intervals) == 24
    assert {i["interval_start"]: i["kwh"] for i in intervals} == {
        start: wh / 1000 for start, wh in wh_by_start(ONE_DAY).items()}
    assert {i["local_date"] for i in intervals} == {date(2025, 7, 14)}
    letters = await with_telemetry.read(DEAD_LETTERS, idle_timeout=0.5)
    assert not [r for r in letters if r.value["key"] == account.encode()]


async def test_a_corrected_file_imported_as_a_higher_revision_replaces_the_day(with_telemetry, tmp_path):
    account = new_id("SA")
    code, _, err = await import_greenbutton(with_telemetry, str(ONE_DAY), "--service-account", account)
    assert code == 0, err
    # The utility corrects the first hour (612 → 700 Wh) in a new download of the same day.
    corrected = tmp_path / "corrected.xml"
    corrected.write_text(ONE_DAY.read_text().replace("<value>612</value>", "<value>700</value>", 1))

    deadline, first = time.monotonic() + 60, []
    while len(first) < 24 and time.monotonic() < deadline:
        first = [i for i in await intervals_of(with_telemetry, account) if i["revision"] == 0]
    assert len(first) == 24

    # As revision 1 it replaces the day: the corrected hour, superseding revision 0.
    code, out, err = await import_greenbutton(with_telemetry, str(corrected), "--service-account", account,
                                              "--revision", "1")
    assert code == 0 and "as revision 1" in out, err
    deadline, revised = time.monotonic() + 60, []
    while len(revised) < 24 and time.monotonic() < deadline:
        revised = [i for i in await intervals_of(with_telemetry, account) if i["revision"] == 1]
    assert len(revised) == 24 and {i["supersedes_revision"] for i in revised} == {0}
    assert {i["interval_start"]: i["kwh"] for i in revised}[utc(2025, 7, 14, 7)] == Decimal("0.7")
