"""Fixtures of the operations tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.emulator_process import EmulatorProcess


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """``smarty-emulator serve --workers 2`` on a fresh data dir, stopped after the test."""
    server = EmulatorProcess(tmp_path / "data", workers=2).start()
    try:
        yield server
    finally:
        server.stop()
