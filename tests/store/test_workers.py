"""Two real worker processes share one database: a write through one is seen by the other at once."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from emulator.control.routes import WORKER_HEADER
from emulator.persons.types import ClientId, SpaceKey
from emulator.store.sqlite import SqliteStore
from tests.support import persons_client as api
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture

pytestmark = pytest.mark.slow  # real server processes

OBAMA, OBAMA_OTHER = fixture("people/obama/obama.jpg"), fixture("people/obama/obama2.jpg")
BIDEN, BIDEN_OTHER = fixture("people/biden/biden.jpg"), fixture("people/biden/biden2.jpg")
MAX_CONNECTIONS = 40


SEED_SPACE = 9


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    root = tmp_path_factory.mktemp("workers")
    for person_id, photo in ((1, "people/obama/obama.jpg"), (2, "people/biden/biden.jpg")):
        (root / "seed" / str(SEED_SPACE) / str(person_id)).mkdir(parents=True)
        (root / "seed" / str(SEED_SPACE) / str(person_id) / Path(photo).name).write_bytes(fixture(photo))
    server = EmulatorProcess(root / "data", workers=2, seed=root / "seed").start()
    yield server
    server.stop()


def _worker_of(http: httpx.Client) -> int:
    """The pid of the worker behind this client's (kept-alive) connection."""
    response = http.get("/emulator/clients")
    assert response.status_code == 200
    return int(response.headers[WORKER_HEADER])


def _one_connection(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=1))


def _connections_to_two_workers(base_url: str) -> tuple[httpx.Client, httpx.Client]:
    """Open connections until two of them reach different worker processes."""
    first = _one_connection(base_url)
    pid_first = _worker_of(first)
    for _ in range(MAX_CONNECTIONS):
        other = _one_connection(base_url)
        if _worker_of(other) != pid_first:
            return first, other
        other.close()
    raise AssertionError(f"{MAX_CONNECTIONS} connections all reached worker {pid_first}")


def test_set_through_one_worker_is_recognized_through_the_other(two_workers: EmulatorProcess) -> None:
    a, b = _connections_to_two_workers(two_workers.base_url)
    with closing(a), closing(b):
        pid_a, pid_b = _worker_of(a), _worker_of(b)
        assert pid_a != pid_b
        # Worker B builds its index of the space first, so it must notice A's write (not load it cold).
        assert api.tags(api.recognize(b, 0, OBAMA_OTHER, update_embedding=False)) == ["undefined"]

        assert api.set_photos(a, 0, 1, [OBAMA]) == [{"status": 0, "name": "f0"}]
        assert api.tags(api.recognize(b, 0, OBAMA_OTHER, update_embedding=False)) == ["person1"]

        assert api.set_photos(b, 0, 2, [BIDEN]) == [{"status": 0, "name": "f0"}]
        assert api.tags(api.recognize(a, 0, BIDEN_OTHER, update_embedding=False)) == ["person2"]

        # create_new through B hands out the next id; A sees the new person on its next request.
        created = api.recognize(b, 0, fixture("people/kit_harington/john1.jpeg"), create_new=True)
        assert api.tags(created) == ["person3"]
        assert api.tags(api.recognize(a, 0, fixture("people/kit_harington/john2.jpeg"))) == ["person3"]

        api.delete(a, 0, [1])
        assert api.tags(api.recognize(b, 0, OBAMA_OTHER, update_embedding=False)) == ["undefined"]
        api.truncate(b, 0)
        assert api.tags(api.recognize(a, 0, BIDEN_OTHER, update_embedding=False)) == ["undefined"]

        # Each connection stayed with its worker the whole time.
        assert (_worker_of(a), _worker_of(b)) == (pid_a, pid_b)


def test_the_admin_api_of_each_worker_sees_the_others_writes(two_workers: EmulatorProcess) -> None:
    a, b = _connections_to_two_workers(two_workers.base_url)
    with closing(a), closing(b):
        api.set_photos(a, 5, 7, [OBAMA, OBAMA_OTHER])
        persons = b.get("/emulator/clients/default/spaces/5/persons").json()["persons"]
        assert persons == [{"person_id": 7, "photos": 2}]
        assert b.post("/emulator/reset", json={"client": "default", "space": 5}).status_code == 200
        assert api.tags(api.recognize(a, 5, OBAMA, update_embedding=False)) == ["undefined"]
        assert a.get("/emulator/clients/default/spaces/5/persons").json()["persons"] == []


def test_every_write_bumps_the_space_generation(two_workers: EmulatorProcess) -> None:
    """The counter other workers compare on each request lives in the shared database."""
    store = SqliteStore(Path(two_workers.data_dir))
    key = SpaceKey(ClientId("default"), 6)
    with httpx.Client(base_url=two_workers.base_url, timeout=60) as http:
        before = store.generation(key)
        api.set_photos(http, 6, 1, [BIDEN])
        after_set = store.generation(key)
        api.recognize(http, 6, BIDEN, update_embedding=False)  # a read: no bump
        after_read = store.generation(key)
        api.truncate(http, 6)
        after_truncate = store.generation(key)
    store.close()
    assert before < after_set == after_read < after_truncate


def test_both_workers_seed_at_startup_but_each_photo_is_stored_once(two_workers: EmulatorProcess) -> None:
    a, b = _connections_to_two_workers(two_workers.base_url)
    with closing(a), closing(b):
        for http in (a, b):
            persons = http.get(f"/emulator/clients/default/spaces/{SEED_SPACE}/persons").json()["persons"]
            assert persons == [{"person_id": 1, "photos": 1}, {"person_id": 2, "photos": 1}]
            assert api.tags(api.recognize(http, SEED_SPACE, BIDEN_OTHER, update_embedding=False)) == ["person2"]


UNKNOWN = [
    fixture("people/rose_leslie/img1.jpg"),
    fixture("people/alex_lacamoire/img1.jpg"),
    fixture("people/anthony_hopkins/Anthony_Hopkins_0001.jpg"),
]


def test_create_new_through_both_workers_at_once(two_workers: EmulatorProcess) -> None:
    """Both workers analyse in parallel (one engine each) and race for the write lock."""
    a, b = _connections_to_two_workers(two_workers.base_url)
    space = 7
    with closing(a), closing(b):
        api.truncate(a, space)
        for photo in UNKNOWN:  # the same unknown face, through both workers at once: one person
            pair = _at_once([(a, photo), (b, photo)], space)
            assert pair[0] == pair[1], f"one face became two persons: {pair}"
        assert [p["photos"] for p in a.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"]] == [
            1
        ] * len(UNKNOWN)
        api.truncate(b, space)
        for first, second in zip(UNKNOWN, UNKNOWN[1:], strict=False):  # two unknown faces at once: two ids
            pair = _at_once([(a, first), (b, second)], space)
            assert pair[0] != pair[1], f"one id was given twice: {pair}"
            api.truncate(a, space)


def _at_once(requests: list[tuple[httpx.Client, bytes]], space: int) -> list[list[str]]:
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[httpx.Client, bytes]) -> list[str]:
        http, photo = request
        barrier.wait(timeout=60)
        return api.tags(api.recognize(http, space, photo, create_new=True))

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def _truncate_status(http: httpx.Client, space: str) -> tuple[int, int | None]:
    """``(HTTP status, envelope status or None)`` of a truncate, whatever the outcome."""
    response = http.post(
        "/api/v1/persons/truncate",
        params={"oauth_token": api.TOKEN, "oauth_provider": "mcs"},
        files=[("meta", (None, f'{{"space":"{space}"}}', "text/plain"))],
    )
    envelope = (
        response.json()["status"] if response.headers.get("content-type", "").startswith("application/json") else None
    )
    return response.status_code, envelope


def test_journal_faults_and_live_settings_are_shared_by_the_workers(two_workers: EmulatorProcess) -> None:
    a, b = _connections_to_two_workers(two_workers.base_url)
    with closing(a), closing(b):
        pid_a, pid_b = _worker_of(a), _worker_of(b)
        start = b.get("/emulator/settings").json()["settings"]
        try:
            # A PATCH through A is in force on the next request served by B.
            changed = a.patch("/emulator/settings", json={"http_status": "mirror", "match_threshold": 0.999})
            assert changed.status_code == 200, changed.text
            assert b.get("/emulator/settings").json()["settings"]["match_threshold"] == 0.999
            assert _truncate_status(b, "x") == (400, 400)  # mirror mode: a bad request is an HTTP 400
            assert a.patch("/emulator/settings", json={"http_status": start["http_status"]}).status_code == 200
            assert _truncate_status(b, "x") == (200, 400)
        finally:
            a.patch("/emulator/settings", json=start)
        assert b.get("/emulator/settings").json()["settings"] == start

        # A rule added through B with times=1 fires once in all, whichever worker serves the requests.
        assert a.delete("/emulator/requests").status_code == 200
        try:
            added = b.post("/emulator/faults", json={"kind": "http_503", "method": "truncate", "times": 1})
            assert added.status_code == 201, added.text
            with ThreadPoolExecutor(2) as pool:  # both workers at once
                runs = pool.map(lambda http: [_truncate_status(http, "8")[0] for _ in range(5)], (a, b))
                statuses = [status for run in runs for status in run]
            assert sorted(statuses) == [200] * 9 + [503]
            (rule,) = a.get("/emulator/faults").json()["faults"]
            assert (rule["matched"], rule["fired"], rule["exhausted"]) == (10, 1, True)
            assert b.delete("/emulator/faults").json() == {"removed": 1}

            # A seeded probability rule gives the one sequence of random.Random(seed), across both workers.
            b.post("/emulator/faults", json={"kind": "http_503", "method": "truncate", "probability": 0.5, "seed": 7})
            statuses = [_truncate_status(http, "8")[0] for _ in range(6) for http in (a, b)]
            draws = random.Random(7)
            assert statuses == [503 if draws.random() < 0.5 else 200 for _ in range(12)]
        finally:
            a.delete("/emulator/faults")

        # The journal, read through either worker, lists the requests served by both, in order.
        listings = [http.get("/emulator/requests", params={"method": "truncate", "space": 8}).json() for http in (a, b)]
        assert listings[0] == listings[1]
        entries = listings[0]["requests"]
        assert len(entries) == 22 and listings[0]["total"] >= 24  # and the two bad requests of space "x"
        assert [e["id"] for e in entries] == sorted({e["id"] for e in entries})
        assert [e["http_status"] for e in entries[10:]] == statuses
        assert [e["faults"] for e in entries[:10]].count([f"http_503#{added.json()['id']}"]) == 1
        assert (_worker_of(a), _worker_of(b)) == (pid_a, pid_b)  # the requests really went to both workers
