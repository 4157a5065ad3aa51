"""Figure 8: the face descriptor per face on the same 8 chips: dlib's ``compute_face_descriptor`` vs the onnx and
numpy embedders, one face at a time and in a batch of 8; the ratios, and the worst difference from dlib's."""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Callable
from typing import Any

import dlib
import numpy as np
import onnxruntime
from threadpoolctl import threadpool_info

from bench.figures import Run
from bench.measure import fixture, interleaved, ms
from bench.report import Results
from emulator.face.decode import decode_image
from emulator.face.embedder import DEFAULT_EMBEDDER, DlibEmbedder, Embedder, NumpyEmbedder, OnnxEmbedder
from emulator.face.engine import DlibEngine

NAME = "descriptor"


def one_at_a_time(embedder: Embedder, chips: list[np.ndarray]) -> list[np.ndarray]:
    return [embedder.descriptors([chip]) for chip in chips]


def measure(res: Results, run: Run) -> None:
    """In rounds that interleave every way of computing the descriptor (a third as many as the latency runs)."""
    rounds = max(5, run.runs // 3)
    engine = DlibEngine()
    chips: list[np.ndarray] = []
    for photo in ("groups/multiface.jpg", "groups/two_people.jpg", "people/obama/obama-720p.jpg"):
        chips += engine.face_chips(decode_image(fixture(photo), max_width=3840, max_height=2160))
    chips = chips[:8]
    assert len(chips) == 8
    reference = DlibEmbedder()
    fast: dict[str, Embedder] = {"numpy": NumpyEmbedder(), "onnx": OnnxEmbedder()}
    for embedder in (reference, *fast.values()):
        embedder.load()
        embedder.descriptors(chips[:2])
    ways: dict[str, tuple[Callable[[], Any], int]] = {"dlib": (lambda: reference.descriptors(chips[:4]), 4)}
    for name, embedder in fast.items():
        ways[f"{name} one"] = (functools.partial(one_at_a_time, embedder, chips), len(chips))
        ways[f"{name} batch"] = (functools.partial(embedder.descriptors, chips), len(chips))
    # every round measures every way, so all see the same machine load
    times = interleaved({key: work for key, (work, _) in ways.items()}, rounds)
    p50 = {key: statistics.median(t / faces for t in times[key]) for key, (_, faces) in ways.items()}
    expected = reference.descriptors(chips)
    res.add("## 8. Face descriptor per face (the same 8 chips)")
    res.add()
    res.add(
        f"{rounds} rounds; each times dlib's `compute_face_descriptor` (4 chips, one at a time), then each fast "
        "embedder on the 8 chips one at a time and as one batch. Medians of the per-face times; ratios to dlib. "
        "`worst cosine`, `max abs diff`: against dlib's descriptors of the same chips."
    )
    res.add()
    res.add("| embedder | one face | ratio | batch of 8, per face | ratio | worst cosine | max abs diff |")
    res.add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    res.add(f"| dlib `compute_face_descriptor` | {ms(p50['dlib'])} | 1 | | | | |")
    for name, embedder in fast.items():
        ours = embedder.descriptors(chips)
        cosine = (ours * expected).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
        one, batch = p50[f"{name} one"], p50[f"{name} batch"]
        label = f"{name}{' (default)' if name == DEFAULT_EMBEDDER else ''}"
        res.add(
            f"| {label} | {ms(one)} | {one / p50['dlib']:.3f} | {ms(batch)} "
            f"| {batch / p50['dlib']:.3f} | {cosine.min():.8f} | {np.abs(ours - expected).max():.1e} |"
        )
    res.add()
    blas = [
        f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i['num_threads']} thread)"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    tuned = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    res.add(
        f"One thread per call for both: ONNX Runtime {onnxruntime.__version__} with one intra-op thread; numpy's BLAS: "
        f"{', '.join(blas) or 'none found'}{'; environment ' + str(tuned) if tuned else ''}. dlib {dlib.__version__} "
        f"is built {'with' if dlib.DLIB_USE_BLAS else 'without'} BLAS."
    )
    res.add()
    for name in fast:  # the targets hold for the default embedder; the optional onnx one is reported beside it
        ratio_one, ratio_batch = p50[f"{name} one"] / p50["dlib"], p50[f"{name} batch"] / p50["dlib"]
        one_ok, batch_ok = ratio_one <= 0.2, ratio_batch <= 0.1
        label = f"{name}{' (default)' if name == DEFAULT_EMBEDDER else ', optional'}"
        res.target(f"8. descriptor per face, one face, {label}/dlib", f"{ratio_one:.3f}", "<= 0.2", one_ok)
        res.target(f"8. descriptor per face, batch of 8, {label}/dlib", f"{ratio_batch:.3f}", "<= 0.1", batch_ok)
