"""Compare mode's shadow half with the fake engine, no server: the request runs in the shadow namespace (the user's
own spaces untouched), and the comparison with the upstream's answer finds the planted differences only.

The "upstream" here is a second runtime of the emulator (fake engine, its own store) with another match threshold;
the end-to-end test through real servers and dlib is ``test_compare_live.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from emulator.api import envelope
from emulator.api.routes import _handlers
from emulator.control import admin
from emulator.ops.observe import RequestRecord
from emulator.persons.errors import RequestError
from emulator.persons.hooks import Answer, Next, Success, Verbatim, compose
from emulator.persons.request import Part, PersonsRequest
from emulator.persons.types import ClientId, SpaceKey
from emulator.runtime import Runtime
from emulator.store.sqlite import SqliteStore
from emulator.upstream.diff import WireAnswer
from emulator.upstream.report import CompareReport
from emulator.upstream.shadow import ShadowCompare, shadow_client
from tests.support.domain import domain_settings, fake
from tests.support.fake_engine import FakeEngine

CLIENT = ClientId("default")


def started(data_dir: Path, threshold: float) -> Runtime:
    settings = domain_settings(data_dir).replace(match_threshold=threshold)
    runtime = Runtime(settings, FakeEngine(), SqliteStore(data_dir))
    runtime.start()
    return runtime


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Runtime, Runtime]]:
    """(the upstream, the emulator in compare mode): thresholds 0.5 and 0.8."""
    upstream, emulator = started(tmp_path / "up", 0.5), started(tmp_path / "em", 0.8)
    yield upstream, emulator
    upstream.stop()
    emulator.stop()


def chain_end(runtime: Runtime) -> Next:
    """The service call that ends the chain (no hooks)."""
    handlers = _handlers(runtime)

    async def serve(request: PersonsRequest) -> Answer:
        return Success(handlers[request.method](request))

    return serve


def request(runtime: Runtime, method: str, meta: dict[str, object], **images: bytes) -> PersonsRequest:
    parts = {name: Part(name, None, len(data), [data]) for name, data in images.items()}
    raw = json.dumps(meta).encode()
    parts["meta"] = Part("meta", None, len(raw), [raw])
    record = RequestRecord(method=method, client=CLIENT, started_at=time.time())
    return PersonsRequest.parsed(method, CLIENT, parts, runtime.settings, record)


def upstream_answer(upstream: Runtime, req: PersonsRequest) -> WireAnswer:
    try:
        body = _handlers(upstream)[req.method](req)
    except RequestError as exc:
        return WireAnswer(200, envelope.error(exc.status, exc.message))
    return WireAnswer(200, envelope.success(body))


def test_shadow_namespace_and_planted_tag_difference(sides: tuple[Runtime, Runtime]) -> None:
    upstream, emulator = sides
    report = CompareReport()
    compare_hook = ShadowCompare(report)

    def both(method: str, meta: dict[str, object], **images: bytes) -> None:
        req = request(emulator, method, meta, **images)
        asyncio.run(compare_hook.compare(req, upstream_answer(upstream, req), chain_end(emulator)))

    both("set", {"space": "1", "images": [{"name": "a", "person_id": 3}]}, a=fake(11))
    both("recognize", {"space": "1", "images": [{"name": "q"}]}, q=fake(11, 99))  # person3 and an unknown face
    both("recognize", {"space": "1", "images": [{"name": "q"}], "update_embedding": False}, q=fake("11~0.6"))
    both("recognize", {"space": "1", "images": [{"name": "q"}], "create_new": True}, q=fake(50))
    both("recognize", {"space": "1", "images": [{"name": "q"}], "update_embedding": False}, q=fake(50))
    both("set", {"space": "1", "images": [{"name": "a", "person_id": 0}]}, a=fake(12))  # 400 on both sides

    entries = report.entries()
    assert [e.identical for e in entries] == [True, True, False, True, True, True]
    # Similarity 0.6: a match at the upstream's threshold 0.5, not at the emulator's 0.8.
    assert [(d["kind"], d["upstream"], d["emulator"]) for d in entries[2].differences] == [
        ("tag", "person3", "undefined")
    ]
    summary = report.to_json()["summary"]
    assert summary["requests"] == 6 and summary["with_diffs"] == 1 and summary["status_mismatches"] == 0
    assert summary["mean_iou"] == 1.0 and summary["faces_only_upstream"] == summary["faces_only_emulator"] == 0
    # The user's space in the comparing emulator is untouched; the shadow space holds what the upstream holds.
    emulator_store, upstream_store = emulator.store, upstream.store
    assert admin.persons(emulator_store, SpaceKey(CLIENT, 1)) == []
    shadow = admin.persons(emulator_store, SpaceKey(shadow_client(CLIENT), 1))
    assert shadow == admin.persons(upstream_store, SpaceKey(CLIENT, 1)) and len(shadow) == 2
    assert report.clear() == 6 and report.to_json()["summary"]["requests"] == 0


def test_the_seam_runs_the_chain_after_the_hook_it_wraps(sides: tuple[Runtime, Runtime]) -> None:
    """The upstream hook hands the seam the request and the upstream's answer only; ``around`` keeps the rest of
    the chain for it. Without ``around`` nothing is compared (and the client's answer is not disturbed)."""
    upstream, emulator = sides
    report = CompareReport()
    seam = ShadowCompare(report)

    class Forwarding:
        """Like the upstream hook in compare mode: the upstream's bytes for the client, the seam called first."""

        async def __call__(self, request: PersonsRequest, call_next: Next) -> Answer:
            answer = upstream_answer(upstream, request)
            await seam(request, SimpleNamespace(status=answer.http_status, body=answer.content))
            return Verbatim(status=answer.http_status, content=answer.content)

    req = request(emulator, "set", {"space": "2", "images": [{"name": "a", "person_id": 5}]}, a=fake(21))
    answer = asyncio.run(compose([seam.around(Forwarding())], chain_end(emulator))(req))
    assert isinstance(answer, Verbatim) and json.loads(answer.content)["body"]["objects"][0]["status"] == 0
    assert [e.identical for e in report.entries()] == [True]
    assert admin.persons(emulator.store, SpaceKey(shadow_client(CLIENT), 2)) == [{"person_id": 5, "photos": 1}]
    asyncio.run(compose([Forwarding()], chain_end(emulator))(req))
    assert len(report.entries()) == 1


def test_ids_the_upstream_created_are_translated_for_the_shadow_space(sides: tuple[Runtime, Runtime]) -> None:
    """The upstream's space holds person 5 already, so its create_new gives person6 where the shadow space's gives
    person1: a later set and delete of person 6 reach person 1 in the shadow space, and every answer agrees."""
    upstream, emulator = sides
    report = CompareReport()
    compare_hook = ShadowCompare(report)
    seed = request(upstream, "set", {"space": "1", "images": [{"name": "a", "person_id": 5}]}, a=fake(70))
    _handlers(upstream)["set"](seed)

    def both(method: str, meta: dict[str, object], **images: bytes) -> None:
        req = request(emulator, method, meta, **images)
        asyncio.run(compare_hook.compare(req, upstream_answer(upstream, req), chain_end(emulator)))

    q = {"space": "1", "images": [{"name": "q"}]}
    both("recognize", {**q, "create_new": True}, q=fake(80))
    both("set", {"space": "1", "images": [{"name": "a", "person_id": 6}]}, a=fake("80~0.99"))
    assert admin.persons(emulator.store, SpaceKey(shadow_client(CLIENT), 1)) == [{"person_id": 1, "photos": 2}]
    both("recognize", {**q, "update_embedding": False}, q=fake(80))
    both("delete", {"space": "1", "images": [{"name": "d", "person_id": 6}]})
    assert admin.persons(emulator.store, SpaceKey(shadow_client(CLIENT), 1)) == []
    both("recognize", {**q, "update_embedding": False}, q=fake(80))
    entries = report.entries()
    assert [e.identical for e in entries] == [True] * 5, [e.differences for e in entries]
    assert [(p.upstream_tag, p.emulator_tag) for e in entries for p in e.faces] == [
        ("person6", "person1"),
        ("person6", "person1"),
        ("undefined", "undefined"),
    ]
