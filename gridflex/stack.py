"""Local infrastructure stack without Docker: Kafka 4.1.1 (KRaft) and PostgreSQL on 127.0.0.1.

    python -m gridflex.stack up | down | status | reset

Runtime state lives in ``var/`` at the repo root (``GRIDFLEX_VAR_DIR``), the Kafka jars in
``.cache/kafka-4.1.1/libs`` (``GRIDFLEX_CACHE_DIR`` replaces ``.cache``). Ports:
``GRIDFLEX_KAFKA_PORT`` (19092; the controller uses port + 1) and ``GRIDFLEX_PG_PORT`` (15432).
Processes are tracked by pid (Kafka: ``var/kafka/kafka.pid``, Postgres: ``postmaster.pid``),
never by process name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "4.1.1"
KAFKA_DEPLOY_DIR = REPO_ROOT / "deploy" / "local" / "kafka"
DEFAULT_KAFKA_PORT = 19092
DEFAULT_PG_PORT = 15432
PG_SUPERUSER = "postgres"  # bootstrap superuser created by initdb; used over the unix socket only
PG_ROLE = PG_PASSWORD = PG_DATABASE = "gridflex"  # local development credentials
START_TIMEOUT = 90.0
KAFKA_STOP_TIMEOUT = 30.0
KAFKA_READY_LINE = "Kafka Server started"  # logged by KafkaRaftServer once start-up completed
KAFKA_JVM_OPTS = (
    "-Xms512m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


class StackError(RuntimeError):
    """Something could not be prepared, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Every path and port the stack uses, derived from the environment once."""

    var: Path
    cache: Path
    kafka_port: int
    pg_port: int

    @property
    def controller_port(self) -> int:
        return self.kafka_port + 1

    @property
    def log_dir(self) -> Path:
        return self.var / "log"

    @property
    def kafka_dir(self) -> Path:
        return self.var / "kafka"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_config(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_pid_file(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def kafka_cluster_id_file(self) -> Path:
        return self.kafka_dir / "cluster.id"

    @property
    def kafka_log(self) -> Path:
        return self.log_dir / "kafka.log"

    @property
    def kafka_libs(self) -> Path:
        return self.cache / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def kafka_libs_marker(self) -> Path:
        return self.kafka_libs / ".complete"

    @property
    def pg_dir(self) -> Path:
        return self.var / "postgres"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_run(self) -> Path:
        return self.pg_dir / "run"

    @property
    def pg_log(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def kafka_address(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def pg_address(self) -> str:
        return f"127.0.0.1:{self.pg_port}"

    @property
    def pg_url(self) -> str:
        return f"postgresql://{PG_ROLE}:{PG_PASSWORD}@127.0.0.1:{self.pg_port}/{PG_DATABASE}"


def _port_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65534:
        raise StackError(f"{name}={raw!r} is not a valid port")
    return int(raw)


def layout(env: Mapping[str, str] | None = None) -> Layout:
    """Paths and ports from the environment (defaults: var/, .cache/, 19092, 15432)."""
    env = os.environ if env is None else env
    var = Path(env.get("GRIDFLEX_VAR_DIR") or REPO_ROOT / "var").expanduser().absolute()
    cache = Path(env.get("GRIDFLEX_CACHE_DIR") or REPO_ROOT / ".cache").expanduser().absolute()
    return Layout(
        var=var,
        cache=cache,
        kafka_port=_port_from_env(env, "GRIDFLEX_KAFKA_PORT", DEFAULT_KAFKA_PORT),
        pg_port=_port_from_env(env, "GRIDFLEX_PG_PORT", DEFAULT_PG_PORT),
    )


# --------------------------------------------------------------------------- pure config rendering


def render_template(text: str, values: Mapping[str, object]) -> str:
    """Replace ``@NAME@`` placeholders; an unknown placeholder is an error, not a silent blank."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise StackError(f"template placeholder @{key}@ has no value")
        return str(values[key])

    return re.sub(r"@([A-Z][A-Z0-9_]*)@", substitute, text)


def kafka_server_properties(lay: Layout) -> str:
    template = (KAFKA_DEPLOY_DIR / "server.properties.in").read_text()
    return render_template(
        template,
        {"KAFKA_PORT": lay.kafka_port, "CONTROLLER_PORT": lay.controller_port, "DATA_DIR": lay.kafka_data},
    )


def kafka_command(java: str, lay: Layout) -> list[str]:
    """The broker's JVM command line (its config path doubles as our pid-ownership check)."""
    return [java, *KAFKA_JVM_OPTS, *_kafka_logging_opts(lay), "-cp", f"{lay.kafka_libs}/*",
            "kafka.Kafka", str(lay.kafka_config)]


def _kafka_logging_opts(lay: Layout) -> list[str]:
    return [f"-Dkafka.logs.dir={lay.log_dir}",
            f"-Dlog4j2.configurationFile={KAFKA_DEPLOY_DIR / 'log4j2.yaml'}"]


def postgres_conf(lay: Layout) -> str:
    """Settings included at the end of postgresql.conf (so they win); rewritten on every start."""
    return "\n".join([
        "# Written by gridflex/stack.py on every start; change it there.",
        "listen_addresses = '127.0.0.1'",
        f"port = {lay.pg_port}",
        f"unix_socket_directories = '{lay.pg_run}'",
        "max_connections = 100",
        "shared_buffers = 128MB",
        "password_encryption = 'scram-sha-256'",
        "# fsync stays on (the default): a crash of the dev box must not corrupt the ledger.",
        "# Server output goes to var/log/postgres.log through pg_ctl -l.",
        "logging_collector = off",
        "",
    ])


def postgres_hba() -> str:
    """Trust on the private unix socket (admin), passwords over TCP from 127.0.0.1 only."""
    return "\n".join([
        "# Written by gridflex/stack.py.",
        "# TYPE  DATABASE  USER  ADDRESS        METHOD",
        "local   all       all                  trust",
        "host    all       all   127.0.0.1/32   scram-sha-256",
        "",
    ])


STATUS_COLUMNS = (("component", "COMPONENT"), ("state", "STATE"), ("pid", "PID"), ("address", "ADDRESS"),
                  ("version", "VERSION"), ("data_dir", "DATA DIR"), ("log", "LOG"))


def format_status(rows: list[dict]) -> str:
    """An aligned text table of status() rows."""
    return text_table(STATUS_COLUMNS, [dict(row, state="running" if row.get("running") else "stopped") for row in rows])


def text_table(columns: tuple[tuple[str, str], ...], rows: list[dict]) -> str:
    """Rows as aligned text under ``columns`` ((key, TITLE) pairs); a missing value shows as -."""
    cells = [[title for _, title in columns]]
    cells += [["-" if row.get(key) in (None, "") else str(row[key]) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


# --------------------------------------------------------------------------- small helpers


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kwargs)


def _output_tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _log_since(path: Path, offset: int = 0) -> str:
    """Text appended to a log file after `offset` (all of it if the file rolled over meanwhile)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset if fh.seek(0, os.SEEK_END) >= offset else 0)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    return _output_tail(_log_since(path, offset), lines)


def _pid_alive(pid: int) -> bool:
    """True if the pid exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def apt_install(packages: list[str], why: str) -> None:
    """Install Debian packages as root, or via passwordless sudo; else fail saying what to install."""
    hint = f"install it with: sudo apt-get install -y {' '.join(packages)}"
    if shutil.which("apt-get") is None:
        raise StackError(f"{why} is missing and apt-get is not available; install {' '.join(packages)} yourself")
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and _run(["sudo", "-n", "true"]).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        raise StackError(f"{why} is missing and this user cannot install packages; {hint}")
    _say(f"stack: installing {' '.join(packages)} with apt-get ({why})...")
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]  # via `env` because sudo drops the environment
    for step in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
        result = _run([*prefix, *env_cmd, *step])
        if result.returncode != 0:
            raise StackError(f"`{' '.join(step)}` failed; {hint}\n{_output_tail(result.stdout + result.stderr)}")


@contextlib.contextmanager
def _stack_lock(lay: Layout) -> Iterator[None]:
    """Serialise up/down/reset so parallel test sessions do not start two brokers."""
    lay.var.mkdir(parents=True, exist_ok=True)
    with open(lay.var / "stack.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say("stack: waiting for another stack command to finish...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------- prerequisites


def find_java() -> str:
    """The java binary (JAVA_HOME first, then PATH); Kafka 4.x brokers need Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home and (Path(java_home) / "bin" / "java").is_file() \
        else shutil.which("java")
    if not java:
        raise StackError("Java 17+ is required for Kafka and was not found on PATH; "
                         "install it with: sudo apt-get install -y openjdk-17-jre-headless")
    match = re.search(r'version "(\d+)(?:\.(\d+))?', _run([java, "-version"]).stderr)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < 17:
        raise StackError(f"{java} is Java {major or 'of unknown version'}; Kafka {KAFKA_VERSION} needs Java 17+")
    return java


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install(["maven"], "Maven (used once to download the Kafka jars)")
        mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is required to download the Kafka jars; install: sudo apt-get install -y maven")
    return mvn


def ensure_kafka_jars(lay: Layout) -> None:
    """Fetch the broker jars with Maven unless the cache is complete (marker written last)."""
    if lay.kafka_libs_marker.is_file():
        return
    mvn = find_mvn()
    _say(f"kafka: downloading Kafka {KAFKA_VERSION} jars with Maven (first run)...")
    partial = lay.kafka_libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    result = _run([mvn, "-q", "-B", "-f", str(KAFKA_DEPLOY_DIR / "pom.xml"), "dependency:copy-dependencies",
                   f"-DoutputDirectory={partial}", "-DincludeScope=runtime"], cwd=KAFKA_DEPLOY_DIR)
    if result.returncode != 0 or not (partial / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise StackError("kafka: downloading the jars with Maven failed:\n"
                         + _output_tail(result.stdout + result.stderr))
    # Swap in the complete folder and only then write the marker, so an interrupted run re-downloads.
    shutil.rmtree(lay.kafka_libs, ignore_errors=True)
    partial.rename(lay.kafka_libs)
    lay.kafka_libs_marker.write_text(f"kafka {KAFKA_VERSION}\n")
    _say(f"kafka: {len(list(lay.kafka_libs.glob('*.jar')))} jars in {lay.kafka_libs}")


def find_postgres_bindir(lay: Layout) -> Path | None:
    """Server binaries: the major the data dir was made with, else pg_config's, else the newest."""
    candidates: list[Path] = []
    pg_version_file = lay.pg_data / "PG_VERSION"
    if pg_version_file.is_file():
        candidates.append(Path("/usr/lib/postgresql") / pg_version_file.read_text().strip() / "bin")
    if pg_config := shutil.which("pg_config"):
        # pg_config may come from libpq-dev without a server, hence the check below.
        result = _run([pg_config, "--bindir"])
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))

    def major(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "psql", "pg_isready")):
            return bindir
    return None


def ensure_postgres_binaries(lay: Layout) -> Path:
    bindir = find_postgres_bindir(lay)
    if bindir is None:
        apt_install(["postgresql"], "the PostgreSQL server")
        bindir = find_postgres_bindir(lay)
    if bindir is None:
        raise StackError("PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found; "
                         "install them with: sudo apt-get install -y postgresql")
    return bindir


def ensure_prerequisites(lay: Layout) -> Path:
    """Java, the Kafka jars (Maven), the PostgreSQL binaries and its folders; returns the bindir."""
    find_java()
    ensure_kafka_jars(lay)
    bindir = ensure_postgres_binaries(lay)
    _prepare_postgres_dirs(lay, postgres_os_user(lay, create=True))  # fail before anything starts
    return bindir


# --------------------------------------------------------------------------- kafka


def kafka_pid(lay: Layout) -> int | None:
    """Pid of *our* broker: recorded, alive, and running kafka.Kafka with our config file."""
    pid = _read_pid(lay.kafka_pid_file)
    if pid is None or not _pid_alive(pid):
        return None
    cmdline = _cmdline(pid)
    return pid if "kafka.Kafka" in cmdline and str(lay.kafka_config) in cmdline else None


def kafka_version(lay: Layout) -> str | None:
    jars = sorted(lay.kafka_libs.glob("kafka_2.13-*.jar"))
    return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else None


def _kafka_tool(java: str, lay: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([java, "-Xmx256m", *_kafka_logging_opts(lay), "-cp", f"{lay.kafka_libs}/*",
                 "kafka.tools.StorageTool", *args])


def _kafka_cluster_id(java: str, lay: Layout) -> str:
    """Generated once and kept, so a re-format after deleting data/ keeps the same id."""
    if lay.kafka_cluster_id_file.is_file():
        return lay.kafka_cluster_id_file.read_text().strip()
    result = _kafka_tool(java, lay, "random-uuid")
    lines = result.stdout.split()
    if result.returncode != 0 or not lines or not re.fullmatch(r"[A-Za-z0-9_-]{22}", lines[-1]):
        raise StackError("kafka: could not generate a cluster id:\n" + _output_tail(result.stdout + result.stderr))
    lay.kafka_cluster_id_file.write_text(lines[-1] + "\n")
    return lines[-1]


def format_kafka_storage(java: str, lay: Layout) -> None:
    """Format the KRaft log dir once; meta.properties is the marker Kafka itself writes."""
    if (lay.kafka_data / "meta.properties").is_file():
        return
    cluster_id = _kafka_cluster_id(java, lay)
    _say(f"kafka: formatting storage in {lay.kafka_data} (cluster id {cluster_id})")
    result = _kafka_tool(java, lay, "format", "-t", cluster_id, "-c", str(lay.kafka_config))
    if result.returncode != 0:
        raise StackError("kafka: formatting storage failed:\n" + _output_tail(result.stdout + result.stderr))


def start_kafka(lay: Layout) -> None:
    """Start the broker detached unless our broker already runs; wait until it serves clients."""
    if (pid := kafka_pid(lay)) is not None:
        _say(f"kafka: already running pid {pid} on {lay.kafka_address}")
        return
    lay.kafka_pid_file.unlink(missing_ok=True)
    java = find_java()
    ensure_kafka_jars(lay)
    for port in (lay.kafka_port, lay.controller_port):
        if _port_open(port):
            raise StackError(f"kafka: 127.0.0.1:{port} is already in use by a process this stack did not start; "
                             "stop it or choose other ports with GRIDFLEX_KAFKA_PORT")
    for folder in (lay.kafka_data, lay.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    lay.kafka_config.write_text(kafka_server_properties(lay))  # re-rendered so port overrides apply
    format_kafka_storage(java, lay)

    log_offset = lay.kafka_log.stat().st_size if lay.kafka_log.exists() else 0
    with lay.kafka_log.open("ab") as log:
        proc = subprocess.Popen(kafka_command(java, lay), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=lay.kafka_dir, start_new_session=True)
    lay.kafka_pid_file.write_text(f"{proc.pid}\n")
    _say(f"kafka: starting pid {proc.pid}, waiting for {lay.kafka_address}...")
    try:
        _wait_for_kafka(proc, lay, log_offset)
    except StackError:
        stop_kafka(lay)  # do not leave a half-started broker behind
        raise
    _say(f"kafka: started pid {proc.pid} on {lay.kafka_address}")
    _warn_unknown_kafka_settings(lay, log_offset)


def _wait_for_kafka(proc: subprocess.Popen, lay: Layout, log_offset: int) -> None:
    """Ready = port accepts connections and the broker logged its start-up line.

    If the line never shows (e.g. logging reconfigured) a port that stays open for 15 s counts too.
    """
    deadline = time.monotonic() + START_TIMEOUT
    port_open_since: float | None = None
    while time.monotonic() < deadline:
        if (code := proc.poll()) is not None:
            raise StackError(f"kafka: broker exited with code {code} during start-up; see {lay.kafka_log}:\n"
                             + _log_tail(lay.kafka_log, log_offset))
        if _port_open(lay.kafka_port):
            port_open_since = port_open_since or time.monotonic()
            if KAFKA_READY_LINE in _log_since(lay.kafka_log, log_offset) \
                    or time.monotonic() - port_open_since > 15:
                return
        time.sleep(0.5)
    raise StackError(f"kafka: not ready on {lay.kafka_address} after {START_TIMEOUT:.0f} s; see {lay.kafka_log}:\n"
                     + _log_tail(lay.kafka_log, log_offset))


def unknown_kafka_settings(config_text: str, log_text: str) -> list[str]:
    """Keys of our server.properties missing from the broker's "KafkaConfig values:" dump.

    Kafka 4.1 silently ignores keys it does not know (a typo just falls back to the default),
    so we compare against the dump it logs at start-up. Empty if no dump was logged.
    """
    known = set(re.findall(r"^\t([a-z0-9._-]+) = ", log_text, flags=re.M))
    ours = re.findall(r"^([a-z0-9._-]+)\s*=", config_text, flags=re.M)
    return [key for key in ours if key not in known] if known else []


def _warn_unknown_kafka_settings(lay: Layout, log_offset: int) -> None:
    for key in unknown_kafka_settings(lay.kafka_config.read_text(), _log_since(lay.kafka_log, log_offset)):
        _say(f"kafka: warning: '{key}' in server.properties is not a Kafka {KAFKA_VERSION} broker setting (ignored)")


def stop_kafka(lay: Layout) -> None:
    """SIGTERM our broker (controlled shutdown), SIGKILL after 30 s; drop a stale pid file."""
    pid = kafka_pid(lay)
    if pid is None:
        if lay.kafka_pid_file.exists():
            lay.kafka_pid_file.unlink()
            _say("kafka: not running (removed stale pid file)")
        else:
            _say("kafka: not running")
        return
    _say(f"kafka: stopping pid {pid}...")
    for sig, wait in ((signal.SIGTERM, KAFKA_STOP_TIMEOUT), (signal.SIGKILL, 10.0)):
        if sig == signal.SIGKILL:
            _say(f"kafka: still running after {KAFKA_STOP_TIMEOUT:.0f} s, sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _pid_alive(pid):
            break
    else:
        raise StackError(f"kafka: pid {pid} did not exit even after SIGKILL")
    lay.kafka_pid_file.unlink(missing_ok=True)
    _say("kafka: stopped")


# --------------------------------------------------------------------------- postgres


def postgres_pid(lay: Layout) -> int | None:
    """Pid of the postmaster owning our data dir (from postmaster.pid), if it is alive."""
    pid = _read_pid(lay.pg_data / "postmaster.pid")
    if pid is None or not _pid_alive(pid):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm in ("postgres", "postmaster") else None


def postgres_version(bindir: Path | None) -> str | None:
    if bindir is None:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\S+)", _run([str(bindir / "postgres"), "--version"]).stdout)
    return match.group(1) if match else None


def postgres_os_user(lay: Layout, create: bool = False) -> str | None:
    """OS user to run Postgres as when we are root (it refuses root); None = run as ourselves.

    An existing data dir keeps its owner; otherwise Debian's `postgres` user, else a `gridflex`
    system user (created when `create`).
    """
    if os.geteuid() != 0:
        return None
    if lay.pg_data.exists() and lay.pg_data.stat().st_uid != 0:
        with contextlib.suppress(KeyError):
            return pwd.getpwuid(lay.pg_data.stat().st_uid).pw_name
    for name in (PG_SUPERUSER, "gridflex"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    if not create:
        return None
    _say("postgres: creating system user 'gridflex' to run PostgreSQL (it refuses to run as root)")
    result = _run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                   "--shell", "/usr/sbin/nologin", "gridflex"])
    if result.returncode != 0:
        raise StackError("postgres: useradd gridflex failed:\n" + _output_tail(result.stderr))
    return "gridflex"


def _pg_run(lay: Layout, argv: list[str], user: str | None, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a Postgres binary, as `user` via runuser when we are root."""
    command = ["runuser", "-u", user, "--", *argv] if user else argv
    # cwd inside var/postgres: as another user the caller's cwd (e.g. /root) may be unreadable.
    return _run(command, cwd=lay.pg_dir, env=_pg_env(), **kwargs)


def _pg_env() -> dict[str, str]:
    """Our environment minus PG* variables, which would silently redirect psql/pg_ctl."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _chown(path: Path, user: str | None) -> None:
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _prepare_postgres_dirs(lay: Layout, user: str | None) -> None:
    for folder in (lay.pg_dir, lay.pg_run, lay.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    lay.pg_log.touch(exist_ok=True)
    for path in (lay.pg_dir, lay.pg_run, lay.pg_log):  # the server writes all three
        _chown(path, user)
    socket_path = lay.pg_run / f".s.PGSQL.{lay.pg_port}"
    if len(str(socket_path).encode()) > 107:
        raise StackError(f"postgres: unix socket path {socket_path} is longer than the 107-byte limit; "
                         "set GRIDFLEX_VAR_DIR to a shorter path")
    if user and _run(["runuser", "-u", user, "--", "test", "-w", str(lay.pg_dir)]).returncode != 0:
        raise StackError(f"postgres: it runs as OS user '{user}' (PostgreSQL refuses root), but that user cannot "
                         f"reach {lay.pg_dir} (a parent folder is not searchable, e.g. /root is 0700); "
                         "set GRIDFLEX_VAR_DIR to a folder outside it, e.g. /var/tmp/gridflex")


def init_postgres(lay: Layout, bindir: Path, user: str | None) -> None:
    """initdb once (PG_VERSION marks a finished init) and hook our settings file in."""
    if (lay.pg_data / "PG_VERSION").is_file():
        return
    _say(f"postgres: initializing {lay.pg_data} (first run)...")
    result = _pg_run(lay, [str(bindir / "initdb"), "-D", str(lay.pg_data), "-U", PG_SUPERUSER,
                           "--auth-local=trust", "--auth-host=scram-sha-256",
                           "--encoding=UTF8", "--no-locale"], user)
    if result.returncode != 0:
        raise StackError("postgres: initdb failed:\n" + _output_tail(result.stdout + result.stderr))
    hba = lay.pg_data / "pg_hba.conf"
    hba.write_text(postgres_hba())  # existing file: keeps its owner
    with (lay.pg_data / "postgresql.conf").open("a") as conf:
        conf.write("\n# gridflex local settings (written on every start by gridflex/stack.py)\n"
                   "include_if_exists = 'gridflex.conf'\n")


def start_postgres(lay: Layout) -> None:
    """Start our Postgres cluster unless it runs; wait until it accepts TCP connections."""
    bindir = ensure_postgres_binaries(lay)
    if (pid := postgres_pid(lay)) is not None:
        _say(f"postgres: already running pid {pid} on {lay.pg_address}")
        return
    if _port_open(lay.pg_port):
        raise StackError(f"postgres: 127.0.0.1:{lay.pg_port} is already in use by a process this stack did not "
                         "start; stop it or choose another port with GRIDFLEX_PG_PORT")
    user = postgres_os_user(lay, create=True)
    _prepare_postgres_dirs(lay, user)
    init_postgres(lay, bindir, user)
    settings = lay.pg_data / "gridflex.conf"
    settings.write_text(postgres_conf(lay))
    _chown(settings, user)

    _say(f"postgres: starting on {lay.pg_address}...")
    # pg_ctl detaches the postmaster itself (setsid); -w waits until it accepts connections.
    result = _pg_run(lay, [str(bindir / "pg_ctl"), "-D", str(lay.pg_data), "-l", str(lay.pg_log),
                           "-w", "-t", str(int(START_TIMEOUT)), "start"], user, start_new_session=True)
    if result.returncode != 0:
        raise StackError(f"postgres: failed to start (pg_ctl exit {result.returncode}); see {lay.pg_log}:\n"
                         + _log_tail(lay.pg_log))
    deadline = time.monotonic() + START_TIMEOUT
    while _run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(lay.pg_port)]).returncode != 0:
        if time.monotonic() > deadline:
            raise StackError(f"postgres: not accepting connections on {lay.pg_address}; see {lay.pg_log}:\n"
                             + _log_tail(lay.pg_log))
        time.sleep(0.5)
    _say(f"postgres: started pid {postgres_pid(lay)} on {lay.pg_address}")


def _psql(lay: Layout, bindir: Path, sql: str, database: str = "postgres") -> str:
    """Run SQL as the bootstrap superuser over the private unix socket (trust)."""
    result = _run([str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(lay.pg_run),
                   "-p", str(lay.pg_port), "-U", PG_SUPERUSER, "-d", database, "-tAc", sql], env=_pg_env())
    if result.returncode != 0:
        raise StackError(f"postgres: `{sql}` failed:\n{_output_tail(result.stderr)}")
    return result.stdout.strip()


def ensure_postgres_database(lay: Layout, bindir: Path) -> None:
    """Create the gridflex role and database if missing, then log in with the URL to prove it."""
    if not _psql(lay, bindir, f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}'"):
        _psql(lay, bindir, f"CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{PG_PASSWORD}'")
        _say(f"postgres: created role {PG_ROLE}")
    if not _psql(lay, bindir, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"):
        _psql(lay, bindir, f"CREATE DATABASE {PG_DATABASE} OWNER {PG_ROLE}")
        _say(f"postgres: created database {PG_DATABASE}")
    result = _run([str(bindir / "psql"), "-X", "-tAc", "SELECT 1", lay.pg_url], env=_pg_env())
    if result.returncode != 0 or result.stdout.strip() != "1":
        raise StackError(f"postgres: cannot log in as {lay.pg_url}:\n{_output_tail(result.stderr)}")


def stop_postgres(lay: Layout) -> None:
    """pg_ctl stop -m fast on our data dir (idempotent)."""
    pid = postgres_pid(lay)
    if pid is None:
        # A stale postmaster.pid is left alone on purpose: PostgreSQL checks it on start (and the
        # shared memory it names), so deleting it could hide orphaned backends.
        _say("postgres: not running")
        return
    bindir = find_postgres_bindir(lay)
    if bindir is None:
        raise StackError(f"postgres: pid {pid} runs but pg_ctl was not found to stop it")
    _say(f"postgres: stopping pid {pid}...")
    result = _pg_run(lay, [str(bindir / "pg_ctl"), "-D", str(lay.pg_data), "-m", "fast", "-w", "-t", "60",
                           "stop"], postgres_os_user(lay))
    if result.returncode != 0 and postgres_pid(lay) is not None:
        raise StackError(f"postgres: pg_ctl stop failed; see {lay.pg_log}:\n"
                         + _output_tail(result.stdout + result.stderr))
    _say("postgres: stopped")


# --------------------------------------------------------------------------- public API


def up() -> None:
    """Start Kafka and Postgres (idempotent) and make sure the gridflex database exists."""
    lay = layout()
    with _stack_lock(lay):
        bindir = ensure_prerequisites(lay)
        start_kafka(lay)
        start_postgres(lay)
        ensure_postgres_database(lay, bindir)
    _say(f"stack: up (kafka {lay.kafka_address}, {lay.pg_url})")


def down() -> None:
    """Stop what up() started, by pid (idempotent)."""
    lay = layout()
    with _stack_lock(lay):
        _down(lay)


def _down(lay: Layout) -> None:
    errors = []
    for stop in (stop_kafka, stop_postgres):  # try both even if one fails
        try:
            stop(lay)
        except StackError as exc:
            errors.append(str(exc))
    if errors:
        raise StackError("\n".join(errors))


def reset() -> None:
    """down() and delete the Kafka and Postgres data (logs and the jar cache stay)."""
    lay = layout()
    with _stack_lock(lay):
        _down(lay)
        for folder in (lay.kafka_dir, lay.pg_dir):
            if folder.exists():
                shutil.rmtree(folder)
                _say(f"stack: deleted {folder}")


def status() -> list[dict]:
    """One dict per component: running, pid, address, url, version, data_dir, log."""
    lay = layout()
    kafka = kafka_pid(lay)
    postgres = postgres_pid(lay)
    return [
        {"component": "kafka", "running": kafka is not None, "pid": kafka, "address": lay.kafka_address,
         "url": lay.kafka_address, "version": kafka_version(lay), "data_dir": str(lay.kafka_data),
         "log": str(lay.kafka_log)},
        {"component": "postgres", "running": postgres is not None, "pid": postgres, "address": lay.pg_address,
         "url": lay.pg_url, "version": postgres_version(find_postgres_bindir(lay)), "data_dir": str(lay.pg_data),
         "log": str(lay.pg_log)},
    ]


def print_status() -> None:
    print(format_status(status()))


def main(argv: list[str] | None = None) -> int:
    commands = {"up": up, "down": down, "status": print_status, "reset": reset}
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in commands:
        print(f"usage: python -m gridflex.stack {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        commands[args[0]]()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
