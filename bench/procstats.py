"""Resource use read from ``/proc``: a process's CPU time and peak memory, the machine's CPU load."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat`` utime + stime)."""
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM in /proc/{pid}/status")


@dataclass(frozen=True)
class MachineCpu:
    """A reading of the machine-wide CPU counters (``/proc/stat``), to compare two of them."""

    busy: int
    total: int

    @classmethod
    def read(cls) -> "MachineCpu":
        values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]  # guest time is in user already
        idle = values[3] + values[4]  # idle + iowait
        return cls(busy=sum(values) - idle, total=sum(values))

    def busy_share_since(self, earlier: "MachineCpu") -> float:
        """Share of all cores' time spent busy between ``earlier`` and this reading (0-1)."""
        return (self.busy - earlier.busy) / max(self.total - earlier.total, 1)


def rss_mib(pid: int) -> float:
    """The process's resident set size now (``VmRSS``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")
