"""The servers the figures measure: ``python -m emulator serve`` started by the package's launcher
(:mod:`emulator.launcher`) with a temporary data dir, the persons requests sent to them, and sustained load."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import httpx

from bench.measure import ENROL, ROOT, cpu_seconds, fixture, in_threads, tree_cpu_seconds
from emulator.launcher import ServerProcess
from tests.support import persons_client

Files = Sequence[tuple[str, bytes]]


class Server(ServerProcess):
    """``python -m emulator serve`` on a free loopback port with a temporary data dir (removed by :meth:`stop`);
    ``settings`` are the emulator's (``{"cache_size": 0}``), ``cpus`` pins it and all it starts to those cores.

    It records how long it took to become ready: ``ready_seconds``, and ``ready_cpu_seconds``, the CPU time its
    process used until then (which other load on the machine does not change).
    """

    poll_seconds = 0.01  # a finer readiness probe: figure 6 reports the start time

    def __init__(self, settings: Mapping[str, Any], workers: int = 1, cpus: frozenset[int] | None = None) -> None:
        super().__init__(
            Path(tempfile.mkdtemp(prefix="bench-data-")), settings=settings, workers=workers, cwd=ROOT, cpus=cpus
        )
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.ready_cpu_seconds = float("nan")

    def start(self, timeout: float = 60.0, *, wait: Literal["ready", "alive"] = "ready") -> Self:
        return super().start(timeout, wait=wait)

    def on_first_ready(self) -> None:
        assert self.process is not None
        self.ready_cpu_seconds = cpu_seconds(self.process.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        self.http.close()
        code = super().stop(timeout)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return code

    def call(self, method: str, meta: dict[str, Any], files: Files) -> dict[str, Any]:
        """One persons request; its body (an error unless it succeeded)."""
        body: dict[str, Any] = persons_client.call(self.http, method, meta, files)["body"]
        return body

    def recognize(self, photo: bytes) -> dict[str, Any]:
        return recognize(self.http, photo)


@contextmanager
def running(
    settings: Mapping[str, Any],
    workers: int = 1,
    started: list[Server] | None = None,
    cpus: frozenset[int] | None = None,
) -> Iterator[Server]:
    """A started :class:`Server`, stopped at the end of the block; a single-process one is added to ``started``
    (the samples of figure 6)."""
    server = Server(settings, workers, cpus).start()
    if started is not None and workers == 1:
        started.append(server)
    try:
        yield server
    finally:
        server.stop()


def recognize_meta(n: int, space: str = "1") -> dict[str, Any]:
    """A recognize of ``n`` images that changes nothing."""
    return {
        "space": space,
        "images": [{"name": f"i{i}"} for i in range(n)],
        "create_new": False,
        "update_embedding": False,
    }


ONE_IMAGE = recognize_meta(1)


def recognize(client: httpx.Client, photo: bytes) -> dict[str, Any]:
    """A recognize of one photo in space 1 that changes nothing; its body."""
    body: dict[str, Any] = persons_client.call(client, "recognize", ONE_IMAGE, [("i0", photo)])["body"]
    return body


def enrol(server: Server) -> None:
    """Person 1 of space 1: ``fixtures/`` :data:`ENROL`."""
    server.call("set", {"space": "1", "images": [{"name": "a", "person_id": 1}]}, [("a", fixture(ENROL))])


# --- sustained load ------------------------------------------------------------------------------------------


@dataclass
class Window:
    """What one window of sustained load did."""

    requests: int
    errors: int
    wall: float
    cpu: float  # CPU seconds of the servers and of the other processes watched
    database_cpu: float  # CPU seconds of the other processes watched (the PostgreSQL server)
    latencies: list[float]


def sustained(servers: Sequence[Server], database_pids: Sequence[int], seconds: float, photo: bytes) -> Window:
    """8 clients recognizing ``photo`` for ``seconds``, spread over ``servers``; ``database_pids``' CPU is counted
    too."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    roots = [server.process.pid for server in servers if server.process is not None]
    cpu_before = sum(tree_cpu_seconds(pid) for pid in roots)
    database_before = sum(tree_cpu_seconds(pid) for pid in database_pids)
    stop_at = time.perf_counter() + seconds

    def client(number: int) -> None:
        with httpx.Client(base_url=servers[number % len(servers)].url, timeout=60) as http:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    recognize(http, photo)
                except Exception:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)

    wall = in_threads(client, 8, seconds + 120)
    database = sum(tree_cpu_seconds(pid) for pid in database_pids) - database_before
    cpu = sum(tree_cpu_seconds(pid) for pid in roots) - cpu_before + database
    return Window(len(latencies), errors[0], wall, cpu, database, latencies)
