"""The face engine: bytes in, faces (box, confidence, unit embedding, quality, landmarks) out.

``DlibEngine`` runs the same models and steps as ``face_recognition`` (api.py) without depending on it:
dlib's HOG frontal face detector, the 5-point landmark model, and the ResNet face descriptor model
(``num_jitters=1``, chip size 150, padding 0.25). dlib types never leave this module.

Detection speed vs recall (the one place we differ from ``face_recognition.face_locations(img)``, which runs HOG
with upsample 1 on the full image, ~4x the cost of upsample 0):

- Small images (at most ``upsample_max_pixels`` pixels, default 640x640) are scanned exactly as
  face_recognition does: upsample 1 on the full image. Faces down to ~40 px are found.
- Larger images are scanned with upsample 0, on a copy downscaled so that its longer side is at most
  ``detect_max_side`` (default 1600). Faces smaller than ~80 px in that copy are not found: ~80 px on photos up to
  1600 px, ~190 px on a 3840 px photo. Boxes are mapped back to the original pixels, and landmarks and
  descriptors are always computed on the full-resolution image.

On every photo in ``fixtures/`` this finds the same faces as the default pipeline (``bench/compare_detection.py``).

Thread safety: dlib's detector, shape predictor and network are shared per engine and guarded by one lock, so
one image is analysed at a time per engine; decoding (Pillow) runs outside the lock. Models load once, lazily.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from emulator.face.decode import decode_image
from emulator.face.models import model_paths
from emulator.timing import timed

if TYPE_CHECKING:
    import dlib

EMBEDDING_SIZE = 128
CHIP_SIZE = 150  # dlib's ResNet input size; the chip is cut exactly as face_recognition/dlib do
CHIP_PADDING = 0.25
NUM_JITTERS = 1  # face_recognition's default

# Detector score -> confidence: logistic sigmoid(CONFIDENCE_SLOPE * score). dlib's HOG score is an SVM margin,
# 0 at the detection threshold and ~0.5..3 for clear faces, so the mapping is monotonic with
# score 0 -> 0.5, 0.5 -> 0.88, 1 -> 0.982, 2 -> 0.9997.
CONFIDENCE_SLOPE = 4.0


@dataclass(frozen=True)
class Face:
    """One detected face. Coordinates are in the upright (EXIF-applied) original image's pixels."""

    box: tuple[int, int, int, int]  # left, top, right, bottom; clipped to the image
    confidence: float  # 0..1, sigmoid(4 * HOG score); see CONFIDENCE_SLOPE
    embedding: np.ndarray  # float32 (128,), unit length
    awesomeness: float  # 0..1, deterministic photo quality of the face; see face_quality()
    landmarks: tuple[tuple[int, int], ...]  # dlib's 5 points: eye corners (right eye 2, left eye 2), nose base


class FaceEngine(Protocol):
    """What the service needs from an engine; tests may pass a fake."""

    def analyze(self, data: bytes) -> list[Face]:
        """Decode ``data`` and return its faces sorted left to right; raise ``ImageError`` for bad images."""
        ...

    def warm_up(self) -> None:
        """Load models and run once, so that the first request is not slow."""
        ...


@dataclass
class _Models:
    detector: Any  # dlib.fhog_object_detector
    predictor: Any  # dlib.shape_predictor
    encoder: Any  # dlib.face_recognition_model_v1


class DlibEngine:
    """The real engine. Cheap to construct; models load on ``load()``, ``warm_up()`` or the first ``analyze``.

    Parameters:
        max_width, max_height: largest accepted upright image (the service's limit, 3840x2160).
        min_side: smallest accepted side (5).
        upsample_max_pixels: images with at most this many pixels are scanned with upsample 1 on the full image,
            exactly like face_recognition (finds faces down to ~40 px, ~4x slower per pixel). Default 640*640.
        detect_max_side: larger images are scanned with upsample 0 on a copy whose longer side is at most this
            (faces below ~80 px in that copy are missed). Larger is slower and finds smaller faces.
    """

    def __init__(
        self,
        *,
        max_width: int = 3840,
        max_height: int = 2160,
        min_side: int = 5,
        upsample_max_pixels: int = 640 * 640,
        detect_max_side: int = 1600,
    ) -> None:
        self.max_width = max_width
        self.max_height = max_height
        self.min_side = min_side
        self.upsample_max_pixels = upsample_max_pixels
        self.detect_max_side = detect_max_side
        self._models: _Models | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the dlib models (once; thread-safe). Raises ``ModelsNotFound`` if the model files are missing."""
        self._get_models()

    def warm_up(self) -> None:
        """Load the models and run detection, landmarks and one descriptor on a synthetic image."""
        models = self._get_models()
        rgb = _synthetic_image(200)
        with self._run_lock:
            import dlib

            models.detector.run(rgb, 1, 0.0)
            shape = models.predictor(rgb, dlib.rectangle(50, 50, 149, 149))
            chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            models.encoder.compute_face_descriptor(chip, NUM_JITTERS)

    def _get_models(self) -> _Models:
        models = self._models
        if models is not None:
            return models
        with self._load_lock:
            if self._models is None:
                import dlib

                paths = model_paths()
                self._models = _Models(
                    detector=dlib.get_frontal_face_detector(),
                    predictor=dlib.shape_predictor(str(paths.shape_predictor)),
                    encoder=dlib.face_recognition_model_v1(str(paths.face_recognition)),
                )
            return self._models

    # -- analysis --------------------------------------------------------------------------------------------

    def analyze(self, data: bytes) -> list[Face]:
        """Decode, detect, find landmarks and embed every face; faces sorted by box left, then top.

        Raises ``emulator.face.decode.ImageError`` (``UnknownImageType``, ``ImageTooSmall``, ``ImageTooLarge``).
        """
        with timed("decode"):
            rgb = decode_image(data, max_width=self.max_width, max_height=self.max_height, min_side=self.min_side)
        return self.analyze_array(rgb)

    def analyze_array(self, rgb: np.ndarray) -> list[Face]:
        """Like ``analyze`` for an already decoded upright HxWx3 uint8 RGB array."""
        models = self._get_models()
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        with self._run_lock:
            with timed("detect"):
                detections = self._detect(models, rgb)
            with timed("embed"):  # landmarks, chip, descriptor, quality
                faces = [self._describe(models, rgb, rect, score) for rect, score in detections]
        faces.sort(key=lambda face: (face.box[0], face.box[1]))
        return faces

    def detection_plan(self, width: int, height: int) -> tuple[float, int]:
        """The (scale, upsample) used to scan an image of this size; scale 1.0 means the full image."""
        if width * height <= self.upsample_max_pixels:
            return 1.0, 1
        longest = max(width, height)
        scale = min(1.0, self.detect_max_side / longest)
        return scale, 0

    def _detect(self, models: _Models, rgb: np.ndarray) -> list[tuple[dlib.rectangle, float]]:
        import dlib

        height, width = rgb.shape[:2]
        scale, upsample = self.detection_plan(width, height)
        if scale < 1.0:
            small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(rgb).resize(small_size, Image.Resampling.BILINEAR))
            rects, scores, _ = models.detector.run(np.ascontiguousarray(small), upsample, 0.0)
            sx, sy = width / small_size[0], height / small_size[1]
            mapped = [
                dlib.rectangle(
                    round(r.left() * sx),
                    round(r.top() * sy),
                    round((r.right() + 1) * sx) - 1,
                    round((r.bottom() + 1) * sy) - 1,
                )
                for r in rects
            ]
            return list(zip(mapped, scores, strict=True))
        rects, scores, _ = models.detector.run(rgb, upsample, 0.0)
        return list(zip(rects, scores, strict=True))

    def _describe(self, models: _Models, rgb: np.ndarray, rect: dlib.rectangle, score: float) -> Face:
        import dlib

        height, width = rgb.shape[:2]
        shape = models.predictor(rgb, rect)
        # Same as compute_face_descriptor(rgb, shape, num_jitters): dlib cuts this very chip internally.
        chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        descriptor = np.asarray(models.encoder.compute_face_descriptor(chip, NUM_JITTERS), dtype=np.float64)
        norm = float(np.linalg.norm(descriptor))
        embedding = (descriptor / norm if norm > 0 else descriptor).astype(np.float32)
        box = (
            max(rect.left(), 0),
            max(rect.top(), 0),
            min(rect.right(), width),
            min(rect.bottom(), height),
        )
        landmarks = tuple((int(p.x), int(p.y)) for p in shape.parts())
        return Face(
            box=box,
            confidence=score_to_confidence(score),
            embedding=embedding,
            awesomeness=face_quality(np.asarray(chip), box_side=min(box[2] - box[0], box[3] - box[1])),
            landmarks=landmarks,
        )


def score_to_confidence(score: float) -> float:
    """Map dlib's HOG detection score (SVM margin, 0 at threshold) to 0..1 monotonically: sigmoid(4 * score)."""
    x = CONFIDENCE_SLOPE * float(score)
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def face_quality(chip: np.ndarray, *, box_side: int) -> float:
    """A deterministic 0..1 photo-quality ("awesomeness") score of a face.

    Computed on the aligned 150x150 RGB chip that feeds the descriptor network, as a weighted mean of:
      - sharpness (0.35): variance of the 4-neighbour Laplacian of the gray chip, 1 - exp(-var / 150);
        upscaled small faces and blurred photos score low;
      - size (0.25): face box side in original pixels on a log scale, 40 px -> 0, 320 px and up -> 1;
      - exposure (0.20): 1 - |mean gray - 128| / 128 over the chip's central half (the face);
      - contrast (0.20): standard deviation of that central gray region / 64, capped at 1.
    """
    gray = np.asarray(chip, dtype=np.float64)
    if gray.ndim == 3:
        gray = gray[..., 0] * 0.299 + gray[..., 1] * 0.587 + gray[..., 2] * 0.114
    lap = -4.0 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    sharpness = 1.0 - math.exp(-float(lap.var()) / 150.0)
    size = min(1.0, max(0.0, math.log2(max(box_side, 1) / 40.0) / 3.0))
    h, w = gray.shape
    center = gray[h // 4 : h - h // 4, w // 4 : w - w // 4]
    exposure = 1.0 - min(1.0, abs(float(center.mean()) - 128.0) / 128.0)
    contrast = min(1.0, float(center.std()) / 64.0)
    score = 0.35 * sharpness + 0.25 * size + 0.20 * exposure + 0.20 * contrast
    return float(min(1.0, max(0.0, score)))


def _synthetic_image(side: int) -> np.ndarray:
    """A deterministic gradient image used to exercise the models once."""
    ramp = np.linspace(0, 255, side, dtype=np.float64)
    r = np.tile(ramp, (side, 1))
    g = r.T
    b = (r + g) / 2
    return np.ascontiguousarray(np.stack([r, g, b], axis=-1).astype(np.uint8))
