"""What only the PostgreSQL backend has: the versioned schema, the database's faults (unreachable at start, down
under a running server), the password kept out of everything, and the testing-aid state kept across starts."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from emulator.face.engine import DlibEngine
from emulator.ops.logs import configured_secrets, redact
from emulator.persons.errors import INTERNAL_ERROR
from emulator.settings import Settings
from emulator.store.postgres import COMPONENT, Database, PostgresStore
from emulator.store.records import ClientId, SpaceKey, StoreError
from tests.support.emulator_server import EmulatorServer, free_port
from tests.support.postgres import PostgresCluster

PASSWORD = "pg-Secret-4d1f"  # the test cluster trusts loopback: the password is sent nowhere, but must show nowhere
TIMEOUT = 2.0  # database_timeout of the servers that see the database go away


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def test_migrations_from_replicas_starting_at_once_run_once(cluster: PostgresCluster) -> None:
    url = cluster.create_database()
    stores = [PostgresStore(Database(url)) for _ in range(6)]
    errors: list[BaseException] = []

    def open_one(store: PostgresStore) -> None:
        try:
            store.open()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert cluster.psql("SELECT component, version FROM schema_version ORDER BY 1", url.rsplit("/", 1)[1]) == "store|2"
    key = SpaceKey(ClientId("default"), 1)
    assert all(store.generation(key) == 0 for store in stores)
    for store in stores:
        store.close()


def test_a_database_with_a_newer_schema_is_refused(cluster: PostgresCluster) -> None:
    url = cluster.create_database()
    store = PostgresStore(Database(with_password(url)))
    store.open()
    store.close()
    cluster.psql(f"UPDATE schema_version SET version = 99 WHERE component = '{COMPONENT}'", url.rsplit("/", 1)[1])
    again = PostgresStore(Database(with_password(url)))
    with pytest.raises(StoreError, match="schema version 99, newer than this emulator knows") as caught:
        again.open()
    assert url in str(caught.value) and PASSWORD not in str(caught.value)
    again.close()


def test_the_password_is_redacted_from_logs_and_errors() -> None:
    url = f"postgresql://smarty:{PASSWORD}@db.example:5432/smarty"
    settings = Settings.from_sources({"SMARTY_DATABASE_URL": url})
    assert PASSWORD not in redact(f"connecting to {url} failed", configured_secrets(settings))
    database = Database(url)
    assert database.location == "postgresql://smarty@db.example:5432/smarty"
    assert PASSWORD not in database.describe(ValueError(f"bad password {PASSWORD}"))


def test_unreachable_at_start_then_ready_by_itself(
    engine: DlibEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The process stays up, readiness names the database (not its password) and why, requests fail at once, and
    the server becomes ready when its database appears, without a restart."""
    port = free_port()
    late = PostgresCluster(port=port)
    url = with_password(late.url())
    server = EmulatorServer(tmp_path / "data", engine=engine, database_url=url, database_timeout=TIMEOUT)
    caplog.set_level(logging.INFO)
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while "error" not in (report := server.http.get("/emulator/ready").json()) and time.monotonic() < deadline:
            time.sleep(0.05)
        response = server.http.get("/emulator/ready")
        assert response.status_code == 503
        report = response.json()
        assert report["ready"] is False and "store" in report["missing"]
        assert f"postgres@127.0.0.1:{port}/postgres" in report["error"] and "refused" in report["error"].lower()

        started = time.monotonic()
        response = server.call("truncate", {"space": "0"})
        assert time.monotonic() - started < TIMEOUT  # no wait for a startup that already failed once
        assert response.status_code == 200 and response.json()["status"] == 500

        late.start()
        assert server.runtime.ready.wait(timeout=60), server.runtime.readiness()
        assert server.http.get("/emulator/ready").status_code == 200
        assert server.ok("truncate", {"space": "0"}) == {}
    finally:
        server.stop()
        late.stop()
    assert PASSWORD not in caplog.text and PASSWORD not in str(server.runtime.readiness())


def test_database_down_under_a_running_server(
    engine: DlibEngine, cluster: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests while the database is down get the internal-error envelope within about database_timeout (no
    hang, no traceback); once it is back the same server serves again, and nothing acknowledged was lost."""
    url = with_password(cluster.create_database())
    server = EmulatorServer(tmp_path / "data", engine=engine, database_url=url, database_timeout=TIMEOUT).start()
    caplog.set_level(logging.WARNING)
    try:
        assert server.set(0, 1, "people/obama/obama.jpg")["status"] == 0
        cluster.stop_server("fast")
        try:
            # The first request waits up to database_timeout for a connection, off the event loop: meanwhile the
            # server answers health checks (and everything else) at once.
            waiting = threading.Thread(target=server.call, args=("truncate", {"space": "1"}))
            waiting.start()
            time.sleep(0.3)
            started = time.monotonic()
            assert server.http.get("/emulator/health").status_code == 200
            assert time.monotonic() - started < TIMEOUT / 2
            waiting.join(timeout=30)
            for method in ("recognize", "set", "truncate"):
                started = time.monotonic()
                meta = {"space": "0", "images": [{"name": "f", "person_id": 2}]} if method != "truncate" else {}
                files = [("f", (Path(__file__).parents[2] / "fixtures/people/biden/biden.jpg").read_bytes())]
                response = server.call(method, meta or {"space": "0"}, files if meta else [])
                elapsed = time.monotonic() - started
                assert response.status_code == 200
                assert response.json()["status"] == 500 and response.json()["body"] == INTERNAL_ERROR
                assert elapsed < TIMEOUT + 3, (method, elapsed)
            assert server.http.get("/emulator/health").status_code == 200  # liveness never waits for the database
        finally:
            cluster.start_server()
        deadline = time.monotonic() + 30
        while server.call("truncate", {"space": "5"}).json()["status"] != 200:
            assert time.monotonic() < deadline, "the server did not use the database again"
            time.sleep(0.2)
        assert server.tags(0, "people/obama/obama2.jpg", update_embedding=False) == ["person1"]
    finally:
        server.stop()
    assert PASSWORD not in caplog.text
    assert "Traceback" not in caplog.text


def test_testing_aid_state_is_kept_across_starts_and_emptied_through_the_admin_api(
    engine: DlibEngine, cluster: PostgresCluster, tmp_path: Path
) -> None:
    """In PostgreSQL the state belongs to the database: a (re)starting replica must not wipe another's rules."""
    url = cluster.create_database()
    first = EmulatorServer(tmp_path / "a", engine=engine, database_url=url).start()
    try:
        assert first.http.patch("/emulator/settings", json={"match_threshold": 0.5}).status_code == 200
        assert first.http.post("/emulator/faults", json={"kind": "http_503", "method": "set"}).status_code == 201
        assert first.call("truncate", {"space": "0"}).status_code == 200
    finally:
        first.stop()
    again = EmulatorServer(tmp_path / "b", engine=engine, database_url=url).start()
    try:
        assert again.http.get("/emulator/settings").json()["settings"]["match_threshold"] == 0.5
        assert [rule["kind"] for rule in again.http.get("/emulator/faults").json()["faults"]] == ["http_503"]
        assert again.http.get("/emulator/requests").json()["total"] == 1
        assert again.call("set", {"space": "0", "images": []}).status_code == 503

        assert again.http.delete("/emulator/faults").status_code == 200
        assert again.http.delete("/emulator/requests").status_code == 200
        assert again.http.patch("/emulator/settings", json={"match_threshold": 0.93}).status_code == 200
        assert again.http.get("/emulator/faults").json()["faults"] == []
        assert again.http.get("/emulator/requests").json()["requests"] == []
        assert again.runtime.settings.match_threshold == 0.93
    finally:
        again.stop()


def test_a_server_waiting_for_its_database_stops_at_once(
    engine: DlibEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    server = EmulatorServer(tmp_path / "data", engine=engine, database_url=url, database_timeout=TIMEOUT)
    server.start(wait_ready=False)
    deadline = time.monotonic() + 30
    while "error" not in server.runtime.readiness() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "127.0.0.1" in server.runtime.readiness()["error"]
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 15  # not the warm-up thread's 30 s join
    assert "Traceback" not in caplog.text and PASSWORD not in caplog.text
