"""Liveness and readiness over HTTP: not ready while the warm-up runs, ready after; requests wait for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from emulator import healthcheck
from emulator.face.engine import DlibEngine, Face
from tests.support.emulator_server import EmulatorServer, free_port


class GatedEngine:
    """The real engine, whose warm-up waits until the test opens the gate (or fails, if told to)."""

    def __init__(self, engine: DlibEngine, fail: str | None = None) -> None:
        self.engine = engine
        self.fail = fail
        self.gate = threading.Event()
        self.warming = threading.Event()

    def warm_up(self) -> None:
        self.warming.set()
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        if self.fail:
            raise RuntimeError(self.fail)
        self.engine.warm_up()

    def analyze(self, data: bytes) -> list[Face]:
        return self.engine.analyze(data)


@pytest.fixture
def gated(engine: DlibEngine, tmp_path: Path) -> Iterator[tuple[EmulatorServer, GatedEngine]]:
    gate = GatedEngine(engine)
    server = EmulatorServer(tmp_path / "data", engine=gate, admin="off").start(wait_ready=False)
    yield server, gate
    gate.gate.set()
    server.stop()


def test_not_ready_until_the_warm_up_ran_then_ready(gated: tuple[EmulatorServer, GatedEngine]) -> None:
    server, gate = gated
    assert gate.warming.wait(timeout=30)
    # The server answers while the models warm up: alive, not ready, and it says what is missing.
    health = server.http.get("/emulator/health")
    assert (health.status_code, health.json()) == (200, {"alive": True})
    ready = server.http.get("/emulator/ready")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "missing": ["models", "warm-up"]}  # the store is open already

    local = {"SMARTY_HOST": "127.0.0.1", "SMARTY_PORT": str(server.port)}
    assert healthcheck.main(local) == 1  # the container health check says "not yet"

    gate.gate.set()
    assert server.runtime.ready.wait(timeout=30)
    ready = server.http.get("/emulator/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "missing": []})
    assert healthcheck.main(local) == 0
    assert healthcheck.main({**local, "SMARTY_PORT": str(free_port())}) == 1  # nothing listens there


def test_a_persons_request_during_the_warm_up_waits_and_succeeds(gated: tuple[EmulatorServer, GatedEngine]) -> None:
    server, gate = gated
    assert gate.warming.wait(timeout=30)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(server.set, 0, 1, "people/obama/obama.jpg")
        # Still waiting while the gate is closed (the server answers other requests meanwhile).
        assert server.http.get("/emulator/ready").status_code == 503
        assert not pending.done()
        gate.gate.set()
        assert pending.result(timeout=60) == {"status": 0, "name": "f"}
    assert server.tags(0, "people/obama/obama2.jpg", update_embedding=False) == ["person1"]


def test_health_and_ready_answer_with_the_admin_api_off(gated: tuple[EmulatorServer, GatedEngine]) -> None:
    server, gate = gated
    gate.gate.set()
    assert server.runtime.ready.wait(timeout=30)
    assert server.settings.admin == "off"
    assert server.http.get("/emulator/health").status_code == 200
    assert server.http.get("/emulator/ready").status_code == 200
    assert server.http.get("/metrics").status_code == 200
    assert server.http.get("/emulator/clients").status_code == 404  # the admin API itself is off


def test_a_failed_warm_up_is_reported_and_requests_fail_at_once(engine: DlibEngine, tmp_path: Path) -> None:
    broken = GatedEngine(engine, fail="model file is damaged")
    broken.gate.set()
    server = EmulatorServer(tmp_path / "data", engine=broken).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while server.runtime.startup_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ready = server.http.get("/emulator/ready")
        assert ready.status_code == 503
        assert ready.json() == {
            "ready": False,
            "missing": ["models", "warm-up"],
            "error": "RuntimeError: model file is damaged",
        }
        assert server.http.get("/emulator/health").status_code == 200  # the process itself answers
        response = server.call("set", {"space": "0", "images": [{"name": "f", "person_id": 1}]}, [("f", b"x")])
        assert response.json()["status"] == 500
        assert response.json()["body"] == "the emulator is not ready: waiting for models, warm-up"
    finally:
        server.stop()


def test_the_health_check_asks_loopback_for_a_wildcard_bind() -> None:
    assert healthcheck.ready_url({}) == "http://127.0.0.1:8080/emulator/ready"
    assert healthcheck.ready_url({"SMARTY_HOST": "0.0.0.0", "SMARTY_PORT": "9000"}) == (
        "http://127.0.0.1:9000/emulator/ready"
    )
    assert healthcheck.ready_url({"SMARTY_HOST": "::", "SMARTY_PORT": "1"}) == "http://[::1]:1/emulator/ready"
    assert healthcheck.ready_url({"SMARTY_HOST": "10.0.0.5"}) == "http://10.0.0.5:8080/emulator/ready"
