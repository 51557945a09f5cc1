"""Where a running process spends its time: py-spy samples, summarised by area, package and function.

``py-spy record --format raw`` writes one line per distinct stack, ``frame;frame;...;leaf count``.
The *own* time of a function is the samples where it is the leaf; its *total* time the samples
where it is anywhere on the stack. Time inside C extensions (fastavro, rocksdict, the aiokafka
record builders) counts as the own time of the Python function that called them. Shares are of
the main thread's samples (py-spy drops those where it sees the thread idle). An *area*
is a caller-defined group of frames (e.g. "Avro decoding"); each sample goes to the area of its
frame nearest the leaf, which answers "what is this CPU time for".

py-spy runs in its default, blocking mode: it pauses the process for each sample, so the
stacks are exact; at 100 Hz that slowed the telemetry worker by 5-20 % while it sampled, so
callers should leave the sampled window out of their timings (:attr:`Sampler.window`). Its
``--nonblocking`` mode costs ~2 %, but on the busy asyncio worker it lost or garbled so many
stacks (the main thread seen busy 56 % of the time at 97 % CPU) that the summary was useless.

py-spy is a development tool, not a project dependency: :func:`py_spy_executable` installs it
into the running virtualenv if it is missing (call it before timing anything).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.console import progress

RATE_HZ = 100
TOP = 15
PROJECT_PACKAGES = ("gridflex", "services")
BACKGROUND_THREAD_ROOT = "Thread._bootstrap "
EVENT_LOOP_AREA = "event loop and the rest (asyncio scheduling, timers, web server)"
GENERIC_TASK_WRAPPERS = ("Service._execute_task ",)  # mode runs every service task through it

Area = tuple[str, tuple[str, ...]]  # a name, and substrings of the frames that belong to it


def service_areas(service: str, own: list[Area]) -> list[Area]:
    """What a batch-pipeline worker's CPU time is for: the codec and metrics, then the service's
    ``own`` areas (rules, state, ...), then Kafka, its batch loop and Faust. The frame nearest
    the leaf that names an area decides; the first area listed wins a tie."""
    return [
        ("Avro decode (RecordCodec.decode: fastavro)", ("RecordCodec.decode",)),
        ("Avro encode (RecordCodec.encode: fastavro)", ("RecordCodec.encode",)),
        ("metrics: prometheus_client, Faust sensors, gridflex.metrics",
         ("prometheus_client/", "faust/sensors/", "gridflex/metrics.py")),
        *own,
        ("produce: aiokafka send, batching, delivery futures", ("aiokafka/producer/", "Batch.emit", "key_partition")),
        ("consume: aiokafka fetch and record parsing", ("aiokafka/consumer/", "aiokafka/record/")),
        ("Kafka connections (aiokafka conn, client)", ("aiokafka/conn.py", "aiokafka/client.py")),
        (f"the batch loop (gridflex/batch.py, {service} app.py), outside the above",
         ("gridflex/batch.py", f"services/{service}/app.py")),
        ("Faust worker (lifecycle, timers, web)", ("faust/", "mode/")),
        ("epoll select (waiting for or polling sockets)", ("EpollSelector.select",)),
    ]


def py_spy_executable() -> str | None:
    """The py-spy command, installed with pip into this virtualenv if missing; None if impossible."""
    beside_python = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)
    if found:
        return found
    progress("py-spy is missing: pip install py-spy (into this virtualenv, for the profile only)")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], capture_output=True)
    if installed.returncode != 0 or not beside_python.exists():
        progress(f"could not install py-spy, there will be no profile: {installed.stderr.decode(errors='replace')[-300:]}")
        return None
    return str(beside_python)


class Sampler:
    """``py-spy record`` attached to one process for at most ``duration`` seconds."""

    def __init__(self, executable: str, pid: int, duration: float, output: Path, areas: list[Area]):
        self.executable = executable
        self.pid = pid
        self.duration = duration
        self.output = output  # the raw stacks, kept (e.g. for flamegraph.pl or speedscope)
        self.areas = areas  # how to group the samples for "where the time goes"
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0  # time.monotonic() of the sampled window
        self.stopped = 0.0

    @property
    def window(self) -> tuple[float, float] | None:
        """When it sampled (time.monotonic() start and end), once stopped."""
        return (self.started, self.stopped) if self.stopped else None

    async def start(self) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            self.executable, "record", "--pid", str(self.pid), "--duration", str(round(self.duration)),
            "--rate", str(RATE_HZ), "--format", "raw", "--function", "--output", str(self.output),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self.started = time.monotonic()

    async def stop(self) -> dict:
        """Stop sampling now if it is still running (py-spy writes what it has), and summarise."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        _, stderr = await self.process.communicate()
        self.stopped = min(time.monotonic(), self.started + self.duration)
        stacks = self.output.read_text() if self.output.exists() else ""
        if not stacks.strip():
            return {"note": f"no profile: py-spy wrote no samples: {stderr.decode(errors='replace').strip()[-500:]}"}
        return summarise(stacks, self.stopped - self.started, self.areas)


def summarise(raw_stacks: str, seconds: float, areas: list[Area]) -> dict:
    """The main thread's time by area, package, function and event-loop callback; other threads in brief.

    The main thread runs the event loop, so all the record processing; background threads (such
    as Faust's aiokafka consumer thread) are counted apart: py-spy cannot tell when they wait.
    """
    stacks = parse_stacks(raw_stacks)
    main = [(frames, count) for frames, count in stacks if not frames[0].startswith(BACKGROUND_THREAD_ROOT)]
    background = sum(count for _, count in stacks) - sum(count for _, count in main)
    samples = sum(count for _, count in main)
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    by_callback: Counter[str] = Counter()
    for frames, count in main:
        own[frames[-1]] += count
        by_package[package_of(frames[-1])] += count
        by_area[area_of(frames, areas)] += count
        by_callback[loop_callback_of(frames)] += count
        for frame in set(frames):
            total[frame] += count

    def shares(counter: Counter[str], key: str, rows: int | None) -> list[dict]:
        return [{key: name, "samples": n, "share": round(n / samples, 4)} for name, n in counter.most_common(rows)]

    project_total = Counter({
        frame: n for frame, n in total.items() if package_of(frame) in PROJECT_PACKAGES and n < 0.99 * samples
    })
    return {
        "tool": f"py-spy record --rate {RATE_HZ} --function",
        "seconds": round(seconds, 1),
        "samples": samples,
        "busy_share": round(samples / (RATE_HZ * seconds), 3) if seconds else None,
        "background_thread_samples": background,
        "own_by_area": shares(by_area, "area", None),
        "own_by_package": shares(by_package, "package", 10),
        "own": shares(own, "function", TOP),
        "loop_callbacks": shares(by_callback, "callback", 10),
        "project_total": shares(project_total, "function", 10),
    }


def parse_stacks(raw_stacks: str) -> list[tuple[list[str], int]]:
    """``frame;frame;...;leaf count`` lines as (frames root first, samples)."""
    stacks = []
    for line in raw_stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack.strip():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def area_of(frames: list[str], areas: list[Area]) -> str:
    """The area of the frame nearest the leaf that belongs to one (the first such area listed).

    Frames of no area (asyncio, mode's helpers, ...) are skipped: the event-loop work a send
    causes belongs to the send. A sample with no area at all is the event loop's own work.
    """
    for frame in reversed(frames):
        for name, markers in areas:
            if any(marker in frame for marker in markers):
                return name
    return EVENT_LOOP_AREA


def loop_callback_of(frames: list[str]) -> str:
    """What the event loop was running: the frame just under the first ``Handle._run``."""
    for position, frame in enumerate(frames):
        if frame.startswith("Handle._run "):
            callees = [inner for inner in frames[position + 1:] if not inner.startswith(GENERIC_TASK_WRAPPERS)]
            return callees[0] if callees else frame
    return f"(the loop itself) {frames[-1]}"


def package_of(frame: str) -> str:
    """``Consumer.getmany (aiokafka/consumer/consumer.py:1100)`` → ``aiokafka``; stdlib modules by name."""
    location = frame.rpartition(" (")[2].rstrip(")")
    path = location.rpartition(":")[0] or location
    first, slash, _ = path.partition("/")
    return first if slash else first.removesuffix(".py")


def where_the_time_goes(profile: dict) -> str:
    """The profile as a few lines for the terminal."""
    if "own" not in profile:
        return profile["note"]

    def listing(rows: list[dict], key: str) -> list[str]:
        return [f"  {row['share']:6.1%}  {row[key]}" for row in rows]

    return "\n".join([
        f"main thread: {profile['samples']:,} samples over {profile['seconds']} s, busy "
        f"{profile['busy_share']:.0%} of the time ({profile['background_thread_samples']:,} samples of "
        f"background threads left out); {profile['tool']}",
        "by area (each sample goes to the area of its frame nearest the leaf):",
        *listing(profile["own_by_area"], "area"),
        "by event-loop callback or task (with callees):",
        *listing(profile["loop_callbacks"], "callback"),
        "own time by package: " + ", ".join(f"{row['package']} {row['share']:.0%}" for row in profile["own_by_package"]),
        "own time by function:",
        *listing(profile["own"], "function"),
        "project functions, with callees:",
        *listing(profile["project_total"], "function"),
    ])
