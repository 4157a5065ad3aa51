"""The record of persons and embeddings: the :class:`Store` protocol and its backends (SQLite, PostgreSQL)."""

from __future__ import annotations

from emulator.settings import Settings
from emulator.store.records import SpaceWriter, Store
from emulator.store.sqlite import SqliteStore

__all__ = ["SpaceWriter", "SqliteStore", "Store", "store_from_settings"]


def store_from_settings(settings: Settings) -> Store:
    """The store the settings name: PostgreSQL if ``database_url`` is set, else SQLite in the data dir."""
    if settings.database_url:
        from emulator.store.postgres import PostgresStore  # psycopg is imported only by those who use it

        return PostgresStore.from_settings(settings)
    return SqliteStore(settings.data_dir, int(settings.change_log_size))
