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

Cassettes (record and replay the real service, see docs/record-replay.md): a test marked
``@pytest.mark.smarty_cassette("name")`` runs with the emulator's upstream mode set for it from
``--smarty-record-mode`` (VCR's modes), and its requests recorded in or replayed from the cassette ``name``:

* ``none`` (the default): replay only, never the network (``SMARTY_UPSTREAM_MODE=replay``);
* ``once``: record when the cassette does not exist yet (``record``), else replay;
* ``new``: replay what is recorded, record what is not (``spy``);
* ``all``: record everything again (``record``; the cassette's file is started afresh).

The upstream and the cassette directory come from ``--smarty-upstream-url`` / ``--smarty-cassette-dir`` or the ini
options ``smarty_upstream_url`` / ``smarty_cassette_dir`` (a relative directory is under the rootdir). Tests without
the marker run on the emulator's own engine, as before.

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
RECORD_MODES = ("none", "once", "new", "all")
DEFAULT_CASSETTE_DIR = "cassettes"
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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smarty-emulator", "smarty-emulator cassettes (record and replay the real service)")
    group.addoption(
        "--smarty-record-mode",
        choices=RECORD_MODES,
        default=None,
        help="How tests marked smarty_cassette use their cassette: none (replay only, no network; the default), once, "
        "new or all (VCR's modes).",
    )
    group.addoption("--smarty-upstream-url", default=None, help="The service to record (default: the real one).")
    group.addoption("--smarty-cassette-dir", default=None, help="Where cassettes live (default: cassettes/).")
    parser.addini("smarty_record_mode", "The default of --smarty-record-mode.", default="none")
    parser.addini("smarty_upstream_url", "The default of --smarty-upstream-url.", default="")
    parser.addini("smarty_cassette_dir", "The default of --smarty-cassette-dir.", default=DEFAULT_CASSETTE_DIR)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "smarty_cassette(name): record this test's requests in, or replay them from, the cassette name"
    )


def record_mode(config: pytest.Config) -> str:
    mode = config.getoption("--smarty-record-mode") or str(config.getini("smarty_record_mode") or "none")
    if mode not in RECORD_MODES:
        raise pytest.UsageError(f"smarty_record_mode: {mode!r} is not one of {', '.join(RECORD_MODES)}")
    return mode


def cassette_dir(config: pytest.Config) -> Path:
    raw = config.getoption("--smarty-cassette-dir") or str(config.getini("smarty_cassette_dir") or "")
    path = Path(raw or DEFAULT_CASSETTE_DIR)
    return path if path.is_absolute() else Path(config.rootpath) / path


def upstream_mode(mode: str, cassette: Path) -> str:
    """The emulator's ``SMARTY_UPSTREAM_MODE`` for a cassette test in record mode ``mode``."""
    if mode == "none":
        return "replay"
    if mode == "once":
        return "replay" if cassette.exists() else "record"
    return "spy" if mode == "new" else "record"


def cassette_settings(config: pytest.Config) -> dict[str, Any]:
    """The session emulator's upstream settings: where the cassettes are and which service to record."""
    settings: dict[str, Any] = {"cassette_dir": str(cassette_dir(config))}
    url = config.getoption("--smarty-upstream-url") or str(config.getini("smarty_upstream_url") or "")
    if url:
        settings["upstream_url"] = url
    return settings


_CASSETTE_MODES = pytest.StashKey[dict[str, str]]()


def _session_mode(config: pytest.Config, name: str) -> str:
    """The upstream mode of cassette ``name``, decided once per session: the tests that share a cassette share
    its mode (with ``once``, the second test replays what the first recorded only in the next session)."""
    modes = config.stash.setdefault(_CASSETTE_MODES, {})
    if name not in modes:
        mode = record_mode(config)
        path = cassette_dir(config) / f"{name}.json"
        modes[name] = upstream_mode(mode, path)
        if mode == "all" and path.exists():
            path.unlink()  # recorded again from the start (the images in blobs/ are shared, and stay)
    return modes[name]


@pytest.fixture(autouse=True)
def _smarty_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a test marked ``smarty_cassette`` that uses ``smarty_emulator``: the upstream mode and the cassette set
    before it (live settings) and restored after it."""
    marker = request.node.get_closest_marker("smarty_cassette")
    if marker is None or "smarty_emulator" not in request.fixturenames:
        yield
        return
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or not marker.args[0]:
        raise pytest.UsageError(f'{request.node.nodeid}: use @pytest.mark.smarty_cassette("name")')
    name = marker.args[0]
    emulator: SmartyEmulator = request.getfixturevalue("smarty_emulator")
    chosen = _session_mode(request.config, name)
    before, initial = emulator.settings(), emulator._initial_settings
    emulator._initial_settings = {**initial, "upstream_mode": chosen, "cassette": name}  # what reset() restores
    emulator.configure(upstream_mode=chosen, cassette=name)
    try:
        yield
    finally:
        emulator._initial_settings = initial
        emulator.configure(upstream_mode=before["upstream_mode"], cassette=before["cassette"])


@pytest.fixture(scope="session")
def smarty_emulator_settings() -> dict[str, Any]:
    """Extra settings for the ``smarty_emulator`` fixture (``{"match_threshold": 0.9}``); override to change."""
    return {}


@pytest.fixture(scope="session")
def smarty_emulator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smarty_emulator_settings: dict[str, Any]
) -> Iterator[SmartyEmulator]:
    """A real emulator for the test session (see :class:`SmartyEmulator`). Call ``reset()`` between
    tests that must not see each other's persons, faults or journal."""
    settings = {**cassette_settings(request.config), **smarty_emulator_settings}
    emulator = start_emulator(tmp_path_factory.mktemp("smarty-emulator"), settings)
    try:
        yield emulator
    finally:
        emulator.stop()
