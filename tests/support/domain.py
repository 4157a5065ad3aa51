"""Helpers for the domain tests that call the persons service and its index directly (no server, no dlib)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from emulator.persons.index import SpaceIndex
from emulator.persons.types import ImageInput
from emulator.settings import Settings


def domain_settings(data_dir: Path) -> Settings:
    """Default settings with a SQLite store in ``data_dir``; images analysed in the calling thread."""
    return Settings.from_sources({}, {"data_dir": data_dir, "analyze_workers": 1})


def fake(*tokens: object) -> bytes:
    """The bytes :class:`tests.support.fake_engine.FakeEngine` reads as one face per token, left to right."""
    return b"FAKE:" + ",".join(str(t) for t in tokens).encode()


def image(name: str, data: bytes | None, person_id: int | None = None, size: int | None = None) -> ImageInput:
    """An image as the wire layer hands it to the service (its SHA-256 hashed, ``size`` its length)."""
    digest = hashlib.sha256(data).hexdigest() if data is not None else None
    return ImageInput(name, data, len(data or b"") if size is None else size, person_id, digest)


class LiveSettings:
    """Settings the service reads on every call, changeable while it runs (as the admin API changes them)."""

    def __init__(self, settings: Settings) -> None:
        self.value = settings

    def __call__(self) -> Settings:
        return self.value

    def change(self, **changes: object) -> None:
        self.value = self.value.replace(**changes)


def assert_same_index(actual: SpaceIndex, expected: SpaceIndex) -> None:
    """Same generation, same rows (face ids, person ids, embeddings bit for bit) in the same order."""
    assert actual.generation == expected.generation, f"generation {actual.generation} != {expected.generation}"
    got, want = actual.face_ids.tolist(), expected.face_ids.tolist()
    assert got == want, f"face ids {got} != {want}"
    got, want = actual.person_ids.tolist(), expected.person_ids.tolist()
    assert got == want, f"person ids {got} != {want}"
    assert actual.matrix.shape == expected.matrix.shape, f"matrix {actual.matrix.shape} != {expected.matrix.shape}"
    assert np.array_equal(actual.matrix, expected.matrix), "the embeddings differ"
    got, want = actual.unique_person_ids.tolist(), expected.unique_person_ids.tolist()
    assert got == want, f"persons {got} != {want}"
