"""dlib's HOG face scan, cut into parts that give exactly the scan's boxes and scores.

How dlib scans (``object_detector<scan_fhog_pyramid<pyramid_down<6>>>``, read in dlib 20.0.1): with upsample 1 the
image is first doubled (``pyramid_up``: a bilinear resize). Level 0 of the pyramid is that image; level k is level
k-1 resized by 5/6 (``pyramid_down<6>``, the same bilinear resize), down to about 64 px. Every level is scored by the
5 HOG filters of the frontal face detector; every window scoring at least 0 is a candidate, its box mapped from the
level to the image (``rect_up``: ``p * 1.2 + 0.3`` per level, rounded with ``lround``). The candidates, best first,
are kept unless they overlap one already kept (non-max suppression, see :func:`overlap`; the frontal face detector
was trained with an IoU threshold of 0.33 and a covered threshold of 0.79, read from its bytes, not dlib's defaults
0.5 and 1.0). With upsample the kept boxes are mapped back to the input image (``rect_down``).

A contiguous range of levels ``[first, first + count)`` is scanned on its own, bit for bit:

- level ``first``'s image is computed with dlib's own ``pyramid_down(6)`` (and ``resize_image`` for the doubled
  image), the very functions the scan uses internally, so every pixel is the same;
- a detector whose ``max_pyramid_levels`` is ``count`` (and whose smallest layer is 1 px, so that the count is never
  cut short by rounding) scans exactly those levels; its overlap test never fires (thresholds 1.0), so it returns
  every candidate with its score;
- its boxes, in the coordinates of level ``first``, are mapped back to the scanned image exactly as dlib maps a box
  found ``first`` levels further down (:func:`_box_in_scan`).

The candidates of all parts, suppressed here with the detector's own overlap test in dlib's order, are the boxes and
scores of one scan (tests/face prove it on the group fixtures and at every cut). Why levels and not horizontal bands
of the image: a band's levels are resized from the band, and dlib's bilinear resize maps ``rows - 1`` onto
``rows' - 1``, so below level 0 a band samples other positions than the full image: its scores differ slightly.
Levels keep every sample. The largest level is about 31 % of a scan's work, so levels alone spread one scan over up
to 3 cores.

Known limit: dlib sorts candidates with ``std::sort``, which may order two candidates of exactly equal score either
way; if two such candidates overlapped, the scan and the parts could keep different ones. Scores are float sums of
3100 filter responses; no fixture has such a tie.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom (dlib's rectangle: both ends inclusive)

PYRAMID_RATE = 6  # pyramid_down<6>: the only pyramid of dlib's Python fhog_object_detector
LEVEL_UP = PYRAMID_RATE / (PYRAMID_RATE - 1.0)  # pyramid_down<N>::point_up: p * N/(N-1.0) + 0.3
LEVEL_DOWN = (PYRAMID_RATE - 1.0) / PYRAMID_RATE  # pyramid_down<N>::point_down: (p - 0.3) * (N-1.0)/N
LEVEL_OFFSET = 0.3


class LevelMapError(RuntimeError):
    """A part's box could not be mapped back unambiguously (never seen; the caller scans the whole image instead)."""


@dataclass(frozen=True)
class Candidate:
    """A window that scored at least 0: ``score`` is dlib's detection confidence (SVM margin), ``weight_index`` the
    HOG filter (0-4). ``box``: in the scanned image's pixels (the doubled image for upsample 1) from
    :func:`scan_levels` and :func:`suppress`; in the input image's pixels from :func:`scan_whole` and
    ``parallel_scan.scan_parallel``, as dlib reports them."""

    score: float
    weight_index: int
    box: Box


# --- dlib's serialized detector --------------------------------------------------------------------------------


def _read_int(data: bytes, at: int) -> tuple[int, int]:
    """dlib's integer encoding: a control byte (bit 7 = negative, low 4 bits = byte count), then little-endian."""
    if at >= len(data):
        raise ValueError("truncated detector state")
    control = data[at]
    size = control & 0x0F
    if size == 0 or size > 8 or at + 1 + size > len(data):
        raise ValueError("not a dlib integer")
    value = int.from_bytes(data[at + 1 : at + 1 + size], "little")
    return (-value if control & 0x80 else value), at + 1 + size


def _encode_int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _read_float(data: bytes, at: int) -> tuple[float, int]:
    """dlib's float_details: an int64 mantissa and an int16 exponent, value = mantissa * 2**exponent."""
    mantissa, at = _read_int(data, at)
    exponent, at = _read_int(data, at)
    return math.ldexp(mantissa, exponent), at


def _encode_float(value: float) -> bytes:
    """As dlib's float_details::convert_from_T for a double: frexp, 53-bit mantissa, trailing zero bytes dropped."""
    fraction, exponent = math.frexp(value)
    mantissa, exponent = int(fraction * (1 << 53)), exponent - 53
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return _encode_int(mantissa) + _encode_int(exponent)


@dataclass(frozen=True)
class DetectorState:
    """The fields of a serialized ``object_detector<scan_fhog_pyramid<pyramid_down<6>>>`` that a part changes.

    Layout (dlib's serialize): object_detector version 2; scan_fhog_pyramid version 1, its (empty) feature arrays,
    cell_size, padding, window width and height, max_pyramid_levels, min layer width and height, nuclear norm
    strength, dimensions; the overlap test (IoU threshold, covered threshold); then the filters.
    """

    data: bytes
    cell_size: int
    window_width: int
    window_height: int
    padding: int
    max_levels: int  # the stock detector's max_pyramid_levels (1000: no limit in practice)
    min_layer: tuple[int, int]  # the pyramid stops below this width or height
    iou_threshold: float  # test_box_overlap: boxes overlap if IoU (over their bounding box) exceeds this ...
    covered_threshold: float  # ... or if their intersection covers more than this share of either box
    _levels_span: tuple[int, int]  # byte range of max_pyramid_levels, min layer width, min layer height
    _overlap_span: tuple[int, int]  # byte range of the two overlap thresholds

    @classmethod
    def parse(cls, data: bytes) -> DetectorState:
        version, at = _read_int(data, 0)
        scanner_version, at = _read_int(data, at)
        if (version, scanner_version) != (2, 1):
            raise ValueError(f"unexpected detector serialization versions {version}, {scanner_version}")
        _, at = _read_int(data, at)  # feature pyramid: max size (0 in a saved detector)
        _, at = _read_int(data, at)  # feature pyramid: size
        cell_size, at = _read_int(data, at)
        padding, at = _read_int(data, at)
        window_width, at = _read_int(data, at)
        window_height, at = _read_int(data, at)
        levels_start = at
        max_levels, at = _read_int(data, at)
        min_width, at = _read_int(data, at)
        min_height, at = _read_int(data, at)
        levels_end = at
        _, at = _read_float(data, at)  # nuclear norm regularization strength (training only)
        _, at = _read_int(data, at)  # number of dimensions
        overlap_start = at
        iou, at = _read_float(data, at)
        covered, at = _read_float(data, at)
        return cls(
            data=data,
            cell_size=cell_size,
            window_width=window_width,
            window_height=window_height,
            padding=padding,
            max_levels=max_levels,
            min_layer=(min_width, min_height),
            iou_threshold=iou,
            covered_threshold=covered,
            _levels_span=(levels_start, levels_end),
            _overlap_span=(overlap_start, at),
        )

    def every_candidate(self, levels: int) -> bytes:
        """The detector scanning exactly ``levels`` levels and returning every window that scores at least 0."""
        a, b = self._levels_span
        c, d = self._overlap_span
        fields = _encode_int(levels) + _encode_int(1) + _encode_int(1)
        return self.data[:a] + fields + self.data[b:c] + _encode_float(1.0) + _encode_float(1.0) + self.data[d:]

    def base_box_width(self) -> int:
        """Width (right - left) of a window's box on the level that found it: (filter cells - 1) * cell_size."""
        return (_fhog_cells(self.window_width, self.cell_size) - 1) * self.cell_size

    @property
    def box_phase(self) -> int:
        """Every box corner on its own level is ``cell_size * k + box_phase`` (fhog_to_image: +1 border, +-cell/2)."""
        return (1 + self.cell_size // 2) % self.cell_size


def _fhog_cells(window: int, cell_size: int) -> int:
    """Cells of dlib's image_to_fhog(centered_rect(point(0,0), window, window), cell_size, 1, 1) (C++ division)."""
    left = -(window // 2) - 1
    right = -(window // 2) + window - 1 - 1
    return int(right / cell_size) - int(left / cell_size) + 1  # int() truncates toward zero, like C++


def load_detector(data: bytes) -> Any:
    """A dlib.fhog_object_detector from serialized bytes (its pickle state)."""
    import dlib

    detector = dlib.fhog_object_detector.__new__(dlib.fhog_object_detector)
    detector.__setstate__((data,))
    return detector


class DetectorBank:
    """Thread-safe free lists of detectors: the stock one, and every-candidate ones per level count.

    A dlib detector keeps per-scan state, so a thread borrows one for a scan. A stock detector takes ~40 ms to build
    (it is parsed from text); the others are deserialized from its bytes in ~2 ms (~0.25 MB each). Lists grow to
    the number of scans that ran at once (bounded by the scan threads and the requests in flight), per level count.
    """

    def __init__(self) -> None:
        import dlib

        first = dlib.get_frontal_face_detector()
        self.state = DetectorState.parse(first.__getstate__()[0])
        self._lock = threading.Lock()
        self._stock: list[Any] = [first]
        self._parts: dict[int, list[Any]] = {}

    @contextmanager
    def stock(self) -> Iterator[Any]:
        """Borrow a stock frontal face detector (dlib's own suppression)."""
        with self._lock:
            detector = self._stock.pop() if self._stock else None
        if detector is None:
            detector = load_detector(self.state.data)
        try:
            yield detector
        finally:
            with self._lock:
                self._stock.append(detector)

    @contextmanager
    def every_candidate(self, levels: int) -> Iterator[Any]:
        """Borrow a detector that scans exactly ``levels`` levels and returns every candidate."""
        with self._lock:
            free = self._parts.setdefault(levels, [])
            detector = free.pop() if free else None
        if detector is None:
            detector = load_detector(self.state.every_candidate(levels))
        try:
            yield detector
        finally:
            with self._lock:
                self._parts[levels].append(detector)


# --- geometry of the pyramid -----------------------------------------------------------------------------------


def lround(x: float) -> int:
    """C's lround: to the nearest integer, halves away from zero."""
    floor = math.floor(x)
    frac = x - floor
    return floor + 1 if frac > 0.5 or (frac == 0.5 and x >= 0) else floor


@lru_cache(maxsize=1 << 16)
def _up(q: float, levels: int) -> float:
    """pyramid_down<6>::point_up(q, levels): ``q * 1.2 + 0.3`` applied ``levels`` times, in doubles as dlib does."""
    return q if levels == 0 else _up(q, levels - 1) * LEVEL_UP + LEVEL_OFFSET


def level_count(width: int, height: int, min_layer: tuple[int, int], max_levels: int = 1000) -> int:
    """How many levels dlib scans on a ``width`` x ``height`` image: create_fhog_pyramid counts ``rect_down`` steps
    of the image's rectangle (rounded with lround) until one is narrower or lower than ``min_layer``."""
    box = (0, 0, width - 1, height - 1)
    levels = 0
    while True:
        box = (
            lround((box[0] - LEVEL_OFFSET) * LEVEL_DOWN),
            lround((box[1] - LEVEL_OFFSET) * LEVEL_DOWN),
            lround((box[2] - LEVEL_OFFSET) * LEVEL_DOWN),
            lround((box[3] - LEVEL_OFFSET) * LEVEL_DOWN),
        )
        levels += 1
        wide = box[2] - box[0] + 1 >= min_layer[0] and box[3] - box[1] + 1 >= min_layer[1]
        if not (wide and levels < max_levels):
            return levels


def level_sizes(width: int, height: int, count: int) -> list[tuple[int, int]]:
    """(width, height) of levels 0..count-1: pyramid_down<6> makes floor(5 * n / 6) of each side."""
    sizes = [(width, height)]
    for _ in range(count - 1):
        w, h = sizes[-1]
        sizes.append(((PYRAMID_RATE - 1) * w // PYRAMID_RATE, (PYRAMID_RATE - 1) * h // PYRAMID_RATE))
    return sizes


def upsampled_size(width: int, height: int) -> tuple[int, int]:
    """Size of dlib's pyramid_up (pyramid_down<2>::rect_up of the image: ``(p + (1.25, 0.75)) * 2``), as (w, h)."""
    return lround((width - 1 + 1.25) * 2) + 1, lround((height - 1 + 0.75) * 2) + 1


def box_down(box: Box) -> Box:
    """A box of the doubled image in the input image (pyramid_down<2>::rect_down: ``p / 2 - (1.25, 0.75)``)."""
    left, top, right, bottom = box
    return (
        lround(left / 2.0 - 1.25),
        lround(top / 2.0 - 0.75),
        lround(right / 2.0 - 1.25),
        lround(bottom / 2.0 - 0.75),
    )


# --- the pyramid images ----------------------------------------------------------------------------------------


class Pyramid:
    """The images of one scan's levels, computed on demand with dlib's own resizes (bit-identical to the scan's).

    ``source`` is the image the scan was given; with ``upsample`` 1 level 0 is its doubled copy. Thread-safe: the
    first caller to need a level computes it (dlib holds the GIL while resizing: ~0.2 of a level's scan time).
    """

    def __init__(self, source: np.ndarray, upsample: int, state: DetectorState) -> None:
        if upsample not in (0, 1):
            raise ValueError("upsample must be 0 or 1")
        self.source = source
        self.upsample = upsample
        height: int
        width: int
        height, width = source.shape[:2]
        self.width, self.height = upsampled_size(width, height) if upsample else (width, height)
        self.count = level_count(self.width, self.height, state.min_layer, state.max_levels)
        self.sizes = level_sizes(self.width, self.height, self.count)
        self._images: dict[int, np.ndarray] = {} if upsample else {0: source}
        self._lock = threading.Lock()

    def area(self, level: int) -> int:
        w, h = self.sizes[level]
        return w * h

    def image(self, level: int) -> np.ndarray:
        """Level ``level``'s image (level 0 is the scanned image: the doubled copy with upsample 1)."""
        import dlib

        with self._lock:
            if level in self._images:
                return self._images[level]
            if 0 not in self._images:
                self._images[0] = dlib.resize_image(self.source, self.height, self.width)
            start = max(k for k in self._images if k <= level)
            down = dlib.pyramid_down(PYRAMID_RATE)
            for k in range(start + 1, level + 1):
                self._images[k] = down(self._images[k - 1])
            return self._images[level]


# --- scanning a part and merging -------------------------------------------------------------------------------


def scan_levels(bank: DetectorBank, pyramid: Pyramid, first: int, count: int) -> list[Candidate]:
    """Every candidate of levels ``[first, first + count)`` of the scan, boxes in the scanned image's pixels.

    A part is given its first level's image (level 0 of an upsample-1 scan is the pyramid's doubled copy).
    """
    if count <= 0:
        return []
    with bank.every_candidate(count) as detector:
        rects, scores, indices = detector.run(pyramid.image(first), 0, 0.0)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    if first:  # the part's boxes are in its first level's pixels
        boxes = [_box_in_scan(box, first, count, bank.state) for box in boxes]
    return [Candidate(float(s), int(k), box) for box, s, k in zip(boxes, scores, indices, strict=True)]


def _box_in_scan(box: Box, first: int, count: int, state: DetectorState) -> Box:
    """Map a box reported by a part back to the scanned image, exactly as the one scan would have reported it.

    The part found it on its level j (the scan's level ``first + j``), at corners q (integers on that level, each
    ``cell_size * k + box_phase``), and reported ``lround(point_up(q, j))``. The scan reports
    ``lround(point_up(q, first + j))``. j is recovered from the box width; every corner's q is the only one on the
    cell grid that maps to it.
    """
    width = box[2] - box[0]
    estimate = round(math.log(max(width, 1.0) / state.base_box_width()) / math.log(LEVEL_UP))
    found: list[tuple[int, list[int]]] = []
    for j in (estimate - 1, estimate, estimate + 1):
        if not 0 <= j < count:
            continue
        corners = []
        for value in box:
            q = _corner_on_level(value, j, state)
            if q is None:
                break
            corners.append(q)
        else:
            found.append((j, corners))
    if len(found) != 1:
        raise LevelMapError(f"box {box} of a part from level {first} maps to {len(found)} levels")
    j, corners = found[0]
    left, top, right, bottom = (lround(_up(float(q), first + j)) for q in corners)
    return (left, top, right, bottom)


def _corner_on_level(value: int, level: int, state: DetectorState) -> int | None:
    """The corner q on the cell grid of ``level`` with lround(point_up(q, level)) == value, if there is one."""
    scale = LEVEL_UP**level
    offset = _up(0.0, level)
    estimate = (value - offset) / scale
    cell, phase = state.cell_size, state.box_phase
    nearest = phase + cell * round((estimate - phase) / cell)
    for q in (nearest, nearest - cell, nearest + cell):
        if lround(_up(float(q), level)) == value:
            return q
    return None


def overlap(a: Box, b: Box, iou_threshold: float, covered_threshold: float) -> bool:
    """dlib's test_box_overlap: the intersection over the *bounding box* of both (dlib's ``(a+b).area()``) exceeds
    ``iou_threshold``, or the intersection covers more than ``covered_threshold`` of either box."""
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    if right < left or bottom < top:
        return False
    inner = float((right - left + 1) * (bottom - top + 1))
    outer = (max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inner / outer > iou_threshold or inner / area_a > covered_threshold or inner / area_b > covered_threshold


def suppress(candidates: Sequence[Candidate], state: DetectorState) -> list[Candidate]:
    """dlib's non-max suppression: best score first, keep a candidate unless it overlaps one already kept."""
    kept: list[Candidate] = []
    iou, covered = state.iou_threshold, state.covered_threshold
    for candidate in sorted(candidates, key=lambda c: -c.score):
        if not any(overlap(k.box, candidate.box, iou, covered) for k in kept):
            kept.append(candidate)
    return kept


def scan_whole(bank: DetectorBank, image: np.ndarray, upsample: int) -> list[Candidate]:
    """The stock scan (dlib's own suppression), boxes in the input image's pixels: the reference the parts match."""
    with bank.stock() as detector:
        rects, scores, indices = detector.run(image, upsample, 0.0)
    return [
        Candidate(float(s), int(k), (r.left(), r.top(), r.right(), r.bottom()))
        for r, s, k in zip(rects, scores, indices, strict=True)
    ]
