"""Derive the demo load profiles from the Green Button sample year.

Reads the six public Green Button (NAESB ESPI) sample files covering
2011-01-01 to 2012-01-01 (NIST/EnergyOS, Apache-2.0), checks that each holds
8,760 contiguous hourly readings in Wh, and joins them into one CSV with one
row per hour and one integer Wh column per profile. Values are not changed;
only the interval start is reformatted from epoch seconds to ISO-8601 UTC.

    .venv/bin/python scripts/derive_demo_data.py --source ../shared/data/greenbutton --out data/demo

The files are read with gridflex.greenbutton, the parser `gridflex import greenbutton` uses
(electricity in Wh only, no gap or duplicate interval), so run it with the project's virtualenv.
See data/demo/ATTRIBUTION.md for provenance and licence.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import datetime, timezone
from pathlib import Path

from gridflex.greenbutton import GreenButtonError, read_electricity

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "greenbutton"
DEFAULT_OUT = REPO / "data" / "demo"
CSV_NAME = "greenbutton-2011-hourly-wh.csv"

HOUR = 3600  # seconds
HOURS_IN_2011 = 8760

# profile (CSV column) -> sample file name, in CSV column order
PROFILES = {
    "coastal_multi_family": "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml",
    "desert_multi_family": "Desert_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_6.xml",
    "desert_single_family": "Desert_Single_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_7.xml",
    "inland_multi_family": "Inland_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_8.xml",
    "inland_single_family": "Inland_Single_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_9.xml",
    "mountain_multi_family": "Mountain_Multi_family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_10.xml",
}
HEADER = ["interval_start_utc", *PROFILES]

Reading = tuple[int, int]  # (interval_start as epoch seconds, value_wh)


class DerivationError(Exception):
    """The source data is not what the demo file is derived from."""


def read_profile(path: Path) -> list[Reading]:
    """Return (interval_start, value_wh) for every hourly reading of one Green Button file, in
    start order; the parser has refused gaps, duplicates and anything but electricity in Wh."""
    try:
        series = read_electricity(path)
    except (GreenButtonError, OSError) as error:
        raise DerivationError(str(error)) from None
    if len(series) != 1:
        raise DerivationError(f"{path.name}: expected 1 usage point, found {len(series)}")
    [profile] = series
    if profile.interval_seconds != HOUR:
        raise DerivationError(f"{path.name}: readings last {profile.interval_seconds} s, not {HOUR}")
    readings = []
    for read in profile.reads:
        if read.wh != read.wh.to_integral_value():
            raise DerivationError(f"{path.name}: {read.wh} Wh at {read.start:%Y-%m-%dT%H:%M:%SZ} is not a whole Wh")
        readings.append((int(read.start.timestamp()), int(read.wh)))
    return readings


def check_hourly(profile: str, readings: list[Reading]) -> None:
    """Fail unless there are 8,760 readings, each starting one hour after the previous."""
    if len(readings) != HOURS_IN_2011:
        raise DerivationError(f"{profile}: {len(readings)} readings, expected {HOURS_IN_2011}")
    for (previous, _), (interval_start, _) in zip(readings, readings[1:]):
        if interval_start != previous + HOUR:
            raise DerivationError(f"{profile}: reading at {interval_start} does not follow {previous}")


def read_profiles(source: Path) -> dict[str, list[Reading]]:
    """Read and check all six profiles; they must cover the same hours."""
    profiles = {}
    for profile, file_name in PROFILES.items():
        readings = read_profile(source / file_name)
        check_hourly(profile, readings)
        profiles[profile] = readings
    first, *others = profiles.items()
    for profile, readings in others:
        if [s for s, _ in readings] != [s for s, _ in first[1]]:
            raise DerivationError(f"{profile} does not cover the same hours as {first[0]}")
    return profiles


def iso_utc(interval_start: int) -> str:
    return datetime.fromtimestamp(interval_start, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_csv(profiles: dict[str, list[Reading]]) -> str:
    """The CSV text: one row per hour, one integer Wh column per profile."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    columns = [profiles[p] for p in PROFILES]
    for row in zip(*columns):
        writer.writerow([iso_utc(row[0][0]), *(value_wh for _, value_wh in row)])
    return out.getvalue()


def print_summary(profiles: dict[str, list[Reading]]) -> None:
    print(f"{'profile':<24}{'readings':>9}{'annual kWh':>12}{'mean kWh/h':>12}"
          f"{'max kWh/h':>11}{'Jul kWh/day (UTC)':>19}")
    for profile, readings in profiles.items():
        values = [v for _, v in readings]
        july = [v for s, v in readings if datetime.fromtimestamp(s, tz=timezone.utc).month == 7]
        print(f"{profile:<24}{len(values):>9}{sum(values) / 1000:>12.1f}"
              f"{sum(values) / len(values) / 1000:>12.3f}{max(values) / 1000:>11.3f}"
              f"{sum(july) / 31 / 1000:>19.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder with the Green Button sample files (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder to write the CSV into (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        profiles = read_profiles(args.source)
    except (DerivationError, OSError) as error:
        print(f"derive_demo_data: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / CSV_NAME
    target.write_text(build_csv(profiles), encoding="utf-8", newline="")
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")
    print_summary(profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
