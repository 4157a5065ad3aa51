"""Locate the dlib model files shipped by the ``face_recognition_models`` package.

The package is found with ``importlib.util.find_spec`` and is never imported: its ``__init__`` imports
``pkg_resources``, which is missing from fresh Python 3.12+ virtual environments.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "face_recognition_models"
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
FACE_RECOGNITION_RESNET = "dlib_face_recognition_resnet_model_v1.dat"


class ModelsNotFound(RuntimeError):
    """The ``face_recognition_models`` package, or one of its model files, is not installed."""


@dataclass(frozen=True)
class ModelPaths:
    shape_predictor: Path
    face_recognition: Path


def models_dir() -> Path:
    """Return the ``models/`` directory of the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelsNotFound(
            f"the Python package {PACKAGE!r} is not installed; install it with "
            f"'pip install face_recognition_models' (it carries the dlib model files)"
        )
    return Path(locations[0]) / "models"


def model_paths() -> ModelPaths:
    """Return the paths of the 5-point landmark model and the ResNet face descriptor model.

    Raises ``ModelsNotFound`` naming the missing file when either is absent.
    """
    base = models_dir()
    paths = ModelPaths(
        shape_predictor=base / SHAPE_PREDICTOR_5,
        face_recognition=base / FACE_RECOGNITION_RESNET,
    )
    for path in (paths.shape_predictor, paths.face_recognition):
        if not path.is_file():
            raise ModelsNotFound(f"dlib model file {path.name} is missing from {base}")
    return paths
