"""Replicas on one PostgreSQL database act as one service.

Two ``serve`` processes with separate data dirs, each on its own port, stand in for two machines; a PostgreSQL
server of this module's own (the tests kill replicas and restart it) holds everything. Checked: read-your-writes
across replicas, ``create_new`` raced through both, a fault rule and a live setting set through one and obeyed by
the other, an OAuth token of one accepted by the other, ``kill -9`` of a replica in the middle of writes, and a
PostgreSQL restart in the middle of a bounded load from 8 clients.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.persons.errors import INTERNAL_ERROR
from tests.support import persons_client as api
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.slow  # real server processes

TIMEOUT = 3.0  # database_timeout of the replicas
REPLICA_SETTINGS = {
    "clients": f"default={api.TOKEN}",
    "oauth_clients": "shop=shop-id:shop-secret",
    "database_timeout": TIMEOUT,
}
PAIRS = {  # person id -> (photo to set, another photo to recognize)
    1: ("people/obama/obama.jpg", "people/obama/obama2.jpg"),
    2: ("people/biden/biden.jpg", "people/biden/biden2.jpg"),
    3: ("people/kit_harington/john1.jpeg", "people/kit_harington/john2.jpeg"),
    4: ("people/rose_leslie/img1.jpg", "people/rose_leslie/img2.jpg"),
}
STRANGERS = [  # eight people, one face each, for create_new
    "people/obama/obama_small.jpg",
    "people/alex_lacamoire/alex-lacamoire.png",
    "people/rose_leslie/img2.jpg",
    "people/kit_harington/john1.jpeg",
    "people/biden/biden.jpg",
    "people/ivan/ivan.jpg",
    "people/anthony_hopkins/Anthony_Hopkins_0001.jpg",
    "people/tom_hanks/Tom_Hanks_54745.png",
]
IDENTITIES = [  # small photos of distinct people, for the writes under load and the kill
    fixture("people/angelina_jolie/aligned-160.png"),
    fixture("people/kate_siegel/aligned-160.png"),
    fixture("people/paul_rudd/aligned-160.png"),
    fixture("people/shea_whigham/aligned-160.png"),
    fixture("people/bradley_cooper/aligned-160.png"),
    fixture("people/tom_hanks/Tom_Hanks_54745.png"),
]


@pytest.fixture(scope="module")
def database(cluster: PostgresCluster) -> str:
    return cluster.create_database()


def _replica(root: Path, database: str) -> EmulatorProcess:
    return EmulatorProcess(root / "data", database_url=database, **REPLICA_SETTINGS)


@pytest.fixture(scope="module")
def replicas(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, ...]]:
    """Two replicas, started at once (their migrations race, under the advisory lock)."""
    pair = (_replica(tmp_path_factory.mktemp("a"), database), _replica(tmp_path_factory.mktemp("b"), database))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(EmulatorProcess.start, pair))
        yield pair
    finally:
        for replica in pair:
            replica.stop()


def _http(replica: EmulatorProcess) -> httpx.Client:
    return httpx.Client(base_url=replica.base_url, timeout=60)


def test_a_write_through_one_replica_is_seen_by_the_next_request_to_the_other(
    replicas: tuple[EmulatorProcess, ...],
) -> None:
    space = 0
    with _http(replicas[0]) as a, _http(replicas[1]) as b:
        api.truncate(a, space)
        for person_id, (photo, probe) in PAIRS.items():
            writer, reader = (a, b) if person_id % 2 else (b, a)
            assert api.set_photos(writer, space, person_id, [fixture(photo)])[0]["status"] == 0
            found = api.recognize(reader, space, fixture(probe), update_embedding=False)
            assert api.tags(found) == [f"person{person_id}"]
        api.delete(b, space, [1])
        assert api.tags(api.recognize(a, space, fixture(PAIRS[1][1]), update_embedding=False)) == ["undefined"]
        assert api.tags(api.recognize(a, space, fixture(PAIRS[2][1]), update_embedding=False)) == ["person2"]
        api.truncate(a, space)
        assert api.tags(api.recognize(b, space, fixture(PAIRS[2][1]), update_embedding=False)) == ["undefined"]


def test_create_new_raced_through_both_replicas_hands_out_each_id_once(
    replicas: tuple[EmulatorProcess, ...],
) -> None:
    space = 1
    with _http(replicas[0]) as a:
        api.truncate(a, space)
        api.set_photos(a, space, 1, [fixture("people/bradley_cooper/aligned-160.png")])  # new ids start at 2
    barrier = threading.Barrier(len(STRANGERS))

    def create(index: int) -> str:
        with _http(replicas[index % 2]) as http:
            photo = fixture(STRANGERS[index])
            barrier.wait(timeout=60)
            tags = api.tags(api.recognize(http, space, photo, create_new=True, update_embedding=False))
            assert len(tags) == 1, tags
            return tags[0]

    with ThreadPoolExecutor(len(STRANGERS)) as pool:
        created = list(pool.map(create, range(len(STRANGERS))))
    assert sorted(int(tag.removeprefix("person")) for tag in created) == list(range(2, 2 + len(STRANGERS)))
    for index, tag in enumerate(created):  # and each one is that face, on the other replica
        with _http(replicas[(index + 1) % 2]) as http:
            found = api.recognize(http, space, fixture(STRANGERS[index]), update_embedding=False)
            assert api.tags(found) == [tag]


def test_a_fault_rule_and_a_live_setting_set_through_one_replica_hold_on_the_other(
    replicas: tuple[EmulatorProcess, ...],
) -> None:
    a, b = (_http(replica) for replica in replicas)
    with a, b:
        params = {"oauth_token": api.TOKEN, "oauth_provider": "mcs"}

        def truncate(http: httpx.Client, space: str = "5") -> httpx.Response:
            return http.post(
                "/api/v1/persons/truncate", params=params, files={"meta": (None, f'{{"space":"{space}"}}')}
            )

        rule = a.post("/emulator/faults", json={"kind": "http_503", "method": "truncate", "times": 1})
        assert rule.status_code == 201
        assert truncate(b).status_code == 503
        assert truncate(a).json()["status"] == 200  # times=1 counts across replicas: it fired once in all
        (listed,) = b.get("/emulator/faults").json()["faults"]
        assert (listed["fired"], listed["exhausted"]) == (1, True)
        assert a.delete("/emulator/faults").status_code == 200

        assert a.patch("/emulator/settings", json={"http_status": "mirror"}).status_code == 200
        assert b.get("/emulator/settings").json()["settings"]["http_status"] == "mirror"
        assert truncate(b, space="x").status_code == 400  # the envelope's status is the HTTP status now
        assert b.patch("/emulator/settings", json={"http_status": "always-200"}).status_code == 200
        assert truncate(a, space="x").status_code == 200


def test_an_oauth_token_from_one_replica_is_accepted_by_the_other(replicas: tuple[EmulatorProcess, ...]) -> None:
    a, b = (_http(replica) for replica in replicas)
    with a, b:
        got = a.post(
            "/auth/oauth/v1/token",
            json={"client_id": "shop-id", "client_secret": "shop-secret", "grant_type": "client_credentials"},
        )
        assert got.status_code == 200, got.text
        tokens = got.json()

        def truncate(http: httpx.Client, token: str) -> Any:
            params = {"oauth_token": token, "oauth_provider": "mcs"}
            return http.post("/api/v1/persons/truncate", params=params, files={"meta": (None, '{"space":"0"}')}).json()

        assert truncate(b, tokens["access_token"])["status"] == 200
        assert truncate(b, tokens["access_token"][:-2] + "xx")["status"] == 403  # a forged signature is not
        refreshed = b.post(
            "/auth/oauth/v1/token",
            data={"client_id": "shop-id", "refresh_token": tokens["refresh_token"], "grant_type": "refresh_token"},
        )
        assert refreshed.status_code == 200, refreshed.text
        assert truncate(a, refreshed.json()["access_token"])["status"] == 200


def test_a_replica_killed_mid_write_loses_no_acknowledged_set(
    replicas: tuple[EmulatorProcess, ...], database: str, tmp_path: Path
) -> None:
    """Three threads send sets (two photos of a new person each) to a third replica, which is killed with
    ``kill -9`` at a random moment; the surviving replicas hold every acknowledged set, and each unanswered one
    whole or not at all."""
    space, threads_n, acks_before_kill = 2, 3, 10
    with _http(replicas[0]) as a:
        api.truncate(a, space)
    victim = _replica(tmp_path, database).start()
    lock = threading.Lock()
    acknowledged: list[int] = []
    unanswered: list[int] = []
    enough = threading.Event()
    numbers = iter(range(1, 10**6))

    def photos_of(person_id: int) -> list[bytes]:
        return [IDENTITIES[person_id % len(IDENTITIES)], IDENTITIES[(person_id + 1) % len(IDENTITIES)]]

    def burst() -> None:
        with _http(victim) as http:
            while True:
                with lock:
                    person_id = next(numbers)
                try:
                    objects = api.set_photos(http, space, person_id, photos_of(person_id))
                except httpx.TransportError:  # the replica died with this request in flight
                    with lock:
                        unanswered.append(person_id)
                    return
                assert [o["status"] for o in objects] == [0, 0], objects
                with lock:
                    acknowledged.append(person_id)
                    if len(acknowledged) >= acks_before_kill:
                        enough.set()

    threads = [threading.Thread(target=burst, daemon=True) for _ in range(threads_n)]
    try:
        for thread in threads:
            thread.start()
        assert enough.wait(timeout=120), victim.log()
        time.sleep(random.Random(20260512).uniform(0.0, 0.4))  # somewhere inside a request
        victim.kill9()
        for thread in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
    finally:
        victim.stop()
    assert unanswered, "the kill should have caught requests in flight"
    with _http(replicas[1]) as b:
        listed = b.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"]
        counts = {p["person_id"]: p["photos"] for p in listed}
        for person_id in acknowledged:
            assert counts.get(person_id) == 2, (person_id, counts)
        for person_id in unanswered:
            assert counts.get(person_id, 0) in (0, 2), (person_id, counts)  # all or nothing
        assert set(counts) <= set(acknowledged) | set(unanswered)
        for index, photo in enumerate(IDENTITIES):  # and recognized through the other replica
            person = api.recognize(b, space, photo, update_embedding=False)["persons"][0]
            expected = {f"person{p}" for p in acknowledged if index in (p % len(IDENTITIES), (p + 1) % len(IDENTITIES))}
            assert expected <= {person["tag"], *person.get("aliases", [])}


# --- a PostgreSQL restart under load -----------------------------------------------------------------------------

CLIENTS = 8
REQUESTS_PER_CLIENT = 14
LOAD_SECONDS = 120.0  # the load stops by itself after this long, whatever is left
LOAD_SPACES = range(3, 10)


@dataclass
class Outcome:
    replica: int
    method: str
    started: float
    seconds: float
    http_status: int | None = None  # None: a transport error
    envelope: dict[str, Any] | None = None


@dataclass
class Load:
    replicas: tuple[EmulatorProcess, ...]
    outcomes: list[Outcome] = field(default_factory=list)
    acknowledged: list[tuple[int, int, int]] = field(default_factory=list)  # (space, person id, identity)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, number: int, deadline: float) -> None:
        rng = random.Random(number)
        space = LOAD_SPACES[number % len(LOAD_SPACES)]
        https = [_http(replica) for replica in self.replicas]
        try:
            for step in range(REQUESTS_PER_CLIENT):
                if time.monotonic() > deadline:
                    return
                which = (number + step) % len(https)
                identity = rng.randrange(len(IDENTITIES))
                if rng.random() < 0.6:
                    person_id = number * 1000 + step + 1
                    photo = IDENTITIES[identity] + b"\x00load%d" % person_id  # its own bytes: analysed afresh
                    meta = {"space": str(space), "images": [{"name": "f", "person_id": person_id}]}
                    outcome = self._send(https[which], which, "set", meta, photo)
                    body = (outcome.envelope or {}).get("body")
                    if outcome.envelope and outcome.envelope["status"] == 200 and body["objects"][0]["status"] == 0:
                        with self.lock:
                            self.acknowledged.append((space, person_id, identity))
                else:
                    meta = {"space": str(space), "images": [{"name": "f"}], "update_embedding": False}
                    self._send(https[which], which, "recognize", meta, IDENTITIES[identity])
        finally:
            for http in https:
                http.close()

    def _send(self, http: httpx.Client, which: int, method: str, meta: dict[str, Any], photo: bytes) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(which, method, started, 0.0)
        try:
            response = http.post(
                f"/api/v1/persons/{method}",
                params={"oauth_token": api.TOKEN, "oauth_provider": "mcs"},
                files=[("f", ("f.png", photo, "image/png")), ("meta", (None, json.dumps(meta), "text/plain"))],
            )
            outcome.http_status = response.status_code
            outcome.envelope = response.json() if response.status_code == 200 else None
        except httpx.TransportError:
            pass
        outcome.seconds = time.monotonic() - started
        with self.lock:
            self.outcomes.append(outcome)
        return outcome


def test_a_postgres_restart_under_load_loses_nothing_and_needs_no_emulator_restart(
    replicas: tuple[EmulatorProcess, ...], cluster: PostgresCluster
) -> None:
    with _http(replicas[0]) as a:
        for space in LOAD_SPACES:
            api.truncate(a, space)
    pids = [replica.process.pid for replica in replicas if replica.process is not None]
    load = Load(replicas)
    deadline = time.monotonic() + LOAD_SECONDS
    threads = [threading.Thread(target=load.client, args=(n, deadline), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    while len(load.outcomes) < CLIENTS * REQUESTS_PER_CLIENT // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    restart_began = time.monotonic()
    cluster.restart("fast")  # every connection of both replicas is cut
    restart_ended = time.monotonic()
    for thread in threads:
        thread.join(timeout=LOAD_SECONDS + 60)
        assert not thread.is_alive()

    outcomes = load.outcomes
    transport = [o for o in outcomes if o.http_status is None]
    not_200 = [o for o in outcomes if o.http_status not in (None, 200)]
    assert not transport and not not_200, (transport[:3], not_200[:3])
    errors = [o for o in outcomes if o.envelope is not None and o.envelope["status"] != 200]
    assert all((o.envelope["status"], o.envelope["body"]) == (500, INTERNAL_ERROR) for o in errors), errors[:3]
    for failed in errors:  # only requests in flight around the restart
        assert failed.started + failed.seconds >= restart_began, failed
        assert failed.started <= restart_ended + 2 * TIMEOUT, failed
    assert max(o.seconds for o in outcomes) < 2 * TIMEOUT + 30  # no request hung (30 s: analysis on busy cores)
    after = [o for o in outcomes if o.started > restart_ended]
    assert any(o.envelope and o.envelope["status"] == 200 for o in after), "no request succeeded after the restart"

    # The same processes serve; every acknowledged set is recognized, through either replica.
    assert [replica.process.pid for replica in replicas if replica.process is not None] == pids
    assert all(replica.process is not None and replica.process.poll() is None for replica in replicas)
    with _http(replicas[0]) as a, _http(replicas[1]) as b:
        for space in LOAD_SPACES:
            for identity, photo in enumerate(IDENTITIES):
                expected = {f"person{p}" for s, p, i in load.acknowledged if s == space and i == identity}
                if not expected:
                    continue
                found = api.recognize((a, b)[identity % 2], space, photo, update_embedding=False)["persons"][0]
                assert expected <= {found["tag"], *found.get("aliases", [])}, (space, identity)
    print(
        f"restart under load: {len(outcomes)} requests, {len(load.acknowledged)} acknowledged sets, "
        f"{len(errors)} internal-error envelopes, restart took {restart_ended - restart_began:.1f} s, "
        f"slowest request {max(o.seconds for o in outcomes):.1f} s"
    )
