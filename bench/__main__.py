"""Run the benchmarks named on the command line (default: all), print a table, write JSON.

    python -m bench                     # every benchmark
    python -m bench ingest --records 100000

``--records N`` sets ``BENCH_<NAME>_RECORDS`` for each selected benchmark, which is where a
benchmark reads its size. Results: ``bench/results/<name>-<UTC timestamp>.json`` for each
benchmark and ``bench/results/latest.json`` with all the results of this run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench import RESULTS_DIR
from bench.console import progress, table

BENCHMARKS = {"ingest": "bench.ingest", "enrollment": "bench.enrollment", "dispatch": "bench.dispatch",
              "baseline": "bench.baseline", "settlement": "bench.settlement"}


def main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    selected = options.benchmarks or list(BENCHMARKS)
    if options.records is not None:
        for name in selected:
            os.environ[f"BENCH_{name.upper()}_RECORDS"] = str(options.records)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = {}
    for name in selected:
        progress(f"benchmark {name}: starting")
        results[name] = importlib.import_module(BENCHMARKS[name]).run()
        path = write_result(f"{name}-{stamp}.json", results[name])
        progress(f"benchmark {name}: done, results in {path}")
    write_result("latest.json", results)
    print_summary(results)
    return 0 if all(result["ok"] for result in results.values()) else 1


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", metavar="benchmark",
                        help=f"which to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--records", type=int, help="size of each selected benchmark's input")
    options = parser.parse_args(argv)
    unknown = [name for name in options.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return options


def write_result(filename: str, result: dict) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / filename
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def print_summary(results: dict[str, dict]) -> None:
    for name, result in results.items():
        print(f"\n== {name}{'' if result['ok'] else '  (NOT CORRECT: see above)'}")
        print(table(["metric", "value", "target", "status"], result["table"]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
