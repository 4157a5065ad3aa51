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

This module (and :mod:`emulator.launcher`, which starts the process) imports only the standard library, so
registering it costs nothing.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from emulator.launcher import EmulatorError, ServerProcess, run_cli

START_TIMEOUT_S = 180.0
PROVIDER = "mcs"
TOKEN = "smarty-emulator-test-token"


class SmartyEmulator(ServerProcess):
    """A running emulator and helpers to drive it from tests.

    * ``base_url`` — what clients use as the API base: ``http://127.0.0.1:PORT/api``;
    * ``url`` — the server root (``/emulator/...`` admin API, ``/auth/oauth/v1/token``);
    * ``token``, ``provider`` — a token and provider for ``oauth_token`` / ``oauth_provider``
      (any non-empty token works in the default mode; all belong to the client ``default``);
    * ``token_url`` — the OAuth token endpoint;
    * ``data_dir`` — the emulator's data directory.
    """

    def __init__(self, data_dir: Path, settings: Mapping[str, Any] | None = None) -> None:
        # the user's settings, but always on loopback, with the admin API open to it, and one worker
        fixed = {**(settings or {}), "host": "127.0.0.1", "admin": "loopback"}
        super().__init__(data_dir, settings=fixed, workers=1, log_path=data_dir / "emulator.log")
        self.database_url = str(fixed.get("database_url", ""))  # the record is in this database, not in data_dir
        self.base_url = f"{self.url}/api"
        self.token_url = f"{self.url}/auth/oauth/v1/token"
        self.token = TOKEN
        self.provider = PROVIDER
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
        done = run_cli("seed", str(directory), *record, timeout=600)
        if done.returncode != 0:
            raise EmulatorError(f"seed {directory} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout + done.stderr

    # --- lifecycle -----------------------------------------------------------------------

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        super().wait_until_ready(timeout)
        self._initial_settings = self.settings()


def start_emulator(data_dir: Path, settings: Mapping[str, Any] | None = None) -> SmartyEmulator:
    """Start an emulator subprocess and wait until it is ready (tries three free ports)."""
    last: EmulatorError | None = None
    for _ in range(3):
        try:
            return SmartyEmulator(data_dir, settings).start(START_TIMEOUT_S)
        except EmulatorError as exc:  # e.g. the port was taken between choosing and binding it
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
