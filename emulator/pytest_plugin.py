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

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from emulator.admin_client import AdminCalls
from emulator.launcher import EmulatorError, ServerProcess, run_cli

START_TIMEOUT_S = 180.0
PROVIDER = "mcs"
TOKEN = "smarty-emulator-test-token"


class SmartyEmulator(ServerProcess, AdminCalls):
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

    # --- admin API (the helpers are emulator.admin_client's) ------------------------------

    admin_error = EmulatorError

    def admin_root(self) -> str:
        return self.url

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
