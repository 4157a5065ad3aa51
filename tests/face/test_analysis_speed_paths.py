"""The fast paths of analysis: coarse-to-fine detection, the face cache, and worker processes.

Each fast path must answer exactly what the plain path answers; these tests prove that end to end (speed itself is
measured in bench/, not asserted here).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from emulator.face.cache import FaceCache, image_key
from emulator.face.decode import decode_image
from emulator.face.engine import DlibEngine, Face
from tests.support.emulator_server import EmulatorServer, fixture


@pytest.fixture(scope="module")
def engine(hog_engine: DlibEngine) -> DlibEngine:
    """These tests are of HOG's detection passes: the engine with ``SMARTY_DETECTOR=hog``, whatever the default."""
    return hog_engine


def test_a_close_up_is_answered_by_the_coarse_pass(engine: DlibEngine) -> None:
    rgb = decode_image(fixture("people/obama/obama-720p.jpg"), max_width=3840, max_height=2160)
    faces, used = engine.detect(rgb)
    assert len(faces) == 1
    assert used == engine.detection_plan(1280, 720)[0]
    assert used.scale == pytest.approx(0.5)


def test_small_faces_send_detection_on_to_the_finer_passes(engine: DlibEngine) -> None:
    # The coarse pass finds only Obama and Biden near its limit; the third face needs the fine pass.
    rgb = decode_image(fixture("groups/obama_and_biden.jpg"), max_width=3840, max_height=2160)
    faces, used = engine.detect(rgb)
    assert len(faces) == 3
    assert used == engine.detection_plan(2000, 1428)[-1]
    # A small image with a 76 px face: upsample 1, as face_recognition does.
    rgb = decode_image(fixture("groups/kit_with_rose.jpg"), max_width=3840, max_height=2160)
    faces, used = engine.detect(rgb)
    assert len(faces) == 2
    assert used.upsample == 1


def _recognize(server: EmulatorServer, space: int, photo: str) -> dict[str, object]:
    return server.recognize(space, photo, update_embedding=False)


def test_a_repeated_photo_is_served_from_the_cache_with_the_same_answer(server: EmulatorServer, space: int) -> None:
    server.set(space, 7, "people/obama/obama.jpg")
    cache = server.runtime.service.cache
    first = _recognize(server, space, "people/obama/obama-720p.jpg")
    hits = cache.hits
    again = _recognize(server, space, "people/obama/obama-720p.jpg")
    assert cache.hits == hits + 1
    assert again == first
    assert [p["tag"] for p in first["persons"]] == ["person7"]  # type: ignore[index]


def test_cache_size_zero_disables_the_cache(server: EmulatorServer, space: int) -> None:
    server.set(space, 3, "people/biden/biden2.jpg")
    server.configure(cache_size=0)
    try:
        cache = server.runtime.service.cache
        first = _recognize(server, space, "people/biden/biden.jpg")
        hits, size = cache.hits, len(cache)
        again = _recognize(server, space, "people/biden/biden.jpg")
        assert (cache.hits, len(cache), size) == (hits, 0, 0)
        assert again == first
    finally:
        server.configure(cache_size=1024)


@pytest.fixture(scope="module")
def pool_server(engine: DlibEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """A server analysing many-image requests in two worker processes, without the cache."""
    data_dir: Path = tmp_path_factory.mktemp("pool-data")
    running = EmulatorServer(data_dir, engine=engine, analyze_workers=2, cache_size=0).start()
    yield running
    running.stop()


def test_a_many_image_request_in_worker_processes_finds_what_the_engine_finds(
    pool_server: EmulatorServer, engine: DlibEngine
) -> None:
    photos = ["people/obama/obama-720p.jpg", "groups/two_people.jpg", "no-face/rocket.jpg", "groups/multiface.jpg"]
    files = [(f"img{i}", fixture(p)) for i, p in enumerate(photos)] + [("junk", b"not an image")]
    meta = {"space": "0", "images": [{"name": name} for name, _ in files], "create_new": True}
    body = pool_server.ok("recognize", meta, files)
    assert pool_server.runtime.service.processes is not None
    assert pool_server.runtime.service.processes.started
    objects = body["objects"]
    for (name, data), obj in zip(files[:-1], objects, strict=False):
        expected = [list(face.box) for face in engine.analyze(data)]
        assert obj["name"] == name
        assert [p["coord"] for p in obj.get("persons", [])] == expected
    assert objects[-1]["status"] == 1
    assert objects[-1]["error"] == "The memory contains data of an unknown image type"
    # Every embedding came back from a worker and was matched: Obama (img0) is also the left face of two_people.
    tags = [[p["tag"] for p in obj.get("persons", [])] for obj in objects]
    assert sum(map(len, tags)) == 9
    assert tags[1][0] == tags[0][0] == "person1"
    assert len({tag for group in tags for tag in group}) == 8


def test_a_cached_photo_still_obeys_lowered_pixel_limits(server: EmulatorServer, space: int) -> None:
    first = _recognize(server, space, "people/obama/obama-720p.jpg")
    assert first["status"] == 0
    server.configure(max_image_width=1000, max_image_height=1000)
    try:
        refused = _recognize(server, space, "people/obama/obama-720p.jpg")
    finally:
        server.configure(max_image_width=3840, max_image_height=2160)
    assert refused["status"] == 1
    assert "larger than the allowed 1000x1000" in str(refused["error"])


def _faces(n: int) -> tuple[Face, ...]:
    embedding = np.zeros(128, dtype=np.float32)
    embedding[n % 128] = 1.0
    return (Face((0, 0, 10, 10), 0.9, embedding, 0.5, ((1, 1),) * 5),)


def test_the_cache_keeps_the_most_recently_used_images_up_to_its_size() -> None:
    cache = FaceCache(2)
    keys = [image_key(hashlib.sha256(bytes([i]) * 10).hexdigest()) for i in range(3)]
    cache.put(keys[0], _faces(0))
    cache.put(keys[1], _faces(1))
    assert cache.get(keys[0]) is not None  # 0 is now the most recently used
    cache.put(keys[2], _faces(2))
    assert cache.get(keys[1]) is None
    kept = cache.get(keys[0])
    assert kept is not None and np.array_equal(kept[0].embedding, _faces(0)[0].embedding)
    cached = cache.get(keys[2])
    assert cached is not None and not cached[0].embedding.flags.writeable  # no caller can change a later hit
    cache.resize(0)
    assert len(cache) == 0
    cache.put(keys[0], _faces(0))
    assert cache.get(keys[0]) is None
