"""SIGTERM while 8 loopback clients send sets, with one worker process and with two.

* Requests in flight finish or get the envelope error: every request sent at least ``IN_FLIGHT_SECONDS`` before the
  signal is answered (success or the internal-error envelope), and no answer is anything but an envelope.
* New connections are refused once the shutdown began.
* The process exits within ``SMARTY_SHUTDOWN_TIMEOUT`` (the default, 10 s) and a margin, with status 0 or the
  re-raised SIGTERM (143 in a shell, -15 for Popen).
* Every acknowledged set is there after a restart.

The signal goes to the main process only, as ``docker stop`` sends it (with two workers, uvicorn's supervisor passes
it on to them).

And when a request outlasts the timeout (a latency fault holds it), it is cancelled: it gets the internal-error
envelope, and the process still exits on time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture

pytestmark = pytest.mark.slow  # real server processes

CLIENTS = 8
SPACE = 2
LOAD_SECONDS = 4.0  # of sets before the signal
IN_FLIGHT_SECONDS = 1.0  # a request sent this long before the signal was surely received by the server
DEFAULT_TIMEOUT = 10.0  # SMARTY_SHUTDOWN_TIMEOUT's default
EXIT_MARGIN = 5.0
AUTH = {"oauth_token": "shutdown", "oauth_provider": "mcs"}
PHOTOS = (
    "people/obama/obama.jpg",
    "people/biden/biden.jpg",
    "people/kit_harington/john1.jpeg",
    "people/rose_leslie/img1.jpg",
    "people/anthony_hopkins/Anthony_Hopkins_0001.jpg",
    "people/alex_lacamoire/img1.jpg",
)


@dataclass
class Outcomes:
    acknowledged: list[int] = field(default_factory=list)  # person ids whose set answered status 0
    answers: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)  # (sent, answered, envelope)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (sent, transport error) : no answer
    not_envelopes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(number: int, base_url: str, stop: threading.Event, outcomes: Outcomes) -> None:
    person_id = number * 100_000
    with httpx.Client(base_url=base_url, timeout=60) as http:
        while not stop.is_set():
            person_id += 1
            upload = fixture(PHOTOS[person_id % len(PHOTOS)]) + f"#{person_id}".encode()  # distinct uploads
            meta = f'{{"space":"{SPACE}","images":[{{"name":"f","person_id":{person_id}}}]}}'
            sent = time.monotonic()
            try:
                response = http.post(
                    "/api/v1/persons/set",
                    params=AUTH,
                    files=[("f", ("f.jpg", upload, "image/jpeg")), ("meta", (None, meta))],
                )
            except httpx.TransportError as exc:
                with outcomes.lock:
                    outcomes.failures.append((sent, repr(exc)))
                time.sleep(0.05)
                continue
            answered = time.monotonic()
            try:
                payload = response.json()
                assert isinstance(payload, dict) and {"status", "body"} <= set(payload)
            except (ValueError, AssertionError):
                with outcomes.lock:
                    outcomes.not_envelopes.append(f"{response.status_code} {response.text[:200]}")
                continue
            with outcomes.lock:
                outcomes.answers.append((sent, answered, payload))
                if payload["status"] == 200 and payload["body"]["objects"][0]["status"] == 0:
                    outcomes.acknowledged.append(person_id)


@pytest.fixture
def started() -> Iterator[list[EmulatorProcess]]:
    """Servers a test started: killed at the end if a failed assertion left them running."""
    servers: list[EmulatorProcess] = []
    yield servers
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.kill9()


def _stored_persons(server: EmulatorProcess) -> dict[int, int]:
    response = httpx.get(f"{server.base_url}/emulator/clients/default/spaces/{SPACE}/persons", timeout=60)
    assert response.status_code == 200, response.text
    return {p["person_id"]: p["photos"] for p in response.json()["persons"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_loses_no_acknowledged_set(
    tmp_path: Path, workers: int, started: list[EmulatorProcess]
) -> None:
    server = EmulatorProcess(tmp_path / "data", workers=workers)
    started.append(server)
    server.start()
    assert server.process is not None
    outcomes = Outcomes()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client, args=(n + 1, server.base_url, stop, outcomes), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_SECONDS)
    with outcomes.lock:
        acknowledged_before = len(outcomes.acknowledged)
    signalled = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)  # to the main process only, as `docker stop` does

    time.sleep(0.5)  # the shutdown began: a new connection is refused (also when the process is gone already)
    refused_new = []
    while True:
        try:
            answer = httpx.get(f"{server.base_url}/emulator/health", timeout=5)
            refused_new.append(f"answered {answer.status_code}")
        except httpx.ConnectError:
            refused_new.append("refused")
        except httpx.TransportError as exc:  # accepted by the kernel, closed unanswered by the stopping server
            refused_new.append(type(exc).__name__)
        if server.process.poll() is not None or time.monotonic() - signalled >= DEFAULT_TIMEOUT + EXIT_MARGIN:
            break
        time.sleep(0.2)
    code = server.process.wait(timeout=max(0.1, DEFAULT_TIMEOUT + EXIT_MARGIN - (time.monotonic() - signalled)))
    exit_seconds = time.monotonic() - signalled
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    log = server.log()
    assert code in (0, -signal.SIGTERM), (code, log[-3000:])
    assert exit_seconds <= DEFAULT_TIMEOUT + EXIT_MARGIN, exit_seconds
    assert outcomes.not_envelopes == [], outcomes.not_envelopes
    assert acknowledged_before > 0
    # In flight at the signal: answered, by a success or the internal-error envelope; never dropped.
    dropped = [error for sent, error in outcomes.failures if sent < signalled - IN_FLIGHT_SECONDS]
    assert dropped == [], dropped
    finished_after = [p for sent, answered, p in outcomes.answers if sent < signalled < answered]
    assert finished_after, "no request was in flight at the signal"
    for payload in finished_after:
        assert payload["status"] == 200 or (payload["status"], payload["body"]) == (500, "Internal Server Error")
    assert refused_new and all(r != "answered 200" for r in refused_new), refused_new
    assert "Traceback" not in log, log[-3000:]

    restarted = EmulatorProcess(tmp_path / "data", workers=1)
    started.append(restarted)
    stored = _stored_persons(restarted.start())
    restarted.stop()
    missing = [p for p in outcomes.acknowledged if stored.get(p) != 1]
    assert missing == [], missing
    print(
        f"\nworkers={workers}: {len(outcomes.acknowledged)} sets acknowledged ({len(finished_after)} in flight at"
        f" SIGTERM, all answered: {sum(p['status'] == 200 for p in finished_after)} stored), {len(outcomes.failures)}"
        f" transport errors after it; new connections:"
        f" {sorted(set(refused_new))}; exit {code} after {exit_seconds:.2f} s"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_past_the_shutdown_timeout_gets_the_envelope(
    tmp_path: Path, workers: int, started: list[EmulatorProcess]
) -> None:
    timeout = 2.0
    server = EmulatorProcess(tmp_path / "data", workers=workers, shutdown_timeout=timeout)
    started.append(server)
    server.start()
    assert server.process is not None
    rule = {"kind": "latency", "latency_ms": 60_000, "method": "set"}
    assert httpx.post(f"{server.base_url}/emulator/faults", json=rule, timeout=30).status_code == 201
    answer: dict[str, Any] = {}

    def held() -> None:
        meta = f'{{"space":"{SPACE}","images":[{{"name":"f","person_id":1}}]}}'
        files = [("f", ("f.jpg", fixture(PHOTOS[0]), "image/jpeg")), ("meta", (None, meta))]
        response = httpx.post(f"{server.base_url}/api/v1/persons/set", params=AUTH, files=files, timeout=120)
        answer.update(http=response.status_code, payload=response.json())

    client = threading.Thread(target=held, daemon=True)
    client.start()
    time.sleep(1.5)  # the request waits in its 60 s delay
    signalled = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)  # to the main process only, as `docker stop` does
    code = server.process.wait(timeout=timeout + EXIT_MARGIN + 10)
    exit_seconds = time.monotonic() - signalled
    client.join(timeout=30)

    assert code in (0, -signal.SIGTERM), code
    assert exit_seconds <= timeout + EXIT_MARGIN, exit_seconds
    assert answer.get("http") == 200, answer
    assert (answer["payload"]["status"], answer["payload"]["body"]) == (500, "Internal Server Error")
    assert "set cancelled: the server is shutting down" in server.log()
    print(f"\nworkers={workers}: a 60 s request cancelled, envelope 500; exit {code} after {exit_seconds:.2f} s")
