"""Figure 7: sustained throughput, ``serve --workers 2`` with the cache off, 8 concurrent loopback clients."""

from __future__ import annotations

import statistics

from bench.baseline import Baseline
from bench.figures import Run
from bench.measure import PHOTO, fixture, ms, pct, timed_calls
from bench.report import Results
from bench.server import enrol, running, sustained

NAME = "throughput"


def measure(res: Results, run: Run) -> None:
    seconds = run.seconds
    photo = fixture(PHOTO)
    if run.baseline_p50 is None:  # measured alone: figure 1 did not time the baseline
        baseline = Baseline()
        baseline.pipeline(photo)
        run.baseline_p50 = statistics.median(timed_calls(lambda: baseline.pipeline(photo), run.runs))
    baseline_p50 = run.baseline_p50
    with running({"cache_size": 0}, workers=2, started=run.started) as server:
        enrol(server)
        for _ in range(4):  # both processes warm
            server.recognize(photo)
        window = sustained([server], [], seconds, photo)
    latencies, errors = window.latencies, window.errors
    rps = window.requests / window.wall
    res.add("## 7. Sustained throughput")
    res.add()
    res.add(
        f"`serve --workers 2`, cache off, 8 concurrent loopback clients sending the 1280x720 single-face photo for "
        f"{seconds:.0f} s: **{rps:.1f} req/s**, p50 {ms(statistics.median(latencies))}, p95 "
        f"{ms(pct(latencies, 95))}, {len(latencies)} requests, {errors} errors. The baseline pipeline on one core "
        f"would serve {1 / baseline_p50:.1f} req/s (ratio {rps * baseline_p50:.2f}x)."
    )
    res.add()
    res.target("7. sustained req/s, 2 workers, 8 clients", f"{rps:.1f} req/s (p95 {ms(pct(latencies, 95))})", "-", None)
