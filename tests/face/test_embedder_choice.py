"""``SMARTY_EMBEDDER``: the setting, and the same recognition answers over HTTP and in worker processes with the
fast embedders as with dlib's own descriptor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.app import default_engine
from emulator.face import pool as pool_module
from emulator.face.engine import DlibEngine
from emulator.face.pool import AnalyzePool
from emulator.ops import memory
from emulator.settings import Settings, SettingsError
from tests.support.emulator_server import EmulatorServer, fixture

# One enrolled photo per person, then other photos of them, strangers and group photos (as tests/test_recognition).
ENROLLED = {
    1: "people/obama/obama.jpg",
    2: "people/biden/biden2.jpg",
    3: "people/kit_harington/john1.jpeg",
    4: "people/rose_leslie/img1.jpg",
    5: "people/alex_lacamoire/img1.jpg",
}
PROBES = {
    "people/obama/obama2.jpg": ["person1"],
    "people/obama/obama1.jpg": ["person1"],
    "people/biden/biden.jpg": ["person2"],
    "people/kit_harington/john2.jpeg": ["person3"],
    "people/kit_harington/johnsnow_test1.jpg": ["person3"],
    "people/rose_leslie/img2.jpg": ["person4"],
    "people/alex_lacamoire/alex-lacamoire.png": ["person5"],
    "people/tom_hanks/Tom_Hanks_54745.png": ["undefined"],
    "people/ivan/ivan.jpg": ["undefined"],
    "people/paul_rudd/aligned-160.png": ["undefined"],
    "groups/kit_with_rose.jpg": ["person4", "person3"],
    "groups/two_people.jpg": ["person1", "person2"],
}

Answers = dict[str, list[tuple[str, float, list[int]]]]  # photo -> (tag, similarity, coord) per face


def _answers(engine: DlibEngine, data_dir: Path) -> Answers:
    server = EmulatorServer(data_dir, engine=engine, analyze_workers=1).start()
    try:
        for person_id, photo in ENROLLED.items():
            assert server.set(0, person_id, photo) == {"status": 0, "name": "f"}
        answers: Answers = {}
        for photo in PROBES:
            persons = server.recognize(0, photo, update_embedding=False)["persons"]
            answers[photo] = [(p["tag"], p["similarity"], p["coord"]) for p in persons]
        return answers
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dlib_answers(tmp_path_factory: pytest.TempPathFactory) -> Answers:
    return _answers(DlibEngine(max_width=8192, max_height=8192, embedder="dlib"), tmp_path_factory.mktemp("dlib"))


def test_recognition_gives_the_same_answers_as_with_dlibs_descriptor(dlib_answers: Answers, tmp_path: Path) -> None:
    """The default embedder (numpy) against dlib's. The onnx path's descriptors are as close to dlib's
    (test_descriptor_exact.py), so it answers the same too; a third server would only repeat the detection."""
    ours = _answers(DlibEngine(max_width=8192, max_height=8192, embedder="numpy"), tmp_path)
    threshold = Settings.from_sources({}).match_threshold
    for photo, expected in PROBES.items():
        theirs = dlib_answers[photo]
        assert [tag for tag, _, _ in theirs] == expected, photo  # dlib itself answers as tests/test_recognition
        assert [tag for tag, _, _ in ours[photo]] == expected, photo
        assert [coord for _, _, coord in ours[photo]] == [coord for _, _, coord in theirs]
        for (_, similarity, _), (_, reference, _) in zip(ours[photo], theirs, strict=True):
            assert similarity == pytest.approx(reference, abs=1e-4), photo
            # The calibrated threshold needs no re-tuning: no similarity crosses it.
            assert (similarity >= threshold) == (reference >= threshold), photo


def test_the_setting_names_the_embedder() -> None:
    assert default_engine(Settings.from_sources({})).embedder == "numpy"
    assert default_engine(Settings.from_sources({"SMARTY_EMBEDDER": "dlib"})).embedder == "dlib"
    with pytest.raises(SettingsError, match="SMARTY_EMBEDDER='blas': expected one of numpy, onnx, dlib"):
        Settings.from_sources({"SMARTY_EMBEDDER": "blas"})
    with pytest.raises(ValueError, match="unknown embedder 'blas'"):
        DlibEngine(embedder="blas")
    assert DlibEngine(embedder="dlib").options()["embedder"] == "dlib"


def _worker_state(_: int) -> dict[str, Any]:
    """Runs in a pool worker: its engine's embedder, detection threads, BLAS thread counts and heap trimming."""
    from threadpoolctl import threadpool_info

    engine = pool_module._worker_engine
    assert engine is not None
    return {
        "embedder": engine.embedder,
        "detect_threads": engine.scan_threads(),
        "trim_every": memory.trimming_interval(),
        "blas_threads": sorted({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}),
    }


@pytest.fixture
def dlib_pool() -> Iterator[AnalyzePool]:
    memory.enable_trimming(every=5)  # as in a served process: its workers trim too
    pool = AnalyzePool(2, DlibEngine(embedder="dlib").options())
    try:
        pool.start()
        yield pool
    finally:
        pool.close()
        memory.disable_trimming()


def test_worker_processes_use_the_chosen_embedder_one_thread_and_the_servers_trimming(dlib_pool: AnalyzePool) -> None:
    photos = ["groups/two_people.jpg", "people/biden/biden.jpg"]
    outcomes = dlib_pool.analyze([fixture(p) for p in photos])
    local = DlibEngine(embedder="dlib")
    for photo, outcome in zip(photos, outcomes, strict=True):
        assert isinstance(outcome, tuple)
        expected = local.analyze(fixture(photo))
        assert [f.box for f in outcome] == [f.box for f in expected]
        assert all((f.embedding == e.embedding).all() for f, e in zip(outcome, expected, strict=True))
    states = [dlib_pool._get().submit(_worker_state, i).result(timeout=60) for i in range(4)]
    expected = {"embedder": "dlib", "detect_threads": 1, "trim_every": 5, "blas_threads": [1]}
    assert all(state == expected for state in states), states
