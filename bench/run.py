"""The emulator's benchmark: every figure measured side by side in one run, written to bench/RESULTS.md.

Run ``make bench`` (or ``python bench/run.py``) from the repository root. Servers are started as subprocesses
(``python -m emulator serve``) on free loopback ports with temporary data directories, and stopped at the end;
every loop is bounded. The baseline is face_recognition's default pipeline, called in-process on dlib directly
exactly as face_recognition's api.py does: Pillow decode, HOG with upsample 1 on the full image, the 5-point
landmarks, ``compute_face_descriptor(image, shape, num_jitters=1)``.

Figures (medians unless said otherwise; ratios are ours / baseline), one module each in bench/figures/:
  1. recognize latency over HTTP of a single-face 1280x720 photo, cache off ("cold") and on ("repeat"),
     vs the baseline in-process (latency);
  2. faces found on every fixture photo, ours vs baseline (fixture_faces);
  3. a 100-image request (distinct bytes): wall time with 1 analysis worker vs one per core (many_images);
  4. the same photo again (cache on): latency (latency);
  5. matching alone vs 1k, 10k, 75k embeddings in a space: time per query and memory (matching);
  6. process start to ready (start_to_ready);
  7. sustained requests per second, 2 server worker processes, 8 concurrent loopback clients (throughput);
  8. the face descriptor per face on the same chips: dlib's ``compute_face_descriptor`` vs the onnx and numpy
     embedders, one face at a time and in a batch of 8 (descriptor);
  9. detection alone on a small 5-face group photo: ours (one thread per core, and one thread) vs
     face_recognition's HOG at upsample 1, side by side in-process (group_photo);
 10. SQLite vs PostgreSQL (``SMARTY_DATABASE_URL``): latency of recognize and set, the store's write rate, loading
     a 75,000-embedding space, sustained req/s of 2 replicas on one database vs 2 workers on SQLite
     (sqlite_vs_postgres);
 11. a big space under writes: interleaved set and recognize on 2 workers and 2 replicas vs 1, a write's cost
     to the other process by space size, mixed throughput on 2 PostgreSQL replicas vs 1, memory (big_space);
 12. the face detectors, HOG and YuNet: the 720p photo recognized with each, detection alone on group photos and
     the small-face canvas (detectors);
 13. the searcher=1 attributes per face (sex, age, expression) against the descriptor per face, numpy and ONNX
     Runtime, and their accuracy on the labelled portraits (attributes);
 and why worker processes, not threads (threads_vs_processes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import (  # noqa: E402
    Run,
    attributes,
    big_space,
    descriptor,
    detectors,
    fixture_faces,
    group_photo,
    latency,
    many_images,
    matching,
    sqlite_vs_postgres,
    start_to_ready,
    threads_vs_processes,
    throughput,
)
from bench.report import Results, full_report, replace_figure  # noqa: E402

# The order they run in: figure 6 counts the single-process servers started before it; figure 7 reports against
# the baseline's time that figure 1 measured. The file has them by number.
FIGURES = (
    threads_vs_processes,
    latency,
    fixture_faces,
    many_images,
    matching,
    throughput,
    start_to_ready,
    descriptor,
    group_photo,
    sqlite_vs_postgres,
    big_space,
    detectors,
    attributes,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--runs", type=int, default=21, help="requests per latency figure")
    parser.add_argument("--images", type=int, default=100, help="images in the many-image request")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of the throughput run (max 20)")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max seconds to wait for idle cores before figure 3"
    )
    parser.add_argument(
        "--only",
        choices=[figure.NAME for figure in FIGURES],
        help="only this figure (bench/README.md names them): its section and headline rows replace theirs in --out",
    )
    args = parser.parse_args(argv)
    run = Run(runs=args.runs, images=args.images, seconds=min(args.seconds, 20.0), quiet_wait=args.quiet_wait)
    load_before = os.getloadavg()
    started = time.perf_counter()
    res = Results()
    sections: list[list[str]] = []
    for figure in FIGURES:
        if args.only in (None, figure.NAME):
            mark = len(res.lines)
            figure.measure(res, run)
            sections.append(res.lines[mark:])
    total = time.perf_counter() - started
    load = (load_before[0], os.getloadavg()[0])

    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = ("make bench" if os.environ.get("BENCH_VIA_MAKE") else f"python bench/run.py {given}").strip()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    previous = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    if args.only:  # the figure measured again, into the file of the last full run where there is one
        [lines] = sections
        note = (
            f"Measured again alone by `{command}` on {stamp} in {total:.0f} s; load average (1 min) before: "
            f"{load[0]:.2f}, after: {load[1]:.2f}. The other figures are from the run named at the top."
        )
        text = replace_figure(previous, [lines[0], "", note, *lines[1:]], res.headline)
        if text is not None:
            args.out.write_text(text, encoding="utf-8")
            print(f"wrote {lines[0].removeprefix('## ')!r} into {args.out} in {total:.0f} s")
            return 0
    args.out.write_text(full_report(command, stamp, total, load, sections, res.headline, previous), encoding="utf-8")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
