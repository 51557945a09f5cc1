"""What a person at the terminal sees while the benchmarks run: progress lines and tables."""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One line, prefixed with the seconds since the benchmarks started, flushed at once."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stdout, flush=True)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table; the first column is left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        first, *rest = (str(cell) for cell in cells)
        return "  ".join([first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:]))])

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def rate(records: float, seconds: float) -> str:
    return f"{records / seconds:,.0f} rec/s" if seconds > 0 else "n/a"
