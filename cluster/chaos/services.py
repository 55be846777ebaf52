"""Private PostgreSQL and Redis servers on free loopback ports, which the harness may SIGKILL and
start again without touching any shared server on the machine.

    pg = PrivatePostgres.create()       # initdb; pg.start(); pg.url; pg.kill(); pg.restart()
    redis = PrivateRedis(root)          # redis.start(); redis.kill(); redis.restart()

PostgreSQL keeps its data across a kill (it recovers from its WAL at the next start); Redis runs
without persistence (`--save "" --appendonly no`), so a restart comes back empty, as a cache
that lost its node does. PostgreSQL needs its server programs (`initdb`, `pg_ctl`: on `PATH`,
in `pg_config --bindir`, or a Debian `postgresql/*/bin`); run as root, it runs as the
`postgres` user (PostgreSQL refuses root). `ServiceUnavailable` says what is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 30


class ServiceUnavailable(RuntimeError):
    """A private service cannot be made here (its programs are missing, or it will not start)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                check=False).stdout.strip()
        if bindir and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _wait_port(port: int, up: bool, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if (probe.connect_ex(("127.0.0.1", port)) == 0) == up:
                return
        time.sleep(0.05)
    raise ServiceUnavailable(f"port {port} still {'closed' if up else 'open'} "
                             f"after {timeout_s}s")


class PrivatePostgres:
    """One throwaway cluster: `url` names its `postgres` database, trust auth, on loopback."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None

    @classmethod
    def create(cls) -> PrivatePostgres:
        """A new, initialised (not started) cluster in a new temporary directory (one the
        `postgres` user can reach; `remove` deletes it)."""
        bindir = postgres_bindir()
        if bindir is None:
            raise ServiceUnavailable("PostgreSQL server programs (initdb, pg_ctl) not found: "
                                     "install the PostgreSQL server package")
        root = Path(tempfile.mkdtemp(prefix="ymera-chaos-pg-"))
        server = cls(bindir, root)
        if server._user is not None:
            account = pwd.getpwnam(server._user)
            os.chown(root, account.pw_uid, account.pw_gid)
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8")
        return server

    def url_at(self, port: int) -> str:
        """The same database reached on another port (a proxy in front of this server)."""
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *command: str) -> None:
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=START_TIMEOUT_S * 2, check=False)
        if result.returncode != 0:
            raise ServiceUnavailable(f"{command[0]} failed ({result.returncode}): "
                                     f"{result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        """Start the server; returns once it accepts connections. After a kill, the server
        recovers from its WAL first (and waits for the old backends to be gone)."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c max_connections=200 -k {self.root}")
        last: ServiceUnavailable | None = None
        for _ in range(5):
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                          "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")
                return
            except ServiceUnavailable as exc:  # old backends may still hold shared memory
                last = exc
                time.sleep(1.0)
        assert last is not None
        raise last

    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (a crash: no shutdown checkpoint)."""
        pid = self.pid()
        if pid is None:
            return
        children = _children(pid)
        for target in [pid, *children]:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_port(self.port, up=False)
        _wait_gone([pid, *children])

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop for good (immediate mode); quiet when it is not running."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (ServiceUnavailable, subprocess.TimeoutExpired):
            self.kill()

    def remove(self) -> None:
        """Stop the server and delete its data."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A `redis-server` without persistence on a free loopback port."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceUnavailable("redis-server not found: install Redis")
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def url_at(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - kept by the child
        self._process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_port(self.port, up=True)

    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        _wait_port(self.port, up=False)

    def restart(self) -> None:
        self.kill()
        self.start()

    stop = kill


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> None:
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.05)
