"""State survives a restart: the index is rebuilt from the store."""

from __future__ import annotations

from pathlib import Path

from emulator.face.engine import DlibEngine
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_server import EmulatorServer

pytestmark = BOTH_BACKENDS


def test_every_person_is_recognized_after_a_restart(engine: DlibEngine, backend: Backend, data_dir: Path) -> None:
    database = backend.settings()  # the same record for both runs
    first = EmulatorServer(data_dir, engine=engine, **database).start()
    try:
        first.set(0, 1, "people/obama/obama.jpg")
        first.set(0, 2, "people/biden/biden2.jpg")
        first.set(6, 3, "people/rose_leslie/img1.jpg", token="another-token")
        assert first.tags(0, "people/kit_harington/john1.jpeg", create_new=True) == ["person3"]
    finally:
        first.stop()

    second = EmulatorServer(data_dir, engine=engine, **database).start()
    try:
        assert second.tags(0, "people/obama/obama2.jpg", update_embedding=False) == ["person1"]
        assert second.tags(0, "people/biden/biden.jpg", update_embedding=False) == ["person2"]
        assert second.tags(0, "people/kit_harington/john2.jpeg", update_embedding=False) == ["person3"]
        assert second.tags(6, "people/rose_leslie/img2.jpg", update_embedding=False) == ["person3"]
        assert second.tags(0, "people/ivan/ivan.jpg", create_new=True) == ["person4"]
    finally:
        second.stop()
