"""Green Button files read into meter reads: the committed fixtures, variants of them, and every
sample file of ``../shared/data/greenbutton`` (skipped where the shared workspace is absent).

Expected totals are worked out here from the XML with the standard library's ElementTree (the
``<value>`` of every IntervalReading × 10^powerOfTenMultiplier of the file's ReadingType), never
with the parser under test.
"""

from __future__ import annotations

import io
import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from gridflex.calendar import LOCAL_ZONE
from gridflex.greenbutton import (
    AmbiguousMeterReadings,
    DuplicateInterval,
    Gap,
    IntervalGap,
    MalformedFeed,
    NotElectricity,
    UnknownUnit,
    UnsupportedInterval,
    UnsupportedReading,
    read_electricity,
    read_greenbutton,
)
from gridflex.kafka_io import Codecs
from gridflex.meter_import import default_meter_id, import_group, meter_reads, plan_import
from gridflex.settings import ServiceSettings
from gridflex.topics import METER_READS

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "greenbutton"
SHARED = REPO.parent / "shared" / "data" / "greenbutton"  # a user's clone has no ../shared; CI has it
ESPI = "{http://naesb.org/espi}"
HOUR = timedelta(hours=1)
SAMPLE_YEAR = sorted(SHARED.glob("*_Jan_1_2011_to_Jan_1_2012_*.xml")) if SHARED.is_dir() else []


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def file_total_wh(path: Path) -> Decimal:
    """The file's own sum, read with ElementTree: every IntervalReading's value × 10^multiplier."""
    root = ET.parse(path).getroot()
    [reading_type] = root.iter(f"{ESPI}ReadingType")
    multiplier = int(reading_type.findtext(f"{ESPI}powerOfTenMultiplier", "0"))
    values = [int(r.findtext(f"{ESPI}value")) for r in root.iter(f"{ESPI}IntervalReading")]
    return sum(Decimal(value).scaleb(multiplier) for value in values)


def file_readings(path: Path) -> dict[datetime, int]:
    """Start → raw value of every IntervalReading, read with ElementTree."""
    root = ET.parse(path).getroot()
    return {datetime.fromtimestamp(int(r.findtext(f"{ESPI}timePeriod/{ESPI}start")), timezone.utc):
            int(r.findtext(f"{ESPI}value")) for r in root.iter(f"{ESPI}IntervalReading")}


def variant(fixture: str, *replacements: tuple[str, str], append: str = "") -> io.BytesIO:
    """A fixture with some text replaced (each replacement must apply) and entries appended."""
    text = (FIXTURES / fixture).read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return io.BytesIO(text.replace("</feed>", append + "</feed>").encode())


def only_outcome(source, name: str | None = None, **options):
    [outcome] = read_greenbutton(source, name=name or getattr(source, "name", "variant.xml"), **options)
    return outcome


def refusal(source, **options):
    outcome = only_outcome(source, **options)
    assert outcome.series is None, "expected the usage point to be refused"
    return outcome.problems[0]


# -- the fixtures -----------------------------------------------------------------------------------

def test_default_namespaces_give_every_hour_of_the_day_exactly():
    path = FIXTURES / "default_namespace.xml"
    outcome = only_outcome(path)
    series = outcome.series
    # 24 hourly reads of local day 2025-07-14 (midnight PDT is 07:00 UTC), read in start order
    assert series.interval_seconds == 3600 and len(series.reads) == 24
    assert [r.start for r in series.reads] == [utc(2025, 7, 14, 7) + n * HOUR for n in range(24)]
    # the values are the file's, in Wh, exact, and add up to the file's own sum (21,008 Wh)
    assert {r.start: r.wh for r in series.reads} == {start: Decimal(v) for start, v in file_readings(path).items()}
    assert series.total_wh == file_total_wh(path) == Decimal(21008)
    assert all(isinstance(r.wh, Decimal) and r.quality == "ACTUAL" for r in series.reads)
    # the LocalTimeParameters entry beside the data is skipped; nothing is left out
    assert outcome.usage_point == "RetailCustomer/1/UsagePoint/1" and outcome.problems == ()


def test_prefixed_namespaces_read_the_same_way():
    path = FIXTURES / "prefixed_namespace.xml"
    series = only_outcome(path).series
    assert [r.start for r in series.reads] == [utc(2025, 7, 14, 7) + n * HOUR for n in range(6)]
    assert [r.wh for r in series.reads] == [Decimal(v) for v in (420, 415, 402, 398, 405, 433)]
    assert series.total_wh == file_total_wh(path) == Decimal(2473)


def test_any_prefix_is_the_same_namespace():
    # The default-namespace fixture rewritten with other prefixes reads identically.
    plain = only_outcome(FIXTURES / "default_namespace.xml").series.reads
    text = (FIXTURES / "default_namespace.xml").read_text()
    text = text.replace('<feed xmlns="http://www.w3.org/2005/Atom">',
                        '<a:feed xmlns:a="http://www.w3.org/2005/Atom" xmlns:n="http://naesb.org/espi">')
    for tag in ("feed", "entry", "id", "link", "title", "content"):
        text = text.replace(f"<{tag}", f"<a:{tag}").replace(f"</{tag}>", f"</a:{tag}>")
    text = text.replace(' xmlns="http://naesb.org/espi"', "")
    for tag in ("UsagePoint", "ServiceCategory", "kind", "LocalTimeParameters", "dstEndRule", "dstOffset",
                "dstStartRule", "tzOffset", "MeterReading", "ReadingType", "accumulationBehaviour", "commodity",
                "flowDirection", "intervalLength", "powerOfTenMultiplier", "uom", "IntervalBlock", "interval",
                "IntervalReading", "timePeriod", "duration", "start", "value"):
        for old, new in ((f"<{tag}>", f"<n:{tag}>"), (f"</{tag}>", f"</n:{tag}>"), (f"<{tag}/>", f"<n:{tag}/>")):
            text = text.replace(old, new)
    assert "<n:IntervalReading>" in text and "<a:entry>" in text
    assert only_outcome(io.BytesIO(text.encode()), name="renamed.xml").series.reads == plain


def test_a_gap_is_refused_with_the_exact_missing_starts():
    problem = refusal(FIXTURES / "gap.xml")
    assert isinstance(problem, IntervalGap)
    # 09:00 is missing, and 12:00, 13:00, 14:00 UTC
    assert problem.gaps == (Gap(utc(2025, 7, 14, 9), 1, 3600), Gap(utc(2025, 7, 14, 12), 3, 3600))
    assert "gap.xml" in str(problem) and "RetailCustomer/3/UsagePoint/1/MeterReading/1" in str(problem)
    assert "2025-07-14T09:00:00Z (1 interval)" in str(problem)
    assert "2025-07-14T12:00:00Z … 2025-07-14T14:00:00Z (3 intervals)" in str(problem)


def test_gaps_allowed_are_reported_and_never_filled():
    series = only_outcome(FIXTURES / "gap.xml", allow_gaps=True).series
    assert [r.start.hour for r in series.reads] == [7, 8, 10, 11, 15]
    assert [r.wh for r in series.reads] == [Decimal(v) for v in (500, 510, 530, 540, 580)]
    assert [(g.first, g.last, g.missing) for g in series.gaps] == [
        (utc(2025, 7, 14, 9), utc(2025, 7, 14, 9), 1), (utc(2025, 7, 14, 12), utc(2025, 7, 14, 14), 3)]


@pytest.mark.parametrize("allow_gaps", [False, True])
def test_a_duplicate_interval_is_refused_naming_both_values(allow_gaps):
    problem = refusal(FIXTURES / "duplicate.xml", allow_gaps=allow_gaps)
    assert isinstance(problem, DuplicateInterval)
    assert problem.starts == (utc(2025, 7, 14, 10),)
    assert "2025-07-14T10:00:00Z (530 Wh and 535 Wh)" in str(problem)


def test_an_identical_duplicate_is_refused_too():
    problem = refusal(variant("duplicate.xml", ("<value>535</value>", "<value>530</value>")))
    assert isinstance(problem, DuplicateInterval) and "(530 Wh and 530 Wh)" in str(problem)


def test_an_unknown_unit_is_refused_naming_file_reading_type_and_code():
    problem = refusal(FIXTURES / "unknown_uom.xml")
    assert isinstance(problem, UnknownUnit)
    assert str(problem).startswith("unknown_uom.xml: MeterReading RetailCustomer/5/UsagePoint/1/MeterReading/1, "
                                   "ReadingType RetailCustomer/5/ReadingType/1: uom 999 (a code not named here)")


@pytest.mark.parametrize("uom, named", [("73", "uom 73 (VArh)"), ("38", "uom 38 (W)"), ("", "no uom")])
def test_units_other_than_wh_are_refused(uom, named):
    problem = refusal(variant("default_namespace.xml", ("<uom>72</uom>", f"<uom>{uom}</uom>")))
    assert isinstance(problem, UnknownUnit) and named in str(problem)


def test_fifteen_minute_reads_cross_the_start_of_dst_in_utc():
    path = FIXTURES / "fifteen_minute.xml"
    series = only_outcome(path).series
    starts = [r.start for r in series.reads]
    # 16 contiguous UTC quarter hours from 08:00Z, 1,594 Wh in all
    assert series.interval_seconds == 900
    assert starts == [utc(2025, 3, 9, 8) + n * timedelta(minutes=15) for n in range(16)]
    assert series.total_wh == file_total_wh(path) == Decimal(1594)
    # in Los Angeles they run from midnight to 05:00, and the 02:00 hour does not exist that day
    assert sorted({s.astimezone(LOCAL_ZONE).hour for s in starts}) == [0, 1, 3, 4]


def test_a_multiplier_scales_values_exactly():
    path = FIXTURES / "multiplier.xml"
    series = only_outcome(path).series
    # mWh: 1234567 × 10^-3 = 1234.567 Wh, as a Decimal (no float on the way)
    assert [r.wh for r in series.reads] == [Decimal("1234.567"), Decimal("1000.000"), Decimal("0.999"),
                                             Decimal("2445.436")]
    assert series.total_wh == file_total_wh(path) == Decimal("4681.002")


@pytest.mark.parametrize("multiplier, value, wh", [("3", "2", Decimal(2000)), ("-6", "1", Decimal("0.000001")),
                                                   ("-9", "5000", Decimal("0.000005"))])
def test_kwh_files_and_small_units_are_exact(multiplier, value, wh):
    text = (FIXTURES / "prefixed_namespace.xml").read_text().replace(
        "<espi:powerOfTenMultiplier>0<", f"<espi:powerOfTenMultiplier>{multiplier}<")
    text = re.sub(r"<espi:value>\d+<", f"<espi:value>{value}<", text)
    reads = only_outcome(io.BytesIO(text.encode())).series.reads
    # every value exact, with at most the six decimal places a MeterRead carries
    assert [r.wh for r in reads] == [wh] * 6 and all(r.wh.as_tuple().exponent >= -6 for r in reads)


def test_a_value_finer_than_a_micro_wh_is_refused():
    source = variant("prefixed_namespace.xml", ("<espi:powerOfTenMultiplier>0<", "<espi:powerOfTenMultiplier>-9<"))
    problem = refusal(source)
    assert isinstance(problem, UnsupportedReading) and "2025-07-14T07:00:00Z: 420" in str(problem)


def test_daily_intervals_are_refused_for_the_contract():
    problem = refusal(FIXTURES / "daily.xml")
    assert isinstance(problem, UnsupportedInterval)
    assert "daily intervals (86400 s)" in str(problem) and "900 or 3600 s" in str(problem)


def test_gas_is_refused_naming_what_was_found():
    problem = refusal(FIXTURES / "gas.xml")
    assert isinstance(problem, NotElectricity)
    assert str(problem) == (
        "gas.xml: UsagePoint RetailCustomer/9/UsagePoint/1: ServiceCategory kind 1 (natural gas), not electricity "
        "(kind 0); ReadingType RetailCustomer/9/ReadingType/1: therm (uom 169), powerOfTenMultiplier -3. "
        "Only electricity is imported.")


def test_a_gas_commodity_under_an_electric_usage_point_is_refused():
    problem = refusal(variant("default_namespace.xml", ("<commodity>1</commodity>", "<commodity>7</commodity>")))
    assert isinstance(problem, NotElectricity) and "commodity 7 (natural gas)" in str(problem)


@pytest.mark.parametrize("element, code, named", [
    ("flowDirection", "19", "reverse (received from the customer)"),
    ("accumulationBehaviour", "1", "bulk quantity (a register reading)"),
    ("kind", "8", "demand"),
])
def test_what_is_not_delivered_interval_energy_is_refused(element, code, named):
    current = {"flowDirection": "1", "accumulationBehaviour": "4", "kind": "12"}[element]
    problem = refusal(variant("default_namespace.xml", (f"<{element}>{current}</{element}>",
                                                        f"<{element}>{code}</{element}>")))
    assert isinstance(problem, UnsupportedReading) and f"{element} {code} ({named})" in str(problem)


def test_negative_values_are_refused():
    problem = refusal(variant("prefixed_namespace.xml", ("<espi:value>402<", "<espi:value>-402<")))
    assert isinstance(problem, UnsupportedReading) and "2025-07-14T09:00:00Z: -402" in str(problem)


@pytest.mark.parametrize("qualities, expected", [
    ("", "ACTUAL"),  # no ReadingQuality: the reading is valid
    ("<ReadingQuality><quality>0</quality></ReadingQuality>", "ACTUAL"),
    ("<ReadingQuality><quality>17</quality></ReadingQuality>", "ACTUAL"),  # validated
    ("<ReadingQuality><quality>8</quality></ReadingQuality>", "ESTIMATED"),  # estimated using a reference day
    ("<ReadingQuality><quality>7</quality></ReadingQuality>", "ESTIMATED"),  # manually edited
    ("<ReadingQuality><quality>0</quality></ReadingQuality><ReadingQuality><quality>9</quality></ReadingQuality>",
     "ESTIMATED"),  # valid, and linearly interpolated: not a measurement
    ("<ReadingQuality><quality>55</quality></ReadingQuality>", "ESTIMATED"),  # a code not listed as a measurement
])
def test_reading_quality(qualities, expected):
    source = variant("default_namespace.xml", ("<IntervalReading>", f"<IntervalReading>{qualities}"))
    assert {r.quality for r in only_outcome(source).series.reads} == {expected}


def test_a_reading_type_default_quality_applies_to_readings_without_one():
    source = variant("default_namespace.xml", ("<uom>72</uom>", "<uom>72</uom><defaultQuality>12</defaultQuality>"))
    assert {r.quality for r in only_outcome(source).series.reads} == {"ESTIMATED"}


@pytest.mark.parametrize("document, detail", [
    (b"not xml at all", "not a readable Green Button (ESPI Atom) file"),
    (b"<html><body/></html>", "the root element is html, not an Atom feed"),
    (b"<entry xmlns='http://www.w3.org/2005/Atom'/>", "not an Atom feed"),
    (b"<feed xmlns='http://www.w3.org/2005/Atom'/>", "no UsagePoint entry"),
    (b'<!DOCTYPE f [<!ENTITY x SYSTEM "file:///etc/passwd">]><feed xmlns="http://www.w3.org/2005/Atom">'
     b"<id>&x;</id></feed>", "undefined entity"),
])
def test_what_is_not_a_green_button_feed_is_refused_as_a_whole(document, detail):
    with pytest.raises(MalformedFeed, match=re.escape(detail)):
        read_greenbutton(io.BytesIO(document), name="upload.xml")


def test_a_fractional_start_is_refused():
    problem = refusal(variant("prefixed_namespace.xml", ("<espi:start>1752476400</espi:start></espi:timePeriod>",
                                                         "<espi:start>1752476400.5</espi:start></espi:timePeriod>")))
    assert isinstance(problem, UnsupportedInterval) and "1752476400.5 is not a whole number of seconds" in str(problem)


def test_an_interval_block_linked_to_no_meter_reading_refuses_the_file():
    block = "RetailCustomer/2/UsagePoint/1/MeterReading/1/IntervalBlock"
    source = variant("prefixed_namespace.xml", (f'rel="up" href="{block}"', 'rel="up" href="elsewhere"'),
                     ('rel="self" href="RetailCustomer/2/UsagePoint/1/MeterReading/1/IntervalBlock/1"',
                      'rel="self" href="elsewhere/1"'))
    with pytest.raises(MalformedFeed, match="IntervalBlock elsewhere/1: is linked to no MeterReading"):
        read_greenbutton(source, name="orphan.xml")


def second_meter_reading(seconds: int, count: int, value: int = 100) -> str:
    """Entries of another MeterReading of RetailCustomer/1's usage point (default_namespace.xml)."""
    readings = "".join(f"<IntervalReading><timePeriod><duration>{seconds}</duration><start>{1752476400 + n * seconds}"
                       f"</start></timePeriod><value>{value}</value></IntervalReading>" for n in range(count))
    base = "RetailCustomer/1/UsagePoint/1/MeterReading/2"
    return f"""
  <entry><link rel="self" href="{base}"/><link rel="up" href="RetailCustomer/1/UsagePoint/1/MeterReading"/>
    <link rel="related" href="{base}/IntervalBlock"/><link rel="related" href="RetailCustomer/1/ReadingType/2"/>
    <content><MeterReading xmlns="http://naesb.org/espi"/></content></entry>
  <entry><link rel="self" href="RetailCustomer/1/ReadingType/2"/>
    <content><ReadingType xmlns="http://naesb.org/espi"><powerOfTenMultiplier>0</powerOfTenMultiplier><uom>72</uom>
    </ReadingType></content></entry>
  <entry><link rel="self" href="{base}/IntervalBlock/1"/><link rel="up" href="{base}/IntervalBlock"/>
    <content><IntervalBlock xmlns="http://naesb.org/espi">{readings}</IntervalBlock></content></entry>
"""


def test_a_daily_summary_beside_the_hourly_reads_is_left_out_and_said_so():
    outcome = only_outcome(variant("default_namespace.xml", append=second_meter_reading(86400, 1, 21008)))
    # the hourly reads are imported; the daily MeterReading is named as left out
    assert len(outcome.series.reads) == 24
    [left_out] = outcome.problems
    assert isinstance(left_out, UnsupportedInterval) and "MeterReading/2" in str(left_out)


def test_two_importable_meter_readings_of_one_usage_point_are_refused():
    # 15-minute and hourly reads of the same energy: importing both would count it twice
    problem = refusal(variant("default_namespace.xml", append=second_meter_reading(900, 96, 25)))
    assert isinstance(problem, AmbiguousMeterReadings)
    assert "MeterReading/1 (3600 s)" in str(problem) and "MeterReading/2 (900 s)" in str(problem)


# -- the sample files of ../shared ------------------------------------------------------------------

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=(
    f"{SHARED} is absent: the Green Button sample files ship with the shared workspace (CI has it), not the repo"))


@needs_shared
def test_the_shared_folder_has_the_six_sample_years():
    assert len(SAMPLE_YEAR) == 6


@needs_shared
@pytest.mark.parametrize("path", SAMPLE_YEAR, ids=lambda p: p.name.split("_Jan")[0])
def test_each_sample_year_is_8760_hours_totalling_the_files_own_sum(path):
    [series] = read_electricity(path)
    reads = series.reads
    # 8,760 hourly reads, every UTC hour from local midnight on 2011-01-01 to the end of the year
    assert len(reads) == 8760 and series.interval_seconds == 3600
    assert [r.start for r in reads] == [utc(2011, 1, 1, 8) + n * HOUR for n in range(8760)]
    # the file's own sum, exactly
    assert series.total_wh == file_total_wh(path)
    assert {r.start: r.wh for r in reads} == {start: Decimal(v) for start, v in file_readings(path).items()}
    # both DST changes: no hour lost or doubled in UTC; local days of 23 and 25 hours
    hours_per_day = Counter(r.start.astimezone(LOCAL_ZONE).date() for r in reads)
    assert len(hours_per_day) == 365
    assert hours_per_day[date(2011, 3, 13)] == 23 and hours_per_day[date(2011, 11, 6)] == 25
    assert {n for day, n in hours_per_day.items() if day not in (date(2011, 3, 13), date(2011, 11, 6))} == {24}


@needs_shared
def test_hourly_reads_binned_in_daily_blocks_are_hourly_reads():
    path = SHARED / "TestGBDataHourlyNineDaysBinnedDaily.xml"
    [series] = read_electricity(path)
    # nine daily IntervalBlocks of 24 hourly reads: 216 contiguous hours from 2014-01-01T05:00Z
    assert series.interval_seconds == 3600 and len(series.reads) == 216
    assert [r.start for r in series.reads] == [utc(2014, 1, 1, 5) + n * HOUR for n in range(216)]
    assert series.total_wh == file_total_wh(path) == Decimal(199563)


@needs_shared
def test_the_abridged_electric_file_has_a_gap_of_eight_hours():
    path = SHARED / "abridged_electric_containerized.xml"
    problem = refusal(path)
    assert isinstance(problem, IntervalGap)
    assert problem.gaps == (Gap(utc(2011, 1, 1, 12), 8, 3600),)
    # allowed, its eight reads are the file's, and the gap stays a gap
    series = only_outcome(path, allow_gaps=True).series
    assert len(series.reads) == 8 and series.total_wh == file_total_wh(path) == Decimal(4086)


@needs_shared
def test_the_abridged_gas_files_are_refused():
    containerized = refusal(SHARED / "abridged_gas_containerized.xml")
    assert isinstance(containerized, NotElectricity)
    assert "an empty ServiceCategory kind" in str(containerized) and "ReadingType ReadingType/07: no uom" in str(
        containerized)
    direct = refusal(SHARED / "abridged_gas_direct.xml")
    assert isinstance(direct, NotElectricity)
    assert "ServiceCategory kind 1 (natural gas)" in str(direct)
    assert "ReadingType /v1/ReadingType/0: therm (uom 169), powerOfTenMultiplier -3" in str(direct)


# -- the plan and the command (no broker: --dry-run) ----------------------------------------------

def test_meter_ids_come_from_the_usage_point_link():
    assert default_meter_id("https://services.greenbuttondata.org/DataCustodian/espi/1_1/resource/"
                            "RetailCustomer/5/UsagePoint/1") == "greenbutton:RetailCustomer/5/UsagePoint/1"
    assert default_meter_id("/v1/BillingAccount/12/UsagePoint/NET_USAGE") == \
        "greenbutton:v1/BillingAccount/12/UsagePoint/NET_USAGE"


def test_the_records_are_meter_reads_the_codec_accepts():
    plan = plan_import("SA-1", read_greenbutton(FIXTURES / "multiplier.xml"))
    records = list(meter_reads(plan))
    codec = Codecs(ServiceSettings()).for_topic(METER_READS)
    # the first read, as the contract has it: Wh, revision 0, read at the interval's end
    assert records[0] == {
        "service_account_id": "SA-1", "meter_id": "greenbutton:RetailCustomer/7/UsagePoint/1",
        "interval_start": utc(2025, 7, 14, 7), "interval_seconds": 3600, "value": Decimal("1234.567"), "unit": "WH",
        "quality": "ACTUAL", "revision": 0, "read_at": utc(2025, 7, 14, 8), "source": "GREEN_BUTTON"}
    # every record survives the Avro codec with its exact value
    assert [codec.decode(codec.encode(record))["value"] for record in records] == [r["value"] for r in records]


def test_a_correction_is_published_as_the_revision_asked_for():
    plan = plan_import("SA-1", read_greenbutton(FIXTURES / "default_namespace.xml"), revision=2)
    assert {record["revision"] for record in meter_reads(plan)} == {2}


def test_an_interval_two_files_disagree_on_refuses_the_later_file():
    first = read_greenbutton(FIXTURES / "default_namespace.xml")
    changed = read_greenbutton(variant("default_namespace.xml", ("<value>612</value>", "<value>613</value>")),
                               name="corrected.xml")
    plan = plan_import("SA-1", [*first, *changed])
    assert [item.series.file for item in plan.imports] == ["default_namespace.xml"]
    [problem] = plan.refused
    assert isinstance(problem, DuplicateInterval) and problem.file == "corrected.xml"
    assert "2025-07-14T07:00:00Z: 613 Wh ACTUAL here, 612 Wh ACTUAL in default_namespace.xml" in str(problem)


def test_the_same_file_twice_is_published_twice_and_counted():
    outcomes = read_greenbutton(FIXTURES / "default_namespace.xml")
    plan = plan_import("SA-1", [*outcomes, *outcomes])
    assert [item.repeated for item in plan.imports] == [0, 24] and not plan.refused
    first, second = list(meter_reads(plan))[:24], list(meter_reads(plan))[24:]
    assert first == second


def run(*args: str):
    # An unreachable broker: a dry run must not need one.
    return CliRunner().invoke(import_group, ["greenbutton", *args], env={"GRIDFLEX_KAFKA_BOOTSTRAP": "127.0.0.1:9"})


def test_a_dry_run_of_a_folder_lists_what_it_would_publish_and_what_it_refuses(tmp_path):
    for name in ("default_namespace.xml", "fifteen_minute.xml", "gas.xml", "gap.xml"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a Green Button file")
    result = run(str(tmp_path), "--service-account", "SA-42", "--dry-run")
    # refused usage points make the exit status 1; the rest would be published
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        "default_namespace.xml: meter greenbutton:RetailCustomer/1/UsagePoint/1: 24 reads of 3600 s, "
        "2025-07-14T07:00:00Z to 2025-07-15T07:00:00Z, 21.008 kWh",
        "fifteen_minute.xml: meter greenbutton:RetailCustomer/6/UsagePoint/1: 16 reads of 900 s, "
        "2025-03-09T08:00:00Z to 2025-03-09T12:00:00Z, 1.594 kWh",
        "dry run: 40 reads of 2 meter(s) would be published for SA-42; 2 refused; nothing sent",
    ]
    refused = [line for line in result.stderr.splitlines() if line.startswith("refused: ")]
    assert [line.split(":")[1].strip() for line in refused] == ["gap.xml", "gas.xml"]
    assert "--allow-gaps" in refused[0]


def test_a_dry_run_with_gaps_allowed_lists_the_gaps():
    result = run(str(FIXTURES / "gap.xml"), "--service-account", "SA-42", "--dry-run", "--allow-gaps")
    assert result.exit_code == 0, result.output
    assert "5 reads of 3600 s" in result.stdout and "4 intervals missing in 2 gap(s)" in result.stdout


def test_one_meter_id_for_several_usage_points_is_a_usage_error():
    result = run(str(FIXTURES / "default_namespace.xml"), str(FIXTURES / "prefixed_namespace.xml"),
                 "--service-account", "SA-42", "--meter-id", "M-1", "--dry-run")
    assert result.exit_code == 2 and "2 usage points" in result.stderr


def test_a_folder_without_xml_files_is_a_usage_error(tmp_path):
    result = run(str(tmp_path), "--service-account", "SA-42", "--dry-run")
    assert result.exit_code == 2 and "holds no .xml file" in result.stderr
