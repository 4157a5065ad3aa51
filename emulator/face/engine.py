"""The face engine: bytes in, faces (box, confidence, unit embedding, quality, landmarks) out.

``DlibEngine`` runs the same models and steps as ``face_recognition`` (api.py) without depending on it:
dlib's HOG frontal face detector, the 5-point landmark model, and the ResNet face descriptor model
(``num_jitters=1``, chip size 150, padding 0.25). dlib types never leave this module.

Detection speed vs recall (the one place we differ from ``face_recognition.face_locations(img)``, which runs HOG
with upsample 1 on the full image, ~4x the cost of upsample 0). dlib's HOG window is 80x80 px: a scan finds faces
from ~80 px of the scanned copy up, so the scan's resolution is the smallest face it can find. Detection runs as
passes from coarse to fine (:meth:`DlibEngine.detection_plan`), and stops early when the faces found are large:

- Small images (at most ``upsample_max_pixels`` pixels, default 640x640): upsample 0 on the full image first; if
  every face it finds is at least 2x its limit (160 px), that is the answer, else upsample 1 on the full image,
  exactly as face_recognition does (faces down to ~40 px). That first pass costs ~25 % of the second and on small
  photos rarely ends detection (4 of the 27 small fixture photos; never a group photo), so it is skipped unless it
  can: only if a probe, upsample 0 on a half-size copy (~1/16 of the upsample 1 pass), finds a face, i.e. one of
  160 px or more. Without one, the upsample 1 pass answers alone: face_recognition's boxes and scores.
- Larger images: upsample 0 on a copy whose longer side is ``coarse_side`` (default 640), which finds faces from
  ~1/8 of the photo's longer side up (160 px on a 1280x720 photo). If every face it finds is at least 1.25x that
  limit, that is the answer: the photo is a close-up, and faces much smaller than the ones found are not searched
  (a known difference from face_recognition, which would also report a small background face). Otherwise
  upsample 0 on a copy whose longer side is at most ``detect_max_side`` (default 1600): ~80 px faces on photos up
  to 1600 px, ~190 px on a 3840 px photo.

Every pass uses the cores: its scan is cut into parts of its pyramid levels that run in parallel threads
(``detect_threads``, one per core by default; :mod:`emulator.face.parallel_scan`), merged with dlib's own overlap
test, so the boxes and scores are exactly those of dlib's single scan (:mod:`emulator.face.hog`).

Boxes are mapped back to the original pixels; landmarks and descriptors are always computed on the
full-resolution image (the descriptor of a given box is face_recognition's, to float32 rounding). On every photo in
``fixtures/`` this finds the same faces as the default pipeline (``bench/compare_detection.py``); boxes found on a
downscaled copy differ by a few pixels, so embeddings differ slightly (cosine >= 0.99 on the fixtures).

Descriptors: the chips of all the faces of an image go through the descriptor network in one batch, computed by
the embedder named by ``embedder`` (``SMARTY_EMBEDDER``, see :mod:`emulator.face.embedder`): ``numpy`` (the default)
or ``onnx`` (dlib's network and weights on numpy's BLAS or ONNX Runtime) or ``dlib`` (dlib's own
``compute_face_descriptor``, the reference); all agree to float32 rounding.

Thread safety: an HOG detector keeps per-scan state, so each scan borrows its own from a bank
(:class:`emulator.face.hog.DetectorBank`; dlib releases the GIL while scanning, so detections run in parallel
threads). The shape predictor is read-only and
shared. The onnx and numpy embedders are stateless and run in parallel threads; dlib's descriptor network keeps
per-call state and holds the GIL, so it runs under a lock (use processes, ``emulator.face.pool``). Models load
once, lazily.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from emulator.face import yunet
from emulator.face.attributes import AGE_CHIP, GENDER_CHIP, AttributeModels, FaceAttributes
from emulator.face.attributes import CHIP_PADDING as ATTRIBUTE_PADDING
from emulator.face.decode import decode_image
from emulator.face.embedder import DEFAULT_EMBEDDER, EMBEDDERS, Embedder, make_embedder
from emulator.face.hog import Box, DetectorBank, scan_whole
from emulator.face.models import model_paths
from emulator.face.parallel_scan import available_cores, scan_parallel, scan_pool
from emulator.ops.memory import after_analysis
from emulator.ops.timing import timed

if TYPE_CHECKING:
    import dlib

CHIP_SIZE = 150  # dlib's ResNet input size; the chip is cut exactly as face_recognition/dlib do
CHIP_PADDING = 0.25
HOG_WINDOW = 80  # dlib's frontal face detector finds faces from ~80 px of the scanned image
# A coarse pass ends detection when the smallest face it found is at least this many times the smallest face it
# can find: faces near a scan's limit are found unreliably, so others of about their size may have been missed.
COARSE_STOP_FACTOR = 1.25  # large images: the fine pass costs ~4-10x the coarse one
SMALL_STOP_FACTOR = 2.0  # small images: the upsample 1 pass is cheap enough to be careful

# Detector score -> confidence: logistic sigmoid(CONFIDENCE_SLOPE * score). dlib's HOG score is an SVM margin,
# 0 at the detection threshold and ~0.5..3 for clear faces, so the mapping is monotonic with
# score 0 -> 0.5, 0.5 -> 0.88, 1 -> 0.982, 2 -> 0.9997.
CONFIDENCE_SLOPE = 4.0


@dataclass(frozen=True)
class Face:
    """One detected face. Coordinates are in the upright (EXIF-applied) original image's pixels."""

    box: tuple[int, int, int, int]  # left, top, right, bottom; clipped to the image
    confidence: float  # 0..1: sigmoid(4 * HOG score) (see CONFIDENCE_SLOPE), or YuNet's score / 100
    embedding: np.ndarray  # float32 (128,), unit length
    awesomeness: float  # 0..1, deterministic photo quality of the face; see face_quality()
    landmarks: tuple[tuple[int, int], ...]  # dlib's 5 points: eye corners (right eye 2, left eye 2), nose base
    attributes: FaceAttributes | None = None  # sex, age, expression: only when analysed with attributes=True


class FaceEngine(Protocol):
    """What the service needs from an engine; tests may pass a fake."""

    def analyze(self, data: bytes, *, attributes: bool = False) -> list[Face]:
        """Decode ``data`` and return its faces sorted left to right; raise ``ImageError`` for bad images.

        With ``attributes``, each face also carries its :class:`FaceAttributes` (an engine without the models may
        leave them None)."""
        ...

    def warm_up(self) -> None:
        """Load models and run once, so that the first request is not slow."""
        ...


@dataclass
class _Models:
    predictor: Any  # dlib.shape_predictor (read-only, shared by threads)


@dataclass(frozen=True)
class DetectionPass:
    """One HOG scan: on a copy scaled by ``scale`` (1.0 = the full image), with ``upsample`` doublings.

    After a pass that is not the last, detection stops if it found faces and the smallest is at least
    ``stop_factor`` times :meth:`min_face_side`. A ``probed`` pass runs only if a probe (upsample 0 at
    ``scale / stop_factor``, which finds faces from that stop size up) finds a face: else it could not stop.
    """

    scale: float
    upsample: int
    stop_factor: float = COARSE_STOP_FACTOR
    probed: bool = False

    def min_face_side(self) -> float:
        """The smallest face (original pixels) this pass finds."""
        return HOG_WINDOW / (self.scale * 2.0**self.upsample)


class DlibEngine:
    """The real engine. Cheap to construct; models load on ``load()``, ``warm_up()`` or the first ``analyze``.

    Parameters:
        max_width, max_height: largest accepted upright image (the service's limit, 3840x2160).
        min_side: smallest accepted side (5).
        upsample_max_pixels: images with at most this many pixels are scanned on the full image, with upsample 1
            (like face_recognition: faces down to ~40 px, ~4x slower) unless upsample 0 finds a large face.
        coarse_side: larger images are first scanned with upsample 0 on a copy whose longer side is this; any face
            found there ends detection.
        detect_max_side: if the coarse scan finds nothing, a copy whose longer side is at most this is scanned
            with upsample 0 (faces below ~80 px in that copy are missed). Larger is slower, finds smaller faces.
        detect_threads: threads that scan one image (its HOG pyramid levels, in parallel; the answer is the same);
            0 = one per core this process may run on. The analysis worker processes use 1.
        embedder: ``numpy`` (the default), ``onnx`` or ``dlib`` (see :mod:`emulator.face.embedder`); the app passes
            ``SMARTY_EMBEDDER``.
        detector: ``hog`` (this class's default: dlib's HOG, as described above), ``yunet`` (libfacedetection's CNN,
            which finds faces down to ~12 px; :mod:`emulator.face.yunet`) or ``auto`` (``yunet`` where its wheel is
            installed); the app passes ``SMARTY_DETECTOR``. ``detector_in_use`` says which runs.
    """

    def __init__(
        self,
        *,
        max_width: int = 3840,
        max_height: int = 2160,
        min_side: int = 5,
        upsample_max_pixels: int = 640 * 640,
        coarse_side: int = 640,
        detect_max_side: int = 1600,
        detect_threads: int = 0,
        embedder: str = DEFAULT_EMBEDDER,
        detector: str = "hog",
    ) -> None:
        self.max_width = max_width
        self.max_height = max_height
        self.min_side = min_side
        self.upsample_max_pixels = upsample_max_pixels
        self.coarse_side = coarse_side
        self.detect_max_side = detect_max_side
        self.detect_threads = detect_threads
        self.embedder = embedder
        if self.embedder not in EMBEDDERS:
            raise ValueError(f"unknown embedder {self.embedder!r}; expected one of {', '.join(EMBEDDERS)}")
        self.detector = detector  # resolves ``detector_in_use``; an unusable choice fails here, at startup
        self._yunet_lock = threading.Lock()  # one YuNet scan at a time per engine (see emulator.face.yunet)
        self._models: _Models | None = None
        self._load_lock = threading.Lock()
        self._embedders: dict[str, Embedder] = {}  # by name: a pool worker may switch (see emulator.face.pool)
        self._bank: DetectorBank | None = None  # HOG detectors, borrowed one per concurrent scan
        self._attribute_models: AttributeModels | None = None  # loaded by the first analysis with attributes

    @property
    def detector(self) -> str:
        """``SMARTY_DETECTOR`` as given (``auto`` included); ``detector_in_use`` is what it resolved to here. Setting
        it resolves again, so an engine given new options (a preloaded pool worker's) detects as they say."""
        return self._detector

    @detector.setter
    def detector(self, name: str) -> None:
        self.detector_in_use = yunet.resolve_detector(name)
        self._detector = name

    def options(self) -> dict[str, int | str]:
        """The constructor arguments: ``DlibEngine(**engine.options())`` analyses exactly like this engine."""
        return {
            "max_width": self.max_width,
            "max_height": self.max_height,
            "min_side": self.min_side,
            "upsample_max_pixels": self.upsample_max_pixels,
            "coarse_side": self.coarse_side,
            "detect_max_side": self.detect_max_side,
            "detect_threads": self.detect_threads,
            "embedder": self.embedder,
            "detector": self.detector,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the models (once; thread-safe). Raises ``ModelsNotFound`` if the model files are missing."""
        self._get_models()
        self._get_embedder()

    def warm_up(self) -> None:
        """Load the models and run detection, landmarks and one descriptor on a synthetic image."""
        import dlib

        models = self._get_models()
        rgb = _synthetic_image(200)
        # One thread: warm-up may run in a process that is forked afterwards (the analysis pool's forkserver).
        scan_whole(self._detectors(), rgb, 1)
        if self.detector_in_use == "yunet":
            self._scan_yunet(rgb)
        shape = models.predictor(rgb, dlib.rectangle(50, 50, 149, 149))
        chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        self._get_embedder().descriptors([np.asarray(chip)])

    def _get_embedder(self) -> Embedder:
        name = self.embedder
        embedder = self._embedders.get(name)
        if embedder is None:
            with self._load_lock:
                embedder = self._embedders.get(name)
                if embedder is None:
                    embedder = make_embedder(name)
                    embedder.load()
                    self._embedders[name] = embedder
        return embedder

    def _get_models(self) -> _Models:
        models = self._models
        if models is not None:
            return models
        with self._load_lock:
            if self._models is None:
                import dlib

                paths = model_paths()
                self._models = _Models(predictor=dlib.shape_predictor(str(paths.shape_predictor)))
                self._bank = DetectorBank()
            return self._models

    def _detectors(self) -> DetectorBank:
        self._get_models()
        assert self._bank is not None
        return self._bank

    def scan_threads(self) -> int:
        """Threads that scan one image: ``detect_threads``, or one per available core if 0; at most the cores."""
        cores = available_cores()
        return min(self.detect_threads, cores) if self.detect_threads > 0 else cores

    # -- analysis --------------------------------------------------------------------------------------------

    def analyze(self, data: bytes, *, attributes: bool = False) -> list[Face]:
        """Decode, detect, find landmarks and embed every face; faces sorted by box left, then top. With
        ``attributes``, also estimate each face's sex, age and expression (:mod:`emulator.face.attributes`).

        Raises ``emulator.face.decode.ImageError`` (``UnknownImageType``, ``ImageTooSmall``, ``ImageTooLarge``).
        """
        with timed("decode"):
            rgb = decode_image(data, max_width=self.max_width, max_height=self.max_height, min_side=self.min_side)
        return self.analyze_array(rgb, attributes=attributes)

    def analyze_array(self, rgb: np.ndarray, *, attributes: bool = False) -> list[Face]:
        """Like ``analyze`` for an already decoded upright HxWx3 uint8 RGB array."""
        models = self._get_models()
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        with timed("detect"):
            detections, _ = self.detect(rgb)
        with timed("embed"):  # landmarks, chips, descriptors (one batch), quality
            shapes, faces = self._describe(models, rgb, detections)
        if attributes:
            with timed("attributes"):
                faces = self._with_attributes(rgb, shapes, faces)
        faces.sort(key=lambda face: (face.box[0], face.box[1]))
        after_analysis()  # the pyramid's blocks are freed: now and then, their pages go back to the system
        return faces

    def detection_plan(self, width: int, height: int) -> tuple[DetectionPass, ...]:
        """The passes, coarse to fine, that scan an image of this size (see the module docstring)."""
        if width * height <= self.upsample_max_pixels:
            return (DetectionPass(1.0, 0, stop_factor=SMALL_STOP_FACTOR, probed=True), DetectionPass(1.0, 1))
        longest = max(width, height)
        fine = DetectionPass(min(1.0, self.detect_max_side / longest), 0)
        coarse_scale = self.coarse_side / longest
        if coarse_scale <= 0.75 * fine.scale:  # else the coarse scan would cost nearly as much as the fine one
            return (DetectionPass(coarse_scale, 0), fine)
        return (fine,)

    def detect(self, rgb: np.ndarray) -> tuple[list[tuple[dlib.rectangle, float]], DetectionPass | yunet.YunetPass]:
        """Face boxes (original pixels, dlib's convention) and scores of the detector in use, and the pass that
        produced them: HOG's (:meth:`detect_hog`) or YuNet's (:meth:`detect_yunet`)."""
        if self.detector_in_use == "yunet":
            return self.detect_yunet(rgb)
        return self.detect_hog(rgb)

    def detect_yunet(self, rgb: np.ndarray) -> tuple[list[tuple[dlib.rectangle, float]], yunet.YunetPass]:
        """YuNet's faces as HOG would box them (:func:`emulator.face.yunet.to_dlib_box`), with YuNet's scores
        (0..100), and the pass that produced them (:func:`emulator.face.yunet.yunet_plan`)."""
        import dlib

        height, width = rgb.shape[:2]
        for scan in yunet.yunet_plan(width, height):
            copy = rgb if scan.scale >= 1.0 else _downscale(rgb, _scaled_size(width, height, scan.scale))
            sx, sy = width / copy.shape[1], height / copy.shape[0]
            found = [
                (yunet.to_dlib_box(x * sx, y * sy, w * sx, h * sy), float(score))
                for x, y, w, h, score in self._scan_yunet(copy)
                if score >= yunet.MIN_SCORE
            ]
            if scan.last or (
                found
                and min(box[2] - box[0] + 1 for box, _ in found) >= yunet.COARSE_STOP_FACTOR * scan.min_face_side()
            ):
                return [(dlib.rectangle(*box), score) for box, score in found], scan
        raise AssertionError("a detection plan has at least one pass")

    def _scan_yunet(self, rgb: np.ndarray) -> list[tuple[int, int, int, int, int]]:
        with self._yunet_lock:
            return yunet.scan(rgb)

    def detect_hog(self, rgb: np.ndarray) -> tuple[list[tuple[dlib.rectangle, float]], DetectionPass]:
        """Face boxes (original pixels) and HOG scores of an RGB array, and the pass that produced them."""
        import dlib

        height, width = rgb.shape[:2]
        plan = self.detection_plan(width, height)
        bank = self._detectors()
        threads = self.scan_threads()
        pool = scan_pool() if threads > 1 else None
        for number, scan in enumerate(plan, start=1):
            last = number == len(plan)
            if scan.probed and not last:
                probe = _downscale(rgb, _scaled_size(width, height, scan.scale / scan.stop_factor))
                if not scan_parallel(bank, probe, 0, threads, pool):
                    continue  # no face of the stop size: this pass could not end detection
            copy = rgb if scan.scale >= 1.0 else _downscale(rgb, _scaled_size(width, height, scan.scale))
            candidates = scan_parallel(bank, copy, scan.upsample, threads, pool)
            copy_size = (copy.shape[1], copy.shape[0])
            found = [(_box_in_original(c.box, copy_size, (width, height)), c.score) for c in candidates]
            if last or (
                found and min(box[2] - box[0] + 1 for box, _ in found) >= scan.stop_factor * scan.min_face_side()
            ):
                return [(dlib.rectangle(*box), score) for box, score in found], scan
        raise AssertionError("a detection plan has at least one pass")

    def face_chips(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The aligned 150x150 RGB chips of the faces :meth:`detect` finds in ``rgb``: what the embedder sees."""
        models = self._get_models()
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        detections, _ = self.detect(rgb)
        return self._chips(models, rgb, detections)[1]

    def _chips(
        self, models: _Models, rgb: np.ndarray, detections: list[tuple[dlib.rectangle, float]]
    ) -> tuple[list[Any], list[np.ndarray]]:
        """The landmarks (dlib.full_object_detection) and the chip of every detection."""
        import dlib

        shapes = [models.predictor(rgb, rect) for rect, _ in detections]
        # The chip compute_face_descriptor(rgb, shape, num_jitters) cuts internally, cut here to be batched.
        chips = [np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)) for shape in shapes]
        return shapes, chips

    def _describe(
        self, models: _Models, rgb: np.ndarray, detections: list[tuple[dlib.rectangle, float]]
    ) -> tuple[list[Any], list[Face]]:
        """Landmarks and chip of every detection, then all the descriptors in one batch."""
        height, width = rgb.shape[:2]
        shapes, chips = self._chips(models, rgb, detections)
        confidence = yunet.score_to_confidence if self.detector_in_use == "yunet" else score_to_confidence
        descriptors = self._get_embedder().descriptors(chips).astype(np.float64)
        faces = []
        for (rect, score), shape, chip, descriptor in zip(detections, shapes, chips, descriptors, strict=True):
            norm = float(np.linalg.norm(descriptor))
            embedding = (descriptor / norm if norm > 0 else descriptor).astype(np.float32)
            box = (
                max(rect.left(), 0),
                max(rect.top(), 0),
                min(rect.right(), width),
                min(rect.bottom(), height),
            )
            faces.append(
                Face(
                    box=box,
                    confidence=confidence(score),
                    embedding=embedding,
                    awesomeness=face_quality(chip, box_side=min(box[2] - box[0], box[3] - box[1])),
                    landmarks=tuple((int(p.x), int(p.y)) for p in shape.parts()),
                )
            )
        return shapes, faces

    def attribute_models(self) -> AttributeModels:
        """The attribute networks (created on first use; their weights load on the first estimate). They run on
        ONNX Runtime when the descriptor does (``embedder="onnx"``), else on numpy."""
        if self._attribute_models is None:
            with self._load_lock:
                if self._attribute_models is None:
                    self._attribute_models = AttributeModels("onnx" if self.embedder == "onnx" else "numpy")
        return self._attribute_models

    def _with_attributes(self, rgb: np.ndarray, shapes: list[Any], faces: list[Face]) -> list[Face]:
        """``faces`` with their attributes: the sex and age chips cut from the landmarks as dlib's examples cut
        them (one ``get_face_chip`` per face and size), the expression input from the face box."""
        import dlib

        from emulator.face.attributes.expression import face_input

        estimates = self.attribute_models().estimate(
            [np.asarray(dlib.get_face_chip(rgb, s, size=GENDER_CHIP, padding=ATTRIBUTE_PADDING)) for s in shapes],
            [np.asarray(dlib.get_face_chip(rgb, s, size=AGE_CHIP, padding=ATTRIBUTE_PADDING)) for s in shapes],
            [face_input(rgb, face.box) for face in faces],
        )
        return [dataclasses.replace(face, attributes=estimate) for face, estimate in zip(faces, estimates, strict=True)]


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def _box_in_original(box: Box, copy_size: tuple[int, int], size: tuple[int, int]) -> Box:
    """A box of a scaled copy in the original's pixels (the identity for the full image)."""
    if copy_size == size:
        return box
    sx, sy = size[0] / copy_size[0], size[1] / copy_size[1]
    left, top, right, bottom = box
    return (round(left * sx), round(top * sy), round((right + 1) * sx) - 1, round((bottom + 1) * sy) - 1)


def _downscale(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` resized to ``size`` (width, height): a box-filter reduction by the whole factor (fast), then
    bilinear for the rest. About 10x faster than one antialiased bilinear resize of the full image."""
    image = Image.fromarray(rgb)
    factor = min(rgb.shape[1] // size[0], rgb.shape[0] // size[1])
    if factor >= 2:
        image = image.reduce(factor)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image))


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
