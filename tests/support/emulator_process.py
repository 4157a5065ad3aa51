"""A real emulator as a separate process (``python -m emulator serve``): the one launcher of the tests that
need several worker processes, must ``kill -9`` the server, read its whole output or measure its memory; and
:func:`run_cli`, one command of the command line run to its end. Both are the package's own
(:mod:`emulator.launcher`, which the pytest plugin starts its emulator with), run from the repository root."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emulator import launcher
from emulator.launcher import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``python -m emulator *args`` to its end from the repository root (:func:`emulator.launcher.run_cli`)."""
    return launcher.run_cli(*args, env=env, timeout=timeout, cwd=ROOT)


class EmulatorProcess(ServerProcess):
    """``python -m emulator serve`` on a free loopback port with its own data dir, in a process group of its own.

    ``settings`` become ``SMARTY_*`` variables (``workers=2`` is ``SMARTY_WORKERS=2``); ``env`` adds other
    variables (``TMPDIR``, say). Nothing of the test process's own ``SMARTY_*`` or ``PROMETHEUS_*`` leaks in.
    Everything the server writes (both streams) goes to ``log_path``, beside the data dir (which may be read-only).
    """

    def __init__(
        self, data_dir: Path, *, workers: int = 1, env: Mapping[str, str] | None = None, **settings: Any
    ) -> None:
        port = free_port()
        super().__init__(
            data_dir,
            settings=settings,
            workers=workers,
            env=env,
            port=port,
            log_path=data_dir.parent / f"server-{port}.log",
            cwd=ROOT,
            drop=("SMARTY_", "PROMETHEUS_"),
            new_session=True,  # workers go down with it
        )
        self.base_url = self.url

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
