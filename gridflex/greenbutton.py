"""Green Button files (NAESB REQ.21 ESPI): electricity interval reads, exactly as the file states them.

A Green Button file is an Atom feed whose entries are linked resources: a ``UsagePoint`` (one
metered service), its ``MeterReading``\\ s, each described by one ``ReadingType`` (unit, power of
ten, what is measured) and holding ``IntervalBlock``\\ s of ``IntervalReading``\\ s (UTC epoch
start, duration in seconds, integer value). xsdata binds the XML to the dataclasses below, so the
namespace prefixes a utility picks (``espi:``, ``ns:``, a default namespace) do not matter; this
module links the entries and turns each usage point into one series of reads, or names why not:

- :class:`NotElectricity` — a gas or water usage point (or one that does not say what it is);
- :class:`UnknownUnit` — a ReadingType whose ``uom`` is not 72 (Wh; ESPI has no kWh code, a kWh
  file is ``uom`` 72 with ``powerOfTenMultiplier`` 3);
- :class:`UnsupportedReading` — not delivered interval energy (cumulative registers, reverse flow,
  demand), negative values, or values that do not fit an exact ``MeterRead`` value;
- :class:`UnsupportedInterval` — lengths other than 900 or 3600 s (``utility.meter-reads.v1``
  carries no others: daily reads are refused, never split or spread), misaligned or fractional starts;
- :class:`DuplicateInterval` — an interval stated twice (always refused: which one is right is
  not the importer's to decide);
- :class:`IntervalGap` — missing intervals between the first and the last read (refused unless
  the caller allows gaps; missing intervals are reported and stay missing, never filled);
- :class:`AmbiguousMeterReadings` — two importable MeterReadings of one usage point (the same
  energy twice, e.g. 15-minute and hourly): importing both would count it twice;
- :class:`MalformedFeed` — not an ESPI Atom feed, unreadable numbers, resources linked to nothing.

Energy stays exact: ``value × 10^powerOfTenMultiplier`` Wh as a :class:`~decimal.Decimal`, never a
float. Pure: no Kafka, no clock, no files written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Iterable
from xml.etree.ElementTree import ParseError

from xsdata.exceptions import ParserError
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.parsers.config import ParserConfig
from xsdata.formats.dataclass.parsers.handlers import XmlEventHandler

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"

INTERVAL_SECONDS = (900, 3600)  # what utility.meter-reads.v1 carries (CONTRACTS.md, MeterRead.avsc)
UOM_WH = 72
ELECTRICITY_SERVICE = 0
MEASURED, NOT_MEASURED = "ACTUAL", "ESTIMATED"  # MeterRead.quality
MAX_SCALE = 6  # MeterRead.value is decimal(18, 6): six decimal places,
MAX_WH = Decimal(10) ** (18 - MAX_SCALE)  # twelve integer digits
MAX_MULTIPLIER = 12  # ESPI's powers of ten run from pico (-12) to tera (12)
SHOWN = 10  # interval starts or gaps named in one message; the exception keeps them all
UNNAMED = "a code not named here"  # ESPI defines far more units and kinds than the ones below

# ESPI codes named in messages (from the ESPI schema's enumerations; only the ones met in practice).
UNITS = {0: "none", 5: "A", 29: "V", 31: "J", 33: "Hz", 38: "W", 42: "m³", 61: "VA", 63: "VAr", 71: "VAh",
         72: "Wh", 73: "VArh", 106: "Ah", 119: "ft³", 122: "ft³/h", 125: "m³/h", 128: "US gal",
         129: "US gal/h", 132: "BTU", 133: "BTU/h", 134: "L", 137: "L/h", 169: "therm"}
SERVICE_KINDS = {0: "electricity", 1: "natural gas", 2: "water", 3: "time", 4: "heat", 5: "refuse",
                 6: "sewerage", 7: "rates", 8: "TV licence", 9: "internet"}
COMMODITIES = {1: "electricity (secondary metered)", 2: "electricity (primary metered)", 4: "air",
               7: "natural gas", 8: "propane", 9: "potable water", 10: "steam", 11: "waste water",
               12: "heating fluid", 13: "cooling fluid"}
ELECTRICITY_COMMODITIES = {1, 2}
ACCUMULATIONS = {1: "bulk quantity (a register reading)", 3: "cumulative", 4: "delta data", 6: "indicating",
                 9: "summation", 12: "instantaneous"}
DELTA_DATA = 4
FLOW_DIRECTIONS = {1: "forward (delivered to the customer)", 4: "net", 19: "reverse (received from the customer)"}
FORWARD = 1
READING_KINDS = {8: "demand", 12: "energy", 37: "power", 38: "power factor", 54: "voltage"}
ENERGY = 12
# ESPI QualityOfReading → MeterRead.quality: only what states a measured value is ACTUAL; an
# estimate, an edit, a forecast, a questionable or mixed value, and any code not listed here, is not.
MEASURED_QUALITIES = {0: "valid", 11: "derived (deterministic)", 14: "raw", 17: "validated", 18: "verified",
                      19: "revenue quality"}


# -- the errors ------------------------------------------------------------------------------------

class GreenButtonError(ValueError):
    """Why (part of) a Green Button file is not imported: which file, which resource, what was found."""

    def __init__(self, file: str, resource: str, detail: str):
        super().__init__(f"{file}: {resource}: {detail}")
        self.file, self.resource, self.detail = file, resource, detail


class MalformedFeed(GreenButtonError):
    """Not an ESPI Atom feed, a number that does not read, or a resource linked to nothing."""


class NotElectricity(GreenButtonError):
    """A usage point or ReadingType of gas, water or anything but electricity (or unstated)."""


class UnknownUnit(GreenButtonError):
    """A ReadingType whose unit of measure is not Wh (or is missing)."""


class UnsupportedReading(GreenButtonError):
    """Not delivered interval energy, or values a MeterRead cannot carry exactly."""


class UnsupportedInterval(GreenButtonError):
    """Interval lengths other than 900/3600 s, mixed lengths, misaligned or fractional starts."""


class DuplicateInterval(GreenButtonError):
    """The same interval stated more than once."""

    def __init__(self, file: str, resource: str, detail: str, starts: tuple[datetime, ...]):
        super().__init__(file, resource, detail)
        self.starts = starts


class IntervalGap(GreenButtonError):
    """Intervals missing between the first and the last read."""

    def __init__(self, file: str, resource: str, detail: str, gaps: tuple["Gap", ...]):
        super().__init__(file, resource, detail)
        self.gaps = gaps


class AmbiguousMeterReadings(GreenButtonError):
    """More than one importable MeterReading of one usage point: the same energy would count twice."""


# -- what a file yields ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IntervalRead:
    """One interval's energy as the file states it: UTC start, length, exact Wh, quality."""

    start: datetime
    seconds: int
    wh: Decimal
    quality: str  # ACTUAL or ESTIMATED

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)


@dataclass(frozen=True)
class Gap:
    """``missing`` consecutive intervals of ``seconds``, the first starting at ``first``."""

    first: datetime
    missing: int
    seconds: int

    @property
    def last(self) -> datetime:
        return self.first + timedelta(seconds=self.seconds * (self.missing - 1))

    def __str__(self) -> str:
        if self.missing == 1:
            return f"{iso(self.first)} (1 interval)"
        return f"{iso(self.first)} … {iso(self.last)} ({self.missing} intervals)"


@dataclass(frozen=True)
class MeterReadingSeries:
    """The reads of one MeterReading, in start order, contiguous unless ``gaps`` (allowed) says otherwise."""

    file: str
    usage_point: str  # the usage point's self link (its identity in the feed)
    meter_reading: str
    reading_type: str
    interval_seconds: int
    reads: tuple[IntervalRead, ...]
    gaps: tuple[Gap, ...] = ()

    @property
    def total_wh(self) -> Decimal:
        return sum((read.wh for read in self.reads), Decimal(0))

    @property
    def first_start(self) -> datetime:
        return self.reads[0].start

    @property
    def last_end(self) -> datetime:
        return self.reads[-1].end


@dataclass(frozen=True)
class UsagePointOutcome:
    """One usage point of a file: its series of reads, or why it has none.

    ``problems`` names every MeterReading that was not taken: when ``series`` is None they are
    why nothing of this usage point is imported; otherwise they are siblings left out (a daily
    summary next to the hourly reads, reactive energy, …).
    """

    file: str
    usage_point: str
    series: MeterReadingSeries | None
    problems: tuple[GreenButtonError, ...] = ()

    @property
    def refused(self) -> bool:
        return self.series is None


def iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the XML binding (the subset of atom.xsd and espi.xsd that interval data needs) ----------------

def _espi(name: str, **default) -> Any:
    return field(metadata={"name": name, "type": "Element", "namespace": ESPI}, **default)


def _atom(name: str, **default) -> Any:
    return field(metadata={"name": name, "type": "Element", "namespace": ATOM}, **default)


# Numbers are bound as text and read here, so that a bad one is reported with its place in the file.
@dataclass
class _DateTimeInterval:
    duration: str | None = _espi("duration", default=None)
    start: str | None = _espi("start", default=None)


@dataclass
class _ReadingQuality:
    quality: str | None = _espi("quality", default=None)


@dataclass
class _IntervalReading:
    reading_quality: list[_ReadingQuality] = _espi("ReadingQuality", default_factory=list)
    time_period: _DateTimeInterval | None = _espi("timePeriod", default=None)
    value: str | None = _espi("value", default=None)


@dataclass
class _IntervalBlock:
    interval: _DateTimeInterval | None = _espi("interval", default=None)
    interval_reading: list[_IntervalReading] = _espi("IntervalReading", default_factory=list)


@dataclass
class _ReadingType:
    accumulation_behaviour: str | None = _espi("accumulationBehaviour", default=None)
    commodity: str | None = _espi("commodity", default=None)
    default_quality: str | None = _espi("defaultQuality", default=None)
    flow_direction: str | None = _espi("flowDirection", default=None)
    kind: str | None = _espi("kind", default=None)
    power_of_ten_multiplier: str | None = _espi("powerOfTenMultiplier", default=None)
    uom: str | None = _espi("uom", default=None)


@dataclass
class _ServiceCategory:
    kind: str | None = _espi("kind", default=None)


@dataclass
class _UsagePoint:
    service_category: _ServiceCategory | None = _espi("ServiceCategory", default=None)


@dataclass
class _MeterReading:
    pass  # its links say everything: its ReadingType and its IntervalBlocks


@dataclass
class _Content:
    usage_point: _UsagePoint | None = _espi("UsagePoint", default=None)
    meter_reading: _MeterReading | None = _espi("MeterReading", default=None)
    reading_type: _ReadingType | None = _espi("ReadingType", default=None)
    interval_block: list[_IntervalBlock] = _espi("IntervalBlock", default_factory=list)


@dataclass
class _Link:
    href: str | None = field(default=None, metadata={"type": "Attribute"})
    rel: str | None = field(default=None, metadata={"type": "Attribute"})


@dataclass
class _Entry:
    id: str | None = _atom("id", default=None)
    link: list[_Link] = _atom("link", default_factory=list)
    content: _Content | None = _atom("content", default=None)


@dataclass
class _Feed:
    class Meta:
        name = "feed"
        namespace = ATOM

    entry: list[_Entry] = _atom("entry", default_factory=list)


FEED = f"{{{ATOM}}}feed"


class _FeedParser(XmlParser):
    """xsdata's parser, taking nothing but an Atom feed as the root element."""

    def find_root_clazz(self, clazz, qname, attrs, ns_map, xsi_type):
        return _Feed if qname == FEED else None


# Unknown elements (LocalTimeParameters, usage summaries, costs, …) are skipped. The standard
# library's expat handler: no DTDs or external entities are loaded, entity expansion is bounded.
# One binding context (the classes' metadata, built once); a parser per file (it records prefixes).
_CONFIG = ParserConfig(fail_on_unknown_properties=False)
_CONTEXT = XmlContext()


# -- reading a file ----------------------------------------------------------------------------------

def read_greenbutton(source: Path | BinaryIO, *, name: str | None = None,
                     allow_gaps: bool = False) -> list[UsagePointOutcome]:
    """Every usage point of one Green Button file, each with its reads or why it has none.

    ``source`` is a path or a binary stream (``name`` then names it in messages). Raises
    :class:`MalformedFeed` when the file as a whole cannot be read.
    """
    file = name or (source.name if isinstance(source, Path) else "<stream>")
    feed = _parse(source, file)
    entries = [_Resource.of(entry, index) for index, entry in enumerate(feed.entry)]
    usage_points = [e for e in entries if e.content.usage_point is not None]
    meter_readings = [e for e in entries if e.content.meter_reading is not None]
    reading_types = [e for e in entries if e.content.reading_type is not None]
    blocks = [e for e in entries if e.content.interval_block]
    if not usage_points:
        raise MalformedFeed(file, "feed", "no UsagePoint entry: not a Green Button usage file")

    readings_of = _link(file, usage_points, "UsagePoint", meter_readings, "MeterReading", _belongs_to, True)
    types_of = _link(file, meter_readings, "MeterReading", reading_types, "ReadingType", _describes, False)
    blocks_of = _link(file, meter_readings, "MeterReading", blocks, "IntervalBlock", _belongs_to, True)
    outcomes = []
    for usage_point in usage_points:
        meters = [_MeterReadingEntry(m, types_of.get(m.key, []), blocks_of.get(m.key, []))
                  for m in readings_of.get(usage_point.key, [])]
        outcomes.append(_usage_point_outcome(file, usage_point, meters, allow_gaps))
    return outcomes


def read_electricity(path: Path, *, allow_gaps: bool = False) -> list[MeterReadingSeries]:
    """The series of every usage point of a file that must be wholly importable: raises the first
    usage point's refusal, if any."""
    series = []
    for outcome in read_greenbutton(path, allow_gaps=allow_gaps):
        if outcome.series is None:
            raise outcome.problems[0]
        series.append(outcome.series)
    return series


def _parse(source: Path | BinaryIO, file: str) -> _Feed:
    parser = _FeedParser(config=_CONFIG, context=_CONTEXT, handler=XmlEventHandler)
    try:
        if isinstance(source, Path):
            with source.open("rb") as stream:
                feed = parser.parse(stream)
        else:
            feed = parser.parse(source)
    except (ParserError, ParseError) as exc:
        detail = str(exc)
        if detail.startswith("No class found matching root"):
            detail = f"the root element is {detail.rsplit(' ', 1)[-1]}, not an Atom feed ({FEED})"
        raise MalformedFeed(file, "feed", f"not a readable Green Button (ESPI Atom) file: {detail}") from None
    return feed


@dataclass
class _Resource:
    """An Atom entry and its links."""

    key: int  # position in the feed: entries' ids are not always unique
    name: str  # the self link, else the atom id, else the position: for messages and identities
    self_link: str | None
    up: str | None
    related: set[str]
    content: _Content

    @classmethod
    def of(cls, entry: _Entry, index: int) -> "_Resource":
        links: dict[str, list[str]] = {}
        for link in entry.link:
            if link.href:
                links.setdefault((link.rel or "alternate").strip(), []).append(_href(link.href))
        self_link = (links.get("self") or [None])[0]
        up = (links.get("up") or [None])[0]
        atom_id = (entry.id or "").strip() or None
        return cls(index, self_link or atom_id or f"entry #{index + 1}", self_link, up,
                   set(links.get("related", [])), entry.content or _Content())


def _href(href: str) -> str:
    return href.strip().rstrip("/")


def _belongs_to(parent: _Resource, child: _Resource) -> bool:
    """ESPI links a child collection from its parent (``related`` = the child's ``up`` or ``self``);
    a child whose own link sits under its parent's path is the parent's too."""
    if child.up in parent.related or child.self_link in parent.related:
        return True
    return bool(parent.self_link and child.self_link and child.self_link.startswith(parent.self_link + "/"))


def _describes(meter_reading: _Resource, reading_type: _Resource) -> bool:
    return reading_type.self_link is not None and reading_type.self_link in meter_reading.related


def _link(file: str, parents: list[_Resource], parent_kind: str, children: list[_Resource], child_kind: str,
          belongs, required: bool) -> dict[int, list[_Resource]]:
    """Children by parent key. A ``required`` child linked to no parent refuses the file: its data
    would otherwise be left out without a word."""
    found: dict[int, list[_Resource]] = {}
    for child in children:
        owners = [parent for parent in parents if belongs(parent, child)]
        if not owners and required:
            raise MalformedFeed(file, f"{child_kind} {child.name}", f"is linked to no {parent_kind} (no matching "
                                "self, up or related link): its data would be left out")
        for owner in owners:
            found.setdefault(owner.key, []).append(child)
    return found


@dataclass
class _MeterReadingEntry:
    resource: _Resource
    reading_types: list[_Resource]
    blocks: list[_Resource]


def _usage_point_outcome(file: str, usage_point: _Resource, meters: list[_MeterReadingEntry],
                         allow_gaps: bool) -> UsagePointOutcome:
    where = f"UsagePoint {usage_point.name}"
    category = usage_point.content.usage_point.service_category
    stated = category.kind if category is not None else None
    kind_text = (stated or "").strip()
    if _int_or_none(kind_text) != ELECTRICITY_SERVICE:
        if kind_text:
            found = f"ServiceCategory kind {kind_text} ({SERVICE_KINDS.get(_int_or_none(kind_text), UNNAMED)})"
        else:
            found = "an empty ServiceCategory kind" if stated is not None else "no ServiceCategory kind"
        described = "; ".join(_reading_type_text(t) for m in meters for t in m.reading_types)
        problem = NotElectricity(file, where, f"{found}, not electricity (kind {ELECTRICITY_SERVICE})"
                                 + (f"; {described}" if described else "") + ". Only electricity is imported.")
        return UsagePointOutcome(file, usage_point.name, None, (problem,))
    if not meters:
        return UsagePointOutcome(file, usage_point.name, None, (
            MalformedFeed(file, where, "has no MeterReading: no interval data to import"),))

    series, problems = [], []
    for meter in meters:
        try:
            series.append(_series(file, usage_point.name, meter, allow_gaps))
        except GreenButtonError as problem:
            problems.append(problem)
    if len(series) > 1:
        names = ", ".join(f"{s.meter_reading} ({s.interval_seconds} s)" for s in series)
        problems.insert(0, AmbiguousMeterReadings(
            file, where, f"{len(series)} MeterReadings of delivered energy ({names}): importing more than one "
            "would count the same energy twice"))
        return UsagePointOutcome(file, usage_point.name, None, tuple(problems))
    return UsagePointOutcome(file, usage_point.name, series[0] if series else None, tuple(problems))


def _reading_type_text(reading_type: _Resource) -> str:
    facts = reading_type.content.reading_type
    uom = _int_or_none(facts.uom)
    unit = f"{UNITS.get(uom, UNNAMED)} (uom {uom})" if uom is not None else "no uom"
    multiplier = (facts.power_of_ten_multiplier or "").strip()
    return f"ReadingType {reading_type.name}: {unit}" + (f", powerOfTenMultiplier {multiplier}" if multiplier else "")


def _series(file: str, usage_point: str, meter: _MeterReadingEntry, allow_gaps: bool) -> MeterReadingSeries:
    where = f"MeterReading {meter.resource.name}"
    if len(meter.reading_types) != 1:
        if not meter.reading_types:
            raise UnknownUnit(file, where, "is linked to no ReadingType, so its unit is unknown")
        raise MalformedFeed(file, where, "is linked to " + ", ".join(t.name for t in meter.reading_types)
                            + ": one ReadingType expected")
    reading_type = meter.reading_types[0]
    multiplier, default_quality = _check_reading_type(file, where, reading_type)
    reads = _reads(file, where, meter.blocks, multiplier, default_quality)
    if not reads:
        raise UnsupportedReading(file, where, "has no IntervalReading")
    seconds = _check_lengths(file, where, reads)
    reads.sort(key=lambda read: read.start)
    gaps = _check_continuity(file, where, reads, seconds, allow_gaps)
    return MeterReadingSeries(file, usage_point, meter.resource.name, reading_type.name, seconds, tuple(reads), gaps)


def _check_reading_type(file: str, where: str, resource: _Resource) -> tuple[int, str | None]:
    """The ReadingType's power of ten and default quality, once it is known to be delivered
    electric energy in Wh."""
    facts = resource.content.reading_type
    where = f"{where}, ReadingType {resource.name}"
    commodity = _code(file, where, "commodity", facts.commodity)
    if commodity is not None and commodity not in ELECTRICITY_COMMODITIES:
        raise NotElectricity(file, where, f"commodity {commodity} ({COMMODITIES.get(commodity, UNNAMED)}), "
                             "not electricity (1 or 2). Only electricity is imported.")
    uom = _code(file, where, "uom", facts.uom)
    if uom != UOM_WH:
        found = f"uom {uom} ({UNITS.get(uom, UNNAMED)})" if uom is not None else "no uom"
        raise UnknownUnit(file, where, f"{found}; only uom {UOM_WH} (Wh, with any powerOfTenMultiplier: 3 is kWh) "
                          "is imported")
    for element, code, wanted, names, what in (
        ("kind", _code(file, where, "kind", facts.kind), ENERGY, READING_KINDS, "energy"),
        ("accumulationBehaviour", _code(file, where, "accumulationBehaviour", facts.accumulation_behaviour),
         DELTA_DATA, ACCUMULATIONS, "the energy of each interval"),
        ("flowDirection", _code(file, where, "flowDirection", facts.flow_direction), FORWARD, FLOW_DIRECTIONS,
         "energy delivered to the customer"),
    ):
        if code is not None and code != wanted:
            raise UnsupportedReading(file, where, f"{element} {code} ({names.get(code, UNNAMED)}); "
                                     f"a MeterRead is {what} ({element} {wanted})")
    multiplier = _code(file, where, "powerOfTenMultiplier", facts.power_of_ten_multiplier) or 0
    if abs(multiplier) > MAX_MULTIPLIER:
        raise UnsupportedReading(file, where, f"powerOfTenMultiplier {multiplier} is outside ESPI's "
                                 f"-{MAX_MULTIPLIER} to {MAX_MULTIPLIER}")
    default = _code(file, where, "defaultQuality", facts.default_quality)
    return multiplier, (None if default is None else _quality([default]))


def _reads(file: str, where: str, blocks: Iterable[_Resource], multiplier: int,
           default_quality: str | None) -> list[IntervalRead]:
    reads, inexact, negative = [], [], []
    factor = 10 ** multiplier if multiplier >= 0 else None
    for block in blocks:
        for interval_block in block.content.interval_block:
            for index, reading in enumerate(interval_block.interval_reading):
                place = f"{where}, IntervalBlock {block.name}, IntervalReading #{index + 1}"
                period = reading.time_period or _DateTimeInterval()
                start = _whole(file, place, "timePeriod start", period.start, interval=True)
                seconds = _whole(file, place, "timePeriod duration", period.duration, interval=True)
                raw = _whole(file, place, "value", reading.value)
                wh = Decimal(raw * factor) if factor is not None else _scaled(raw, multiplier)
                try:
                    instant = datetime.fromtimestamp(start, timezone.utc)
                except (OverflowError, OSError, ValueError):
                    raise UnsupportedInterval(file, place, f"timePeriod start {start} is not a time") from None
                if wh is None or abs(wh) >= MAX_WH:
                    inexact.append((instant, raw))
                elif wh < 0:
                    negative.append((instant, raw))
                qualities = [_whole(file, place, "ReadingQuality quality", q.quality) for q in reading.reading_quality]
                quality = _quality(qualities) if qualities else default_quality or MEASURED
                reads.append(IntervalRead(instant, seconds, wh, quality))
    if inexact:
        raise UnsupportedReading(file, where, f"{len(inexact)} value(s) × 10^{multiplier} Wh do not fit a MeterRead "
                                 f"(at most {MAX_SCALE} decimal places and 12 integer digits), e.g. "
                                 + _listed(f"{iso(at)}: {raw}" for at, raw in inexact))
    if negative:
        raise UnsupportedReading(file, where, f"{len(negative)} negative value(s), which delivered energy cannot be: "
                                 + _listed(f"{iso(at)}: {raw}" for at, raw in negative))
    return reads


def _scaled(raw: int, multiplier: int) -> Decimal | None:
    """raw × 10^multiplier (multiplier < 0) with at most six decimal places, exactly; None if not."""
    value = Decimal(raw).scaleb(multiplier)
    if -multiplier <= MAX_SCALE:
        return value
    fitted = value.quantize(Decimal(1).scaleb(-MAX_SCALE))
    return fitted if fitted == value else None


def _quality(codes: list[int]) -> str:
    """ACTUAL only when every quality the reading carries states a measured value."""
    return MEASURED if all(code in MEASURED_QUALITIES for code in codes) else NOT_MEASURED


def _check_lengths(file: str, where: str, reads: list[IntervalRead]) -> int:
    lengths = sorted({read.seconds for read in reads})
    if len(lengths) > 1:
        raise UnsupportedInterval(file, where, f"intervals of mixed lengths ({', '.join(f'{s} s' for s in lengths)}); "
                                  "one MeterReading has one interval length")
    seconds = lengths[0]
    if seconds not in INTERVAL_SECONDS:
        name = {86400: "daily", 1800: "30-minute", 300: "5-minute"}.get(seconds, f"{seconds / 3600:g}-hour")
        raise UnsupportedInterval(file, where, f"{name} intervals ({seconds} s): utility.meter-reads.v1 carries "
                                  "900 or 3600 s intervals only (CONTRACTS.md), and reads are not split or spread")
    misaligned = [read.start for read in reads if int(read.start.timestamp()) % seconds]
    if misaligned:
        raise UnsupportedInterval(file, where, f"{len(misaligned)} interval(s) not starting on a whole "
                                  f"{seconds // 60}-minute boundary (UTC): " + _listed(map(iso, misaligned)))
    return seconds


def _check_continuity(file: str, where: str, reads: list[IntervalRead], seconds: int,
                      allow_gaps: bool) -> tuple[Gap, ...]:
    """Duplicates always refuse; gaps refuse unless allowed (then they are returned, not filled).
    ``reads`` are sorted by start, of one length, aligned to it."""
    duplicates, gaps = [], []
    step = timedelta(seconds=seconds)
    for previous, read in zip(reads, reads[1:]):
        if read.start == previous.start:
            if not duplicates or duplicates[-1] != read.start:
                duplicates.append(read.start)
        elif read.start > previous.start + step:
            missing = int((read.start - previous.start) / step) - 1
            gaps.append(Gap(previous.start + step, missing, seconds))
    if duplicates:
        stated = set(duplicates)
        values: dict[datetime, list[Decimal]] = {}
        for read in reads:
            if read.start in stated:
                values.setdefault(read.start, []).append(read.wh)
        raise DuplicateInterval(file, where, f"{len(duplicates)} interval(s) stated more than once: " + _listed(
            f"{iso(start)} ({' and '.join(f'{wh} Wh' for wh in values[start])})" for start in duplicates),
            tuple(duplicates))
    if gaps and not allow_gaps:
        missing = sum(gap.missing for gap in gaps)
        raise IntervalGap(file, where, f"{missing} interval(s) missing between {iso(reads[0].start)} and "
                          f"{iso(reads[-1].end)}, in {len(gaps)} gap(s): " + _listed(map(str, gaps)),
                          tuple(gaps))
    return tuple(gaps)


def _listed(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None and text.strip() else None
    except ValueError:
        return None


def _code(file: str, where: str, element: str, text: str | None) -> int | None:
    """An optional integer code; absent or empty is None, anything but an integer is refused."""
    if text is None or not text.strip():
        return None
    value = _int_or_none(text)
    if value is None:
        raise MalformedFeed(file, where, f"{element} {text.strip()!r} is not an integer code")
    return value


def _whole(file: str, where: str, element: str, text: str | None, interval: bool = False) -> int:
    """A required integer: a value, or (``interval``) an epoch second or a duration."""
    if text is None or not text.strip():
        raise MalformedFeed(file, where, f"no {element}")
    try:
        return int(text.strip())
    except ValueError:
        pass
    if interval:
        try:
            Decimal(text.strip())
        except ArithmeticError:
            pass
        else:
            raise UnsupportedInterval(file, where, f"{element} {text.strip()} is not a whole number of seconds")
    raise MalformedFeed(file, where, f"{element} {text.strip()!r} is not an integer")
