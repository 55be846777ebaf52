"""A PostgreSQL server of a test's own, on a free port, that the test may stop and start again
(to see the platform through a storage outage) without touching the shared server.

    with private_postgres() as server:       # initdb, start; stopped and removed afterwards
        url = server.url                      # an empty, trust-authenticated database
        server.stop()                         # the outage
        server.start()                        # back, same data

It needs PostgreSQL's server programs (`initdb`, `pg_ctl`: on `PATH`, in `pg_config
--bindir`, or in a Debian `postgresql/*/bin`). The test is skipped without them, or fails under
`CI=true`. Run as root, the server runs as the `postgres` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cluster.chaos.services import free_port as _free_port
from cluster.chaos.services import postgres_bindir as _bindir
from tests.support.databases import require_service

START_TIMEOUT_S = 30




class PrivatePostgres:
    """One throwaway server: `url` names its `postgres` database over TCP on loopback."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *command: str) -> None:
        argv = [str(self.bindir / command[0]), *command[1:]]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_S * 2,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")

    def init(self) -> None:
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start (or restart) the server; returns once it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-k {self.root}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")

    def stop(self) -> None:
        """Stop the server at once (connections are cut, as in a crash or restart)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private server, stopped and removed afterwards."""
    bindir = _bindir()
    require_service("PostgreSQL server programs (initdb, pg_ctl)", bindir is not None,
                    "initdb/pg_ctl not found: install the PostgreSQL server package")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="ymera-pg-"))
    server = PrivatePostgres(bindir, root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
