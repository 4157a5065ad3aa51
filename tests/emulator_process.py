"""A real emulator as a separate process (``python -m emulator serve``), for tests that need
several worker processes or must ``kill -9`` the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.emulator_server import free_port

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 90.0


class EmulatorProcess:
    """``python -m emulator serve`` on a free loopback port with its own data dir."""

    def __init__(self, data_dir: Path, *, workers: int = 1, **settings: Any) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTY_")}
        self.env.update(
            {
                "SMARTY_DATA_DIR": str(data_dir),
                "SMARTY_HOST": "127.0.0.1",
                "SMARTY_PORT": str(self.port),
                "SMARTY_WORKERS": str(workers),
                "SMARTY_LOG_LEVEL": "warning",
                **{"SMARTY_" + k.upper(): str(v) for k, v in settings.items()},
            }
        )
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmulatorProcess:
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
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Until the admin API answers (it waits for the store and the models of that worker)."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.base_url}/emulator/clients", timeout=30).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"emulator did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the server and its workers at once, as a crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
