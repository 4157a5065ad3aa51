"""Figure 2: the faces found on every fixture photo, ours against the baseline's (counts, box overlap, embedding
cosine, the detection pass that answered)."""

from __future__ import annotations

import statistics

from bench.baseline import Baseline
from bench.compare_detection import compare, fixture_photos
from bench.figures import Run
from bench.measure import ms
from bench.report import Results
from emulator.face.engine import DlibEngine

NAME = "fixtures"


def measure(res: Results, run: Run) -> None:
    engine = DlibEngine(max_width=4000, max_height=4000)  # some fixtures are larger than the 4K default limit
    engine.warm_up()
    baseline = Baseline()
    photos = [file for file, _ in fixture_photos()]
    res.add("## 2. Faces found on every fixture photo, ours vs baseline")
    res.add()
    res.add("Baseline: HOG upsample 1 on the full image. `pass`: the scan that answered (copy scale / upsample).")
    res.add("`min IoU`: worst box overlap of matched faces; `min cos`: worst cosine between matched embeddings.")
    res.add()
    res.add("| fixture | size | baseline | ours | same | pass | min IoU | min cos | baseline ms | ours ms |")
    res.add("| --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    different = []
    worst_cos = 1.0
    t_base: list[float] = []
    t_ours: list[float] = []
    for file in photos:
        c = compare(engine, baseline, file)
        if not c.same:
            different.append(c.file)
        worst_cos = min([worst_cos, *c.cosines])
        t_base.append(c.baseline_s)
        t_ours.append(c.ours_s)
        res.add(
            f"| {c.file} | {c.width}x{c.height} | {c.baseline_faces} | {c.our_faces} | {'yes' if c.same else '**no**'} "
            f"| {c.scale:.2f}/u{c.upsample} | {c.min_iou:.3f} | {c.min_cos:.4f} | {c.baseline_s * 1000:.0f} "
            f"| {c.ours_s * 1000:.0f} |"
        )
    res.add()
    res.add(
        f"{len(photos)} photos; faces differ on {len(different)}{': ' + ', '.join(different) if different else ''}. "
        f"Median time per photo: baseline {ms(statistics.median(t_base))}, ours {ms(statistics.median(t_ours))} "
        f"(ratio {statistics.median(t_ours) / statistics.median(t_base):.2f}); worst embedding cosine {worst_cos:.4f}."
    )
    res.add()
    same_count = f"{len(photos) - len(different)}/{len(photos)}"
    res.target("2. same faces as the baseline on every fixture", same_count, "all", not different)
