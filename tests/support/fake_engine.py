"""A fake engine for unit tests: the image bytes name the faces to return.

``b"FAKE:<seed>,<seed>"`` gives one face per seed, its embedding a fixed random unit vector of
that seed; any other bytes are an unknown image type. A seed may also be written
``<seed>~<similarity>`` or ``<seed>~<similarity>~<variant>``: a face whose embedding has exactly
that cosine similarity to the seed's (see :func:`near`), for tests that need a face close to
another but not the same. Only for tests of the wire layer and the domain; every contract rule
also has a test on the real engine.
"""

from __future__ import annotations

import numpy as np

from emulator.face.decode import UnknownImageType
from emulator.face.engine import Face


def embedding(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def near(seed: int, similarity: float, variant: int = 0) -> np.ndarray:
    """A unit vector whose cosine similarity to ``embedding(seed)`` is ``similarity``; ``variant`` picks the
    direction it leans away in (different variants of one seed are different vectors)."""
    base = embedding(seed).astype(np.float64)
    other = np.random.default_rng((seed, variant, 1)).standard_normal(128)
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    vector = similarity * base + np.sqrt(1.0 - similarity**2) * other
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _embedding_of(token: str) -> np.ndarray:
    if "~" not in token:
        return embedding(int(token))
    seed, similarity, *variant = token.split("~")
    return near(int(seed), float(similarity), int(variant[0]) if variant else 0)


class FakeEngine:
    def __init__(self, confidence: float = 0.999771, awesomeness: float = 0.48944) -> None:
        self.confidence = confidence
        self.awesomeness = awesomeness

    def warm_up(self) -> None:
        return None

    def analyze(self, data: bytes, *, attributes: bool = False) -> list[Face]:
        """``attributes`` is accepted and ignored: a fake has no attribute models, so searcher=1 answers the
        synthetic values (emulator.persons.attributes.person_attributes)."""
        if not data.startswith(b"FAKE:"):
            raise UnknownImageType()
        tokens = [s for s in data[5:].decode().split(",") if s]
        return [
            Face(
                box=(10 + 100 * i, 20, 90 + 100 * i, 100),
                confidence=self.confidence,
                embedding=_embedding_of(token),
                awesomeness=self.awesomeness,
                landmarks=((30, 50), (40, 50), (70, 50), (60, 50), (50, 70)),
            )
            for i, token in enumerate(tokens)
        ]
