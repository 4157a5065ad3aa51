"""The request journal shows exactly the requests made, with per-object results, and stays bounded;
the live settings can be read and changed through the admin API."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.control.journal import Journal
from emulator.control.state import SqliteSharedState
from emulator.face.engine import DlibEngine
from emulator.ops.observe import RequestRecord
from emulator.store.records import StoreError
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_server import EmulatorServer, fixture

pytestmark = BOTH_BACKENDS

OBAMA = "people/obama/obama.jpg"
BIDEN = "people/biden/biden.jpg"
NO_FACE = "no-face/rocket.jpg"


def test_journal_shows_exactly_the_requests_made(server: EmulatorServer, space: int) -> None:
    assert server.http.delete("/emulator/requests").status_code == 200
    obama, rocket = fixture(OBAMA), fixture(NO_FACE)
    set_meta = {"space": str(space), "images": [{"name": "a", "person_id": 1}, {"name": "b", "person_id": 2}]}
    set_body = server.ok("set", set_meta, [("a", obama), ("b", rocket)])
    recognize_meta = {"space": str(space), "images": [{"name": "q"}], "update_embedding": False}
    recognize_body = server.ok("recognize", recognize_meta, [("q", fixture(BIDEN))])
    denied = server.call("truncate", {"space": str(space)}, token="")
    assert denied.json()["status"] == 403
    delete_body = server.ok("delete", {"space": str(space), "images": [{"name": "x", "person_id": 1}]})

    listing = server.http.get("/emulator/requests").json()
    entries = listing["requests"]
    assert [e["method"] for e in entries] == ["set", "recognize", "truncate", "delete"]
    first, second, third, fourth = entries
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)

    assert first["client"] == "default" and first["space"] == space and first["meta"] == set_meta
    assert first["images"] == [
        {"name": "a", "size": len(obama), "sha256": hashlib.sha256(obama).hexdigest()},
        {"name": "b", "size": len(rocket), "sha256": hashlib.sha256(rocket).hexdigest()},
    ]
    assert first["objects"] == set_body["objects"]
    assert [o["status"] for o in first["objects"]] == [0, 1]  # the rocket has no face
    assert (first["envelope_status"], first["http_status"], first["error"]) == (200, 200, None)
    assert first["duration_ms"] > 0 and first["faults"] == []

    assert second["objects"] == recognize_body["objects"]
    assert second["objects"][0]["persons"][0]["tag"] == "undefined"

    assert third["client"] is None and third["envelope_status"] == 403 and third["objects"] == []
    assert third["error"] == "empty oauth_token"

    assert fourth["objects"] == delete_body["objects"]
    assert all("data" not in image for e in entries for image in e["images"])

    # Filters: method, space, since.
    by_method = server.http.get("/emulator/requests", params={"method": "recognize"}).json()["requests"]
    assert [e["id"] for e in by_method] == [second["id"]]
    other_space = (space + 1) % 10
    assert server.http.get("/emulator/requests", params={"space": other_space}).json()["requests"] == []
    by_space = server.http.get("/emulator/requests", params={"space": space}).json()["requests"]
    assert [e["method"] for e in by_space] == ["set", "recognize", "delete"]  # the refused one was never parsed
    since = server.http.get("/emulator/requests", params={"since": str(third["started_at"])}).json()["requests"]
    assert [e["method"] for e in since] == ["truncate", "delete"]
    since_iso = server.http.get("/emulator/requests", params={"since": third["time"]}).json()["requests"]
    assert [e["method"] for e in since_iso] == ["truncate", "delete"]
    assert server.http.get("/emulator/requests", params={"since": "yesterday"}).status_code == 400

    # Clearing.
    assert server.http.delete("/emulator/requests").json() == {"removed": 4}
    assert server.http.get("/emulator/requests").json()["requests"] == []


def test_journal_records_faults_that_fired(server: EmulatorServer) -> None:
    server.http.delete("/emulator/requests")
    rule = server.http.post("/emulator/faults", json={"kind": "http_503", "times": 1}).json()
    try:
        assert server.call("truncate", {"space": "0"}).status_code == 503
    finally:
        server.http.delete("/emulator/faults")
    (entry,) = server.http.get("/emulator/requests").json()["requests"]
    assert entry["faults"] == [f"http_503#{rule['id']}"]
    assert (entry["http_status"], entry["envelope_status"]) == (503, 0)


@pytest.fixture
def small_journal(
    engine: DlibEngine, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorServer]:
    running = EmulatorServer(
        tmp_path_factory.mktemp("journal"), engine=engine, journal_size=3, **backend.settings()
    ).start()
    yield running
    running.stop()


def test_journal_stays_bounded(small_journal: EmulatorServer) -> None:
    for space in range(7):
        small_journal.ok("truncate", {"space": str(space)})
    listing = small_journal.http.get("/emulator/requests").json()
    assert listing["size"] == 3 and listing["total"] == 7
    assert [e["space"] for e in listing["requests"]] == [4, 5, 6]
    assert [e["id"] for e in listing["requests"]] == [5, 6, 7]


def test_live_settings_read_and_change(server: EmulatorServer, space: int) -> None:
    before = server.http.get("/emulator/settings").json()["settings"]
    assert before["match_threshold"] == server.runtime.settings.match_threshold
    assert {"http_status", "aliases_changed", "max_images", "token_lifetime"} <= set(before)
    assert "data_dir" not in before and "clients" not in before
    try:
        changed = server.http.patch("/emulator/settings", json={"http_status": "mirror", "match_threshold": 0.999})
        assert changed.status_code == 200, changed.text
        assert changed.json()["settings"]["match_threshold"] == 0.999
        # The running service honours it at once: mirror mode, and a threshold nothing reaches.
        assert server.call("truncate", {"space": str(space)}, token="").status_code == 403
        server.set(space, 1, OBAMA)
        assert server.tags(space, "people/obama/obama2.jpg", update_embedding=False) == ["undefined"]
    finally:
        restore = {"http_status": before["http_status"], "match_threshold": before["match_threshold"]}
        assert server.http.patch("/emulator/settings", json=restore).status_code == 200
    assert server.tags(space, "people/obama/obama2.jpg", update_embedding=False) == ["person1"]


@pytest.mark.parametrize(
    "change",
    [{"data_dir": "/elsewhere"}, {"clients": "a=b"}, {"no_such": 1}, {"match_threshold": 7}, {"http_status": "x"}],
)
def test_settings_patch_refuses_what_is_not_live_or_not_valid(
    server: EmulatorServer, change: dict[str, object]
) -> None:
    before = server.http.get("/emulator/settings").json()
    response = server.http.patch("/emulator/settings", json=change)
    assert response.status_code == 400
    assert response.json()["detail"]
    assert server.http.get("/emulator/settings").json() == before


def test_admin_routes_are_guarded(
    engine: DlibEngine, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = EmulatorServer(
        tmp_path_factory.mktemp("guarded"), engine=engine, admin="token", admin_token="s3cret", **backend.settings()
    ).start()
    try:
        for method, path in [
            ("GET", "/emulator/requests"),
            ("POST", "/emulator/faults"),
            ("PATCH", "/emulator/settings"),
        ]:
            assert running.http.request(method, path, json={}).status_code == 403
        ok = running.http.get("/emulator/requests", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
    finally:
        running.stop()


def test_a_broken_testing_aid_database_is_a_store_error_and_the_journal_outlives_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's errors in the shared state are StoreErrors naming the file, as PostgreSQL's are (admin calls then
    answer the storage error's envelope); a journal write that fails never fails the request it records."""
    shared = SqliteSharedState(tmp_path, "run")
    shared.open()
    try:
        with sqlite3.connect(shared.path) as conn:  # another process broke the file's tables
            conn.execute("DROP TABLE journal")
            conn.execute("DROP TABLE fault_rules")
        with pytest.raises(StoreError, match=str(shared.path)):
            shared.rules()
        with pytest.raises(StoreError, match=str(shared.path)):
            shared.journal_append(time.time(), "set", 1, "{}", 10)
        Journal(shared, 10)(RequestRecord(method="set", client="c", started_at=time.time(), space=1))
        assert "requests are not journaled until this is resolved" in caplog.text
    finally:
        shared.close()
