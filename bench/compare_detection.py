"""Compare DlibEngine's detection with face_recognition's default pipeline on every fixture photo.

The photos: every file of ``fixtures/MANIFEST.csv`` and every generated one in ``fixtures/derived/``.

Baseline = what ``face_recognition.face_locations(img)`` + ``face_encodings(img)`` do: dlib HOG with upsample 1 on
the full image, then the 5-point landmarks and the ResNet descriptor (num_jitters=1) of each box.

For each fixture: image size, expected count (MANIFEST's faces_hog_upsample1), baseline count and time,
our count and time, the detection plan (scale, upsample), the worst box IoU between matched faces and the lowest
cosine similarity between matched embeddings.

Run: ``python bench/compare_detection.py`` (from the repository root, with the venv's python).
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.baseline import Baseline, Box  # noqa: E402
from bench.measure import FIXTURES  # noqa: E402
from emulator.face.decode import decode_image  # noqa: E402
from emulator.face.engine import DlibEngine, Face  # noqa: E402


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match(base: list[Box], ours: list[Face]) -> list[tuple[int, int, float]]:
    """Greedy match baseline boxes to ours by IoU (> 0.3)."""
    pairs = sorted(((iou(b, f.box), i, j) for i, b in enumerate(base) for j, f in enumerate(ours)), reverse=True)
    used_b: set[int] = set()
    used_o: set[int] = set()
    out: list[tuple[int, int, float]] = []
    for score, i, j in pairs:
        if score > 0.3 and i not in used_b and j not in used_o:
            used_b.add(i)
            used_o.add(j)
            out.append((i, j, score))
    return out


@dataclass(frozen=True)
class Comparison:
    """One fixture photo: the baseline's faces against ours."""

    file: str
    width: int
    height: int
    baseline_faces: int
    our_faces: int
    scale: float  # the detection pass that answered: copy scale and upsample
    upsample: int
    min_iou: float  # worst box overlap of matched faces (nan without faces)
    cosines: list[float]  # between matched embeddings
    baseline_s: float
    ours_s: float

    @property
    def same(self) -> bool:
        return len(self.cosines) == self.baseline_faces == self.our_faces

    @property
    def min_cos(self) -> float:
        return min(self.cosines, default=float("nan"))


def fixture_photos() -> list[tuple[str, str]]:
    """(path under fixtures/, expected face count or "-") of every fixture photo: MANIFEST's, then derived/'s."""
    rows = [(row["file"], row["faces_hog_upsample1"]) for row in csv.DictReader((FIXTURES / "MANIFEST.csv").open())]
    derived = sorted(p for p in (FIXTURES / "derived").iterdir() if p.suffix.lower() in {".jpg", ".png", ".tiff"})
    return rows + [(str(p.relative_to(FIXTURES)), "-") for p in derived]


def compare(engine: DlibEngine, baseline: Baseline, file: str) -> Comparison:
    """Run both pipelines on ``fixtures/<file>`` (ours as the service calls it: bytes in)."""
    data = (FIXTURES / file).read_bytes()
    rgb = decode_image(data, max_width=4000, max_height=4000)
    height, width = rgb.shape[:2]
    base_boxes, base_emb, base_t = baseline.run(rgb)
    start = time.perf_counter()
    ours = engine.analyze(data)
    ours_t = time.perf_counter() - start
    _, used = engine.detect(rgb)  # which pass answered (not timed)
    pairs = match(base_boxes, ours)
    return Comparison(
        file=file,
        width=width,
        height=height,
        baseline_faces=len(base_boxes),
        our_faces=len(ours),
        scale=used.scale,
        upsample=used.upsample,
        min_iou=min((p[2] for p in pairs), default=float("nan")),
        cosines=[float(base_emb[i] @ ours[j].embedding) for i, j, _ in pairs],
        baseline_s=base_t,
        ours_s=ours_t,
    )


def main() -> int:
    engine = DlibEngine(max_width=4000, max_height=4000)  # the fixtures include photos up to 2048x2333
    engine.warm_up()
    baseline = Baseline()
    photos = fixture_photos()
    header = (
        f"{'fixture':48} {'size':>9} {'exp':>3} {'base':>4} {'ms':>6} {'ours':>4} {'ms':>6} {'plan':>9} "
        f"{'minIoU':>6} {'minCos':>7}"
    )
    print(header)
    print("-" * len(header))
    mismatches = 0
    t_base: list[float] = []
    t_ours: list[float] = []
    for file, expected in photos:
        c = compare(engine, baseline, file)
        t_base.append(c.baseline_s)
        t_ours.append(c.ours_s)
        mismatches += not c.same
        flag = "" if c.same else "  <-- DIFFERENT"
        print(
            f"{c.file:48} {c.width:>4}x{c.height:<4} {expected:>3} {c.baseline_faces:>4} "
            f"{c.baseline_s * 1000:>6.0f} {c.our_faces:>4} {c.ours_s * 1000:>6.0f} {c.scale:>5.2f}/u{c.upsample} "
            f"{c.min_iou:>6.3f} {c.min_cos:>7.4f}{flag}"
        )
    print("-" * len(header))
    print(
        f"total: baseline {sum(t_base):.2f} s (median {statistics.median(t_base) * 1000:.0f} ms), "
        f"ours {sum(t_ours):.2f} s (median {statistics.median(t_ours) * 1000:.0f} ms); "
        f"fixtures with different faces: {mismatches}"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
