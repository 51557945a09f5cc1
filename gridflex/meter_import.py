"""``gridflex import greenbutton``: Green Button files as meter reads on ``utility.meter-reads.v1``.

Each file (or every ``*.xml`` of a directory) is read with :mod:`gridflex.greenbutton`; every
usage point that is importable becomes one meter of the given service account, and its reads are
published as ``MeterRead`` records (key: the service account), revision 0 unless told otherwise,
in Wh, exactly as the file states them. What is refused (gas, unknown units, daily intervals, gaps, duplicates, …) is
printed with the file, the resource and what was found, and publishes nothing; the rest is
published and the command exits 1, so that a script notices.

Re-importing a file publishes the same keys and values (``read_at`` is the interval's end, not
the time of the import): telemetry drops the repeats as duplicates of the same meter interval.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from time import monotonic
from typing import BinaryIO
from urllib.parse import urlsplit

import click

from gridflex.greenbutton import (
    DuplicateInterval,
    GreenButtonError,
    IntervalGap,
    MalformedFeed,
    MeterReadingSeries,
    UsagePointOutcome,
    iso,
    read_greenbutton,
)
from gridflex.settings import ServiceSettings
from gridflex.topics import METER_READS

SOURCE = "GREEN_BUTTON"  # MeterRead.source
UNIT = "WH"
PUBLISH_CHUNK = 1000  # reads between progress updates


# -- the plan: what the files come to --------------------------------------------------------------

@dataclass(frozen=True)
class MeterImport:
    """One usage point's reads, published under ``meter_id``."""

    meter_id: str
    series: MeterReadingSeries
    repeated: int = 0  # reads identical to ones an earlier file of this import already has


@dataclass
class ImportPlan:
    service_account_id: str
    revision: int = 0
    imports: list[MeterImport] = field(default_factory=list)
    refused: list[GreenButtonError] = field(default_factory=list)
    left_out: list[GreenButtonError] = field(default_factory=list)  # MeterReadings beside an imported one

    @property
    def reads(self) -> int:
        return sum(len(item.series.reads) for item in self.imports)


def default_meter_id(usage_point: str) -> str:
    """A stable meter id from the usage point's link: the same usage point in next month's file
    is the same meter. ``https://host/DataCustodian/espi/1_1/resource/RetailCustomer/5/UsagePoint/1``
    → ``greenbutton:RetailCustomer/5/UsagePoint/1``."""
    path = urlsplit(usage_point).path if "://" in usage_point else usage_point
    resource = path.partition("/resource/")[2] or path
    return f"greenbutton:{resource.strip('/')}"


def plan_import(service_account_id: str, outcomes: Sequence[UsagePointOutcome],
                meter_id: str | None = None, revision: int = 0) -> ImportPlan:
    """What to publish, from the usage points of every file of one import, in file order.

    An interval of one meter that an earlier file already gave a different value (or quality)
    refuses the later usage point: which file is right is not the importer's to decide. An
    identical repeat is published again (telemetry drops it) and counted.
    """
    plan = ImportPlan(service_account_id, revision)
    seen: dict[tuple[str, object], tuple[Decimal, str, str]] = {}
    for outcome in outcomes:
        if outcome.series is None:
            plan.refused.extend(outcome.problems)
            continue
        plan.left_out.extend(outcome.problems)
        series = outcome.series
        meter = meter_id or default_meter_id(series.usage_point)
        conflicts, repeated = [], 0
        for read in series.reads:
            earlier = seen.get((meter, read.start))
            if earlier is None:
                continue
            if earlier[:2] == (read.wh, read.quality):
                repeated += 1
            else:
                conflicts.append((read, earlier))
        if conflicts:
            shown = ", ".join(f"{iso(read.start)}: {read.wh} Wh {read.quality} here, {wh} Wh {quality} in {file}"
                              for read, (wh, quality, file) in conflicts[:10])
            more = f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
            plan.refused.append(DuplicateInterval(
                series.file, f"UsagePoint {series.usage_point}",
                f"{len(conflicts)} interval(s) of meter {meter} already read from another file of this import "
                f"with a different value: {shown}{more}", tuple(read.start for read, _ in conflicts)))
            continue
        for read in series.reads:
            seen.setdefault((meter, read.start), (read.wh, read.quality, series.file))
        plan.imports.append(MeterImport(meter, series, repeated))
    return plan


def meter_reads(plan: ImportPlan) -> Iterator[dict]:
    """The ``MeterRead`` records of a plan. Green Button has no read time per reading: ``read_at``
    is the interval's end, so a re-import publishes identical records."""
    for item in plan.imports:
        for read in item.series.reads:
            yield {
                "service_account_id": plan.service_account_id,
                "meter_id": item.meter_id,
                "interval_start": read.start,
                "interval_seconds": read.seconds,
                "value": read.wh,
                "unit": UNIT,
                "quality": read.quality,
                "revision": plan.revision,
                "read_at": read.end,
                "source": SOURCE,
            }


# -- reading the files -------------------------------------------------------------------------------

def greenbutton_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and the ``*.xml`` files (not recursive) of the directories named, in order."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
            if not found:
                raise click.BadParameter(f"{path} holds no .xml file", param_hint="PATHS")
            files.extend(found)
        else:
            files.append(path)
    return files


class _CountingReader:
    """A binary file that advances a progress bar as the XML parser reads it."""

    def __init__(self, stream: BinaryIO, bar):
        self.stream, self.bar = stream, bar

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bar.update(len(data))
        return data


def read_files(files: Sequence[Path], allow_gaps: bool) -> list[UsagePointOutcome]:
    outcomes: list[UsagePointOutcome] = []
    for path in files:
        try:
            with path.open("rb") as stream, click.progressbar(
                length=path.stat().st_size, label=f"reading {path.name}", file=sys.stderr,
            ) as bar:
                outcomes.extend(read_greenbutton(_CountingReader(stream, bar), name=path.name, allow_gaps=allow_gaps))
        except GreenButtonError as problem:
            outcomes.append(UsagePointOutcome(path.name, "feed", None, (problem,)))
        except OSError as exc:
            problem = MalformedFeed(path.name, "file", f"cannot be read: {exc.strerror or exc}")
            outcomes.append(UsagePointOutcome(path.name, "file", None, (problem,)))
    return outcomes


# -- publishing --------------------------------------------------------------------------------------

async def publish(settings: ServiceSettings, plan: ImportPlan) -> int:
    """Send every read of the plan and wait until the broker has them all; returns the count."""
    from gridflex.kafka_io import RecordProducer  # aiokafka only when something is sent

    futures = []
    with click.progressbar(length=plan.reads, label="publishing", file=sys.stderr) as bar:
        async with RecordProducer(settings, enable_idempotence=True) as producer:
            for read in meter_reads(plan):
                futures.append(await producer.send(METER_READS, plan.service_account_id, read))
                if len(futures) % PUBLISH_CHUNK == 0:
                    bar.update(PUBLISH_CHUNK)
            await producer.flush()
            await asyncio.gather(*futures)  # raises if any record was not delivered
        bar.update(len(futures) % PUBLISH_CHUNK)
    return len(futures)


# -- the command -------------------------------------------------------------------------------------

import_group = click.Group("import", help="Import meter data from files onto the utility topics.")


@import_group.command("greenbutton")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--service-account", "service_account_id", required=True,
              help="The service account whose meter reads the files hold (the key of every record).")
@click.option("--meter-id", default=None,
              help="Publish under this meter id instead of one derived from the usage point's link "
                   "(greenbutton:RetailCustomer/5/UsagePoint/1); only when the files hold one usage point.")
@click.option("--allow-gaps", is_flag=True,
              help="Publish usage points with missing intervals too (the gaps are listed and stay missing).")
@click.option("--revision", type=click.IntRange(min=0), default=0, show_default=True,
              help="The reads' revision: a corrected file re-imported with a higher revision replaces what an "
                   "earlier import published (the same revision with other values is a conflict telemetry refuses).")
@click.option("--dry-run", is_flag=True, help="Read and check the files, print what would be published, send nothing.")
def greenbutton(paths: tuple[Path, ...], service_account_id: str, meter_id: str | None, allow_gaps: bool,
                revision: int, dry_run: bool) -> None:
    """Publish the electricity interval reads of Green Button (ESPI) files on utility.meter-reads.v1.

    PATHS are Green Button XML files, or directories of them (every *.xml, not recursive). Only
    electricity in Wh (uom 72, any powerOfTenMultiplier) at 15 or 60 minutes is published; gas,
    other units, daily or other interval lengths, duplicate intervals and (unless --allow-gaps)
    gaps are refused with the file, the resource and what was found. Exit status: 0 when
    everything was published, 1 when something was refused (the rest is published), 2 on a usage
    error.
    """
    if not service_account_id.strip():
        raise click.BadParameter("must not be empty", param_hint="--service-account")
    files = greenbutton_files(paths)
    outcomes = read_files(files, allow_gaps)
    usage_points = {(o.usage_point) for o in outcomes if o.series is not None}
    if meter_id is not None and len(usage_points) > 1:
        raise click.BadParameter(f"the files hold {len(usage_points)} usage points; --meter-id names one meter "
                                 "(import them separately, or without --meter-id)", param_hint="--meter-id")
    plan = plan_import(service_account_id, outcomes, meter_id, revision)

    for item in plan.imports:
        click.echo(_import_line(item))
    for problem in plan.left_out:
        click.echo(f"left out: {problem}", err=True)
    for problem in plan.refused:
        hint = " (--allow-gaps publishes the reads there are; the missing ones stay missing)" \
            if isinstance(problem, IntervalGap) else ""
        click.echo(f"refused: {problem}{hint}", err=True)

    as_revision = f" as revision {revision}" if revision else ""
    if dry_run:
        click.echo(f"dry run: {plan.reads:,} reads of {len(plan.imports)} meter(s) would be published for "
                   f"{service_account_id}{as_revision}; {len(plan.refused)} refused; nothing sent")
    elif plan.reads:
        settings = ServiceSettings()
        started = monotonic()
        try:
            sent = asyncio.run(publish(settings, plan))
        except Exception as exc:  # the broker's or the network's: re-running the import is safe
            click.echo(f"publish failed: {type(exc).__name__}: {exc}. Re-running the import is safe: "
                       "the same reads are published again and telemetry drops the repeats.", err=True)
            sys.exit(1)
        elapsed = monotonic() - started
        click.echo(f"published {sent:,} reads of {len(plan.imports)} meter(s) for {service_account_id}{as_revision} on "
                   f"{METER_READS}{settings.topic_suffix} in {elapsed:.1f} s "
                   f"({sent / max(elapsed, 1e-9):,.0f} reads/s)")
    else:
        click.echo(f"nothing to publish for {service_account_id}", err=True)
    if plan.refused:
        sys.exit(1)


def _import_line(item: MeterImport) -> str:
    series = item.series
    kwh = series.total_wh.scaleb(-3)
    estimated = sum(1 for read in series.reads if read.quality != "ACTUAL")
    notes = [f"{estimated:,} estimated"] if estimated else []
    if series.gaps:
        notes.append(f"{sum(g.missing for g in series.gaps):,} intervals missing in {len(series.gaps)} gap(s): "
                     + ", ".join(map(str, series.gaps[:10])) + (" …" if len(series.gaps) > 10 else ""))
    if item.repeated:
        notes.append(f"{item.repeated:,} already in an earlier file")
    return (f"{series.file}: meter {item.meter_id}: {len(series.reads):,} reads of {series.interval_seconds} s, "
            f"{iso(series.first_start)} to {iso(series.last_end)}, {kwh:,} kWh"
            + (f" ({'; '.join(notes)})" if notes else ""))
