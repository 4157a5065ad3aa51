"""Calibrate the cosine match threshold on the fixture photos.

Every face of a known person in ``fixtures/`` is embedded with ``DlibEngine`` (unit-length vectors). Then:
- same-person pairs: two faces of one person from *distinct* photos. Near-duplicates are skipped: the obama-*p
  files and obama_small are resizes of one photo, angelina's aligned crop is cut from full.jpg, obama_partial_face
  is cut from obama.jpg, and the two faces of groups/two_people.jpg are cut from obama.jpg and biden.jpg;
- different-person pairs: faces of two different people (group photos included, their faces labelled by hand
  from left to right).

Prints min / median / max cosine for both sets, the closest pairs across the boundary, and a recommended threshold.

Run: ``python bench/calibrate_threshold.py [--detector hog|yunet]`` (from the repository root, with the venv's
python; the detector is ``SMARTY_DETECTOR``'s, HOG by default: the faces' boxes, hence their descriptors, move a
little with it).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import FIXTURES  # noqa: E402
from emulator.face.engine import DlibEngine  # noqa: E402

# Files that are the same source photo: pairs inside one group are not evidence of anything.
DUPLICATE_GROUPS: dict[str, str] = {
    "people/obama/obama-240p.jpg": "obama-video",
    "people/obama/obama-480p.jpg": "obama-video",
    "people/obama/obama-720p.jpg": "obama-video",
    "people/obama/obama_small.jpg": "obama-video",
    "people/obama/obama.jpg": "obama-jpg",
    "people/obama/obama_partial_face.jpg": "obama-jpg",
    "groups/two_people.jpg#0": "obama-jpg",
    "people/biden/biden.jpg": "biden-jpg",
    "groups/two_people.jpg#1": "biden-jpg",
    "people/angelina_jolie/full.jpg": "angelina-1",
    "people/angelina_jolie/aligned-160.png": "angelina-1",
}

# Group photos: the person of each face, left to right (None: an unnamed person, used only as a negative).
GROUP_LABELS: dict[str, list[str | None]] = {
    "groups/kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "groups/obama_and_biden.jpg": ["biden", "obama", None],
    "groups/two_people.jpg": ["obama", "biden"],
}


@dataclass(frozen=True)
class Sample:
    key: str
    person: str
    group: str
    embedding: np.ndarray


def collect(engine: DlibEngine) -> list[Sample]:
    samples: list[Sample] = []
    for path in sorted((FIXTURES / "people").glob("*/*")):
        faces = engine.analyze(path.read_bytes())
        if not faces:
            print(f"warning: no face in {path}", file=sys.stderr)
            continue
        face = max(faces, key=lambda f: f.confidence)  # astronaut.png also has a false face on the patch
        key = path.relative_to(FIXTURES).as_posix()
        samples.append(Sample(key, path.parent.name, DUPLICATE_GROUPS.get(key, key), face.embedding))
    for name, labels in GROUP_LABELS.items():
        faces = engine.analyze((FIXTURES / name).read_bytes())
        if len(faces) != len(labels):
            raise SystemExit(f"{name}: expected {len(labels)} faces, found {len(faces)}")
        for i, (face, person) in enumerate(zip(faces, labels, strict=True)):
            key = f"{name}#{i}"
            samples.append(Sample(key, person or f"unnamed:{key}", DUPLICATE_GROUPS.get(key, key), face.embedding))
    return samples


def describe(values: list[float]) -> str:
    return f"n={len(values):4d}  min {min(values):.4f}  median {statistics.median(values):.4f}  max {max(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", choices=("hog", "yunet"), default="hog")
    engine = DlibEngine(max_width=4000, max_height=4000, detector=parser.parse_args().detector)
    samples = collect(engine)
    same: list[tuple[float, str, str]] = []
    diff: list[tuple[float, str, str]] = []
    for a, b in itertools.combinations(samples, 2):
        if a.group == b.group:
            continue
        cos = float(a.embedding @ b.embedding)
        (same if a.person == b.person else diff).append((cos, a.key, b.key))
    same.sort()
    diff.sort(reverse=True)
    print(f"{len(samples)} faces of {len({s.person for s in samples})} people")
    print(f"same person      {describe([c for c, _, _ in same])}")
    print(f"different people {describe([c for c, _, _ in diff])}")
    print("\nlowest same-person pairs:")
    for cos, a, b in same[:6]:
        print(f"  {cos:.4f}  {a}  ~  {b}")
    print("highest different-person pairs:")
    for cos, a, b in diff[:6]:
        print(f"  {cos:.4f}  {a}  ~  {b}")
    full = [c for c, a, b in diff if "aligned-160" not in a + b]
    print(f"different people, without the aligned 160x160 crops: {describe(full)}")
    low_same = same[0][0]
    high_diff = diff[0][0]
    print()
    if low_same > high_diff:
        midpoint = (low_same + high_diff) / 2
        print(f"separable: gap {high_diff:.4f} .. {low_same:.4f}, midpoint {midpoint:.4f}")
        print(f"recommended cosine threshold: {round(midpoint, 2):.2f}")
    else:
        print(f"NOT separable: highest different {high_diff:.4f} >= lowest same {low_same:.4f}")
    for threshold in (0.90, 0.92, 0.93, 0.94, 0.95):
        fn = sum(c < threshold for c, _, _ in same)
        fp = sum(c >= threshold for c, _, _ in diff)
        print(
            f"threshold {threshold:.2f}: same-person pairs below {fn}/{len(same)}, "
            f"different-person at/above {fp}/{len(diff)}"
        )


if __name__ == "__main__":
    main()
