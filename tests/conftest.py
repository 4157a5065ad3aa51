"""Shared fixtures: one real dlib engine per test session, real servers on loopback, and the store backend.

A module runs against both backends with ``pytestmark = BOTH_BACKENDS`` (a test alone with ``@BOTH_BACKENDS``): its
tests run once with SQLite and once with PostgreSQL (a real server started once per session, a fresh database per
module). Without it, ``backend`` is SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.app import default_engine
from emulator.face.engine import DlibEngine
from emulator.settings import Settings
from tests.support.backends import BACKENDS, DLIB_DESCRIPTOR, Backend
from tests.support.emulator_server import EmulatorServer
from tests.support.postgres import PostgresCluster, require_postgres


@pytest.fixture(scope="session")
def engine() -> DlibEngine:
    """The real engine as the server builds it, models loaded once for the whole suite."""
    real = default_engine(Settings.from_sources({}))
    real.warm_up()
    return real


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of a ``BOTH_BACKENDS`` module that use the backend (through a server or directly) run on both; those of
    a ``BOTH_EMBEDDERS`` module also with dlib's own descriptor."""
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames:
        extra = (DLIB_DESCRIPTOR,) if metafunc.definition.get_closest_marker("both_embedders") else ()
        metafunc.parametrize("backend", (*BACKENDS, *extra), indirect=True, scope="module")


@pytest.fixture(scope="session")
def dlib_engine() -> DlibEngine:
    """The real engine with dlib's own face descriptor (``SMARTY_EMBEDDER=dlib``), the reference."""
    reference = default_engine(Settings.from_sources({}, {"embedder": "dlib"}))
    reference.warm_up()
    return reference


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the whole session. Missing PostgreSQL: the test fails in CI (``CI=true``), else
    it is skipped, with the reason."""
    require_postgres()
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> Backend:
    """The store backend of the module's servers: ``sqlite`` unless the module is parametrized over both."""
    name = getattr(request, "param", "sqlite")
    return Backend(name, request.getfixturevalue("postgres") if name == "postgres" else None)


@pytest.fixture(scope="module")
def server(
    engine: DlibEngine, backend: Backend, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[EmulatorServer]:
    """A real emulator (real dlib) with its own data dir (and database), shared by one test module."""
    if backend.name == DLIB_DESCRIPTOR:  # the reference descriptor: an engine of its own, made when needed
        engine = request.getfixturevalue("dlib_engine")
    running = EmulatorServer(tmp_path_factory.mktemp("data"), engine=engine, **backend.settings()).start()
    yield running
    running.stop()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``soak`` run only when ``-m`` names them (``make soak``), never in ``make test``. Every test
    gets its :func:`parallel_group`, and the groups are ordered heaviest first (see :func:`group_weight`)."""
    if "soak" not in (config.getoption("markexpr") or ""):
        soak = [item for item in items if item.get_closest_marker("soak")]
        if soak:
            config.hook.pytest_deselected(items=soak)
            items[:] = [item for item in items if not item.get_closest_marker("soak")]
    weights: dict[str, int] = {}
    for item in items:
        group = parallel_group(item)
        item.add_marker(pytest.mark.xdist_group(group))
        weights[group] = max(weights.get(group, 0), group_weight(item))
    # A stable sort: within a group (and among groups of one weight) the collection order stays.
    items.sort(key=lambda item: -weights[parallel_group(item)])


def parallel_group(item: pytest.Item) -> str:
    """The unit that one pytest-xdist worker runs whole (``make test`` runs ``-n auto --dist loadgroup``): a test
    module, so that its module-scoped servers start once; a module run on several backends is one unit per backend.
    The tests marked ``container`` are two units (the image built once per unit; arm64 under emulation apart)."""
    path = item.nodeid.split("::")[0]
    if item.get_closest_marker("container"):
        return "container-arm64" if item.get_closest_marker("arm64") else "container"
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec is not None else None
    return f"{path}[{backend}]" if backend else path


def group_weight(item: pytest.Item) -> int:
    """Longest first, so that no long unit starts last: the container units, then the ``slow`` ones."""
    if item.get_closest_marker("arm64"):
        return 3
    if item.get_closest_marker("container"):
        return 2
    return 1 if item.get_closest_marker("slow") else 0


_space_counter = iter(range(10**9))


@pytest.fixture
def space(server: EmulatorServer) -> int:
    """An empty space of the module's server (truncated before the test)."""
    number = next(_space_counter) % 10
    server.ok("truncate", {"space": str(number)})
    return number


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
