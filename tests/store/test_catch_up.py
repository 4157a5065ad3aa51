"""Every process's index stays exactly a fresh load of the space, whichever process wrote: a seeded random sequence of
set, recognize that learns, create_new, delete, truncate and snapshot restore, spread over two SQLite workers and
over two PostgreSQL replicas.

After every step each process's index (``GET /emulator/clients/{client}/spaces/{space}/index``: brought current, as
a request's match would be) must have the generation and the digest of a fresh load of the store, and must have
followed the writes of the other process as the change log allows: in place while it is at most
``change_log_size`` writes behind, by a whole load after a truncate or a restore or when further behind. The
servers keep 2 generations of changes; some steps write 3 times through one process before the other looks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.control.routes import WORKER_HEADER
from emulator.persons.index import SpaceIndex
from emulator.persons.types import ClientId, SpaceKey
from emulator.settings import Settings
from emulator.store import Store, store_from_settings
from tests.support import persons_client as api
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.slow  # real server processes

SEED = 20261203
STEPS = 45
SPACE = 3
CHANGE_LOG_SIZE = 2
SETTINGS = {
    "clients": f"default={api.TOKEN}",
    "change_log_size": CHANGE_LOG_SIZE,
    "learned_per_person": 1,  # every second learned face of a person replaces the first
}
PEOPLE = {  # one person's photos: set one, recognize another and the match learns it
    "obama": ["obama/obama.jpg", "obama/obama2.jpg", "obama/obama3.jpg", "obama/obama_small.jpg"],
    "biden": ["biden/biden.jpg", "biden/biden2.jpg"],
    "kit": ["kit_harington/john1.jpeg", "kit_harington/john2.jpeg"],
    "rose": ["rose_leslie/img1.jpg", "rose_leslie/img2.jpg"],
    "hopkins": ["anthony_hopkins/Anthony_Hopkins_0001.jpg", "anthony_hopkins/Anthony_Hopkins_0002.jpg"],
    "jolie": ["angelina_jolie/aligned-160.png"],
    "siegel": ["kate_siegel/aligned-160.png"],
    "rudd": ["paul_rudd/aligned-160.png"],
    "whigham": ["shea_whigham/aligned-160.png"],
    "cooper": ["bradley_cooper/aligned-160.png"],
    "hanks": ["tom_hanks/Tom_Hanks_54745.png"],
}
PHOTOS = [f"people/{photo}" for photos in PEOPLE.values() for photo in photos]
MAX_CONNECTIONS = 40
WEIGHTS = {"set": 6, "learn": 6, "create": 4, "delete": 3, "truncate": 1, "restore": 1, "burst": 2}


@dataclass
class Process:
    """One worker or replica, reached through a connection of its own, and what the test expects of its index."""

    name: str
    http: httpx.Client
    pid: int
    held: int | None = None  # the generation its index holds
    loads: int = 0
    catch_ups: int = 0


@dataclass
class Space:
    """The space as the test follows it: its generation, and how far back its change log reaches."""

    store: Store
    generation: int = 0
    floor: int = 0

    def written(self, *, cleared: bool = False) -> int:
        """After one request that may have written: the store's generation, and the log's floor as it must be now."""
        now = self.store.generation(api_key())
        if now != self.generation:
            assert now == self.generation + 1, "one request, one write transaction"
            self.floor = now if cleared else max(self.floor, now - CHANGE_LOG_SIZE)
            self.generation = now
        return now


def api_key() -> SpaceKey:
    return SpaceKey(ClientId("default"), SPACE)


def _worker_of(http: httpx.Client) -> int:
    response = http.get("/emulator/clients")
    assert response.status_code == 200
    return int(response.headers[WORKER_HEADER])


def _one_connection(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=120, limits=httpx.Limits(max_connections=1))


def _two_workers(base_url: str, stack: ExitStack) -> list[Process]:
    """Connections to both workers of one server (a kept-alive connection stays with the worker that accepted it)."""
    first = stack.enter_context(_one_connection(base_url))
    pid_first = _worker_of(first)
    for _ in range(MAX_CONNECTIONS):
        other = _one_connection(base_url)
        pid_other = _worker_of(other)
        if pid_other != pid_first:
            stack.callback(other.close)
            return [Process("worker A", first, pid_first), Process("worker B", other, pid_other)]
        other.close()
    raise AssertionError(f"{MAX_CONNECTIONS} connections all reached worker {pid_first}")


def _store(settings: dict[str, Any], data_dir: Path) -> Store:
    """The test's own handle on the record the servers share, for the fresh loads."""
    store = store_from_settings(Settings.from_sources({}, {"data_dir": data_dir, **settings}))
    store.open()
    return store


@pytest.fixture(scope="module")
def sqlite_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, Path]]:
    data_dir = tmp_path_factory.mktemp("workers") / "data"
    server = EmulatorProcess(data_dir, workers=2, **SETTINGS).start()
    yield server, data_dir
    server.stop()


@pytest.fixture(scope="module")
def postgres_replicas(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[EmulatorProcess], str]]:
    database = postgres.create_database("catchup")
    replicas = [
        EmulatorProcess(tmp_path_factory.mktemp(name) / "data", database_url=database, **SETTINGS)
        for name in ("a", "b")
    ]
    try:
        for replica in replicas:
            replica.start()
        yield replicas, database
    finally:
        for replica in replicas:
            replica.stop()


def test_two_sqlite_workers_follow_a_random_sequence_of_writes(sqlite_workers: tuple[EmulatorProcess, Path]) -> None:
    server, data_dir = sqlite_workers
    with ExitStack() as stack:
        processes = _two_workers(server.base_url, stack)
        store = _store({}, data_dir)
        stack.callback(store.close)
        _run(processes, Space(store), random.Random(SEED))


def test_two_postgres_replicas_follow_a_random_sequence_of_writes(
    postgres_replicas: tuple[list[EmulatorProcess], str], tmp_path: Path
) -> None:
    replicas, database = postgres_replicas
    with ExitStack() as stack:
        processes = []
        for name, replica in zip(("replica A", "replica B"), replicas, strict=True):
            http = stack.enter_context(_one_connection(replica.base_url))
            processes.append(Process(name, http, _worker_of(http)))
        store = _store({"database_url": database}, tmp_path)
        stack.callback(store.close)
        _run(processes, Space(store), random.Random(SEED + 1))


def _run(processes: list[Process], space: Space, rng: random.Random) -> None:
    api.truncate(processes[0].http, SPACE)  # the space starts empty, and known to the test
    space.written(cleared=True)
    _check(processes, space, "start")
    kinds = list(WEIGHTS)
    rng.shuffle(kinds)  # every kind at least once, then at random
    kinds += rng.choices(list(WEIGHTS), list(WEIGHTS.values()), k=STEPS - len(kinds))
    for step, kind in enumerate(kinds):
        through = rng.choice(processes)
        _step(kind, through, space, rng)
        _check(processes, space, f"step {step}: {kind} through {through.name}")
    for process in processes:  # both ways of following were taken, by each process
        assert process.catch_ups >= 5 and process.loads >= 2, process


def _step(kind: str, through: Process, space: Space, rng: random.Random) -> None:
    """One step of the sequence through one process; the test's model of that process follows its own writes."""
    http = through.http
    if kind == "set":
        api.set_photos(http, SPACE, rng.randint(1, 8), [fixture(rng.choice(PHOTOS))])
        _wrote(through, space)
    elif kind == "learn":
        api.recognize(http, SPACE, fixture(rng.choice(PHOTOS)), update_embedding=True)
        _wrote(through, space)
    elif kind == "create":
        api.recognize(http, SPACE, fixture(rng.choice(PHOTOS)), create_new=True, update_embedding=rng.random() < 0.5)
        _wrote(through, space)
    elif kind == "delete":
        api.delete(http, SPACE, rng.sample(range(1, 12), 2))
        _wrote(through, space)
    elif kind == "truncate":
        api.truncate(http, SPACE)
        _wrote(through, space, cleared=True)
    elif kind == "restore":  # the space as it is, put back: emptied and filled again in one write
        params = {"client": "default", "space": SPACE}
        taken = http.get("/emulator/snapshot", params=params)
        assert taken.status_code == 200
        restored = http.post("/emulator/snapshot", params={"mode": "replace"}, content=taken.content)
        assert restored.status_code == 200, restored.text
        _wrote(through, space, cleared=True)
    else:  # burst: three sets through one process before the other looks, further than the log reaches
        for person_id in rng.sample(range(1, 9), 3):
            api.set_photos(http, SPACE, person_id, [fixture(rng.choice(PHOTOS))])
            _wrote(through, space)


def _wrote(through: Process, space: Space, *, cleared: bool = False) -> None:
    """A process's own write is applied to its index in memory: neither a load nor a catch-up."""
    before = space.generation
    assert through.held == before, "the writer's index was current when it wrote"
    through.held = space.written(cleared=cleared)


def _check(processes: list[Process], space: Space, when: str) -> None:
    """Each process's index is a fresh load's, and it followed the store as the change log allows."""
    fresh = SpaceIndex.from_data(space.store.load_space(api_key()))
    assert fresh.generation == space.generation, when
    for process in processes:
        if process.held is None:
            process.loads += 1
        elif process.held != space.generation:
            if process.held < space.floor:
                process.loads += 1
            else:
                process.catch_ups += 1
        process.held = space.generation
        response = process.http.get(f"/emulator/clients/default/spaces/{SPACE}/index")
        assert response.status_code == 200, response.text
        assert int(response.headers[WORKER_HEADER]) == process.pid, f"{when}: {process.name} moved"
        shown = response.json()
        assert (shown["generation"], shown["faces"], shown["digest"]) == (
            fresh.generation,
            len(fresh),
            fresh.digest(),
        ), f"{when}: {process.name} differs from a fresh load"
        assert (shown["loads"], shown["catch_ups"]) == (process.loads, process.catch_ups), (
            f"{when}: {process.name} followed the store otherwise than expected"
        )
