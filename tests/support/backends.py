"""The store backends a test can run against: SQLite in the data dir, or a fresh PostgreSQL database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulator.settings import Settings
from emulator.store import Store, store_from_settings
from tests.support.postgres import PostgresCluster

BACKENDS = ("sqlite", "postgres")
BOTH_BACKENDS = pytest.mark.both_backends
"""``pytestmark = BOTH_BACKENDS``: every test of the module that uses a server or the ``backend`` fixture runs with
SQLite and with PostgreSQL (``tests/conftest.py`` parametrizes them). ``@BOTH_BACKENDS`` on a test: that test alone
(where the store matters to some of a module's tests only)."""
DLIB_DESCRIPTOR = "sqlite-dlib"
BOTH_EMBEDDERS = pytest.mark.both_embedders
"""``pytestmark = [BOTH_BACKENDS, BOTH_EMBEDDERS]``: the module's server tests also run once more on SQLite with
dlib's own face descriptor (``SMARTY_EMBEDDER=dlib``, the reference), so their expected tags and aliases hold for
either embedder."""
HOG_DETECTOR = "sqlite-hog"
YUNET_DETECTOR = "sqlite-yunet"
BOTH_DETECTORS = pytest.mark.both_detectors
"""``pytestmark = [BOTH_BACKENDS, BOTH_DETECTORS]``: the module's server tests also run on SQLite with each face
detector named (``SMARTY_DETECTOR=hog`` and ``yunet``; the others run the default, ``auto``), so what they expect
holds for either. The yunet runs skip where its wheel is absent (fail in CI)."""
DETECTOR_BACKENDS = (HOG_DETECTOR, YUNET_DETECTOR)


@dataclass(frozen=True)
class Backend:
    name: str  # sqlite | postgres | sqlite-dlib | sqlite-hog | sqlite-yunet
    cluster: PostgresCluster | None = None

    def settings(self) -> dict[str, Any]:
        """Settings for a server or store of its own: nothing for SQLite (the data dir), a new database for
        PostgreSQL. Pass the same dict to several servers to share one record."""
        if self.cluster is None:
            return {}
        return {"database_url": self.cluster.create_database()}

    def store(self, data_dir: Path, settings: dict[str, Any] | None = None) -> Store:
        """An opened store in ``data_dir`` (SQLite) or in ``settings``' database (a new one if not given)."""
        overrides = {"data_dir": data_dir, **(self.settings() if settings is None else settings)}
        store = store_from_settings(Settings.from_sources({}, overrides))
        store.open()
        return store
