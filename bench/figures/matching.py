"""Figure 5: matching alone, ``SpaceIndex.search`` of one face against 1k, 10k and 75k random unit embeddings:
time per query and the index's memory."""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench.figures import Run
from bench.measure import pct
from bench.report import Results
from emulator.persons.index import SpaceIndex

NAME = "matching"


def measure(res: Results, run: Run) -> None:
    rng = np.random.default_rng(6)
    res.add("## 5. Matching alone (one face against a space)")
    res.add()
    res.add(
        "Random unit embeddings, two per person; `SpaceIndex.search` with the threshold, as recognize calls it "
        "(one float32 mat-vec, per-person max with `np.maximum.reduceat`, sort of the persons above the threshold)."
    )
    res.add()
    res.add("| embeddings | p50 per query | p95 | index memory | matrix memory |")
    res.add("| ---: | ---: | ---: | ---: | ---: |")
    p50_75k = float("nan")
    for n in (1_000, 10_000, 75_000):
        matrix = rng.standard_normal((n, 128)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        index = SpaceIndex(1, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) // 2, matrix)
        queries = matrix[rng.integers(0, n, 20)] + rng.standard_normal((20, 128)).astype(np.float32) * 0.05
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        times = []
        for k in range(200):
            q = queries[k % len(queries)]
            start = time.perf_counter()
            index.search(q, min_score=0.93)
            times.append(time.perf_counter() - start)
        memory = index.matrix.nbytes + index.face_ids.nbytes + index.person_ids.nbytes
        memory += index.unique_person_ids.nbytes + index._starts.nbytes
        p50 = statistics.median(times)
        if n == 75_000:
            p50_75k = p50
        res.add(
            f"| {n:,} | {p50 * 1000:.2f} ms | {pct(times, 95) * 1000:.2f} ms | {memory / 2**20:.1f} MiB "
            f"| {index.matrix.nbytes / 2**20:.1f} MiB |"
        )
    res.add()
    value = f"{p50_75k * 1000:.2f} ms"
    res.target("5. matching one face against 75,000 embeddings, p50", value, "<= 5 ms", p50_75k <= 0.005)
