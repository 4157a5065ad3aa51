"""Shared fixtures: one real dlib engine per test session, and real servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.app import default_engine
from emulator.face.engine import DlibEngine
from emulator.settings import Settings
from tests.support.emulator_server import EmulatorServer


@pytest.fixture(scope="session")
def engine() -> DlibEngine:
    """The real engine as the server builds it, models loaded once for the whole suite."""
    real = default_engine(Settings.from_sources({}))
    real.warm_up()
    return real


@pytest.fixture(scope="module")
def server(engine: DlibEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """A real emulator (real dlib) with its own data dir, shared by one test module."""
    running = EmulatorServer(tmp_path_factory.mktemp("data"), engine=engine).start()
    yield running
    running.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``soak`` run only when ``-m`` names them (``make soak``), never in ``make test``."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


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
