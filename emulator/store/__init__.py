"""The record of persons and embeddings: the :class:`Store` protocol and its backends (SQLite)."""

from __future__ import annotations

from emulator.settings import Settings
from emulator.store.records import SpaceWriter, Store
from emulator.store.sqlite import SqliteStore

__all__ = ["SpaceWriter", "SqliteStore", "Store", "store_from_settings"]


def store_from_settings(settings: Settings) -> Store:
    """The store the settings name: SQLite in the data dir."""
    return SqliteStore(settings.data_dir)
