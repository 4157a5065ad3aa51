"""Fault injection: for each kind, a retrying client sees the fault and then succeeds; nothing faulted is stored.

The rules and their counters live in the shared state, SQLite's or PostgreSQL's: the tests that count, draw or store
run on both (``@BOTH_BACKENDS``); how a fault is rendered and which rules are refused, on SQLite."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.control.faults import SPEC_FIELDS, FaultInjector, FaultRule
from emulator.control.state import SharedState, SqliteSharedState
from emulator.control.state_postgres import PostgresSharedState
from emulator.face.engine import DlibEngine
from emulator.settings import Settings
from emulator.store.postgres import Database
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_server import EmulatorServer, fixture

OBAMA = "people/obama/obama.jpg"
OBAMA_OTHER = "people/obama/obama2.jpg"
BIDEN = "people/biden/biden.jpg"


@pytest.fixture(scope="module")
def fault_server(
    engine: DlibEngine, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorServer]:
    running = EmulatorServer(tmp_path_factory.mktemp("faults"), engine=engine, **backend.settings()).start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def no_faults(fault_server: EmulatorServer) -> Iterator[None]:
    fault_server.http.delete("/emulator/faults")
    yield
    fault_server.http.delete("/emulator/faults")


def add_fault(server: EmulatorServer, **rule: Any) -> dict[str, Any]:
    response = server.http.post("/emulator/faults", json=rule)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@dataclass
class RetryingClient:
    """What a careful integration would do: retry a request on a dropped connection, a timeout, an HTTP 5xx,
    an envelope 500, or an object with a non-zero status; give up after ``attempts``."""

    base_url: str
    timeout: float = 30.0
    attempts: int = 4
    seen: list[str] = field(default_factory=list)

    def post(self, method: str, meta: dict[str, Any], files: list[tuple[str, bytes]]) -> dict[str, Any]:
        for _ in range(self.attempts):
            parts = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files]
            parts.append(("meta", (None, json.dumps(meta).encode(), "text/plain")))
            try:
                with httpx.Client(base_url=self.base_url, timeout=self.timeout) as http:
                    response = http.post(
                        f"/api/v1/persons/{method}", params={"oauth_token": "t", "oauth_provider": "mcs"}, files=parts
                    )
            except httpx.TimeoutException:
                self.seen.append("timeout")
                continue
            except httpx.TransportError:
                self.seen.append("dropped")
                continue
            if response.status_code != 200:
                self.seen.append(f"http {response.status_code}")
                continue
            payload = response.json()
            if payload["status"] != 200:
                self.seen.append(f"envelope {payload['status']}")
                continue
            statuses = [obj["status"] for obj in payload["body"].get("objects", [])]
            if any(statuses):
                self.seen.append("objects " + ",".join(map(str, statuses)))
                continue
            self.seen.append("ok")
            body: dict[str, Any] = payload["body"]
            return body
        raise AssertionError(f"gave up after {self.attempts} attempts: {self.seen}")


def tags(server: EmulatorServer, space: int, photo: str) -> list[str]:
    return server.tags(space, photo, update_embedding=False)


@BOTH_BACKENDS
@pytest.mark.parametrize(
    ("rule", "seen"),
    [
        ({"kind": "object_temporary"}, "objects 2"),
        ({"kind": "object_permanent"}, "objects 1"),
        ({"kind": "envelope_500"}, "envelope 500"),
        ({"kind": "http_502"}, "http 502"),
        ({"kind": "http_503", "body": "empty"}, "http 503"),
        ({"kind": "http_504"}, "http 504"),
        ({"kind": "drop"}, "dropped"),
    ],
)
def test_retrying_client_sees_each_fault_once_then_succeeds(
    fault_server: EmulatorServer, space: int, rule: dict[str, Any], seen: str
) -> None:
    add_fault(fault_server, method="set", times=1, **rule)
    client = RetryingClient(fault_server.base_url)
    meta = {"space": str(space), "images": [{"name": "photo", "person_id": 5}]}
    body = client.post("set", meta, [("photo", fixture(OBAMA))])
    assert client.seen == [seen, "ok"]
    assert body == {"objects": [{"status": 0, "name": "photo"}]}
    assert tags(fault_server, space, OBAMA_OTHER) == ["person5"]
    listed = fault_server.http.get("/emulator/faults").json()["faults"]
    assert [(r["fired"], r["exhausted"]) for r in listed] == [(1, True)]


def test_gateway_bodies(fault_server: EmulatorServer) -> None:
    add_fault(fault_server, kind="http_504", method="truncate", times=1)
    add_fault(fault_server, kind="http_502", method="truncate", times=1, body="empty")
    first = fault_server.call("truncate", {"space": "0"})
    assert first.status_code == 504
    assert first.headers["content-type"].startswith("text/html")
    assert "<title>504 Gateway Time-out</title>" in first.text
    second = fault_server.call("truncate", {"space": "0"})
    assert (second.status_code, second.content) == (502, b"")
    assert fault_server.call("truncate", {"space": "0"}).json()["status"] == 200


def test_envelope_500_shape(fault_server: EmulatorServer) -> None:
    add_fault(fault_server, kind="envelope_500", times=1)
    response = fault_server.call("truncate", {"space": "0"})
    assert response.status_code == 200
    assert response.content == b'{"status":500,"body":"Internal Server Error","htmlencoded":false,"last_modified":0}'


@BOTH_BACKENDS
def test_latency_retried_after_client_timeout(fault_server: EmulatorServer, space: int) -> None:
    add_fault(fault_server, kind="latency", method="recognize", times=1, latency_ms=2000)
    fault_server.set(space, 1, OBAMA)
    client = RetryingClient(fault_server.base_url, timeout=0.5)
    body = client.post("recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", fixture(OBAMA_OTHER))])
    assert client.seen == ["timeout", "ok"]
    assert body["objects"][0]["persons"][0]["tag"] == "person1"


def test_uniform_latency_is_within_bounds(fault_server: EmulatorServer) -> None:
    fault_server.http.delete("/emulator/requests")
    add_fault(fault_server, kind="latency", method="truncate", latency_ms=50, latency_max_ms=120, seed=3)
    for _ in range(3):
        assert fault_server.call("truncate", {"space": "0"}).json()["status"] == 200
    durations = [e["duration_ms"] for e in fault_server.http.get("/emulator/requests").json()["requests"]]
    assert len(durations) == 3
    assert all(d >= 49 for d in durations), durations  # a sleep never ends early (1 ms clock slack)


@pytest.fixture
def injector(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FaultInjector, list[str]]]:
    """An injector over a fresh shared state of the backend, and the list of its write transactions over the rules."""
    shared: SharedState
    if backend.cluster is None:
        shared = SqliteSharedState(tmp_path, "run")
    else:
        settings = Settings.from_sources({}, {"data_dir": tmp_path, **backend.settings()})
        shared = PostgresSharedState(Database.from_settings(settings))
    shared.open()
    writes: list[str] = []
    update_rules = shared.update_rules

    def counted(*args: Any) -> Any:
        writes.append("update_rules")
        return update_rules(*args)

    monkeypatch.setattr(shared, "update_rules", counted)
    yield FaultInjector(shared), writes
    shared.close()


@BOTH_BACKENDS
def test_uniform_latency_delays_are_the_rules_seeded_draws(injector: tuple[FaultInjector, list[str]]) -> None:
    faults, _ = injector
    rule = {"kind": "latency", "method": "truncate", "latency_ms": 50, "latency_max_ms": 120, "seed": 3}
    faults.add(FaultRule.from_json(rule))
    draws = random.Random(3)  # the rule's generator: one draw per delay, in the order requests take them
    delays = []
    for _ in range(5):
        expected = (50 + (120 - 50) * draws.random()) / 1000
        delay = faults.plan("truncate", 0, None).delay_s
        assert delay == expected
        delays.append(delay)
        assert faults.plan("recognize", 0, ["f"]).delay_s == 0.0  # not matched: takes no draw
    assert all(0.05 <= d <= 0.12 for d in delays) and len(set(delays)) == 5, delays
    assert [(r.matched, r.fired, r.draws) for r in faults.rules()] == [(5, 5, 5)]


@BOTH_BACKENDS
def test_a_request_no_rule_matches_takes_no_write_transaction(injector: tuple[FaultInjector, list[str]]) -> None:
    faults, writes = injector
    assert faults.plan("set", 0, ["a"]).fired == [] and writes == []  # no rules
    faults.add(FaultRule.from_json({"kind": "http_503", "method": "truncate", "space": 4, "times": 1}))
    faults.add(FaultRule.from_json({"kind": "object_permanent", "method": "set", "image": "b*"}))
    for method, space, names in (("truncate", 3, None), ("delete", 4, ["x"]), ("set", 4, ["a", "c"]), ("set", 4, None)):
        assert faults.plan(method, space, names).fired == []
    assert writes == [] and faults.active
    assert [r.matched for r in faults.rules()] == [0, 0]
    assert faults.plan("truncate", 4, None).fired == ["http_503#1"]
    assert faults.plan("truncate", 4, None).fired == []  # matched (and counted) again, but used up
    assert faults.plan("set", 0, ["a", "bob"]).objects.keys() == {"bob"}
    assert writes == ["update_rules"] * 3
    assert [(r.matched, r.fired) for r in faults.rules()] == [(2, 1), (1, 1)]
    faults.clear()
    assert faults.plan("truncate", 4, None).fired == [] and writes == ["update_rules"] * 3 and not faults.active


def test_a_rules_spec_is_every_field_but_its_id_and_counters() -> None:
    assert SPEC_FIELDS == (
        "kind",
        "method",
        "space",
        "image",
        "times",
        "probability",
        "seed",
        "latency_ms",
        "latency_max_ms",
        "body",
        "message",
    )
    rule = FaultRule.from_json({"kind": "latency", "method": "set", "latency_ms": 5, "latency_max_ms": 9, "seed": 2})
    rule.id, rule.matched, rule.fired, rule.draws = 7, 3, 2, 1
    assert tuple(rule.spec()) == SPEC_FIELDS
    assert FaultRule.from_json(rule.spec()).spec() == rule.spec()
    with pytest.raises(ValueError, match="unknown field"):
        FaultRule.from_json({**rule.spec(), "fired": 1})


@BOTH_BACKENDS
def test_faulted_objects_are_not_stored_and_keep_meta_order(fault_server: EmulatorServer, space: int) -> None:
    add_fault(fault_server, kind="object_temporary", method="set", image="bid*")
    meta = {
        "space": str(space),
        "images": [
            {"name": "obama", "person_id": 1},
            {"name": "biden", "person_id": 2},
            {"name": "obama2", "person_id": 1},
        ],
    }
    response = fault_server.call(
        "set", meta, [("obama", fixture(OBAMA)), ("biden", fixture(BIDEN)), ("obama2", fixture(OBAMA_OTHER))]
    )
    objects = response.json()["body"]["objects"]
    assert [(o["name"], o["status"]) for o in objects] == [("obama", 0), ("biden", 2), ("obama2", 0)]
    assert objects[1]["error"] == "temporary error: internal service unavailable, try again later"
    fault_server.http.delete("/emulator/faults")
    assert tags(fault_server, space, OBAMA) == ["person1"]
    assert tags(fault_server, space, BIDEN) == ["undefined"]  # the faulted image was never stored


@BOTH_BACKENDS
def test_request_level_fault_stores_nothing(fault_server: EmulatorServer, space: int) -> None:
    add_fault(fault_server, kind="envelope_500", method="set", times=1)
    fault_server.call("set", {"space": str(space), "images": [{"name": "f", "person_id": 4}]}, [("f", fixture(BIDEN))])
    add_fault(fault_server, kind="object_permanent", method="set", times=1, message="custom text")
    only = fault_server.call(
        "set", {"space": str(space), "images": [{"name": "f", "person_id": 4}]}, [("f", fixture(BIDEN))]
    )
    assert only.json()["body"] == {"objects": [{"status": 1, "error": "custom text", "name": "f"}]}
    fault_server.http.delete("/emulator/faults")
    assert tags(fault_server, space, BIDEN) == ["undefined"]


@BOTH_BACKENDS
def test_object_faults_apply_to_requests_the_service_would_accept(fault_server: EmulatorServer, space: int) -> None:
    """A faulted image is validated with the rest: a missing part is still a 400. A recognize whose every image
    is faulted still has the body the settings ask for (``aliases_changed`` in ``always`` mode)."""
    add_fault(fault_server, kind="object_permanent", method="recognize")
    missing = fault_server.call("recognize", {"space": str(space), "images": [{"name": "f"}]})
    assert missing.json()["body"] == "could not get image by name f: http: no such file"
    fault_server.configure(aliases_changed="always")
    try:
        body = fault_server.ok("recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", fixture(OBAMA))])
    finally:
        fault_server.configure(aliases_changed="when-true")
    assert body == {
        "objects": [{"status": 1, "error": "could not process image: internal error", "name": "f"}],
        "aliases_changed": False,
    }


@BOTH_BACKENDS
def test_rules_match_by_method_space_and_image(fault_server: EmulatorServer) -> None:
    add_fault(fault_server, kind="http_503", method="truncate", space=4)
    assert fault_server.call("truncate", {"space": "3"}).status_code == 200
    assert fault_server.call("truncate", {"space": "4"}).status_code == 503
    assert fault_server.call("delete", {"space": "4", "images": [{"name": "x", "person_id": 1}]}).status_code == 200
    fault_server.http.delete("/emulator/faults")
    add_fault(fault_server, kind="object_temporary", method="delete", image="b")
    body = fault_server.ok(
        "delete", {"space": "4", "images": [{"name": "a", "person_id": 1}, {"name": "b", "person_id": 2}]}
    )
    assert [o["status"] for o in body["objects"]] == [0, 2]


def _sequence(server: EmulatorServer, n: int) -> list[int]:
    return [server.call("truncate", {"space": "0"}).status_code for _ in range(n)]


@BOTH_BACKENDS
def test_probability_rules_repeat_under_the_same_seed(fault_server: EmulatorServer) -> None:
    add_fault(fault_server, kind="http_503", method="truncate", probability=0.4, seed=1234)
    first = _sequence(fault_server, 20)
    fault_server.http.delete("/emulator/faults")
    add_fault(fault_server, kind="http_503", method="truncate", probability=0.4, seed=1234)
    second = _sequence(fault_server, 20)
    assert first == second
    draws = random.Random(1234)
    assert first == [503 if draws.random() < 0.4 else 200 for _ in range(20)]
    assert 200 in first and 503 in first
    fault_server.http.delete("/emulator/faults")
    add_fault(fault_server, kind="http_503", method="truncate", probability=0.4, seed=99)
    assert _sequence(fault_server, 20) != first


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "explode"},
        {"kind": "latency"},
        {"kind": "http_503", "method": "search"},
        {"kind": "http_503", "space": 10},
        {"kind": "http_503", "probability": 1.5},
        {"kind": "http_503", "times": 0},
        {"kind": "latency", "latency_ms": 100, "latency_max_ms": 50},
        {"kind": "http_503", "colour": "red"},
    ],
)
def test_bad_rules_are_refused(fault_server: EmulatorServer, rule: dict[str, Any]) -> None:
    response = fault_server.http.post("/emulator/faults", json=rule)
    assert response.status_code == 400
    assert fault_server.http.get("/emulator/faults").json()["faults"] == []
