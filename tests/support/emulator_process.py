"""A real emulator as a separate process (``python -m emulator serve``): the one launcher of the tests that
need several worker processes, must ``kill -9`` the server, read its whole output or measure its memory; and
:func:`run_cli`, one command of the command line run to its end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.emulator_server import free_port

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 90.0


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``python -m emulator *args`` to its end, its output captured as text. Nothing of the test process's own
    ``SMARTY_*`` leaks in; ``env`` adds variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMARTY_")}
    return subprocess.run(
        [sys.executable, "-m", "emulator", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class EmulatorProcess:
    """``python -m emulator serve`` on a free loopback port with its own data dir.

    ``settings`` become ``SMARTY_*`` variables (``workers=2`` is ``SMARTY_WORKERS=2``); ``env`` adds other
    variables (``TMPDIR``, say). Nothing of the test process's own ``SMARTY_*`` or ``PROMETHEUS_*`` leaks in.
    Everything the server writes (both streams) goes to ``log_path``.
    """

    def __init__(
        self, data_dir: Path, *, workers: int = 1, env: Mapping[str, str] | None = None, **settings: Any
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTY_", "PROMETHEUS_"))}
        self.env.update(
            {
                "SMARTY_DATA_DIR": str(data_dir),
                "SMARTY_HOST": "127.0.0.1",
                "SMARTY_PORT": str(self.port),
                "SMARTY_WORKERS": str(workers),
                "SMARTY_LOG_LEVEL": "warning",
                **{"SMARTY_" + k.upper(): str(v) for k, v in settings.items()},
                **(env or {}),
            }
        )
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: str = "ready") -> EmulatorProcess:
        """Start the server and wait until it is ready (``wait="ready"``) or only answers (``"alive"``: for a server
        that is not meant to become ready)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "emulator", "serve"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: workers go down with it
            )
        if wait == "ready":
            self.wait_ready()
        else:
            self.wait_alive()
        return self

    def wait_alive(self) -> None:
        """Until ``/emulator/health`` answers 200."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert self.process is not None and self.process.poll() is None, self.log()
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not answer:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/emulator/health", timeout=30).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def wait_ready(self) -> None:
        """Until ``/emulator/ready`` answers 200 several times in a row, so that every worker (connections land
        on any of them) has its store open and its models warm."""
        deadline = time.monotonic() + START_SECONDS
        in_a_row = 0
        while in_a_row < 3 * self.workers:
            assert self.process is not None and self.process.poll() is None, self.log()
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator did not start:\n{self.log()}")
            try:
                ok = httpx.get(f"{self.base_url}/emulator/ready", timeout=30).status_code == 200
            except httpx.TransportError:
                ok = False
            in_a_row = in_a_row + 1 if ok else 0
            time.sleep(0.05)

    def log(self) -> str:
        """All the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self) -> list[int]:
        """The supervisor and all its descendants (workers, analysis processes)."""
        assert self.process is not None
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return found

    def rss_bytes(self) -> int:
        """Resident memory of the supervisor and all its descendants, from ``/proc``."""
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def kill9(self) -> None:
        """SIGKILL the server and its workers at once, as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM the process group (SIGKILL after 30 s); the exit code, or None if never started."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        return self.process.returncode
