"""Detection on several cores answers exactly what one dlib scan answers (real dlib, real fixture photos).

One HOG scan is cut into parts of its pyramid levels (emulator.face.hog) that run in parallel threads
(emulator.face.parallel_scan); the parts' candidates, merged with dlib's own overlap test, must give the very boxes
and scores of dlib's single scan, whatever the cut.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from emulator.face import parallel_scan
from emulator.face.decode import decode_image
from emulator.face.engine import DlibEngine
from emulator.face.hog import Candidate, DetectorBank, Pyramid, overlap, scan_levels, scan_whole, suppress
from emulator.face.parallel_scan import Pending, available_cores, plan_parts, run_all, scan_parallel, scan_pool

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
GROUPS = [
    "groups/kit_with_rose.jpg",
    "groups/multiface.jpg",
    "groups/obama_and_biden.jpg",
    "groups/t1.jpg",
    "groups/two_people.jpg",
    "derived/t1_crop_700x394.jpg",
    "derived/t1_crop_600x604.jpg",
]
UPSAMPLE_MAX_PIXELS = 1_000_000  # upsample 1 on photos up to this size (larger ones take seconds per scan)


def photo(name: str) -> np.ndarray:
    return decode_image((FIXTURES / name).read_bytes(), max_width=4000, max_height=4000)


@pytest.fixture(scope="module")
def bank() -> DetectorBank:
    return DetectorBank()


@pytest.fixture(scope="module")
def engine(hog_engine: DlibEngine) -> DlibEngine:
    """These tests are of HOG's detection passes: the engine with ``SMARTY_DETECTOR=hog``, whatever the default."""
    return hog_engine


@pytest.fixture(scope="module")
def threads() -> Iterator[ThreadPoolExecutor]:
    """Two scan threads of our own, so that the tests cut scans the same way on any machine."""
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-scan")
    yield pool
    pool.shutdown()


def as_tuples(candidates: list[Candidate]) -> list[tuple[float, int, tuple[int, int, int, int]]]:
    """Scores, filters and boxes (in the input image's pixels, as dlib reports them), in dlib's order."""
    return [(c.score, c.weight_index, c.box) for c in candidates]


@pytest.mark.parametrize("name", GROUPS)
def test_a_scan_cut_into_parallel_parts_finds_the_boxes_and_scores_of_one_scan(
    name: str, bank: DetectorBank, threads: ThreadPoolExecutor
) -> None:
    rgb = photo(name)
    height, width = rgb.shape[:2]
    for upsample in (0, 1) if width * height <= UPSAMPLE_MAX_PIXELS else (0,):
        one_scan = as_tuples(scan_whole(bank, rgb, upsample))
        assert one_scan, f"{name}: the test needs faces"
        for parts in (2, 3):
            cut = plan_parts(Pyramid(rgb, upsample, bank.state), parts)
            assert len(cut) == parts, cut  # really cut
            assert as_tuples(scan_parallel(bank, rgb, upsample, parts, threads)) == one_scan, (name, upsample, cut)


def test_a_face_whose_windows_fall_on_both_sides_of_a_cut_is_found_once(bank: DetectorBank) -> None:
    rgb = photo("groups/kit_with_rose.jpg")
    pyramid = Pyramid(rgb, 1, bank.state)
    faces = suppress(scan_levels(bank, pyramid, 0, pyramid.count), bank.state)
    state = bank.state
    straddling = []
    for cut in range(1, pyramid.count):
        fine = scan_levels(bank, pyramid, 0, cut)
        coarse = scan_levels(bank, pyramid, cut, pyramid.count - cut)
        for face in faces:
            near_fine = [c for c in fine if overlap(c.box, face.box, state.iou_threshold, state.covered_threshold)]
            near_coarse = [c for c in coarse if overlap(c.box, face.box, state.iou_threshold, state.covered_threshold)]
            if near_fine and near_coarse:
                straddling.append((cut, face, fine, coarse))
    assert straddling, "no face has windows on two sides of a cut: the test would prove nothing"
    for cut, face, fine, coarse in straddling:
        # Each side alone keeps a box for this face: merged without the overlap test, the face would be found twice.
        each_side = suppress(fine, state) + suppress(coarse, state)
        assert sum(overlap(c.box, face.box, state.iou_threshold, state.covered_threshold) for c in each_side) == 2
        merged = suppress(fine + coarse, state)
        assert merged == faces, cut
        assert sum(overlap(c.box, face.box, state.iou_threshold, state.covered_threshold) for c in merged) == 1


@pytest.mark.parametrize("name", GROUPS)
def test_the_engine_on_several_threads_answers_like_on_one(name: str, engine: DlibEngine) -> None:
    rgb = photo(name)
    alone = DlibEngine(**{**engine.options(), "detect_threads": 1})
    alone._models, alone._bank = engine._get_models(), engine._detectors()  # the same loaded models
    together = DlibEngine(**{**engine.options(), "detect_threads": 2})
    together._models, together._bank = alone._models, alone._bank
    one, used_one = alone.detect(rgb)
    two, used_two = together.detect(rgb)
    assert used_one == used_two
    assert [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in one] == [
        (r.left(), r.top(), r.right(), r.bottom(), s) for r, s in two
    ]


def test_the_scan_pool_has_one_thread_per_core_but_one_and_stays_that_small(engine: DlibEngine) -> None:
    pool = scan_pool()
    cores = available_cores()
    if cores == 1:
        assert pool is None
        return
    assert pool is not None and pool._max_workers == cores - 1
    rgb = photo("derived/t1_crop_700x394.jpg")
    expected = engine.detect(rgb)[0]
    seen: set[str] = set()
    results: list[list[tuple[int, int, int, int, float]]] = []
    lock = threading.Lock()

    def detect_twice() -> None:
        for _ in range(2):
            found, _ = engine.detect(rgb)
            with lock:
                results.append([(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in found])
                seen.update(t.name for t in threading.enumerate() if t.name.startswith("hog-scan"))

    callers = [threading.Thread(target=detect_twice) for _ in range(6)]  # more requests at once than cores
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=300)
    assert len(results) == 12
    assert all(found == [(r.left(), r.top(), r.right(), r.bottom(), s) for r, s in expected] for found in results)
    assert 1 <= len(seen) <= cores - 1
    assert len([t for t in threading.enumerate() if t.name.startswith("hog-scan")]) <= cores - 1
    assert scan_pool() is pool


def test_a_part_no_thread_has_started_is_scanned_by_the_caller() -> None:
    """A request never waits behind another request's parts: it takes back its own queued ones."""
    busy = threading.Event()
    release = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(lambda: (busy.set(), release.wait(60)))  # another request's part holds the only thread
        assert busy.wait(10)
        callers: list[str] = []
        results = run_all(
            [lambda: callers.append(threading.current_thread().name) or 1] * 3,
            pool,
        )
        assert results == [1, 1, 1]
        assert callers == [threading.current_thread().name] * 3
        dropped = Pending(lambda: 2, pool)
        dropped.drop()
        assert dropped.result() == 2  # a dropped part still answers if asked, in the caller
    finally:
        release.set()
        pool.shutdown()


def test_the_pool_is_made_again_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    first = scan_pool()
    if first is None:
        pytest.skip("one core: no pool")
    monkeypatch.setattr(parallel_scan, "_pool", parallel_scan._pool)  # restored afterwards: this process keeps its own
    monkeypatch.setattr(parallel_scan.os, "getpid", lambda: -1)  # as seen from a child of this process
    again = scan_pool()
    assert again is not None and again is not first
    again.shutdown()
    monkeypatch.undo()
    assert scan_pool() is first
