"""Stopping the container: the persons stay on the named volume, and ``podman stop`` ends the server gracefully
without losing a write it acknowledged."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.container.launch import Container, Podman, post, recognized, run_once, set_person
from tests.support.emulator_server import fixture

pytestmark = [pytest.mark.container, pytest.mark.slow]

STOP_SECONDS = 10.0


def test_persons_survive_a_new_container_on_the_same_volume(podman: Podman, image: str, volume: str) -> None:
    with Container(podman, image, volume=volume) as first:
        first.wait_ready()
        with httpx.Client(base_url=first.base_url, timeout=120) as http:
            set_person(http, 4, 11, fixture("people/obama/obama.jpg"))
            set_person(http, 4, 12, fixture("people/biden/biden.jpg"))
        first.stop()
    with Container(podman, image, volume=volume) as second:
        second.wait_ready()
        with httpx.Client(base_url=second.base_url, timeout=120) as http:
            tags = [p["tag"] for p in recognized(http, 4, fixture("groups/obama_and_biden.jpg"))]
    assert sorted(tags) == ["person11", "person12", "undefined"]  # the third face is nobody's


def test_podman_stop_is_graceful_and_keeps_every_acknowledged_write(podman: Podman, image: str, volume: str) -> None:
    """Sets keep coming while ``podman stop`` sends SIGTERM: the server finishes what it accepted and exits by
    itself (0, or 143 for a re-raised SIGTERM) well before the 10 s after which podman would SIGKILL it, and every
    set it answered 200 is in the database that a new container on the volume reads."""
    space, photo = 3, fixture("people/obama/obama.jpg")
    acknowledged: list[int] = []
    with Container(podman, image, volume=volume) as running:
        running.wait_ready()

        def write() -> None:
            with httpx.Client(base_url=running.base_url, timeout=60) as http:
                for person_id in range(1, 1000):
                    meta = {"space": str(space), "images": [{"name": "f", "person_id": person_id}]}
                    try:
                        response = post(http, "set", meta, {"f": photo})
                    except httpx.TransportError:
                        return  # refused or cut: not acknowledged
                    if response.status_code != 200 or response.json()["status"] != 200:
                        return
                    acknowledged.append(person_id)

        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 3 and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 3, running.logs()
        code, took = running.stop(timeout=int(STOP_SECONDS))
        writer.join(timeout=60)
        logs = running.logs()
    assert code in (0, 143), (code, logs)
    assert took < STOP_SECONDS, (took, logs)
    assert "Application shutdown complete." in logs
    exported = run_once(podman, image, volume, "export", "-")
    assert exported.returncode == 0, exported.stderr
    [stored] = [s for s in json.loads(exported.stdout)["spaces"] if s["space"] == space]
    assert set(acknowledged) <= set(stored["persons"]), (acknowledged, stored["persons"])
