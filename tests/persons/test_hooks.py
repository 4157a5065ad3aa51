"""The persons request's hook chain: order, answering early, derived requests, and meta decoded once per request.

The chain's logic is tested with plain hooks and a fake last step; that a real request goes through it (the fault
hook, the journal) is tested with the fake engine in a real server here, and with real dlib in
``tests/control/test_faults.py`` and ``tests/control/test_journal.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import emulator.persons.request as request_model
from emulator.control.faults import PERMANENT_ERROR, FaultHook, FaultInjector, FaultRule
from emulator.control.state import SqliteSharedState
from emulator.ops.observe import RequestRecord
from emulator.persons.errors import BadRequest
from emulator.persons.hooks import Answer, Hook, Next, Success, Verbatim, compose
from emulator.persons.request import Meta, Part, PersonsRequest
from emulator.persons.types import ClientId
from emulator.settings import Settings
from tests.support.emulator_server import EmulatorServer
from tests.support.fake_engine import FakeEngine


def part(name: str, data: bytes) -> Part:
    return Part(name, None, len(data), [data])


def persons_request(meta: bytes | None, **images: bytes) -> PersonsRequest:
    parts = {name: part(name, data) for name, data in images.items()}
    if meta is not None:
        parts["meta"] = part("meta", meta)
    record = RequestRecord(method="set", client="default", started_at=time.time())
    return PersonsRequest.parsed("set", ClientId("default"), parts, Settings.from_sources({}), record)


def run(chain: Next, request: PersonsRequest) -> Answer:
    return asyncio.run(chain(request))


class Tagging:
    """Notes its name on the way in and on the way out."""

    def __init__(self, name: str, trail: list[str]) -> None:
        self.name, self.trail = name, trail

    async def __call__(self, request: PersonsRequest, call_next: Next) -> Answer:
        self.trail.append(f"{self.name}>")
        answer = await call_next(request)
        self.trail.append(f"<{self.name}")
        return answer


def last_step(trail: list[str]) -> Next:
    async def serve(request: PersonsRequest) -> Answer:
        trail.append(f"service skip={sorted(request.skip)}")
        return Success({"objects": [{"name": name} for name in request.meta.image_names() or []]})

    return serve


def test_hooks_run_outermost_first_and_the_service_last() -> None:
    trail: list[str] = []
    hooks: list[Hook] = [Tagging("a", trail), Tagging("b", trail)]
    answer = run(compose(hooks, last_step(trail)), persons_request(b'{"space":"1","images":[{"name":"x"}]}', x=b"1"))
    assert trail == ["a>", "b>", "service skip=[]", "<b", "<a"]
    assert answer == Success({"objects": [{"name": "x"}]})


def test_no_hooks_is_the_service_alone() -> None:
    trail: list[str] = []
    answer = run(compose([], last_step(trail)), persons_request(b'{"space":"1"}'))
    assert trail == ["service skip=[]"] and answer == Success({"objects": []})


def test_a_hook_that_answers_ends_the_chain() -> None:
    trail: list[str] = []

    async def refuse(request: PersonsRequest, call_next: Next) -> Answer:
        return Verbatim(503, b"busy", "text/plain")

    answer = run(compose([Tagging("a", trail), refuse, Tagging("b", trail)], last_step(trail)), persons_request(None))
    assert answer == Verbatim(503, b"busy", "text/plain")
    assert trail == ["a>", "<a"]  # neither the later hook nor the service ran


def test_a_derived_request_reaches_the_service_and_keeps_meta() -> None:
    trail: list[str] = []

    async def leave_out(request: PersonsRequest, call_next: Next) -> Answer:
        return await call_next(request.without(frozenset({"y"})))

    original = persons_request(b'{"space":"1","images":[{"name":"x"},{"name":"y"}]}', x=b"1", y=b"2")
    run(compose([leave_out], last_step(trail)), original)
    assert trail == ["service skip=['y']"]
    assert original.skip == frozenset()
    assert original.without(frozenset({"y"})).meta is original.meta


def test_meta_read_once_gives_journal_json_and_go_decode() -> None:
    request = persons_request(b'{"space":"07","images":[{"name":"x","person_id":3}]}', x=b"1")
    assert request.meta.json == {"space": "07", "images": [{"name": "x", "person_id": 3}]}
    assert request.record.meta == request.meta.json and request.record.space == 7
    assert request.meta.value().images is not None and request.meta.value().images[0].person_id == 3
    assert [(image.name, image.size) for image in request.record.images] == [("x", 1)]


def test_meta_errors_are_kept_and_raised_where_read() -> None:
    bad = persons_request(b'{"space":1}')
    assert isinstance(bad.meta.decoded, BadRequest) and bad.meta.json == {"space": 1}
    with pytest.raises(BadRequest, match="cannot unmarshal number into Go struct field .space of type string"):
        bad.meta.value()
    assert bad.meta.image_names() is None and bad.record.space is None
    missing = persons_request(None)
    assert missing.meta.json is None
    with pytest.raises(BadRequest, match="could not get meta"):
        missing.meta.value()


def test_meta_over_the_part_bound_is_a_400_naming_the_bound() -> None:
    over = Part("meta", None, 5000, [], overflow=True)
    meta = Meta.read(over, 4096)
    assert meta.raw is None and meta.json is None
    with pytest.raises(BadRequest, match="meta is 5000 bytes, the limit is 4096 bytes"):
        meta.value()


def test_image_names_need_a_valid_space() -> None:
    assert persons_request(b'{"space":"1","images":[{"name":"a"},{"name":"b"}]}').meta.image_names() == ["a", "b"]
    assert persons_request(b'{"space":"abc","images":[{"name":"a"}]}').meta.image_names() is None


# --- through a real server (fake engine): one decode of meta per request, with faults and the journal on -----------


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    running = EmulatorServer(tmp_path_factory.mktemp("hooks"), engine=FakeEngine()).start()
    yield running
    running.stop()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes | None]:
    """Every call of the Go-style meta decode (the server runs in a thread of this process)."""
    calls: list[bytes | None] = []
    real = request_model.decode_meta

    def counted(raw: bytes | None) -> Any:
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(request_model, "decode_meta", counted)
    return calls


def test_a_request_decodes_meta_once_with_fault_rules_and_journal(
    fake_server: EmulatorServer, decodes: list[bytes | None]
) -> None:
    fake_server.http.delete("/emulator/requests")
    created = fake_server.http.post("/emulator/faults", json={"kind": "object_temporary", "image": "b", "times": 1})
    assert created.status_code == 201, created.text
    try:
        meta = {"space": "3", "images": [{"name": "a", "person_id": 1}, {"name": "b", "person_id": 2}]}
        body = fake_server.ok("set", meta, [("a", b"FAKE:1"), ("b", b"FAKE:2")])
    finally:
        fake_server.http.delete("/emulator/faults")
    assert [obj["status"] for obj in body["objects"]] == [0, 2]  # the fault hook used meta's names
    assert len(decodes) == 1
    (entry,) = fake_server.http.get("/emulator/requests").json()["requests"]
    assert entry["meta"] == meta and entry["space"] == 3 and entry["objects"] == body["objects"]
    assert entry["faults"] == [f"object_temporary#{created.json()['id']}"]


def test_the_fault_hook_leaves_alone_what_an_outer_hook_left_out(tmp_path: Path) -> None:
    """An outer hook answers for image ``a`` (left out with ``without``); the fault hook faults ``b``; the service
    answers ``c``. Each object comes back in meta's order, from whoever answered it."""
    shared = SqliteSharedState(tmp_path, "run")
    shared.open()
    try:
        faults = FaultInjector(shared)
        faults.add(FaultRule.from_json({"kind": "object_permanent", "image": "b"}))

        async def outer(request: PersonsRequest, call_next: Next) -> Answer:
            answer = await call_next(request.without(frozenset({"a"})))
            assert isinstance(answer, Success)
            return Success({"objects": [{"status": 0, "name": "a", "by": "outer"}, *answer.body["objects"]]})

        async def service(request: PersonsRequest) -> Answer:
            names = [name for name in request.meta.image_names() or [] if name not in request.skip]
            return Success({"objects": [{"status": 0, "name": name, "by": "service"} for name in names]})

        meta = b'{"space":"1","images":[{"name":"a"},{"name":"b"},{"name":"c"}]}'
        answer = run(compose([outer, FaultHook(faults)], service), persons_request(meta, a=b"1", b=b"2", c=b"3"))
    finally:
        shared.close()
    assert isinstance(answer, Success)
    assert [(o["name"], o.get("by", o.get("error"))) for o in answer.body["objects"]] == [
        ("a", "outer"),
        ("b", PERMANENT_ERROR),
        ("c", "service"),
    ]
