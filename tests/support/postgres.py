"""A real PostgreSQL server for the tests: a throw-away cluster in a temporary directory, on a free loopback port.

Debian's ``postgresql`` package provides the binaries (``make test`` and ``.ci/run`` install it where missing).
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user and every command runs
through ``runuser``. Each test module (or server) gets a database of its own (``CREATE DATABASE``).

The cluster runs with ``fsync=off``: none of the tests outlives the machine's page cache. Killing a replica tests
PostgreSQL's commit (a committed row is visible to every session whatever became of the client), and
``pg_ctl restart -m fast`` (a clean shutdown) or even ``-m immediate`` (a crash: the WAL is replayed) read back
what was written to the files, which the operating system still holds; only a power loss would need the fsync.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from emulator.launcher import free_port
from tests.support.ci import unavailable

SEARCH = "/usr/lib/postgresql"
USER = "postgres"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``pg_ctl``, or None."""
    root = Path(SEARCH)
    found = (
        sorted(
            (p for p in root.glob("*/bin") if (p / "pg_ctl").exists()), key=lambda p: int(p.parent.name), reverse=True
        )
        if root.is_dir()
        else []
    )
    return found[0] if found else None


def missing_reason() -> str | None:
    """Why no cluster can be started here, or None."""
    if find_bin_dir() is None:
        return f"PostgreSQL is not installed (no {SEARCH}/<version>/bin/pg_ctl): apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return f"running as root, and there is no {USER!r} user to run PostgreSQL as"
    return None


def require_postgres() -> None:
    """Skip the test when no cluster can be started here, with the reason; in CI fail instead."""
    reason = missing_reason()
    if reason is not None:
        unavailable(f"PostgreSQL is needed: {reason}")


class PostgresCluster:
    """``initdb`` + ``pg_ctl start`` in a temporary directory; :meth:`stop` removes everything."""

    def __init__(self, port: int | None = None, settings: Sequence[str] = (), fsync: bool = False) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="smarty-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "server.log"
        durability = [] if fsync else ["fsync=off"]  # the benchmark keeps PostgreSQL's default: fsync on
        self.settings = [*durability, "max_connections=300", "listen_addresses=127.0.0.1", *settings]
        self._databases = 0
        self.as_root = os.geteuid() == 0

    # --- commands ---------------------------------------------------------------------

    def _run(self, *command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        args = [str(self.bin_dir / command[0]), *command[1:]]
        if self.as_root:
            args = ["runuser", "-u", USER, "--", *args]
        return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)

    def _options(self) -> str:
        return " ".join([f"-p {self.port}", f"-k {self.socket_dir}", *(f"-c {s}" for s in self.settings)])

    def start(self) -> PostgresCluster:
        self.socket_dir.mkdir(parents=True)
        if self.as_root:
            ids = pwd.getpwnam(USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, ids.pw_uid, ids.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start_server()
        return self

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m <mode>``: every connection is cut; the server is back when this returns."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", str(self.log_path), "-m", mode, "-w", "restart"
        )

    def stop_server(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def start_server(self) -> None:
        """``pg_ctl start`` on the existing cluster; the server accepts connections when this returns."""
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", str(self.log_path), "-w", "start")

    def stop(self) -> None:
        self.stop_server("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def pid(self) -> int:
        """The postmaster's process id (its children are the server's other processes)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    # --- databases --------------------------------------------------------------------

    def url(self, database: str = USER) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = USER) -> str:
        """Run ``sql`` through psql; its output (unaligned, tuples only)."""
        return self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ).stdout.strip()

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its URL."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}_{int(time.time() * 1000) % 10**6}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)
