"""Shared fixtures: one real dlib engine per test session, real servers on loopback, and the store backend.

A module runs against both backends with ``pytestmark = BOTH_BACKENDS`` (a test alone with ``@BOTH_BACKENDS``): its
tests run once with SQLite and once with PostgreSQL (a real server started once per session, a fresh database per
module). Without it, ``backend`` is SQLite.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.app import default_engine
from emulator.face.engine import DlibEngine
from emulator.face.yunet import resolve_detector
from emulator.settings import Settings
from tests.support import parallel
from tests.support.backends import BACKENDS, DETECTOR_BACKENDS, DLIB_DESCRIPTOR, HOG_DETECTOR, YUNET_DETECTOR, Backend
from tests.support.ci import require_yunet
from tests.support.emulator_server import EmulatorServer
from tests.support.postgres import PostgresCluster, require_postgres


@functools.cache
def _real_engine(detector: str) -> DlibEngine:
    """One warm real engine per face detector that runs (``hog``, ``yunet``) for the whole session."""
    real = default_engine(Settings.from_sources({}, {"detector": detector}))
    real.warm_up()
    return real


@pytest.fixture(scope="session")
def engine() -> DlibEngine:
    """The real engine as the server builds it (the default ``SMARTY_DETECTOR``), models loaded once for the whole
    suite."""
    return _real_engine(resolve_detector(Settings.from_sources({}).detector))


@pytest.fixture(scope="session")
def hog_engine() -> DlibEngine:
    """The real engine with dlib's HOG detector (``SMARTY_DETECTOR=hog``)."""
    return _real_engine("hog")


@pytest.fixture(scope="session")
def yunet_engine() -> DlibEngine:
    """The real engine with YuNet (``SMARTY_DETECTOR=yunet``); where its wheel is absent the test skips (CI: fails)."""
    require_yunet()
    return _real_engine("yunet")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of a ``BOTH_BACKENDS`` module that use the backend (through a server or directly) run on both; those of
    a ``BOTH_EMBEDDERS`` module also with dlib's own descriptor, those of a ``BOTH_DETECTORS`` module also with
    each face detector."""
    if metafunc.definition.get_closest_marker("both_backends") and "backend" in metafunc.fixturenames:
        extra: tuple[str, ...] = (DLIB_DESCRIPTOR,) if metafunc.definition.get_closest_marker("both_embedders") else ()
        if metafunc.definition.get_closest_marker("both_detectors"):
            extra += DETECTOR_BACKENDS
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
    elif backend.name in (HOG_DETECTOR, YUNET_DETECTOR):  # one face detector named, whatever the default
        engine = request.getfixturevalue("hog_engine" if backend.name == HOG_DETECTOR else "yunet_engine")
    running = EmulatorServer(tmp_path_factory.mktemp("data"), engine=engine, **backend.settings()).start()
    yield running
    running.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``soak`` run only when ``-m`` names them (``make soak``), never in ``make test``. The rest are
    ordered for the parallel run (:mod:`tests.support.parallel`)."""
    if "soak" not in (config.getoption("markexpr") or ""):
        soak = [item for item in items if item.get_closest_marker("soak")]
        if soak:
            config.hook.pytest_deselected(items=soak)
            items[:] = [item for item in items if not item.get_closest_marker("soak")]
    parallel.tell_apart(items)
    parallel.order_heaviest_first(items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures some tests measure (the container tests': image sizes, time to ready), for the record."""
    found = parallel.figures(terminalreporter.stats)
    if found:
        terminalreporter.write_sep("-", "figures")
        for name, text in found.items():
            terminalreporter.write_line(f"{name}: {text}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test``'s parallel run (``--dist loadscope``) hands out whole test modules (:mod:`tests.support.parallel`);
    any other distribution is pytest-xdist's own."""
    return parallel.make_scheduler(config, log) if config.getvalue("dist") == "loadscope" else None


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
