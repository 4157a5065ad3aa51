"""The person attributes of ``searcher: 1``.

The real service runs models that estimate sex, emotion, age, valence and arousal. The emulator answers them in
one of two ways (``SMARTY_ATTRIBUTES``):

- ``model`` (the default): from the face, by the networks of :mod:`emulator.face.attributes`. ``sex`` is the more
  probable of female and male; ``age`` the expected age (the envelope writes it as a whole number); ``emotion``
  the most probable of the 7 expressions, named as the service names them (``Contempt`` is never produced: the
  expression model has no such class). ``valence`` and ``arousal`` are an **estimate**: no model of them ships
  in any registry package, so they are the expression probabilities' weighted mean of fixed per-expression
  coordinates on Russell's circumplex of affect (:data:`CIRCUMPLEX`).
- ``synthetic``: derived deterministically from the face's embedding (the same face always gets the same values,
  valid per the OpenAPI enums and ranges, stable across versions), but saying nothing true about the person.

``frontality`` and ``visibility`` are measured either way: frontality from how far the nose sits off the line
between the eyes (5-point landmarks), visibility from how much of the (square) face box the image border cut off.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from emulator.face.attributes import FaceAttributes
from emulator.face.attributes.expression import LABELS

ATTRIBUTE_MODES = ("model", "synthetic")

EMOTIONS = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt")


def _unit_values(embedding: np.ndarray, count: int) -> list[float]:
    """``count`` deterministic values in [0, 1) from the embedding (quantized, so tiny
    float differences between machines do not change the result)."""
    quantized = np.round(np.asarray(embedding, dtype=np.float64) * 100).astype(np.int8).tobytes()
    digest = hashlib.sha256(quantized).digest()
    return [int.from_bytes(digest[i * 4 : i * 4 + 4], "big") / 2**32 for i in range(count)]


def frontality(landmarks: tuple[tuple[int, int], ...]) -> float:
    """1 for a frontal face, towards -1 as the head turns (dlib's 5 points: eye corners, nose)."""
    if len(landmarks) < 5:
        return 1.0
    pts = np.asarray(landmarks, dtype=np.float64)
    right_eye = pts[0:2].mean(axis=0)
    left_eye = pts[2:4].mean(axis=0)
    nose = pts[4]
    eye_dist = float(np.linalg.norm(left_eye - right_eye)) or 1.0
    mid = (left_eye + right_eye) / 2
    offset = float(abs(nose[0] - mid[0])) / eye_dist  # 0 frontal, ~0.5+ in profile
    return float(np.clip(1.0 - 4.0 * offset, -1.0, 1.0))


def visibility(box: tuple[int, int, int, int]) -> float:
    """HOG boxes are square; a box cut by the image border is not. Visible share = short / long side."""
    left, top, right, bottom = box
    width, height = max(1, right - left), max(1, bottom - top)
    return float(min(width, height) / max(width, height))


def synthetic_attributes(
    embedding: np.ndarray, landmarks: tuple[tuple[int, int], ...], box: tuple[int, int, int, int]
) -> dict[str, Any]:
    """The searcher=1 fields, in the order the real service writes them."""
    u = _unit_values(embedding, 5)
    return {
        "sex": "female" if u[0] < 0.5 else "male",
        "emotion": EMOTIONS[int(u[1] * len(EMOTIONS))],
        "age": float(18 + int(u[2] * 50)),
        "valence": u[3] * 2 - 1,
        "arousal": u[4] * 2 - 1,
        "frontality": frontality(landmarks),
        "visibility": visibility(box),
    }


# The expression model's classes (face-api's names) as the service's emotions.
SERVICE_EMOTION = {
    "neutral": "Neutral",
    "happy": "Happiness",
    "sad": "Sadness",
    "surprised": "Surprise",
    "fearful": "Fear",
    "disgusted": "Disgust",
    "angry": "Anger",
}

# (valence, arousal) of each expression: approximate places on Russell's circumplex of affect (Russell 1980, "A
# circumplex model of affect"; disgust, not in that study, placed near "distressed"/"annoyed"). Fixed choices, not
# measured: the emulator's valence and arousal are a plausible estimate that moves with the expression.
CIRCUMPLEX = {
    "neutral": (0.0, 0.0),
    "happy": (0.85, 0.35),
    "sad": (-0.8, -0.4),
    "surprised": (0.2, 0.85),
    "fearful": (-0.6, 0.75),
    "disgusted": (-0.7, 0.4),
    "angry": (-0.5, 0.8),
}


def valence_arousal(expressions: tuple[float, ...]) -> tuple[float, float]:
    """The probabilities' weighted mean of the expressions' circumplex coordinates, each in -1..1."""
    coords = np.array([CIRCUMPLEX[label] for label in LABELS], dtype=np.float64)
    weights = np.asarray(expressions, dtype=np.float64)
    total = float(weights.sum()) or 1.0
    valence, arousal = (weights @ coords) / total
    return float(np.clip(valence, -1.0, 1.0)), float(np.clip(arousal, -1.0, 1.0))


def model_attributes(
    estimate: FaceAttributes, landmarks: tuple[tuple[int, int], ...], box: tuple[int, int, int, int]
) -> dict[str, Any]:
    """The searcher=1 fields from the networks' estimate, in the order the real service writes them."""
    valence, arousal = valence_arousal(estimate.expressions)
    return {
        "sex": "male" if estimate.male >= 0.5 else "female",
        "emotion": SERVICE_EMOTION[LABELS[int(np.argmax(estimate.expressions))]],
        "age": float(estimate.age),
        "valence": valence,
        "arousal": arousal,
        "frontality": frontality(landmarks),
        "visibility": visibility(box),
    }


def person_attributes(
    mode: str,
    embedding: np.ndarray,
    landmarks: tuple[tuple[int, int], ...],
    box: tuple[int, int, int, int],
    estimate: FaceAttributes | None,
) -> dict[str, Any]:
    """The searcher=1 fields in ``mode`` (``SMARTY_ATTRIBUTES``). An engine without the models (a test's fake)
    gives no estimate: its faces get the synthetic values."""
    if mode == "model" and estimate is not None:
        return model_attributes(estimate, landmarks, box)
    return synthetic_attributes(embedding, landmarks, box)
