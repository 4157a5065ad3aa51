"""The fast embedders against dlib's own ``compute_face_descriptor``, on the faces of every photo in fixtures/ (up to
``FACES_PER_PHOTO`` of a crowd; the labelled portraits of fixtures/labelled/ add nothing new and are left out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from emulator.face.decode import decode_image
from emulator.face.embedder import DlibEmbedder, make_embedder
from emulator.face.engine import DlibEngine
from tests.support.emulator_server import FIXTURES

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tiff"}
MIN_COSINE = 0.99999
MAX_ABS_DIFFERENCE = 1e-4
FACES_PER_PHOTO = 8  # dlib's own descriptor is the slow side: a crowd of 165 faces would take most of a minute


@dataclass(frozen=True)
class Faces:
    names: list[str]  # the photo of each chip
    chips: np.ndarray  # (N, 150, 150, 3) uint8
    reference: np.ndarray  # (N, 128): dlib's descriptors


@pytest.fixture(scope="module")
def fixture_faces(engine: DlibEngine) -> Faces:
    """Every face the engine finds in every fixture photo, with dlib's descriptor of its chip."""
    names: list[str] = []
    chips: list[np.ndarray] = []
    photos = (p for p in FIXTURES.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and "labelled" not in p.parts)
    for path in sorted(photos):
        rgb = decode_image(path.read_bytes(), max_width=engine.max_width, max_height=engine.max_height)
        for chip in engine.face_chips(rgb)[:FACES_PER_PHOTO]:
            names.append(str(path.relative_to(FIXTURES)))
            chips.append(chip)
    reference = DlibEmbedder().descriptors(chips)
    return Faces(names, np.stack(chips), reference)


def test_the_fixtures_have_many_faces(fixture_faces: Faces) -> None:
    assert len(fixture_faces.chips) >= 45
    assert len(set(fixture_faces.names)) >= 35
    assert {"groups/multiface.jpg", "derived/obama_cmyk.jpg", "people/angelina_jolie/aligned-160.png"} <= set(
        fixture_faces.names
    )


@pytest.mark.parametrize("name", ["onnx", "numpy"])
def test_every_fixture_face_matches_dlib(fixture_faces: Faces, name: str) -> None:
    embedder = make_embedder(name)
    assert embedder.name == name
    ours = embedder.descriptors(list(fixture_faces.chips))
    reference = fixture_faces.reference
    assert ours.shape == reference.shape == (len(fixture_faces.chips), 128)
    cosine = (ours * reference).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    worst = np.abs(ours - reference).max(axis=1)
    bad = [(n, float(c), float(d)) for n, c, d in zip(fixture_faces.names, cosine, worst, strict=True)]
    bad = [b for b in bad if b[1] < MIN_COSINE or b[2] > MAX_ABS_DIFFERENCE]
    assert not bad, f"faces that differ from dlib's descriptor (photo, cosine, max |difference|): {bad}"
    # A batch gives what single faces give (up to float32 rounding of another summation order).
    single = np.stack([embedder.descriptors([chip])[0] for chip in fixture_faces.chips[:3]])
    assert np.abs(single - ours[:3]).max() <= 1e-5


def test_different_faces_give_different_descriptors(fixture_faces: Faces) -> None:
    """Not a constant network: descriptors spread like dlib's (a wrong network could still be self-consistent)."""
    ours = make_embedder("onnx").descriptors(list(fixture_faces.chips))
    distances = np.linalg.norm(ours[:, None] - ours[None], axis=2)
    reference = np.linalg.norm(fixture_faces.reference[:, None] - fixture_faces.reference[None], axis=2)
    assert distances.max() > 0.8
    assert np.abs(distances - reference).max() < 1e-4
