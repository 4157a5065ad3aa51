"""Overload: past ``SMARTY_MAX_INFLIGHT`` persons requests in flight, one more is answered at once.

The engine is the real one behind a gate the test holds shut, so a first request is provably still
in flight (inside the engine) while the second one arrives. Nothing here is timed: the second answer
arriving while the first request is still held is the proof that it did not wait.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulator.api.middleware import InflightGate
from emulator.face.engine import DlibEngine, Face
from emulator.ops.observe import RequestRecord
from tests.support.emulator_server import EmulatorServer, fixture

PHOTO = "people/obama/obama.jpg"
OVERLOADED = "server is overloaded: 1 requests in flight, the limit is 1; retry later"


class GatedEngine:
    """The real engine, but ``analyze`` waits until the test opens the gate."""

    def __init__(self, engine: DlibEngine) -> None:
        self.engine = engine
        self.entered = threading.Event()
        self.gate = threading.Event()

    def warm_up(self) -> None:
        self.engine.warm_up()

    def analyze(self, data: bytes) -> list[Face]:
        self.entered.set()
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        return self.engine.analyze(data)


@pytest.fixture
def gated(engine: DlibEngine, tmp_path: Path) -> Iterator[tuple[EmulatorServer, GatedEngine]]:
    fake = GatedEngine(engine)
    server = EmulatorServer(tmp_path / "data", engine=fake, max_inflight=1).start()
    yield server, fake
    fake.gate.set()
    server.stop()


def _set_in_background(server: EmulatorServer) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            result["response"] = client.post(
                "/api/v1/persons/set",
                params={"oauth_token": "t", "oauth_provider": "mcs"},
                files=[("f", ("f.jpg", fixture(PHOTO), "image/jpeg"))],
                data={"meta": '{"space":"0","images":[{"name":"f","person_id":1}]}'},
            )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_second_request_is_refused_fast_while_the_first_is_in_flight(
    gated: tuple[EmulatorServer, GatedEngine],
) -> None:
    server, engine = gated
    first, result = _set_in_background(server)
    assert engine.entered.wait(timeout=60)  # the first request is inside the engine, holding the only slot

    seen: list[RequestRecord] = []
    server.runtime.observers.append(seen.append)
    refused = server.call("recognize", {"space": "0", "images": [{"name": "f"}]}, [("f", fixture(PHOTO))])
    assert first.is_alive() and not engine.gate.is_set()  # answered while the first is still held
    assert [(r.method, r.envelope_status, r.body) for r in seen] == [("recognize", 500, OVERLOADED)]
    assert refused.status_code == 200  # always-200 mode
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {"status": 500, "body": OVERLOADED, "htmlencoded": False, "last_modified": 0}

    engine.gate.set()
    first.join(timeout=60)
    response = result["response"]
    assert isinstance(response, httpx.Response)
    assert response.json()["body"] == {"objects": [{"status": 0, "name": "f"}]}  # the held request completed

    # The slot is free again: the next request goes through and finds the person the first one stored.
    assert server.tags(0, PHOTO, update_embedding=False) == ["person1"]
    assert server.ok("truncate", {"space": "3"}) == {}


def test_mirror_mode_answers_503(gated: tuple[EmulatorServer, GatedEngine]) -> None:
    server, engine = gated
    server.configure(http_status="mirror")
    first, _ = _set_in_background(server)
    assert engine.entered.wait(timeout=60)
    refused = server.call("truncate", {"space": "0"})
    assert refused.status_code == 503
    assert refused.json()["status"] == 500 and refused.json()["body"] == OVERLOADED
    engine.gate.set()
    first.join(timeout=60)


def test_limit_is_live_and_other_paths_are_not_counted(gated: tuple[EmulatorServer, GatedEngine]) -> None:
    server, engine = gated
    server.configure(max_inflight=2)
    first, _ = _set_in_background(server)
    assert engine.entered.wait(timeout=60)
    assert server.ok("truncate", {"space": "5"}) == {}  # a second slot exists now
    assert server.http.get("/emulator/health").status_code == 200  # never gated
    engine.gate.set()
    first.join(timeout=60)


def test_gate_counts_and_refuses_past_the_limit() -> None:
    gate = InflightGate()
    assert gate.try_enter(2) and gate.try_enter(2)
    assert not gate.try_enter(2)
    assert (gate.in_flight, gate.refused) == (2, 1)
    gate.leave()
    assert gate.try_enter(2)
