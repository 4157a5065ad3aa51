"""The TLS certificate authority is one per record: processes racing to make it all get the same one (SQLite data
dir and PostgreSQL), and two PostgreSQL replicas serve certificates issued from that one CA."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from emulator.ops.tls import Authority, TlsError, make_ca
from emulator.settings import Settings
from emulator.store.postgres import PostgresStore
from emulator.store.records import Store, StoreError
from emulator.store.sqlite import SqliteStore
from tests.support.emulator_process import EmulatorProcess, run_cli
from tests.support.emulator_server import free_port
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


@pytest.mark.slow
def test_two_postgres_replicas_serve_certificates_from_one_ca(postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database()
    ports = [free_port(), free_port()]
    replicas = [
        EmulatorProcess(tmp_path / f"replica-{i}" / "data", database_url=url, tls_port=port)
        for i, port in enumerate(ports)
    ]
    try:
        with ThreadPoolExecutor(2) as pool:  # started at once: they race to make the CA
            list(pool.map(EmulatorProcess.start, replicas))
        served = {httpx.get(f"{r.base_url}/emulator/ca.pem", timeout=30).content for r in replicas}
        assert len(served) == 1
        [ca] = served
        leaves = []
        for port in ports:
            context = ssl.create_default_context(cadata=ca.decode())
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="smarty.mail.ru") as tls,
            ):
                leaves.append(tls.getpeercert(binary_form=True))
        assert leaves[0] != leaves[1]  # each replica issued its own certificate, both from the one CA
    finally:
        for replica in replicas:
            replica.stop()
    printed = run_cli("ca", "--database-url", url, "--data-dir", str(tmp_path / "cli"))
    assert printed.returncode == 0 and printed.stdout.encode() == ca, printed.stderr
    assert not any((tmp_path / f"replica-{i}" / "data" / "tls-ca.pem").exists() for i in range(2))  # in the database
    assert not os.path.exists(tmp_path / "cli" / "tls-ca.pem")


def test_a_directory_in_place_of_the_ca_file_is_a_store_error_naming_it(tmp_path: Path) -> None:
    record = tmp_path / "data" / "tls-ca.pem"
    record.mkdir(parents=True)
    with pytest.raises(StoreError, match=f"could not read {record}: Is a directory"):
        SqliteStore(tmp_path / "data").shared_value("tls-ca.pem", make_ca)
    printed = run_cli("ca", "--data-dir", str(tmp_path / "data"))  # one line, no traceback
    assert printed.returncode == 1 and "Traceback" not in printed.stderr
    assert f"smarty-emulator: could not read {record}: Is a directory" in printed.stderr


def test_a_corrupt_ca_file_is_a_tls_error_naming_it(tmp_path: Path) -> None:
    record = tmp_path / "data" / "tls-ca.pem"
    record.parent.mkdir()
    record.write_bytes(b"not a CA\n")
    with pytest.raises(TlsError, match=f"the emulator's CA in {record} cannot be used"):
        Authority.of(SqliteStore(tmp_path / "data"))
    printed = run_cli("ca", "--data-dir", str(tmp_path / "data"))
    assert printed.returncode == 1 and "Traceback" not in printed.stderr
    assert f"smarty-emulator: the emulator's CA in {record} cannot be used" in printed.stderr
