"""The attribute networks (emulator.face.attributes): numpy against ONNX Runtime, the expression input, laziness."""

from __future__ import annotations

import dlib
import numpy as np
import onnxruntime
import pytest

from emulator.face.attributes import AGE_CHIP, CHIP_PADDING, GENDER_CHIP, AttributeModels, models_dir
from emulator.face.attributes.expression import INPUT_SIDE, face_input
from emulator.face.attributes.graph import GraphNetwork
from emulator.face.attributes.onnx_reader import read_graph
from emulator.face.decode import decode_image
from emulator.face.engine import DlibEngine
from tests.support.emulator_server import fixture

PHOTOS = [
    "people/obama/obama.jpg",
    "people/rose_leslie/img1.jpg",
    "people/anthony_hopkins/Anthony_Hopkins_0001.jpg",
    "groups/t1.jpg",
    "labelled/fairface_0019.jpg",
]


@pytest.fixture(scope="module")
def chips(engine: DlibEngine) -> dict[int, np.ndarray]:
    """The 32x32 and 64x64 chips of every face of PHOTOS, cut as the engine cuts them."""
    out: dict[int, list[np.ndarray]] = {GENDER_CHIP: [], AGE_CHIP: []}
    predictor = engine._get_models().predictor
    for photo in PHOTOS:
        rgb = decode_image(fixture(photo), max_width=4000, max_height=4000)
        for rect, _ in engine.detect(rgb)[0]:
            shape = predictor(rgb, rect)
            for size in out:
                out[size].append(np.asarray(dlib.get_face_chip(rgb, shape, size=size, padding=CHIP_PADDING)))
    assert len(out[GENDER_CHIP]) >= 10
    return {size: np.stack(found) for size, found in out.items()}


@pytest.mark.parametrize(("name", "size"), [("gender-v1.onnx", GENDER_CHIP), ("age-v1.onnx", AGE_CHIP)])
def test_the_numpy_graph_gives_onnx_runtimes_probabilities(chips: dict[int, np.ndarray], name: str, size: int) -> None:
    path = models_dir() / name
    nhwc = (chips[size].astype(np.float32) - np.array([122.782, 117.001, 104.298], np.float32)) / np.float32(256)
    ours = GraphNetwork(read_graph(path.read_bytes())).run(nhwc)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"images": np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))})[0]
    assert ours.shape == theirs.shape == (len(nhwc), 2 if size == GENDER_CHIP else 81)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours.sum(axis=1), 1, atol=1e-5)


def test_the_numpy_and_onnx_runtimes_agree_within_1e_4(chips: dict[int, np.ndarray]) -> None:
    inputs = [np.full((INPUT_SIDE, INPUT_SIDE, 3), 100.0 + i, np.float32) for i in range(len(chips[GENDER_CHIP]))]
    numpy_side = AttributeModels("numpy").estimate(list(chips[GENDER_CHIP]), list(chips[AGE_CHIP]), inputs)
    onnx_side = AttributeModels("onnx").estimate(list(chips[GENDER_CHIP]), list(chips[AGE_CHIP]), inputs)
    for ours, theirs in zip(numpy_side, onnx_side, strict=True):
        assert abs(ours.male - theirs.male) <= 1e-4
        assert abs(ours.age - theirs.age) <= 1e-4
        assert ours.expressions == theirs.expressions  # numpy on both sides: no ONNX model of this network
    assert {a.male >= 0.5 for a in numpy_side} == {True, False}  # both sexes among the faces: not a constant


def test_an_engine_loads_the_attribute_models_only_when_asked(engine: DlibEngine) -> None:
    fresh = DlibEngine(**engine.options())
    fresh.warm_up()
    assert fresh.analyze(fixture("people/obama/obama.jpg"))[0].attributes is None
    assert fresh._attribute_models is None  # nothing made, nothing read
    [face] = fresh.analyze(fixture("people/obama/obama.jpg"), attributes=True)
    assert face.attributes is not None and fresh.attribute_models().loaded
    assert 0 <= face.attributes.male <= 1 and 0.25 <= face.attributes.age <= 80
    assert len(face.attributes.expressions) == 7 and abs(sum(face.attributes.expressions) - 1) < 1e-5


def test_the_expression_input_is_the_box_padded_to_a_square_and_resized() -> None:
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[100:212, 50:162] = 200  # a 112x112 square: taken as it is
    np.testing.assert_array_equal(face_input(rgb, (50, 100, 162, 212)), np.full((112, 112, 3), 200, np.float32))
    # A box cut by the border (224 wide, 112 high after clipping): zero rows above (56) and below (56), then halved.
    rgb[:] = 0
    rgb[:112, 0:224] = 90
    out = face_input(rgb, (0, -50, 224, 112))
    assert out.shape == (112, 112, 3)
    assert (out[:28] == 0).all() and (out[28:84] == 90).all() and (out[84:] == 0).all()
