"""Figures 1 and 4: recognize latency of the single-face 1280x720 photo over HTTP, cache off (interleaved with the
baseline in-process) and the same photo again with the cache on."""

from __future__ import annotations

import functools
import statistics

from bench.baseline import Baseline
from bench.figures import Run
from bench.measure import PHOTO, fixture, interleaved, ms, pct, timed_calls
from bench.report import Results
from bench.server import enrol, running

NAME = "latency"


def measure(res: Results, run: Run) -> None:
    """Also hands the baseline's median on to figure 7 (``run.baseline_p50``)."""
    runs = run.runs
    photo = fixture(PHOTO)
    baseline = Baseline()
    baseline.pipeline(photo)
    with running({"cache_size": 0, "analyze_workers": 1}, started=run.started) as server:
        enrol(server)
        body = server.recognize(photo)
        assert body["objects"][0]["persons"][0]["tag"] == "person1", body
        times = interleaved(
            {
                "cold": functools.partial(server.recognize, photo),
                "baseline": functools.partial(baseline.pipeline, photo),
            },
            runs,
        )
    cold, base = times["cold"], times["baseline"]
    with running({"analyze_workers": 1}, started=run.started) as server:
        enrol(server)
        server.recognize(photo)  # first sight: analysed and cached
        repeat = timed_calls(functools.partial(server.recognize, photo), runs * 2)
    b50, c50, r50 = statistics.median(base), statistics.median(cold), statistics.median(repeat)
    run.baseline_p50 = b50
    res.add("## 1. Recognize latency, single-face 1280x720 photo (`fixtures/" + PHOTO + "`)")
    res.add()
    res.add(f"{runs} requests each, interleaved with the baseline. Ours is over HTTP (multipart upload, JSON).")
    res.add()
    res.add("| pipeline | p50 | p95 | ratio p50 (ours / baseline) |")
    res.add("| --- | ---: | ---: | ---: |")
    res.add(f"| baseline: face_recognition defaults, in-process | {ms(b50)} | {ms(pct(base, 95))} | 1 |")
    res.add(f"| ours over HTTP, cache off (cold) | {ms(c50)} | {ms(pct(cold, 95))} | {c50 / b50:.3f} |")
    res.add(f"| ours over HTTP, same photo again (cache on) | {ms(r50)} | {ms(pct(repeat, 95))} | {r50 / b50:.4f} |")
    res.add()
    ratio = c50 / b50
    res.target("1. single-face 1280x720 recognize, p50 ours/baseline (cold)", f"{ratio:.3f}", "<= 0.12", ratio <= 0.12)
    res.target("4. same photo again, p50", ms(r50), "<= 5 ms", r50 <= 0.005)
