"""A full disk under a running server: sets fail cleanly, recognize goes on, and writes come back by themselves.

The data dir is a small tmpfs (8 MiB). After a few acknowledged sets, a filler file takes every free byte; then:

* every request is answered, each within ``ANSWER_SECONDS``;
* a set that could not be stored gets the real service's internal-error envelope, and nothing of it is kept (each
  set carries two photos of its person: after a failure the person has no face at all);
* recognize against what is stored keeps working (one that would learn a face answers without storing it);
* ``/emulator/health`` shows the storage error and its time, and the log has one line naming the cause;
* once the filler is removed, sets work again with no restart, and health says since when;
* after the server stops, every acknowledged set is still there and ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.store.sqlite import DB_FILENAME
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture
from tests.support.mounts import fill, small_tmpfs

pytestmark = pytest.mark.slow  # a real server process on a tmpfs

SPACE = 4
ANSWER_SECONDS = 30.0
AUTH = {"oauth_token": "disk-token", "oauth_provider": "mcs"}
# (person id, two photos of that person): the first three are stored before the disk fills.
PERSONS: list[tuple[int, tuple[str, str]]] = [
    (1, ("people/obama/obama.jpg", "people/obama/obama2.jpg")),
    (2, ("people/biden/biden.jpg", "people/biden/biden2.jpg")),
    (3, ("people/kit_harington/john1.jpeg", "people/kit_harington/john2.jpeg")),
    (4, ("people/anthony_hopkins/Anthony_Hopkins_0001.jpg", "people/anthony_hopkins/Anthony_Hopkins_0002.jpg")),
    (5, ("people/alex_lacamoire/img1.jpg", "people/alex_lacamoire/alex-lacamoire.png")),
    (6, ("people/rose_leslie/img1.jpg", "people/rose_leslie/img2.jpg")),
]
PROBES = {1: "people/obama/obama3.jpg", 2: "people/biden/biden2.jpg", 3: "people/kit_harington/johnsnow_test1.jpg"}


@pytest.fixture
def server_on_small_disk(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with small_tmpfs(tmp_path / "disk") as disk:  # the data dir itself: the server's log stays outside
        server = EmulatorProcess(disk, journal_size=1000).start()
        try:
            yield server
        finally:
            server.stop()


def _post(http: httpx.Client, method: str, meta: str, photos: list[tuple[str, bytes]]) -> tuple[dict[str, Any], float]:
    files: list[tuple[str, Any]] = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in photos]
    files.append(("meta", (None, meta)))
    started = time.monotonic()
    response = http.post(f"/api/v1/persons/{method}", params=AUTH, files=files)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text  # SMARTY_HTTP_STATUS=always-200: the envelope says it
    payload: dict[str, Any] = response.json()
    return payload, elapsed


def _set(http: httpx.Client, person_id: int, photos: tuple[str, str], salt: str) -> tuple[dict[str, Any], float]:
    # Trailing bytes make every upload distinct (no face cache), the picture stays the same.
    parts = [(f"p{i}", fixture(photo) + f"#{salt}".encode()) for i, photo in enumerate(photos)]
    images = ",".join(f'{{"name":"p{i}","person_id":{person_id}}}' for i in range(len(parts)))
    return _post(http, "set", f'{{"space":"{SPACE}","images":[{images}]}}', parts)


def _found(http: httpx.Client, photo: str) -> set[str]:
    """The persons a photo matches (tag and aliases), learning nothing."""
    meta = f'{{"space":"{SPACE}","images":[{{"name":"f"}}],"update_embedding":false}}'
    payload, elapsed = _post(http, "recognize", meta, [("f", fixture(photo))])
    assert elapsed < ANSWER_SECONDS
    assert payload["status"] == 200, payload
    return {t for p in payload["body"]["objects"][0].get("persons", []) for t in [p["tag"], *p.get("aliases", [])]}


def _faces_of(http: httpx.Client, person_id: int) -> int:
    """How many photos the person has stored; 0 for a person the space does not hold."""
    response = http.get(f"/emulator/clients/default/spaces/{SPACE}/persons/{person_id}")
    if response.status_code == 404:
        return 0
    assert response.status_code == 200, response.text
    return len(response.json()["photos"])


def test_a_full_disk_fails_sets_cleanly_and_service_comes_back(server_on_small_disk: EmulatorProcess) -> None:
    server = server_on_small_disk
    disk = server.data_dir
    acknowledged: list[int] = []
    with httpx.Client(base_url=server.base_url, timeout=ANSWER_SECONDS + 30) as http:
        for person_id, photos in PERSONS[:3]:
            payload, _ = _set(http, person_id, photos, "before")
            assert [o["status"] for o in payload["body"]["objects"]] == [0, 0], payload
            acknowledged.append(person_id)

        filler = fill(disk)
        filled_at = time.time()
        failed: list[int] = []
        slowest = 0.0
        for attempt, (person_id, photos) in enumerate(PERSONS[3:] * 4):
            person_id += 10 * attempt  # a new person each time
            payload, elapsed = _set(http, person_id, photos, f"full-{attempt}")
            slowest = max(slowest, elapsed)
            assert elapsed < ANSWER_SECONDS, elapsed
            if payload["status"] == 200:  # freed pages of the WAL may still take a small write
                assert [o["status"] for o in payload["body"]["objects"]] == [0, 0], payload
                acknowledged.append(person_id)
                continue
            assert (payload["status"], payload["body"]) == (500, "Internal Server Error"), payload
            assert _faces_of(http, person_id) == 0  # nothing of the failed set was kept: not one of its faces
            failed.append(person_id)
            if len(failed) >= 3:
                break
        assert len(failed) >= 3, f"the disk never filled up: {acknowledged}"

        # Recognize against what is stored keeps working on the full disk; one that would learn a face (the
        # default, update_embedding) answers the same match, and what it learned is not stored.
        for person_id, probe in PROBES.items():
            assert f"person{person_id}" in _found(http, probe)
        meta = f'{{"space":"{SPACE}","images":[{{"name":"f"}}]}}'
        payload, elapsed = _post(http, "recognize", meta, [("f", fixture("people/obama/obama1.jpg") + b"#learn")])
        assert elapsed < ANSWER_SECONDS and payload["status"] == 200, payload
        assert payload["body"]["objects"][0]["persons"][0]["tag"] == "person1"
        assert _faces_of(http, 1) == 2

        health = http.get("/emulator/health").json()
        failure = health["last_failure"]
        assert "database or disk is full" in failure["error"] and DB_FILENAME in failure["error"], failure
        assert filled_at - 1 <= failure["unix"] <= time.time() and failure["time"].endswith("Z")
        assert failure["writes_ok_since"] is None
        log = server.log()
        assert "set failed: could not write" in log and "database or disk is full" in log, log[-3000:]
        assert "recognize answered without storing what it learned: could not write" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]

        # Free the disk: the next set is stored, with no restart, and health says since when.
        filler.unlink()
        payload, elapsed = _set(http, 99, PERSONS[3][1], "after")
        assert elapsed < ANSWER_SECONDS
        assert [o["status"] for o in payload["body"]["objects"]] == [0, 0], payload
        acknowledged.append(99)
        health = http.get("/emulator/health").json()
        assert health["last_failure"]["writes_ok_since"] is not None, health
        assert "person99" in _found(http, PERSONS[3][1][1])

        for person_id in acknowledged:
            assert _faces_of(http, person_id) == 2, person_id
        for person_id in failed:
            assert _faces_of(http, person_id) == 0, person_id
    print(
        f"\ndisk full: {len(acknowledged)} sets acknowledged, {len(failed)} refused with the envelope;"
        f" slowest answer on the full disk {slowest * 1000:.0f} ms"
    )

    assert server.stop() in (0, -15)
    with sqlite3.connect(f"file:{disk / DB_FILENAME}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {r[0]: r[1] for r in conn.execute("SELECT person_id, COUNT(*) FROM faces GROUP BY person_id")}
    assert stored == {person_id: 2 for person_id in acknowledged}
