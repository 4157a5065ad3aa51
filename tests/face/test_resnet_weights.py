"""dlib's model file: parsed completely or refused with a clear error; the cached arrays follow the source file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from emulator.face import resnet_cache
from emulator.face.models import model_paths
from emulator.face.resnet_cache import load_weights
from emulator.face.resnet_model import ModelFormatError, ResnetWeights, architecture, param_shapes, parse, read_model

MODEL = model_paths().face_recognition


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return MODEL.read_bytes()


@pytest.fixture(scope="module")
def weights(model_bytes: bytes) -> ResnetWeights:
    return parse(model_bytes)


def test_the_model_file_is_dlibs_29_layer_resnet(weights: ResnetWeights) -> None:
    kinds = [layer.kind for layer in weights.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds[-1] == "fc"
    assert weights.input_mean.tolist() == pytest.approx([122.782, 117.001, 104.298])
    shapes = param_shapes(weights.layers)
    assert {i: {k: a.shape for k, a in p.items()} for i, p in weights.params.items()} == shapes
    assert weights.params[0]["weight"].shape == (32, 3, 7, 7)
    assert weights.params[len(weights.layers) - 1]["weight"].shape == (256, 128)
    assert 22_000_000 < weights.nbytes() < 23_000_000  # ~5.6 M float32 parameters: all of the 22.5 MB file


@pytest.mark.parametrize("keep", [0, 1, 100, 300, 11_000_000, -4, -1])
def test_a_truncated_file_is_refused(model_bytes: bytes, keep: int) -> None:
    with pytest.raises(ModelFormatError, match="is not dlib's face recognition ResNet model: the file ends early"):
        parse(model_bytes[:keep], source="copy.dat")


def test_bytes_after_the_network_are_refused(model_bytes: bytes) -> None:
    with pytest.raises(ModelFormatError, match="4 bytes follow the network"):
        parse(model_bytes + b"\0\0\0\0")


def test_a_changed_layer_is_refused(model_bytes: bytes) -> None:
    changed = model_bytes.replace(b"max_pool_2", b"avg_pool_2", 1)
    with pytest.raises(ModelFormatError, match=r"found 'avg_pool_2', expected 'max_pool_2' .* layer 3 \(max_pool\)"):
        parse(changed)
    wider = bytearray(model_bytes)
    at = model_bytes.index(b"input_rgb_image_sized") + len(b"input_rgb_image_sized")
    rows = at + model_bytes[at:].index(bytes([1, 150]))  # the input's rows, an unsigned integer of one byte
    wider[rows + 1] = 151
    with pytest.raises(ModelFormatError, match="the input rows is 151, expected 150"):
        parse(bytes(wider))


@pytest.mark.parametrize("foreign", ["shape_predictor", "photo", "text"])
def test_a_foreign_file_is_refused(foreign: str, tmp_path: Path) -> None:
    path = {
        "shape_predictor": model_paths().shape_predictor,  # another dlib model
        "photo": Path(__file__).resolve().parents[2] / "fixtures" / "people" / "obama" / "obama.jpg",
        "text": tmp_path / "model.dat",
    }[foreign]
    if foreign == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 22466066\n")
    with pytest.raises(ModelFormatError, match=f"{path.name} is not dlib's face recognition ResNet model"):
        read_model(path)
    with pytest.raises(ModelFormatError):
        load_weights(path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing is cached from a refused file


def test_a_truncated_copy_is_refused_by_the_loader(model_bytes: bytes, tmp_path: Path) -> None:
    copy = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    copy.write_bytes(model_bytes[: len(model_bytes) // 2])
    with pytest.raises(ModelFormatError, match=r"resnet_model_v1.dat is not .* the file ends early .* in layer \d+"):
        load_weights(copy, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


class CountingParser:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> ResnetWeights:
        self.calls += 1
        return read_model(path)


def _same(a: ResnetWeights, b: ResnetWeights) -> bool:
    return np.array_equal(a.input_mean, b.input_mean) and all(
        np.array_equal(a.params[i][k], b.params[i][k]) for i in a.params for k in a.params[i]
    )


def test_the_cache_is_used_and_rebuilt_when_the_source_changes(
    tmp_path: Path, weights: ResnetWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "model.dat"
    shutil.copyfile(MODEL, source)
    cache = tmp_path / "cache"
    parser = CountingParser()
    monkeypatch.setattr(resnet_cache, "read_model", parser)

    first = load_weights(source, cache_dir=cache)
    [cached] = cache.glob("*.npz")
    assert parser.calls == 1 and _same(first, weights)
    assert cached.stat().st_size < MODEL.stat().st_size + 100_000  # compact: the float32 arrays and little else

    again = load_weights(source, cache_dir=cache)
    assert parser.calls == 1 and _same(again, weights)  # from the cache

    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # touched
    load_weights(source, cache_dir=cache)
    assert parser.calls == 2
    [rebuilt] = cache.glob("*.npz")  # the stale cache is gone
    assert rebuilt != cached

    # Same size and modification time, one weight changed: the hash tells.
    data = bytearray(source.read_bytes())
    stat = source.stat()
    weight_at = data.index(b"con_4") + 1000  # inside the 4,736 float parameters of the first convolution
    data[weight_at] ^= 0x01
    source.write_bytes(bytes(data))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = load_weights(source, cache_dir=cache)
    assert parser.calls == 3
    assert not _same(changed, weights)
    assert len(list(cache.glob("*.npz"))) == 1


def test_a_damaged_cache_file_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = CountingParser()
    monkeypatch.setattr(resnet_cache, "read_model", parser)
    load_weights(MODEL, cache_dir=tmp_path)
    [cached] = tmp_path.glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])
    weights = load_weights(MODEL, cache_dir=tmp_path)
    assert parser.calls == 2
    assert len(weights.params) == len(param_shapes(architecture()))
    load_weights(MODEL, cache_dir=tmp_path)
    assert parser.calls == 2  # rewritten whole


def test_an_unwritable_cache_dir_keeps_the_weights_in_memory(tmp_path: Path, weights: ResnetWeights) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    assert _same(load_weights(MODEL, cache_dir=blocker / "cache"), weights)
    assert blocker.read_text() == "a file where the cache directory would be"
