"""pytest plugin: the ``smarty_emulator`` fixture, a real emulator for integration tests.

Installing the package registers this plugin (entry point ``pytest11``). Nothing happens
until a test asks for the fixture: then, once per session, a real emulator is started as a
subprocess (``python -m emulator serve``) on a free loopback port with a temporary data
dir, one worker, and the admin API open to loopback. The fixture yields a
:class:`SmartyEmulator`::

    def test_recognize(smarty_emulator):
        url = f"{smarty_emulator.base_url}/v1/persons/recognize"
        params = {"oauth_token": smarty_emulator.token, "oauth_provider": smarty_emulator.provider}
        ...

Extra settings for the emulator come from the session fixture ``smarty_emulator_settings``
(override it in your ``conftest.py``: ``{"match_threshold": 0.9, "token_lifetime": 2}``).
``SMARTY_*`` variables of the test process are not passed on, so the environment cannot
change the emulator behind a test's back.

This module imports only the standard library, so registering it costs nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 180.0
PROVIDER = "mcs"
TOKEN = "smarty-emulator-test-token"


class EmulatorError(RuntimeError):
    """The emulator did not start, or an admin call failed."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmartyEmulator:
    """A running emulator and helpers to drive it from tests.

    * ``base_url`` — what clients use as the API base: ``http://127.0.0.1:PORT/api``;
    * ``url`` — the server root (``/emulator/...`` admin API, ``/auth/oauth/v1/token``);
    * ``token``, ``provider`` — a token and provider for ``oauth_token`` / ``oauth_provider``
      (any non-empty token works in the default mode; all belong to the client ``default``);
    * ``token_url`` — the OAuth token endpoint;
    * ``data_dir`` — the emulator's data directory.
    """

    def __init__(
        self, url: str, data_dir: Path, process: subprocess.Popen[bytes], log_path: Path, database_url: str = ""
    ) -> None:
        self.url = url
        self.database_url = database_url  # the record is in this PostgreSQL database, not in data_dir
        self.base_url = f"{url}/api"
        self.token_url = f"{url}/auth/oauth/v1/token"
        self.token = TOKEN
        self.provider = PROVIDER
        self.data_dir = data_dir
        self.process = process
        self.log_path = log_path
        self._initial_settings: dict[str, Any] = {}

    # --- admin API -----------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        """Call the admin API (``path`` under the server root) and return its decoded JSON."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise EmulatorError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def add_fault(self, kind: str, **rule: Any) -> dict[str, Any]:
        """Add a fault rule, e.g. ``add_fault("http_503", method="recognize", times=2)``; returns the rule."""
        created: dict[str, Any] = self.admin("POST", "/emulator/faults", {"kind": kind, **rule})
        return created

    def faults(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self.admin("GET", "/emulator/faults")["faults"]
        return rules

    def clear_faults(self) -> None:
        self.admin("DELETE", "/emulator/faults")

    def requests(
        self, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The journal of persons requests, oldest first (see ``GET /emulator/requests``)."""
        query = {"method": method, "space": space, "since": since}
        entries: list[dict[str, Any]] = self.admin("GET", "/emulator/requests", query=query)["requests"]
        return entries

    def clear_requests(self) -> None:
        self.admin("DELETE", "/emulator/requests")

    def settings(self) -> dict[str, Any]:
        """The live settings and their values."""
        values: dict[str, Any] = self.admin("GET", "/emulator/settings")["settings"]
        return values

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change live settings, e.g. ``configure(match_threshold=0.9)``; ``reset()`` restores them."""
        values: dict[str, Any] = self.admin("PATCH", "/emulator/settings", changes)["settings"]
        return values

    def reset(self) -> None:
        """Forget every person of every client, clear faults and the journal, restore the settings."""
        self.clear_faults()
        self.admin("POST", "/emulator/reset", {})
        if self._initial_settings:
            self.configure(**self._initial_settings)
        self.clear_requests()

    def seed(self, directory: str | os.PathLike[str]) -> str:
        """Add persons from ``directory`` (``<space>/<person_id>/*.jpg``, maybe under ``<client>/``) with
        ``smarty-emulator seed``; returns its report. Idempotent."""
        record = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            record += ["--database-url", self.database_url]
        done = subprocess.run(
            [sys.executable, "-m", "emulator", "seed", str(directory), *record],
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise EmulatorError(f"seed {directory} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout + done.stderr

    # --- lifecycle -----------------------------------------------------------------------

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmulatorError(f"the emulator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/emulator/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:  # not listening yet, or 503 while warming up (HTTPError is an OSError)
                pass
            time.sleep(0.1)
        else:
            raise EmulatorError(f"the emulator did not become ready in {timeout:g} s:\n{self.log_tail()}")
        self._initial_settings = self.settings()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTY_")}
    env.update(extra or {})
    return env


def start_emulator(data_dir: Path, settings: Mapping[str, Any] | None = None) -> SmartyEmulator:
    """Start an emulator subprocess and wait until it is ready (tries three free ports)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "emulator.log"
    last: EmulatorError | None = None
    for _ in range(3):
        port = _free_port()
        env = _clean_env({f"SMARTY_{k.upper()}": str(v) for k, v in (settings or {}).items()})
        env.update(
            SMARTY_HOST="127.0.0.1",
            SMARTY_PORT=str(port),
            SMARTY_DATA_DIR=str(data_dir),
            SMARTY_ADMIN="loopback",
            SMARTY_WORKERS="1",
        )
        env.setdefault("SMARTY_LOG_LEVEL", "warning")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "emulator", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        database_url = str((settings or {}).get("database_url", ""))
        emulator = SmartyEmulator(f"http://127.0.0.1:{port}", data_dir, process, log_path, database_url)
        try:
            emulator.wait_until_ready()
            return emulator
        except EmulatorError as exc:  # e.g. the port was taken between choosing and binding it
            emulator.stop()
            last = exc
    raise last or EmulatorError("the emulator did not start")


@pytest.fixture(scope="session")
def smarty_emulator_settings() -> dict[str, Any]:
    """Extra settings for the ``smarty_emulator`` fixture (``{"match_threshold": 0.9}``); override to change."""
    return {}


@pytest.fixture(scope="session")
def smarty_emulator(
    tmp_path_factory: pytest.TempPathFactory, smarty_emulator_settings: dict[str, Any]
) -> Iterator[SmartyEmulator]:
    """A real emulator for the test session (see :class:`SmartyEmulator`). Call ``reset()`` between
    tests that must not see each other's persons, faults or journal."""
    emulator = start_emulator(tmp_path_factory.mktemp("smarty-emulator"), smarty_emulator_settings)
    try:
        yield emulator
    finally:
        emulator.stop()
