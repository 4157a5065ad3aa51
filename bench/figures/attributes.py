"""Figure 13: the searcher=1 attributes per face (sex, age, expression) against the descriptor's own time per face,
on the same faces, numpy and ONNX Runtime side by side; and how right they are on the labelled portraits."""

from __future__ import annotations

import csv
import functools
import statistics
from collections.abc import Callable
from typing import Any

import dlib
import numpy as np

from bench.figures import Run
from bench.measure import FIXTURES, fixture, interleaved, ms
from bench.report import Results
from emulator.face.attributes import AGE_CHIP, CHIP_PADDING, GENDER_CHIP, AttributeModels, _normalised
from emulator.face.attributes.expression import face_input
from emulator.face.decode import decode_image
from emulator.face.embedder import NumpyEmbedder, OnnxEmbedder, limit_blas_threads
from emulator.face.engine import DlibEngine

NAME = "attributes"
PHOTOS = ("groups/multiface.jpg", "groups/two_people.jpg", "people/obama/obama-720p.jpg")
TARGET = 0.25  # attributes per face <= this share of the descriptor's per-face time


def _faces(engine: DlibEngine) -> tuple[list[np.ndarray], list[list[Any]], list[list[Any]], list[np.ndarray]]:
    """The images, their landmarks and faces (8 in all), and the descriptor's chips of those faces."""
    images, shapes, faces, chips = [], [], [], []
    predictor = engine._get_models().predictor
    for photo in PHOTOS:
        rgb = decode_image(fixture(photo), max_width=3840, max_height=2160)
        detections, _ = engine.detect(rgb)
        found = engine.analyze_array(rgb)
        images.append(rgb)
        shapes.append([predictor(rgb, rect) for rect, _ in detections])
        faces.append(found)
        chips += engine.face_chips(rgb)
    return images, shapes, faces, chips[:8]


def _inputs(images: list[np.ndarray], shapes: list[list[Any]], faces: list[list[Any]]) -> tuple[list[Any], ...]:
    """What the networks take, cut as the engine cuts it: the 32 and 64 px chips, the 112 px expression input."""
    gender, age, expression = [], [], []
    for rgb, image_shapes, image_faces in zip(images, shapes, faces, strict=True):
        for shape, face in zip(image_shapes, image_faces, strict=True):
            gender.append(np.asarray(dlib.get_face_chip(rgb, shape, size=GENDER_CHIP, padding=CHIP_PADDING)))
            age.append(np.asarray(dlib.get_face_chip(rgb, shape, size=AGE_CHIP, padding=CHIP_PADDING)))
            expression.append(face_input(rgb, face.box))
    return gender, age, expression


def _accuracy(engine: DlibEngine) -> tuple[int, int, float, int, int, float]:
    """Sex right / faces and the mean distance of the age from the labelled range's middle; all, and from 20 up."""
    with (FIXTURES / "labelled" / "labels.csv").open(newline="") as handle:
        labels = list(csv.DictReader(handle))
    right, errors, adult_right, adult_errors = [], [], [], []
    for row in labels:
        [face] = engine.analyze(fixture(f"labelled/{row['file']}"), attributes=True)
        assert face.attributes is not None
        low, past = (
            (70, 81) if row["age"] == "70+" else (int(row["age"].split("-")[0]), int(row["age"].split("-")[1]) + 1)
        )
        right.append((face.attributes.male >= 0.5) == (row["sex"] == "male"))
        errors.append(abs(round(face.attributes.age) - (low + past) / 2))
        if low >= 20:
            adult_right.append(right[-1])
            adult_errors.append(errors[-1])
    return (
        sum(right),
        len(right),
        statistics.mean(errors),
        sum(adult_right),
        len(adult_right),
        statistics.mean(adult_errors),
    )


def measure(res: Results, run: Run) -> None:
    """In rounds that interleave the descriptor and the attributes on the same 8 faces (one thread each)."""
    limit_blas_threads()
    rounds = max(5, run.runs // 3)
    engine = DlibEngine(detect_threads=1)
    images, shapes, faces, chips = _faces(engine)
    count = sum(len(f) for f in faces)
    gender, age, expression = _inputs(images, shapes, faces)
    gender, age, expression = gender[:8], age[:8], expression[:8]
    assert len(chips) == len(gender) == 8, count
    descriptors = {"numpy": NumpyEmbedder(), "onnx": OnnxEmbedder()}
    models = {"numpy": AttributeModels("numpy"), "onnx": AttributeModels("onnx")}
    for name in descriptors:
        descriptors[name].descriptors(chips[:2])
        models[name].estimate(gender[:2], age[:2], expression[:2])
    gender_net, age_net, expression_net = models["numpy"].load()
    onnx_gender, onnx_age, _ = models["onnx"].load()
    ways: dict[str, Callable[[], Any]] = {}
    for name in descriptors:
        ways[f"descriptor {name}"] = functools.partial(descriptors[name].descriptors, chips)
        ways[f"attributes {name}"] = functools.partial(models[name].estimate, gender, age, expression)
    ways["cut the inputs"] = functools.partial(_inputs, images, shapes, faces)
    ways["gender numpy"] = lambda: gender_net.run(_normalised(gender))
    ways["age numpy"] = lambda: age_net.run(_normalised(age))
    ways["gender onnx"] = lambda: onnx_gender.run(_normalised(gender))
    ways["age onnx"] = lambda: onnx_age.run(_normalised(age))
    ways["expression numpy"] = lambda: expression_net.probabilities(np.stack(expression))
    times = interleaved(ways, rounds)
    per_face = {key: statistics.median(t / len(chips) for t in values) for key, values in times.items()}
    per_face["cut the inputs"] = statistics.median(t / count for t in times["cut the inputs"])
    right, total, error, adult_right, adult_total, adult_error = _accuracy(engine)

    res.add("## 13. searcher=1 attributes per face, against the descriptor (the same 8 faces)")
    res.add()
    res.add(
        f"{rounds} rounds; each times, on one thread, the descriptor of 8 faces (one batch) and the attributes of the "
        "same 8 faces (sex, age and expression networks, batches of 8), on numpy and on ONNX Runtime, then each "
        "network alone and the cutting of their inputs (two dlib chips and the expression crop per face, "
        f"{count} faces of {len(PHOTOS)} photos). Medians per face. The expression network runs on numpy on both "
        "sides (it has no ONNX model)."
    )
    res.add()
    res.add("| runtime | descriptor | attributes | attributes + cutting | share of the descriptor |")
    res.add("| --- | ---: | ---: | ---: | ---: |")
    ratios = {}
    for name in descriptors:
        whole = per_face[f"attributes {name}"] + per_face["cut the inputs"]
        ratios[name] = whole / per_face[f"descriptor {name}"]
        label = f"{name}{' (default)' if name == 'numpy' else ''}"
        res.add(
            f"| {label} | {ms(per_face[f'descriptor {name}'])} | {ms(per_face[f'attributes {name}'])} "
            f"| {ms(whole)} | {ratios[name]:.2f} |"
        )
    res.add()
    res.add("| part, per face | numpy | ONNX Runtime |")
    res.add("| --- | ---: | ---: |")
    res.add(f"| gender (32x32) | {ms(per_face['gender numpy'])} | {ms(per_face['gender onnx'])} |")
    res.add(f"| age (64x64) | {ms(per_face['age numpy'])} | {ms(per_face['age onnx'])} |")
    res.add(f"| expression (112x112) | {ms(per_face['expression numpy'])} | (numpy) |")
    res.add(f"| cutting the inputs | {ms(per_face['cut the inputs'])} | |")
    res.add()
    res.add(
        f"On the {total} labelled portraits (`fixtures/labelled/`, FairFace: sex, and the apparent age as a range): "
        f"sex right on {right} ({right / total:.2f}), {adult_right} of the {adult_total} from 20 up "
        f"({adult_right / adult_total:.2f}); the age (rounded, as the envelope writes it) is {error:.1f} years from "
        f"the range's middle on average, {adult_error:.1f} from 20 up."
    )
    res.add()
    for name in descriptors:
        label = f"{name}{' (default)' if name == 'numpy' else ', optional'}"
        res.target(
            f"13. attributes per face / descriptor per face, {label}",
            f"{ratios[name]:.2f}",
            f"<= {TARGET}",
            ratios[name] <= TARGET,
        )
    res.target("13. sex right on the labelled portraits", f"{right / total:.2f}", "", None)
    res.target("13. age, mean years from the labelled range's middle", f"{error:.1f}", "", None)
