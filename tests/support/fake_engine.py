"""A fake engine for wire-layer unit tests: the image bytes name the faces to return.

``b"FAKE:<seed>,<seed>"`` gives one face per seed, its embedding a fixed random unit vector of
that seed; any other bytes are an unknown image type. Only for tests of the wire layer; every
contract rule also has a test on the real engine.
"""

from __future__ import annotations

import numpy as np

from emulator.face.decode import UnknownImageType
from emulator.face.engine import Face


def embedding(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeEngine:
    def __init__(self, confidence: float = 0.999771, awesomeness: float = 0.48944) -> None:
        self.confidence = confidence
        self.awesomeness = awesomeness

    def warm_up(self) -> None:
        return None

    def analyze(self, data: bytes) -> list[Face]:
        if not data.startswith(b"FAKE:"):
            raise UnknownImageType()
        seeds = [int(s) for s in data[5:].decode().split(",") if s]
        return [
            Face(
                box=(10 + 100 * i, 20, 90 + 100 * i, 100),
                confidence=self.confidence,
                embedding=embedding(seed),
                awesomeness=self.awesomeness,
                landmarks=((30, 50), (40, 50), (70, 50), (60, 50), (50, 70)),
            )
            for i, seed in enumerate(seeds)
        ]
