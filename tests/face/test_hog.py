"""The pieces of dlib's HOG scan that the parallel detection reproduces: the detector's serialized fields, the
pyramid's level count, every cut between levels; and the passes the engine plans (real dlib, real fixture photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emulator.face.decode import decode_image
from emulator.face.engine import DetectionPass, DlibEngine
from emulator.face.hog import (
    DetectorBank,
    DetectorState,
    Pyramid,
    _encode_float,
    _read_float,
    load_detector,
    scan_levels,
    scan_whole,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def photo(name: str) -> np.ndarray:
    return decode_image((FIXTURES / name).read_bytes(), max_width=4000, max_height=4000)


@pytest.fixture(scope="module")
def bank() -> DetectorBank:
    return DetectorBank()


@pytest.fixture(scope="module")
def engine(hog_engine: DlibEngine) -> DlibEngine:
    """These tests are of HOG's detection passes: the engine with ``SMARTY_DETECTOR=hog``, whatever the default."""
    return hog_engine


def test_the_frontal_face_detectors_fields_are_read_from_its_bytes(bank: DetectorBank) -> None:
    state = bank.state
    assert (state.window_width, state.window_height, state.cell_size, state.padding) == (80, 80, 8, 0)
    assert state.min_layer == (64, 64)
    assert state.max_levels >= 100
    assert 0 < state.iou_threshold < 1 and 0 < state.covered_threshold < 1  # set by training, not dlib's defaults
    assert state.base_box_width() == 72  # 10 filter cells of 8 px: corners 9 cells apart


def test_a_part_detector_scans_exactly_its_levels_and_suppresses_nothing(bank: DetectorBank) -> None:
    part = DetectorState.parse(bank.state.every_candidate(7))
    assert (part.max_levels, part.min_layer) == (7, (1, 1))
    assert (part.iou_threshold, part.covered_threshold) == (1.0, 1.0)
    assert part.data[len(part.data) - 1000 :] == bank.state.data[len(bank.state.data) - 1000 :]  # the same filters
    rgb = photo("groups/kit_with_rose.jpg")
    everything, _, _ = load_detector(bank.state.every_candidate(30)).run(rgb, 1, 0.0)
    kept, _, _ = load_detector(bank.state.data).run(rgb, 1, 0.0)
    assert len(everything) > len(kept) == 2


@pytest.mark.parametrize("value", [0.33008212188056446, 0.7885714285714286, 1.0, 9.0, -2.5, 1e-300])
def test_dlib_floats_round_trip(value: float) -> None:
    encoded = _encode_float(value)
    assert _read_float(encoded, 0) == (value, len(encoded))


def test_a_foreign_or_truncated_state_is_refused(bank: DetectorBank) -> None:
    with pytest.raises(ValueError):
        DetectorState.parse(b"\x01\x03" + bank.state.data[2:])  # another version
    with pytest.raises(ValueError):
        DetectorState.parse(bank.state.data[:20])


@pytest.mark.parametrize(
    ("name", "upsample"),
    [("derived/t1_crop_700x394.jpg", 1), ("people/kate_siegel/aligned-160.png", 0), ("no-face/no-faces.jpg", 1)],
)
def test_every_cut_between_two_levels_gives_the_same_candidates(name: str, upsample: int, bank: DetectorBank) -> None:
    # kate_siegel at upsample 0: the face is found only on the last level, which a cut's part must still scan.
    rgb = photo(name)
    pyramid = Pyramid(rgb, upsample, bank.state)
    every = sorted(scan_levels(bank, pyramid, 0, pyramid.count), key=lambda c: (c.score, c.box))
    for cut in range(1, pyramid.count):
        parts = scan_levels(bank, pyramid, 0, cut) + scan_levels(bank, pyramid, cut, pyramid.count - cut)
        assert sorted(parts, key=lambda c: (c.score, c.box)) == every, cut
    if name.startswith("people/"):
        assert every and pyramid.count > 3


def test_the_level_count_is_dlibs(bank: DetectorBank) -> None:
    """One level more than dlib scans would find the face that the stock detector misses on a 62 px level."""
    rgb = photo("people/kate_siegel/aligned-160.png")
    pyramid = Pyramid(rgb, 0, bank.state)
    assert pyramid.count == 6
    assert pyramid.sizes[-1] == (62, 62)
    assert len(scan_levels(bank, pyramid, 0, pyramid.count)) == len(scan_whole(bank, rgb, 0)) == 1
    assert scan_levels(bank, pyramid, 0, pyramid.count - 1) == []  # the face is on the last level


def _scans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Record the (width, height, upsample) of every scan the engine runs."""
    from emulator.face import engine as engine_module

    scans: list[tuple[int, int, int]] = []
    real = engine_module.scan_parallel

    def recording(bank: DetectorBank, copy: np.ndarray, upsample: int, threads: int, pool: object) -> object:
        scans.append((copy.shape[1], copy.shape[0], upsample))
        return real(bank, copy, upsample, threads, pool)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module, "scan_parallel", recording)
    return scans


SMALL_GROUPS = ["derived/t1_crop_700x394.jpg", "derived/t1_crop_600x604.jpg", "groups/kit_with_rose.jpg"]


@pytest.mark.parametrize("name", SMALL_GROUPS)
def test_a_small_group_photo_skips_the_coarse_pass_and_gets_face_recognitions_answer(
    name: str, engine: DlibEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rgb = photo(name)
    height, width = rgb.shape[:2]
    coarse, fine = engine.detection_plan(width, height)
    assert coarse == DetectionPass(1.0, 0, stop_factor=2.0, probed=True) and fine == DetectionPass(1.0, 1)
    scans = _scans(monkeypatch)
    found, used = engine.detect(rgb)
    # The probe (a half-size copy) found no face of 160 px or more: the coarse pass could not have ended detection.
    assert scans == [(round(width / 2), round(height / 2), 0), (width, height, 1)]
    assert used == fine
    expected = [(c.box, c.score) for c in scan_whole(engine._detectors(), rgb, 1)]  # face_locations(img)
    assert [((r.left(), r.top(), r.right(), r.bottom()), s) for r, s in found] == expected


def test_a_small_close_up_is_still_answered_by_the_coarse_pass(
    engine: DlibEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rgb = photo("people/kit_harington/john2.jpeg")
    scans = _scans(monkeypatch)
    found, used = engine.detect(rgb)
    assert scans == [(315, 187, 0), (630, 374, 0)]  # the probe, then the coarse pass; no upsample 1 pass
    assert used == engine.detection_plan(630, 374)[0]
    assert len(found) == 1 and found[0][0].width() >= 160


def test_large_photos_keep_a_coarse_pass_on_a_small_copy_without_a_probe(engine: DlibEngine) -> None:
    plan = engine.detection_plan(1280, 720)
    assert [(p.scale, p.upsample, p.probed) for p in plan] == [(0.5, 0, False), (1.0, 0, False)]
