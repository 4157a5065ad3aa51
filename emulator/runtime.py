"""The running emulator's parts, wired once per process (see :func:`emulator.app.create_app`)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.control.faults import FaultInjector
from emulator.control.journal import Journal
from emulator.control.seed import SeedLimits, seed_at_startup
from emulator.control.state import BOOT_ID_ENV, SharedState, SqliteSharedState
from emulator.face.engine import FaceEngine
from emulator.ops.datadir import check_data_dir
from emulator.ops.observe import Observer, RequestRecord
from emulator.ops.state_threads import StateThreads
from emulator.ops.tls import Tls
from emulator.persons.auth import TokenDirectory
from emulator.persons.clients import parse_clients, parse_oauth_clients
from emulator.persons.oauth import TokenIssuer
from emulator.persons.service import PersonsService
from emulator.settings import Settings
from emulator.store.records import Store, StoreError
from emulator.store.watch import WatchedStore
from emulator.upstream.report import CompareReport

STARTUP_STEPS = ("store", "models", "warm-up")
READY_WAIT_SECONDS = 60.0  # how long a request that arrives during the warm-up waits for it
_READY_POLL_SECONDS = 0.02
STORE_RETRY_SECONDS = (0.5, 10.0)  # PostgreSQL unreachable at start: first and longest wait between attempts

log = logging.getLogger("emulator.runtime")


@dataclass
class Runtime:
    """Settings (some may change live), the engine, the store and the service.

    ``settings`` is ``base_settings`` (environment and flags, or what an in-process caller assigns) with the
    live overrides of ``PATCH /emulator/settings`` on top. The overrides, the fault rules and the journal live
    in the data dir's shared state, so every worker process of a server sees the same; :meth:`sync_shared`
    (once per HTTP request) notices a change made through another worker with one small read.
    """

    base_settings: Settings
    engine: FaceEngine
    store: Store
    boot_id: str = field(default_factory=lambda: os.environ.get(BOOT_ID_ENV) or uuid.uuid4().hex)
    service: PersonsService = field(init=False)
    directory: TokenDirectory = field(init=False)
    oauth: TokenIssuer = field(init=False)
    shared: SharedState = field(init=False)
    faults: FaultInjector = field(init=False)
    journal: Journal = field(init=False)
    ready: threading.Event = field(default_factory=threading.Event)
    startup: set[str] = field(default_factory=set)  # done so far: "store", "models", "warm-up"
    startup_error: str | None = None
    last_failure: tuple[float, str] | None = None  # (unix time, text) of the last request that failed internally
    writes_ok_since: float | None = None  # unix time of the first committed write after last_failure
    warnings: dict[str, tuple[float, str]] = field(default_factory=dict)  # topic -> (unix time, text), for health
    observers: list[Observer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)  # set when the server begins to stop
    compare_report: CompareReport = field(default_factory=CompareReport)  # compare mode's, this process's share

    def __post_init__(self) -> None:
        self._settings = self.base_settings
        self._overrides: dict[str, Any] = {}
        self._settings_version = -1
        self.shared = self._shared_state()
        # The per-request state read and journal write over the network: threads apart from the analyses'.
        self.state_threads = StateThreads(int(self.base_settings.database_pool_size))
        self.store = WatchedStore(self.store, self._note_write)  # health: when storage worked again
        self.faults = FaultInjector(self.shared)
        self.service = PersonsService(self.engine, self.store, lambda: self.settings, self.note_failure)
        service_clients = parse_clients(self.settings.clients)
        self.oauth = TokenIssuer(
            parse_oauth_clients(self.settings.oauth_clients),
            lambda: self.store.secret("oauth"),  # one for every process sharing the store: tokens work on all
            lambda: int(self.settings.token_lifetime),
            open_allowed=not service_clients,
        )
        self.directory = TokenDirectory(service_clients, self.oauth)
        self.journal = Journal(self.shared, int(self.settings.journal_size))
        self.tls = Tls(self.base_settings)  # the HTTPS port's and the proxy's certificate, loaded at startup
        self.observers.append(self.journal)

    def _shared_state(self) -> SharedState:
        """The testing aids' state: in the data dir (one run), or in PostgreSQL (every replica, kept)."""
        if not self.state_is_remote:
            return SqliteSharedState(self.base_settings.data_dir, self.boot_id)
        from emulator.control.state_postgres import PostgresSharedState
        from emulator.store.postgres import Database, PostgresStore

        database = self.store.database if isinstance(self.store, PostgresStore) else None
        return PostgresSharedState(database or Database.from_settings(self.base_settings))

    @property
    def settings(self) -> Settings:
        """The settings in force: the base settings with the live overrides."""
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        """Replace the base settings (in-process callers and tests); the live overrides stay on top."""
        self.base_settings = value
        self._settings = value.replace(**self._overrides) if self._overrides else value

    def readiness(self) -> dict[str, Any]:
        """What readiness reports: ``ready``, the startup steps still ``missing``, and a startup ``error`` if any."""
        ready = self.ready.is_set()
        report: dict[str, Any] = {
            "ready": ready,
            "missing": [] if ready else [step for step in STARTUP_STEPS if step not in self.startup],
        }
        if self.startup_error:
            report["error"] = self.startup_error
        return report

    async def wait_until_ready(self, timeout: float = READY_WAIT_SECONDS) -> bool:
        """Wait (without holding a thread) until ready: True, or False after ``timeout`` or as soon as the startup
        failed. The store and models come up in the background at startup; a request that arrives before waits for
        them instead of failing. Each caller answers False in its own words."""
        deadline = time.monotonic() + timeout
        while not self.ready.is_set():
            if self.startup_error or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_READY_POLL_SECONDS)
        return True

    @property
    def state_is_remote(self) -> bool:
        """True when the store and the shared state are reached over the network (PostgreSQL): their calls must
        then stay off the event loop, where a slow or unreachable database would hold up every request."""
        return bool(self.base_settings.database_url)

    def observe(self, record: RequestRecord) -> None:
        """Hand a finished request to every observer (journal, metrics, log line); one failing never breaks a
        response."""
        for observer in list(self.observers):
            try:
                observer(record)
            except Exception:
                log.exception("request observer failed")

    def note_failure(self, exc: BaseException) -> None:
        """Remember the last internal failure of a request (health shows it)."""
        self.last_failure = (time.time(), f"{type(exc).__name__}: {exc}")
        self.writes_ok_since = None

    def warn(self, topic: str, text: str) -> None:
        """Remember the last warning of ``topic`` (health shows it), e.g. a cassette write that was refused."""
        self.warnings[topic] = (time.time(), text)

    def _note_write(self) -> None:
        if self.last_failure is not None and self.writes_ok_since is None:
            self.writes_ok_since = time.time()

    def sync_shared(self) -> None:
        """Pick up live settings and fault rules changed through any worker: one small read, called
        once per HTTP request; overrides are re-read only when their version moved."""
        if not self.shared.is_open:  # before the startup opened it: nothing can have been changed yet
            return
        version, rules = self.shared.status()
        self.faults.active = rules > 0
        if version != self._settings_version:
            self._use_overrides(*self.shared.overrides())

    def change_settings(self, changes: Mapping[str, Any]) -> Settings:
        """Apply live changes for every worker (validated; raises ``SettingsError``, changing nothing).

        A value equal to the base setting drops the override, so restoring the start values leaves none."""

        def merge(overrides: dict[str, Any]) -> dict[str, Any]:
            checked = self.base_settings.replace(**{**overrides, **changes})  # raises SettingsError
            return {
                name: checked.values[name]
                for name in {**overrides, **changes}
                if checked.values[name] != self.base_settings.values[name]
            }

        self._use_overrides(*self.shared.update_overrides(merge))
        return self._settings

    def _use_overrides(self, version: int, overrides: dict[str, Any]) -> None:
        self._settings = self.base_settings.replace(**overrides) if overrides else self.base_settings
        self._overrides, self._settings_version = overrides, version

    def start(self) -> None:
        """Open and migrate the store, then load and warm the models (blocking).

        Each step done is added to ``startup`` (readiness reports what is missing); a failure is kept in
        ``startup_error`` and raised.
        """
        try:
            opened = self._open_store(retry=False)
            load = getattr(self.engine, "load", None)  # an engine may load its models apart from the warm-up
            if callable(load):
                load()
                self.startup.add("models")
            self.engine.warm_up()  # loads the models if not yet, and runs one detection
            self.startup.update(("models", "warm-up"))
            detector = getattr(self.engine, "detector_in_use", None)
            if isinstance(detector, str):  # what SMARTY_DETECTOR=auto chose here (also in /emulator/health)
                log.info("face detector: %s (SMARTY_DETECTOR=%s)", detector, self.settings.detector)
            if not opened and not self._open_store(retry=True):
                return  # the server is stopping before its database ever came
            if self.settings.seed:  # SMARTY_SEED: applied once per start, before readiness
                seed_at_startup(
                    self.store,
                    self.engine,
                    Path(self.settings.seed),
                    max_faces_per_space=self.settings.max_faces_per_space,
                    on_write=self.service.index.apply,
                    limits=SeedLimits.from_settings(self.settings),
                )
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            if self.tls.context is None:  # no certificate will come now: TLS connections stop waiting for one
                self.tls.failure = self.startup_error
            raise
        self.ready.set()

    def _open_store(self, retry: bool) -> bool:
        """The store step: the testing aids' state (SQLite: emptied if left by another run), then the store.

        A failure is final for SQLite. An unreachable PostgreSQL is not: it is reported (readiness names the
        database and the reason, requests fail at once instead of waiting) and, with ``retry``, tried again with a
        growing pause until it works or the server stops (False), so a replica started before its database becomes
        ready by itself. Without ``retry``, False after the first failure (the models load meanwhile)."""
        pause, longest = STORE_RETRY_SECONDS
        while True:
            try:
                if not self.state_is_remote:  # read-only or not creatable: say so, naming it
                    check_data_dir(self.base_settings.data_dir)
                self.shared.open()
                self.sync_shared()
                self.store.open()
                # Now, in the startup thread: never on the event loop, where tokens are issued and checked (a file
                # read, maybe a first write with fsync, on SQLite; a database round trip on PostgreSQL).
                self.oauth.load_secret()
                if self.tls.enabled or self.tls.exports:
                    self.tls.load(self.store)  # the CA is in the record: the same for every worker and replica
            except StoreError as exc:
                if not self.state_is_remote:
                    raise
                self.startup_error = f"{type(exc).__name__}: {exc}"
                if not retry:
                    return False
                log.warning("the store is not available, trying again in %.1f s: %s", pause, exc)
                if self.stopping.wait(pause):
                    return False
                pause = min(pause * 2, longest)
                continue
            self.startup_error = None
            self.startup.add("store")
            return True

    def stop(self) -> None:
        self.stopping.set()
        self.ready.clear()
        self.service.close()
        self.store.close()
        self.shared.close()
