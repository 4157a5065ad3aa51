"""The running emulator's parts, wired once per process (see :func:`emulator.app.create_app`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from emulator.face.engine import FaceEngine
from emulator.faults import FaultInjector
from emulator.journal import Journal
from emulator.oauth import TokenIssuer, load_or_create_secret
from emulator.observe import Observer
from emulator.seed import seed_at_startup
from emulator.service import PersonsService
from emulator.settings import Settings, parse_clients, parse_oauth_clients
from emulator.store.sqlite import SqliteStore
from emulator.wire.auth import TokenDirectory


@dataclass
class Runtime:
    """Settings (some may change live), the engine, the store and the service."""

    settings: Settings
    engine: FaceEngine
    store: SqliteStore
    service: PersonsService = field(init=False)
    directory: TokenDirectory = field(init=False)
    oauth: TokenIssuer = field(init=False)
    faults: FaultInjector = field(default_factory=FaultInjector)
    journal: Journal = field(init=False)
    ready: threading.Event = field(default_factory=threading.Event)
    startup: set[str] = field(default_factory=set)  # done so far: "store", "models", "warm-up"
    startup_error: str | None = None
    observers: list[Observer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.service = PersonsService(self.engine, self.store, lambda: self.settings)
        service_clients = parse_clients(self.settings.clients)
        self.oauth = TokenIssuer(
            parse_oauth_clients(self.settings.oauth_clients),
            lambda: load_or_create_secret(self.store.data_dir),
            lambda: int(self.settings.token_lifetime),
            open_allowed=not service_clients,
        )
        self.directory = TokenDirectory(service_clients, self.oauth)
        self.journal = Journal(int(self.settings.journal_size))
        self.observers.append(self.journal)

    def start(self) -> None:
        """Open and migrate the store, then load and warm the models (blocking).

        Each step done is added to ``startup`` (readiness reports what is missing); a failure is kept in
        ``startup_error`` and raised.
        """
        try:
            self.store.open()
            self.startup.add("store")
            load = getattr(self.engine, "load", None)  # an engine may load its models apart from the warm-up
            if callable(load):
                load()
                self.startup.add("models")
            self.engine.warm_up()  # loads the models if not yet, and runs one detection
            self.startup.update(("models", "warm-up"))
            if self.settings.seed:  # SMARTY_SEED: applied once per start, before readiness
                seed_at_startup(
                    self.store,
                    self.engine,
                    Path(self.settings.seed),
                    max_faces_per_space=self.settings.max_faces_per_space,
                    on_write=self.service.index.apply,
                )
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            raise
        self.ready.set()

    def stop(self) -> None:
        self.ready.clear()
        self.service.close()
        self.store.close()
