"""The snapshot bounds in-process: what is refused, with which words, and what still passes.

The end-to-end proof that memory stays flat while each is refused is in test_snapshot_bombs.py.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from emulator.control import snapshot
from emulator.persons.types import ClientId, SpaceKey
from emulator.store.sqlite import SqliteStore
from tests.support import bombs

LIMITS = snapshot.SnapshotLimits(max_bytes=1 << 20, max_faces=100)


def _valid(faces: int = 3) -> bytes:
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(faces, 128)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    space = snapshot.SnapshotSpace(
        SpaceKey(ClientId("c"), 0),
        tuple(
            snapshot.SnapshotFace(i + 1, "set", 1.0, {"name": f"f{i}", "coord": [1, 2, 3, 4]}, e, b"jpeg")
            for i, e in enumerate(embeddings)
        ),
    )
    return snapshot.dumps(snapshot.Snapshot(snapshot.Scope(), (space,)))


def test_a_valid_snapshot_passes_plain_gzipped_and_in_several_gzip_members() -> None:
    data = _valid()
    assert len(snapshot.loads(data, LIMITS).spaces[0].faces) == 3
    assert len(snapshot.loads(gzip.compress(data), LIMITS).spaces[0].faces) == 3
    half = len(data) // 2
    members = gzip.compress(data[:half]) + gzip.compress(data[half:])
    assert len(snapshot.loads(members, LIMITS).spaces[0].faces) == 3


def test_an_exported_face_costs_fewer_json_values_than_the_bound_allows() -> None:
    data = _valid(faces=100)
    values = data.count(b",") + data.count(b"{") + data.count(b"[")
    assert values < snapshot.VALUES_PER_FACE * 100
    snapshot.count_values(data, LIMITS)  # passes


def test_a_gzip_bomb_is_refused_while_it_inflates() -> None:
    bomb = bombs.gzip_bomb(256 << 20)  # 256 MiB of "A" in about 256 KB
    with pytest.raises(snapshot.SnapshotTooLarge, match=r"it inflates to more; the limit is 1048576 bytes"):
        snapshot.loads(bomb, LIMITS)


def test_plain_json_past_the_byte_bound_is_refused_before_parsing() -> None:
    data = b"".join(bombs.enormous_string(2 << 20))
    with pytest.raises(snapshot.SnapshotTooLarge, match=r"it holds \d+ bytes; the limit is 1048576 bytes"):
        snapshot.loads(data, LIMITS)


def test_a_file_past_the_byte_bound_is_refused_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as out:
        out.writelines(bombs.enormous_string(2 << 20))
    with open(path, "rb") as handle, pytest.raises(snapshot.SnapshotTooLarge, match=r"it holds \d+ bytes"):
        snapshot.read_file(handle, LIMITS)
    stream = io.BytesIO(path.read_bytes())  # not a file: counted while read
    with pytest.raises(snapshot.SnapshotTooLarge, match="it holds more"):
        snapshot.read_file(stream, LIMITS)


def test_many_tiny_entries_are_refused_before_parsing() -> None:
    data = bombs.tiny_entries(50_000)  # 150 KB: within the byte bound, but 50,000 objects for 100 faces
    with pytest.raises(snapshot.SnapshotTooLarge, match=r"holds about 100007 values, at most 6496 are allowed"):
        snapshot.loads(data, LIMITS)


def test_more_faces_than_the_bound_are_refused() -> None:
    data = _valid(faces=30)
    with pytest.raises(snapshot.SnapshotTooLarge, match="30 faces, the limit is 20"):
        snapshot.loads(data, snapshot.SnapshotLimits(max_bytes=1 << 20, max_faces=20))


def test_broken_gzip_is_not_a_snapshot() -> None:
    with pytest.raises(snapshot.SnapshotError, match="broken gzip data"):
        snapshot.loads(gzip.compress(_valid())[:-20], LIMITS)
    with pytest.raises(snapshot.SnapshotError, match="broken gzip data"):
        snapshot.loads(b"\x1f\x8b" + zlib.compress(b"not gzip"), LIMITS)


def test_limits_come_from_the_settings(tmp_path: Path) -> None:
    from emulator.settings import Settings

    settings = Settings.from_sources({"SMARTY_MAX_SNAPSHOT_BYTES": "2048", "SMARTY_MAX_SNAPSHOT_FACES": "5"})
    assert snapshot.SnapshotLimits.from_settings(settings) == snapshot.SnapshotLimits(2048, 5)
    defaults = snapshot.SnapshotLimits.defaults()
    assert (defaults.max_bytes, defaults.max_faces) == (64 << 20, 75_000)
    store = SqliteStore(tmp_path)
    store.open()
    report = snapshot.restore(store, snapshot.loads(_valid(), defaults))
    assert report.faces_added == 3
    assert json.loads(snapshot.dumps(snapshot.take(store, snapshot.Scope())))["spaces"][0]["persons"] == [1, 2, 3]
    store.close()
