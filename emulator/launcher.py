"""A real emulator as a separate process: ``python -m emulator serve`` on a free loopback port, started, waited
for until ready, stopped.

The one launcher of an emulator process: the pytest plugin's ``smarty_emulator`` fixture, the test suite's process
launcher and the benchmark all start the server through :class:`ServerProcess`; :func:`run_cli` runs one other
command of the command line to its end. Only the standard library is imported: the pytest plugin, which every
pytest run of an environment with the package loads, imports this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

START_TIMEOUT_S = 90.0
HOST = "127.0.0.1"

# Loopback never goes through a proxy, whatever the environment's *_proxy variables say.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorError(RuntimeError):
    """The emulator did not start, or an admin call failed."""


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (another process may still take it before the server binds it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None, drop: tuple[str, ...] = ("SMARTY_",)) -> dict[str, str]:
    """This process's environment without the variables whose names start with ``drop``, then ``extra``: so that
    the caller's own ``SMARTY_*`` cannot change the emulator behind its back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m emulator *args`` to its end, its output captured as text. Nothing of this process's own
    ``SMARTY_*`` leaks in; ``env`` adds variables."""
    return subprocess.run(
        [sys.executable, "-m", "emulator", *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (Linux ``/proc``; only ``root`` elsewhere)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in (task / "children").read_text().split())
    return found


class ServerProcess:
    """``python -m emulator serve`` on a free loopback port (``url``) with its data dir.

    ``settings`` become ``SMARTY_*`` variables (``{"cache_size": 0}`` is ``SMARTY_CACHE_SIZE=0``) over the defaults
    ``SMARTY_HOST=127.0.0.1`` and ``SMARTY_LOG_LEVEL=warning``; the port, the data dir and the number of worker
    processes are the launcher's own. ``env`` adds other variables last (``TMPDIR``, say). Of this process's
    environment, the variables whose names start with ``drop`` are left out. Everything the server writes (both
    streams) is appended to ``log_path``. With ``new_session``, the server leads a process group of its own, and
    :meth:`stop` signals the whole group; ``cpus`` pins the server and every process it starts to those cores.
    """

    poll_seconds = 0.05  # between two readiness probes

    def __init__(
        self,
        data_dir: Path,
        *,
        settings: Mapping[str, Any] | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        drop: tuple[str, ...] = ("SMARTY_",),
        new_session: bool = False,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path or data_dir / "emulator.log"
        self.cwd = cwd
        self.new_session = new_session
        self.cpus = cpus
        self.env = clean_env(drop=drop)
        self.env.update(SMARTY_HOST=HOST, SMARTY_LOG_LEVEL="warning")
        self.env.update({f"SMARTY_{k.upper()}": str(v) for k, v in (settings or {}).items()})
        self.env.update(SMARTY_PORT=str(self.port), SMARTY_DATA_DIR=str(data_dir), SMARTY_WORKERS=str(workers))
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.perf_counter() when the process was spawned
        self.ready_seconds: float | None = None  # from the spawn to the first 200 of /emulator/ready

    def start(self, timeout: float = START_TIMEOUT_S, *, wait: Literal["ready", "alive"] = "ready") -> Self:
        """Spawn the server and wait until it is ready (``wait="alive"``: only until it answers, for a server that
        is not meant to become ready); stopped again if that does not happen in ``timeout`` s."""
        self.spawn()
        try:
            if wait == "ready":
                self.wait_until_ready(timeout)
            else:
                self.wait_for("/emulator/health", 1, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        """Start the process, without waiting for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        with open(self.log_path, "ab") as log:
            self.started_at, self.ready_seconds = time.perf_counter(), None
            self.process = subprocess.Popen(
                [sys.executable, "-m", "emulator", "serve"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
                preexec_fn=pin,
            )

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``/emulator/ready`` answers 200 three times per worker in a row, so that every worker (connections
        land on any of them) has its store open and its models warm."""
        self.wait_for("/emulator/ready", 3 * self.workers, timeout)

    def wait_for(self, path: str, in_a_row: int = 1, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``path`` answers 200 ``in_a_row`` times in a row (``/emulator/health``: the server answers, ready
        or not). The first 200 of ``/emulator/ready`` sets ``ready_seconds`` and calls :meth:`on_first_ready`."""
        deadline = time.monotonic() + timeout
        answered = 0
        while answered < in_a_row:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise EmulatorError(f"the emulator exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise EmulatorError(f"the emulator did not answer {path} with 200 in {timeout:g} s:\n{self.log_tail()}")
            try:
                with _DIRECT.open(self.url + path, timeout=5) as response:
                    ok = response.status == 200
            except OSError:  # not listening yet, or 503 while warming up (HTTPError is an OSError)
                ok = False
            if ok and path == "/emulator/ready" and self.ready_seconds is None:
                self.ready_seconds = time.perf_counter() - self.started_at
                self.on_first_ready()
            answered = answered + 1 if ok else 0
            time.sleep(self.poll_seconds)

    def on_first_ready(self) -> None:
        """Called once, when ``/emulator/ready`` first answers 200: for subclasses that measure the start."""

    def log(self) -> str:
        """All the server wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"

    def pids(self) -> list[int]:
        """The server and all its descendants (workers, analysis processes)."""
        return process_tree(self.process.pid) if self.process is not None else []

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (to the process group with ``new_session``), SIGKILL after ``timeout`` s; the exit code, or None
        if it never started."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def _signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)
        else:
            self.process.send_signal(number)
