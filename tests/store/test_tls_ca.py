"""A value shared by every process of a record (the TLS certificate authority): processes racing to make it all
get the same one, with the SQLite data dir and with PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emulator.settings import Settings
from emulator.store.postgres import PostgresStore
from emulator.store.records import Store
from emulator.store.sqlite import SqliteStore
from tests.support.postgres import PostgresCluster

RACERS = 6


def race(stores: list[Store]) -> list[bytes]:
    """Every store asks for the same value at the same moment, each offering its own."""
    barrier = threading.Barrier(len(stores))

    def ask(store: Store) -> bytes:
        barrier.wait()
        return store.shared_value("tls-ca.pem", lambda: secrets.token_bytes(64))

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(ask, stores))


def test_sqlite_processes_racing_to_make_the_ca_all_get_one(tmp_path: Path) -> None:
    values = race([SqliteStore(tmp_path / "data") for _ in range(RACERS)])
    assert len(set(values)) == 1 and len(values[0]) == 64
    record = tmp_path / "data" / "tls-ca.pem"
    assert record.read_bytes() == values[0] and record.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in record.parent.iterdir()] == ["tls-ca.pem"]  # no temporary file left behind
    assert SqliteStore(tmp_path / "data").shared_value("tls-ca.pem", lambda: b"other") == values[0]


def test_postgres_replicas_racing_to_make_the_ca_all_get_one(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    stores = [PostgresStore.from_settings(Settings.from_sources({}, {"database_url": url})) for _ in range(RACERS)]
    for store in stores:
        store.open()
    try:
        values = race(list(stores))
        assert len(set(values)) == 1 and len(values[0]) == 64
        assert stores[0].shared_value("tls-ca.pem", lambda: b"other") == values[0]
    finally:
        for store in stores:
            store.close()
