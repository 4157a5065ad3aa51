"""The person attributes of ``searcher: 1``.

The real service runs a second model that estimates sex, emotion, age, valence and
arousal. The emulator has no such model, so these values are **synthetic**: derived
deterministically from the face's embedding (the same face always gets the same
values, and they are valid per the OpenAPI enums and ranges), but they say nothing true
about the person. ``frontality`` and ``visibility`` are measured: frontality from how
far the nose sits off the line between the eyes (5-point landmarks), visibility from how
much of the (square) face box the image border cut off.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

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
