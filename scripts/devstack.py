"""Throwaway Redis, PostgreSQL and Kafka on loopback for development and CI.

``scripts/devstack up`` installs what is missing (Debian ``redis-server`` and ``postgresql-15``,
Kafka 4.1.1 jars from Maven Central into ``.cache/kafka-libs``), starts the three servers in
parallel on free loopback ports, waits until each answers, and writes ``.devstack/state.json`` and
``.devstack/env``. ``down`` stops them and deletes their data. ``stop``/``kill``/``start NAME``
take one backend down and bring it back on the same port and data (fault-injection tests). When
``REDIS_URL``, ``DATABASE_URL`` or ``KAFKA_BOOTSTRAP_SERVERS`` is set, that server is used instead
of starting one.

Standard library only: it runs before the virtualenv is complete. The same module is the Python
API (:class:`Devstack`) behind the pytest fixtures. Recipes: ``../shared/notes/kafka-and-tools.md``;
usage: ``docs/development.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = ROOT / ".devstack"
KAFKA_POM = ROOT / "scripts" / "kafka" / "pom.xml"
KAFKA_LIBS = ROOT / ".cache" / "kafka-libs"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
NAMES = ("redis", "postgres", "kafka")
ENV_VARS = {"redis": "REDIS_URL", "postgres": "DATABASE_URL", "kafka": "KAFKA_BOOTSTRAP_SERVERS"}
READY_TIMEOUT = {"redis": 15.0, "postgres": 60.0, "kafka": 120.0}
STOP_GRACE = 30.0  # `stop`: Kafka's controlled shutdown takes a few seconds
DOWN_GRACE = 5.0  # `down` deletes the data, so a long clean shutdown buys nothing
POLL_INTERVAL = 0.05
_T = TypeVar("_T")


class DevstackError(Exception):
    """A backend could not be installed, started, stopped or found."""


def default_state_dir() -> Path:
    """``$DEVSTACK_STATE_DIR``, else ``.devstack`` in the repository (shared by its users)."""
    return Path(os.environ.get("DEVSTACK_STATE_DIR") or DEFAULT_STATE_DIR)


def _log(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Record:
    """What ``state.json`` keeps about one backend.

    ``managed`` is False for a server named by an environment variable: devstack only uses it.
    A managed server runs in a session ``sid`` of its own (see :func:`_family`).
    """

    name: str
    url: str
    managed: bool
    port: int = 0
    pid: int = 0
    sid: int = 0
    data_dir: str = ""
    controller_port: int = 0  # Kafka only
    partitions: int = 1  # Kafka only: num.partitions for auto-created topics


# --- processes -----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` from the state on, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie has exited, and this sandbox's PID 1 reaps them lazily."""
    fields = _stat(pid) if pid > 0 else None
    return fields is not None and fields[0] not in ("Z", "X")


def _session_of(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[3]) if fields else 0


def _family(rec: Record) -> set[int]:
    """Live processes of a backend: its session plus the server's descendants.

    The session covers what a server leaves behind when it dies (its children are then adopted
    by PID 1); descendants cover PostgreSQL, whose children each start a session of their own.
    """
    procs = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and fields[0] not in ("Z", "X"):
            procs[int(entry.name)] = (int(fields[1]), int(fields[3]))  # ppid, session
    family = {pid for pid, (_, sid) in procs.items() if rec.sid > 1 and sid == rec.sid}
    parents = {rec.pid} if _running(rec) else set()
    while parents:
        family |= parents
        parents = {pid for pid, (ppid, _) in procs.items() if ppid in parents} - family
    return family


def _running(rec: Record) -> bool:
    # The session check guards against a recycled pid after a reboot or a long pause.
    return rec.managed and _alive(rec.pid) and _session_of(rec.pid) == rec.sid


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _terminate(rec: Record, sig: signal.Signals, grace: float) -> None:
    """Send ``sig`` to the server, then SIGKILL whatever of it is left after ``grace``."""
    family = _family(rec)
    if _running(rec):
        _signal(rec.pid, sig)
        _wait_until(lambda: not any(map(_alive, family)), grace)
    _kill_all(family | _family(rec))


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    if not _wait_until(lambda: not any(map(_alive, pids)), 10.0):
        raise DevstackError(f"processes survive SIGKILL: {sorted(filter(_alive, pids))}")


# A shell in a new session backgrounds the server and exits at once: the server is not our child,
# so it outlives the CLI and a long-lived caller (pytest) is left with no child to reap.
_SPAWN = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


def _spawn(argv: list[str], log: Path) -> int:
    """Start ``argv`` detached in a new session with output to ``log``; return its pid."""
    out = subprocess.run(
        ["sh", "-c", _SPAWN, "devstack-spawn", str(log), *argv],
        check=True,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    return int(out.stdout)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all sockets are open at once, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def _wait_ready(rec: Record, check: Callable[[], bool], log: Path) -> None:
    """Poll ``check`` until it passes; fail at once if the server exits, or at the deadline."""
    timeout = READY_TIMEOUT[rec.name]
    deadline = time.monotonic() + timeout
    while not check():
        if not _running(rec):
            raise DevstackError(f"{rec.name} exited while starting; log {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise DevstackError(f"{rec.name} not ready after {timeout:.0f} s; log:\n{_tail(log)}")
        time.sleep(POLL_INTERVAL)


# --- installation --------------------------------------------------------------------------------

_APT_BINARIES = {
    "redis-server": "redis-server",
    str(PG_BIN / "initdb"): "postgresql-15",
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
}
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


def _missing_packages(names: set[str]) -> list[str]:
    """Debian packages that starting the backends ``names`` needs and the machine lacks."""
    wanted = set()
    if "redis" in names:
        wanted.add("redis-server")
    if "postgres" in names:
        wanted.add(str(PG_BIN / "initdb"))
    if "kafka" in names:
        wanted.add("java")
        if not _kafka_libs_complete():
            wanted.add("mvn")
    return sorted(_APT_BINARIES[b] for b in wanted if shutil.which(b) is None)


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep apt from starting the system's own Redis and PostgreSQL services (Debian's policy-rc.d).

    Otherwise a fresh CI machine would be left running a redis on 6379 and a cluster on 5432.
    """
    created = False
    if os.geteuid() == 0 and not _POLICY_RC.exists():
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
        created = True
    try:
        yield
    finally:
        if created:
            _POLICY_RC.unlink(missing_ok=True)


def _apt_install(packages: list[str]) -> None:
    if not packages:
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise DevstackError(f"missing {' '.join(packages)}; install them as root")
        prefix = ["sudo", "-n"]
    _log(f"installing {' '.join(packages)} with apt-get")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    with _no_service_starts():
        for cmd in (["apt-get", "update"], install):
            # apt's chatter goes to stderr: stdout carries only the export lines.
            subprocess.run([*prefix, *cmd], check=True, env=env, stdout=sys.stderr)
    _log(f"apt-get installed {' '.join(packages)} in {time.monotonic() - started:.2f} s")


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()


def _kafka_libs_complete() -> bool:
    """The jar cache is complete when its stamp names the current pom (written last)."""
    stamp = KAFKA_LIBS / ".complete"
    return stamp.is_file() and stamp.read_text().strip() == _pom_digest()


def _ensure_kafka_libs() -> None:
    """Copy Kafka's runtime classpath from Maven Central into ``.cache/kafka-libs`` once."""
    if _kafka_libs_complete():
        return
    KAFKA_LIBS.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(KAFKA_LIBS.parent / "kafka-libs.lock"):
        if _kafka_libs_complete():  # another devstack fetched them while we waited
            return
        _log("fetching Kafka jars from Maven Central (first run only)")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix="kafka-libs.", dir=KAFKA_LIBS.parent))
        try:
            cmd = [
                "mvn",
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(KAFKA_POM),
                DEPENDENCY_PLUGIN,
            ]
            cmd += ["-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise DevstackError(f"fetching Kafka jars failed:\n{proc.stdout}{proc.stderr}")
            (staging / ".complete").write_text(_pom_digest() + "\n")
            shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
            staging.rename(KAFKA_LIBS)  # atomic: a reader sees no half-filled cache
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _log(f"Kafka jars fetched in {time.monotonic() - started:.2f} s")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise devstack commands (possibly from several engineers) on one lock file."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another devstack command ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- backends ------------------------------------------------------------------------------------


class _Driver(Protocol):
    """How one kind of server is created, launched and checked."""

    stop_signal: signal.Signals  # graceful, data kept
    down_signal: signal.Signals  # fast, data thrown away

    def create(self, rec: Record) -> None:
        """Make a fresh data folder for ``rec`` (ports already chosen)."""

    def launch(self, rec: Record) -> None:
        """Start the server on ``rec``'s port and data and set ``rec.pid``; may return early."""

    def wait_ready(self, rec: Record) -> None:
        """Return once the server serves requests; raise DevstackError otherwise."""

    def initialize(self, rec: Record) -> None:
        """One-time setup after the first start."""


class _Redis:
    stop_signal = down_signal = signal.SIGTERM

    def create(self, rec: Record) -> None:
        rec.data_dir = tempfile.mkdtemp(prefix="devstack-redis-", dir="/tmp")

    def launch(self, rec: Record) -> None:
        argv = ["redis-server", "--port", str(rec.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", rec.data_dir, "--daemonize", "no"]
        rec.pid = _spawn(argv, self._logfile(rec))

    def wait_ready(self, rec: Record) -> None:
        _wait_ready(rec, lambda: _redis_ping(rec.port), self._logfile(rec))

    def initialize(self, rec: Record) -> None:
        pass

    @staticmethod
    def _logfile(rec: Record) -> Path:
        return Path(rec.data_dir) / "redis.log"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


_PG_CONF = """
# devstack: throwaway server on loopback. Safe against a crash of PostgreSQL (kill -9), not of
# the machine: no fsync, but commits still write their WAL to the kernel before returning
# (synchronous_commit = off would lose the last commits on a kill -9 of the server).
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{dir}'
fsync = off
synchronous_commit = on
full_page_writes = off
max_connections = 200
"""


class _Postgres:
    stop_signal = signal.SIGINT  # "fast" shutdown: clients are disconnected, data is kept
    down_signal = signal.SIGQUIT  # "immediate" shutdown

    def create(self, rec: Record) -> None:
        rec.data_dir = tempfile.mkdtemp(prefix="devstack-postgres-", dir="/tmp")
        if os.geteuid() == 0:
            shutil.chown(rec.data_dir, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", self._pgdata(rec), "-U", "postgres", "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
        self._run(rec, initdb)
        with open(Path(self._pgdata(rec)) / "postgresql.conf", "a") as conf:
            conf.write(_PG_CONF.format(port=rec.port, dir=rec.data_dir))

    def launch(self, rec: Record) -> None:
        pidfile = Path(self._pgdata(rec)) / "postmaster.pid"
        # After kill -9 both lock files name the dead postmaster. PostgreSQL ignores a stale lock
        # only when that pid is gone, and an unreaped zombie still "exists" (this sandbox's PID 1
        # reaps lazily), so remove them ourselves once we know the postmaster is dead.
        if not _alive(rec.pid):
            for lock in [pidfile, *Path(rec.data_dir).glob(".s.PGSQL.*.lock")]:
                lock.unlink(missing_ok=True)
        log = str(Path(rec.data_dir) / "postgres.log")
        timeout = str(int(READY_TIMEOUT["postgres"]))
        # pg_ctl -w polls until the server accepts connections; it also puts the postmaster in a
        # session of its own, which is the session stop/kill/down clean up.
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", self._pgdata(rec), "-l", log]
        self._run(rec, [*pg_ctl, "-w", "-t", timeout, "start"])
        rec.pid = int(pidfile.read_text().split()[0])

    def wait_ready(self, rec: Record) -> None:
        pass  # pg_ctl -w in launch()

    def initialize(self, rec: Record) -> None:
        createdb = [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(rec.port)]
        self._run(rec, [*createdb, "-U", "postgres", "app"])

    @staticmethod
    def _pgdata(rec: Record) -> str:
        return str(Path(rec.data_dir) / "data")

    @staticmethod
    def _run(rec: Record, argv: list[str]) -> None:
        """Run a PostgreSQL tool as ``postgres`` when we are root: initdb and pg_ctl refuse root."""
        as_postgres = os.geteuid() == 0
        proc = subprocess.run(
            argv,
            cwd=rec.data_dir,
            capture_output=True,
            text=True,
            user="postgres" if as_postgres else None,
            group="postgres" if as_postgres else None,
            extra_groups=[] if as_postgres else None,
        )
        if proc.returncode != 0:
            log = _tail(Path(rec.data_dir) / "postgres.log")
            raise DevstackError(f"{argv[0]} failed:\n{proc.stdout}{proc.stderr}\n{log}")


_KAFKA_PROPERTIES = """\
# devstack: one combined broker+controller on loopback (../shared/notes/kafka-and-tools.md §1).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}/data
num.partitions={partitions}
auto.create.topics.enable=true
# One broker: internal topics need replication factor 1 (the defaults break groups and
# transactions) and one partition (the default creates 50 on the first FindCoordinator).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# The default waits 3 s before the first rebalance of every new group.
group.initial.rebalance.delay.ms=0
# After a kill -9 the restarted broker waits out its old registration's session (default 9 s).
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
# The 128 MiB default is allocated at startup and does not fit the small heap.
log.cleaner.dedupe.buffer.size=2097152
num.network.threads=2
num.io.threads=2
"""

_KAFKA_LOG4J = """\
status = error
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.ready.name = kafka.server.KafkaRaftServer
logger.ready.level = INFO
"""


class _Kafka:
    stop_signal = down_signal = signal.SIGTERM  # SIGTERM is Kafka's controlled shutdown

    def create(self, rec: Record) -> None:
        _ensure_kafka_libs()
        rec.data_dir = tempfile.mkdtemp(prefix="devstack-kafka-", dir="/tmp")
        folder = Path(rec.data_dir)
        (folder / "server.properties").write_text(_KAFKA_PROPERTIES.format(**vars(rec)))
        (folder / "log4j2.properties").write_text(_KAFKA_LOG4J)
        fmt = ["format", "-t", _cluster_id(), "-c", str(folder / "server.properties")]
        proc = subprocess.run(
            _java(folder, "kafka.tools.StorageTool", fmt), capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise DevstackError(f"kafka storage format failed:\n{proc.stdout}{proc.stderr}")

    def launch(self, rec: Record) -> None:
        _ensure_kafka_libs()
        folder = Path(rec.data_dir)
        argv = _java(folder, "kafka.Kafka", [str(folder / "server.properties")])
        rec.pid = _spawn(argv, folder / "kafka.log")

    def wait_ready(self, rec: Record) -> None:
        log = Path(rec.data_dir) / "kafka.log"
        _wait_ready(rec, lambda: _kafka_api_versions(rec.port), log)

    def initialize(self, rec: Record) -> None:
        pass


def _java(folder: Path, main: str, args: list[str]) -> list[str]:
    """A JVM command line on the cached classpath with a small heap and fast startup."""
    return [
        "java",
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",  # C1 only: faster startup, plenty for a test broker
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={folder / 'logs'}",
        f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
        "-cp",
        f"{KAFKA_LIBS}/*",  # expanded by java, not by a shell
        main,
        *args,
    ]


def _cluster_id() -> str:
    """Kafka's 22-character url-safe base64 UUID, never with a leading "-" (read as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _kafka_api_versions(port: int) -> bool:
    """Whether a Kafka broker answers an ApiVersions (v0) request on ``port``.

    Kafka opens its client port only once the broker is unfenced, so an answer means ready; the
    request also proves that what listens there is Kafka.
    """
    client_id = b"devstack"
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            correlation_id, error_code = struct.unpack(">ih", _recv_exact(sock, size)[:6])
    except (OSError, struct.error):
        return False
    return bool(correlation_id == 1 and error_code == 0)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


_DRIVERS: dict[str, _Driver] = {"redis": _Redis(), "postgres": _Postgres(), "kafka": _Kafka()}


def _url(name: str, port: int) -> str:
    if name == "redis":
        return f"redis://127.0.0.1:{port}/0"
    if name == "postgres":
        return f"postgresql://postgres@127.0.0.1:{port}/app"
    return f"127.0.0.1:{port}"


def _address(name: str, url: str) -> tuple[str, int] | None:
    """Host and port of a server named by URL (Kafka: the first bootstrap server), if any."""
    if name == "kafka":
        host, _, port = url.split(",")[0].strip().split("://")[-1].rpartition(":")
        return (host or "127.0.0.1", int(port)) if port.isdigit() else None
    parts = urlsplit(url)
    if not parts.hostname:  # e.g. a Unix socket: nothing to probe over TCP
        return None
    return parts.hostname, parts.port or (6379 if name == "redis" else 5432)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


def _parallel(jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs`` in threads (they mostly wait on servers) and raise what any of them raised."""
    with ThreadPoolExecutor(max_workers=max(len(jobs), 1)) as pool:
        futures = [pool.submit(job) for job in jobs]
    errors = [exc for future in futures if (exc := future.exception()) is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DevstackError("\n".join(f"{type(exc).__name__}: {exc}" for exc in errors))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- the stack -----------------------------------------------------------------------------------


class Devstack:
    """Throwaway Redis, PostgreSQL and Kafka: the API behind ``scripts/devstack`` and the fixtures.

    Every operation takes the lock file in ``state_dir`` and re-reads ``state.json``, so several
    processes (the CLI, pytest sessions) can drive one stack. ``state_dir`` defaults to
    :func:`default_state_dir`. ``environ`` is consulted for
    ``REDIS_URL`` / ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` (default: ``os.environ``).
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        kafka_partitions: int = 1,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.kafka_partitions = kafka_partitions
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._records: dict[str, Record] = {}
        self._mutex = threading.Lock()  # the start threads share _records and the state file

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (or ``REDIS_URL``)."""
        return self._record("redis").url

    @property
    def database_url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/app`` (or ``DATABASE_URL``)."""
        return self._record("postgres").url

    @property
    def kafka_bootstrap(self) -> str:
        """``127.0.0.1:PORT`` (or ``KAFKA_BOOTSTRAP_SERVERS``)."""
        return self._record("kafka").url

    def env_lines(self) -> list[str]:
        """The ``export NAME=URL`` lines of ``.devstack/env``."""
        return [f"export {ENV_VARS[n]}={shlex.quote(self._record(n).url)}" for n in NAMES]

    def is_up(self) -> bool:
        """Whether ``up`` would change nothing: every backend is recorded and usable as recorded.

        A managed backend must be running (and not overridden by its variable); an external one
        must still be named by its variable in this environment.
        """
        self._records = self._load()
        return all(self._usable(name) for name in NAMES)

    def status(self) -> list[tuple[Record, str]]:
        """Each known backend with ``running``, ``stopped`` or ``external``."""
        self._records = self._load()
        states = {True: "running", False: "stopped"}
        return [
            (rec, states[_running(rec)] if rec.managed else "external")
            for rec in self._records.values()
        ]

    def up(self) -> None:
        """Make all three backends available, wait until each is ready, write the env file.

        Idempotent: running backends are kept; a managed backend that is down is started again on
        its port and data; one named by its environment variable is only probed.
        """
        started = time.monotonic()
        with self._locked():
            self._records = self._load()
            ports = iter(_free_ports(4))
            actions = {name: self._plan(name, ports) for name in NAMES}
            starting = {name for name, action in actions.items() if action in ("create", "restart")}
            _apt_install(_missing_packages(starting))
            jobs = {"create": self._create, "restart": self._restart, "external": self._probe}
            try:
                _parallel([_bind(jobs[a], n) for n, a in actions.items() if a in jobs])
            except BaseException:
                self._discard([n for n, action in actions.items() if action == "create"])
                raise
            self._save()
            _write_atomic(self.state_dir / "env", "\n".join(self.env_lines()) + "\n")
        _log(f"all backends ready in {time.monotonic() - started:.2f} s")

    def down(self) -> None:
        """Stop every backend devstack started (SIGKILL after a short grace) and delete its data."""
        with self._locked():
            self._records = self._load()
            if not self._records:
                _log("nothing is up")
            self._discard(list(self._records))
            for name in ("state.json", "env"):
                (self.state_dir / name).unlink(missing_ok=True)
        _log("down: nothing left running")

    def stop(self, name: str) -> None:
        """Stop one backend gracefully (SIGKILL after a grace period), keeping its port and data."""
        with self._locked():
            rec = self._managed(name)
            started = time.monotonic()
            _terminate(rec, _DRIVERS[name].stop_signal, STOP_GRACE)
            _log(f"{name} stopped in {time.monotonic() - started:.2f} s")

    def kill(self, name: str) -> None:
        """SIGKILL one backend's server process (a crash), keeping its port and data."""
        with self._locked():
            rec = self._managed(name)
            family = _family(rec)
            if _running(rec):
                _signal(rec.pid, signal.SIGKILL)
            # PostgreSQL's children exit by themselves once the postmaster is gone; wait for them
            # (SIGKILL stragglers) so a restart finds the shared memory free.
            if not _wait_until(lambda: not any(map(_alive, family)), 10.0):
                _kill_all(family)
            _log(f"{name} killed")

    def start(self, name: str) -> None:
        """Start a stopped or killed backend again on its port and data; wait until it is ready."""
        with self._locked():
            rec = self._managed(name)
            if _running(rec):
                _log(f"{name} is already running")
                return
            self._restart(name)
            self._save()

    # --- internals ---

    def _plan(self, name: str, ports: Iterator[int]) -> str:
        """What ``up`` does for ``name``: keep, external, restart or create."""
        rec = self._records.get(name)
        ours = rec if rec is not None and rec.managed else None
        env_url = self._environ.get(ENV_VARS[name], "")
        if env_url and ours is not None and ours.url != env_url:
            # Never tear down a running stack (maybe someone else's) because of a stale variable.
            raise DevstackError(
                f"{ENV_VARS[name]}={env_url} names another server than devstack's {name} "
                f"({ours.url}); unset it, or run `scripts/devstack down` first"
            )
        if env_url and ours is None:
            self._records[name] = Record(name, env_url, managed=False)
            return "external"
        if ours is not None and _running(ours):
            _log(f"{name} already running on {ours.url}")
            return "keep"
        if ours is not None and Path(ours.data_dir).is_dir():
            return "restart"
        self._discard([name])  # an external record, or data lost (e.g. /tmp cleaned)
        port = next(ports)
        self._records[name] = Record(
            name,
            _url(name, port),
            managed=True,
            port=port,
            controller_port=next(ports) if name == "kafka" else 0,
            partitions=self.kafka_partitions,
        )
        return "create"

    def _usable(self, name: str) -> bool:
        rec = self._records.get(name)
        env_url = self._environ.get(ENV_VARS[name], "")
        if rec is None:
            return False
        if rec.managed:
            return _running(rec) and env_url in ("", rec.url)
        return env_url == rec.url

    def _create(self, name: str) -> None:
        started = time.monotonic()
        rec = self._records[name]
        _DRIVERS[name].create(rec)
        self._save()  # from here on `down` can find the data folder
        self._launch(rec, started)
        _DRIVERS[name].initialize(rec)
        _log(f"{name} ready on {rec.url} in {time.monotonic() - started:.2f} s")

    def _restart(self, name: str) -> None:
        started = time.monotonic()
        rec = self._records[name]
        self._launch(rec, started)
        _log(f"{name} ready again on {rec.url} in {time.monotonic() - started:.2f} s")

    def _launch(self, rec: Record, started: float) -> None:
        driver = _DRIVERS[rec.name]
        driver.launch(rec)
        rec.sid = _session_of(rec.pid)
        self._save()  # the new pid, so `down` finds the process even if waiting fails
        driver.wait_ready(rec)

    def _probe(self, name: str) -> None:
        rec = self._records[name]
        address = _address(name, rec.url)
        if address is not None and not _wait_until(lambda: _reachable(address), 10.0):
            raise DevstackError(
                f"{ENV_VARS[name]}={rec.url} is set but nothing answers at {address[0]}:"
                f"{address[1]}; unset it to let devstack start a {name}"
            )
        _log(f"{name}: using {rec.url} from {ENV_VARS[name]}")

    def _discard(self, names: list[str]) -> None:
        """Stop the managed backends ``names``, delete their data, forget them."""
        recs = [self._records.pop(n) for n in names if n in self._records]

        def remove(rec: Record) -> None:
            _terminate(rec, _DRIVERS[rec.name].down_signal, DOWN_GRACE)
            if rec.data_dir:
                shutil.rmtree(rec.data_dir, ignore_errors=True)

        _parallel([_bind(remove, rec) for rec in recs if rec.managed])
        self._save()

    def _managed(self, name: str) -> Record:
        if name not in NAMES:
            raise DevstackError(f"unknown backend {name!r}; one of {', '.join(NAMES)}")
        rec = self._record(name, reload=True)
        if not rec.managed:
            raise DevstackError(
                f"{name} is your own server ({ENV_VARS[name]}={rec.url}); devstack can only stop, "
                "kill or start a backend it started"
            )
        return rec

    def _record(self, name: str, *, reload: bool = False) -> Record:
        if reload or name not in self._records:
            self._records = self._load()
        if name not in self._records:
            raise DevstackError(f"{name} is not up (no {self.state_dir}/state.json entry)")
        return self._records[name]

    def _load(self) -> dict[str, Record]:
        try:
            raw = json.loads((self.state_dir / "state.json").read_text())
        except FileNotFoundError:
            return {}
        return {name: Record(**fields) for name, fields in raw["backends"].items()}

    def _save(self) -> None:
        with self._mutex:
            backends = {name: dataclasses.asdict(rec) for name, rec in self._records.items()}
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.state_dir / "state.json", json.dumps({"backends": backends}) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.state_dir / "lock"):
            yield


def _bind(job: Callable[[_T], None], arg: _T) -> Callable[[], None]:
    return lambda: job(arg)


# --- command line --------------------------------------------------------------------------------

_EPILOG = """\
examples:
  scripts/devstack up && . .devstack/env     start (or reuse) the stack, export its URLs
  scripts/devstack kill postgres             crash PostgreSQL (kill -9 of the postmaster)
  scripts/devstack start postgres            bring it back on the same port and data
  scripts/devstack down                      stop everything, delete the data

REDIS_URL, DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS, when set, name servers to use instead of
starting them. See docs/development.md.
"""


def _cmd_up(stack: Devstack, args: argparse.Namespace) -> int:
    stack.up()
    print("\n".join(stack.env_lines()))
    return 0


def _cmd_down(stack: Devstack, args: argparse.Namespace) -> int:
    stack.down()
    return 0


def _cmd_env(stack: Devstack, args: argparse.Namespace) -> int:
    print("\n".join(stack.env_lines()))
    return 0


def _cmd_status(stack: Devstack, args: argparse.Namespace) -> int:
    rows = stack.status()
    if not rows:
        print("devstack is down")
        return 1
    for rec, state in rows:
        where = f"pid {rec.pid}  {rec.data_dir}" if rec.managed else ENV_VARS[rec.name]
        print(f"{rec.name:<9} {state:<9} {rec.url:<42} {where}")
    up = len(rows) == len(NAMES) and all(state != "stopped" for _, state in rows)
    return 0 if up else 1


def _cmd_one(stack: Devstack, args: argparse.Namespace) -> int:
    getattr(stack, args.command)(args.name)
    return 0


_COMMANDS: dict[str, tuple[Callable[[Devstack, argparse.Namespace], int], str]] = {
    "up": (_cmd_up, "install what is missing, start the backends (or reuse them), print the env"),
    "down": (_cmd_down, "stop everything devstack started and delete its data"),
    "status": (_cmd_status, "show each backend; exit 1 unless all are up"),
    "env": (_cmd_env, "print the export lines of .devstack/env"),
    "stop": (_cmd_one, "stop one backend gracefully (SIGTERM, SIGKILL after 30 s); keep its data"),
    "kill": (_cmd_one, "kill -9 one backend's server process; keep its data"),
    "start": (_cmd_one, "start a stopped or killed backend on its old port and data"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/devstack",
        description=(__doc__ or "").split("\n\n")[1].replace("``", ""),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="folder of state.json and env (default: $DEVSTACK_STATE_DIR, else .devstack)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if name in ("stop", "kill", "start"):
            sub.add_argument("name", choices=NAMES, help="the backend")
        if name == "up":
            sub.add_argument(
                "--kafka-partitions",
                type=int,
                default=1,
                help="num.partitions of auto-created topics on a new broker (default 1)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``scripts/devstack`` command line; return the exit status."""
    args = _parser().parse_args(argv)
    stack = Devstack(args.state_dir, kafka_partitions=getattr(args, "kafka_partitions", 1))
    handler, _ = _COMMANDS[args.command]
    try:
        return handler(stack, args)
    except (DevstackError, subprocess.CalledProcessError) as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
