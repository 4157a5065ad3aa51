"""Many concurrent persons requests on one space, checked against a sequential model.

Every set carries a photo made unique by trailing bytes (decoders ignore them, so the face is
the same), so each stored face can be traced to the one request that stored it. The final
state must be one that some order of the requests could give, where each request takes effect
between its sending and its answer (a linearization), and create_new never hands out an id twice.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import persons_client as api
from tests.support.backends import BOTH_BACKENDS
from tests.support.emulator_server import EmulatorServer, fixture

pytestmark = BOTH_BACKENDS

THREADS = 8
OPERATIONS = 64
IDENTITY_PHOTOS = {  # person id -> a photo of its identity (small photos of distinct people)
    1: "people/angelina_jolie/aligned-160.png",
    2: "people/bradley_cooper/aligned-160.png",
    3: "people/kate_siegel/aligned-160.png",
    4: "people/paul_rudd/aligned-160.png",
    5: "people/shea_whigham/aligned-160.png",
    6: "people/tom_hanks/Tom_Hanks_54745.png",
}
IDENTITIES = {person_id: fixture(path) for person_id, path in IDENTITY_PHOTOS.items()}
UNKNOWN = [  # faces of nobody in the space, for create_new
    fixture("people/obama/obama_small.jpg"),
    fixture("people/alex_lacamoire/alex-lacamoire.png"),
    fixture("people/rose_leslie/img2.jpg"),
    fixture("people/kit_harington/john1.jpeg"),
]


@dataclass
class Op:
    kind: str  # set | delete | truncate | recognize
    person_id: int = 0
    photo: bytes = b""
    start: float = 0.0
    end: float = 0.0
    result: Any = None


@dataclass
class Run:
    space: int
    base_url: str
    ops: list[Op] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)

    def http(self) -> httpx.Client:
        client = getattr(self.local, "http", None)
        if client is None:
            client = self.local.http = httpx.Client(base_url=self.base_url, timeout=120)
        return client

    def execute(self, op: Op) -> Op:
        http = self.http()
        op.start = time.monotonic()
        if op.kind == "set":
            op.result = api.set_photos(http, self.space, op.person_id, [op.photo])
            assert op.result[0]["status"] == 0, op.result
        elif op.kind == "delete":
            api.delete(http, self.space, [op.person_id])
        elif op.kind == "truncate":
            api.truncate(http, self.space)
        else:
            op.result = api.recognize(http, self.space, op.photo, update_embedding=False)
        op.end = time.monotonic()
        return op


def _mixed_operations(rng: random.Random) -> list[Op]:
    ops = []
    for number in range(OPERATIONS):
        person_id = rng.choice(list(IDENTITIES))
        roll = rng.random()
        if roll < 0.45:  # a unique copy of the identity's photo: the same face, its own sha256
            ops.append(Op("set", person_id, IDENTITIES[person_id] + b"\x00op%d" % number))
        elif roll < 0.65:
            ops.append(Op("delete", person_id))
        elif roll < 0.72 and number < OPERATIONS // 2:  # late truncates would leave little to check
            ops.append(Op("truncate"))
        else:
            ops.append(Op("recognize", person_id, IDENTITIES[person_id]))
    return ops


def _removes(op: Op, person_id: int) -> bool:
    return op.kind == "truncate" or (op.kind == "delete" and op.person_id == person_id)


def _check_against_model(ops: list[Op], stored: dict[int, list[tuple[int, str]]], sha: Callable[[bytes], str]) -> None:
    """``stored``: person id -> [(face_id, sha256)] after the run."""
    sets = [op for op in ops if op.kind == "set"]
    by_sha = {sha(op.photo): op for op in sets}
    surviving: dict[int, Op] = {}
    for person_id, faces in stored.items():
        for face_id, digest in faces:
            op = by_sha.get(digest)
            assert op is not None, f"face {face_id} of person {person_id} comes from no acknowledged set"
            assert op.person_id == person_id, "a face landed on another person"
            surviving[face_id] = op
    kept = set(map(id, surviving.values()))
    for op in sets:
        removals = [r for r in ops if _removes(r, op.person_id)]
        if id(op) in kept:
            # No removal of this person may certainly come after the set.
            late = [r for r in removals if r.start > op.end]
            assert not late, f"a set of person {op.person_id} survived a {late[0].kind} sent after its answer"
        else:
            # Something that may come after the set must have removed it.
            assert any(r.end > op.start for r in removals), f"an acknowledged set of person {op.person_id} was lost"
    # Commit order (face ids grow with it) agrees with real-time order of the surviving sets.
    ordered = sorted(surviving.items())
    for (_, earlier), (_, later) in zip(ordered, ordered[1:], strict=False):
        assert not later.end < earlier.start, "face ids contradict the order the requests were answered in"


def _check_recognitions(ops: list[Op]) -> None:
    for op in ops:
        if op.kind != "recognize":
            continue
        tags = api.tags(op.result)
        assert tags in (["undefined"], [f"person{op.person_id}"]), (op.person_id, tags)
        # Certainly present: a set answered before this request was sent, and no removal could fall between.
        for s in ops:
            answered_before = s.kind == "set" and s.person_id == op.person_id and s.end < op.start
            if answered_before and not any(
                _removes(r, op.person_id) and r.end > s.start and r.start < op.end for r in ops
            ):
                assert tags == [f"person{op.person_id}"], "a person certainly present was not recognized"
        # Certainly absent: a removal answered before this request was sent, and no set could fall between.
        for r in ops:
            removed_before = _removes(r, op.person_id) and r.end < op.start
            if removed_before and not any(
                s.kind == "set" and s.person_id == op.person_id and s.end > r.start and s.start < op.end for s in ops
            ):
                assert tags == ["undefined"], "a person certainly removed was still recognized"


def _stored(server: EmulatorServer, space: int) -> dict[int, list[tuple[int, str]]]:
    persons = server.http.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"]
    stored = {}
    for person in persons:
        detail = server.http.get(f"/emulator/clients/default/spaces/{space}/persons/{person['person_id']}").json()
        stored[person["person_id"]] = [(p["face_id"], p["sha256"]) for p in detail["photos"]]
    return stored


def test_mixed_concurrent_requests_match_a_sequential_model(server: EmulatorServer, space: int) -> None:
    ops = _mixed_operations(random.Random(7))
    run = Run(space, server.base_url)
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(run.execute, ops))
    assert len(done) == OPERATIONS
    _check_against_model(done, _stored(server, space), lambda data: hashlib.sha256(data).hexdigest())
    _check_recognitions(done)
    # And the index every request used agrees with the store: each stored person is recognized.
    for person_id in _stored(server, space):
        assert server.tags(space, IDENTITY_PHOTOS[person_id], update_embedding=False) == [f"person{person_id}"]


def test_concurrent_create_new_never_hands_out_an_id_twice(server: EmulatorServer, space: int) -> None:
    for person_id in (1, 2):
        server.ok(
            "set",
            {"space": str(space), "images": [{"name": "f", "person_id": person_id}]},
            [("f", IDENTITIES[person_id])],
        )
    # Distinct unknown faces, one of them twice, plus reads and sets of known persons, all released at once.
    requests: list[tuple[str, bytes]] = [("new", photo) for photo in UNKNOWN] + [("new", UNKNOWN[0])]
    requests += [("read", IDENTITIES[1]), ("read", IDENTITIES[2]), ("set2", IDENTITIES[2] + b"\x00again")]
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, bytes]) -> list[str]:
        kind, photo = request
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            barrier.wait(timeout=60)
            if kind == "set2":
                api.set_photos(http, space, 2, [photo])
                return []
            return api.tags(api.recognize(http, space, photo, create_new=kind == "new", update_embedding=False))

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, requests))

    new_tags = [tags[0] for tags in answers[: len(UNKNOWN)]]
    assert len(set(new_tags)) == len(UNKNOWN), f"an id was given twice: {new_tags}"
    assert sorted(new_tags) == sorted(f"person{n}" for n in range(3, 3 + len(UNKNOWN)))
    assert answers[len(UNKNOWN)] == [new_tags[0]], "the same face sent twice at once became two persons"
    assert answers[len(UNKNOWN) + 1 : len(UNKNOWN) + 3] == [["person1"], ["person2"]]
    persons = server.http.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"]
    assert persons == [{"person_id": 1, "photos": 1}, {"person_id": 2, "photos": 2}] + [
        {"person_id": n, "photos": 1} for n in range(3, 3 + len(UNKNOWN))
    ]
