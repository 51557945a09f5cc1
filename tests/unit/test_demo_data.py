"""Checks on the committed demo data derived from the Green Button sample year."""

import csv
import importlib.util
from datetime import datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_CSV = REPO / "data" / "demo" / "greenbutton-2011-hourly-wh.csv"
SCRIPT = REPO / "scripts" / "derive_demo_data.py"
SOURCE = REPO.parent / "shared" / "data" / "greenbutton"

HEADER = [
    "interval_start_utc",
    "coastal_multi_family",
    "desert_multi_family",
    "desert_single_family",
    "inland_multi_family",
    "inland_single_family",
    "mountain_multi_family",
]
FIRST_START = "2011-01-01T08:00:00Z"  # epoch 1293868800 in every sample file


def read_demo_csv() -> tuple[list[str], list[list[str]]]:
    with DEMO_CSV.open(newline="", encoding="utf-8") as f:
        header, *rows = csv.reader(f)
    return header, rows


def test_header_is_exact():
    header, _ = read_demo_csv()
    assert header == HEADER


def test_one_row_per_hour_of_2011_contiguous():
    _, rows = read_demo_csv()
    # 8,760 hours in 2011
    assert len(rows) == 8760
    # the first hour is midnight Pacific standard time on 2011-01-01
    assert rows[0][0] == FIRST_START
    # every later row starts exactly one hour after the previous one
    starts = [datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%SZ") for row in rows]
    assert all(b - a == timedelta(hours=1) for a, b in zip(starts, starts[1:]))
    # and the timestamps are written in the one canonical form
    assert all(row[0] == s.strftime("%Y-%m-%dT%H:%M:%SZ") for row, s in zip(rows, starts))


def test_values_are_non_negative_integer_wh():
    _, rows = read_demo_csv()
    # every row has a value for each of the six profiles
    assert all(len(row) == len(HEADER) for row in rows)
    # each value is a plain non-negative integer (digits only: no sign, no decimals)
    values = [value for row in rows for value in row[1:]]
    assert all(value.isascii() and value.isdigit() for value in values)


def test_committed_csv_matches_a_fresh_derivation():
    if not SOURCE.is_dir():
        pytest.skip("../shared/data/greenbutton is absent (only CI and developers have it)")
    # import the derivation script from its path (scripts/ is not a package)
    spec = importlib.util.spec_from_file_location("derive_demo_data", SCRIPT)
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    # recompute the CSV text in memory from the original XML files
    fresh = derive.build_csv(derive.read_profiles(SOURCE))
    # it must be byte-for-byte the committed file
    assert fresh.encode("utf-8") == DEMO_CSV.read_bytes()
