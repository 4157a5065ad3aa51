"""Why worker processes, not threads: which dlib steps let other Python threads run, whether batching helps, and
the same photos analysed one by one, in 2 threads and in 2 processes."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dlib
import numpy as np

from bench.baseline import Baseline
from bench.figures import Run
from bench.measure import PHOTO, distinct_images, fixture, ms, parallelism_available, timed_calls
from bench.report import Results
from emulator.face.decode import decode_image
from emulator.face.embedder import NumpyEmbedder
from emulator.face.engine import DlibEngine
from emulator.face.pool import AnalyzePool

NAME = "processes"


def spin_rate(work: Callable[[], Any], rounds: int) -> float:
    """Iterations per second of a pure-Python loop in another thread while ``work`` runs ``rounds`` times."""
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.02)
    before, start = counter[0], time.perf_counter()
    for _ in range(rounds):
        work()
    rate = (counter[0] - before) / (time.perf_counter() - start)
    stop.set()
    thread.join()
    return rate


def measure(res: Results, run: Run) -> None:
    base = Baseline()
    rgb = decode_image(fixture(PHOTO), max_width=3840, max_height=2160)
    rect = base.detector(rgb, 1)[0]
    shape = base.predictor(rgb, rect)
    chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
    small = np.ascontiguousarray(rgb[::2, ::2])

    idle = spin_rate(lambda: time.sleep(0.05), 4)
    detect = spin_rate(lambda: base.detector(small, 0), 4)
    describe = spin_rate(lambda: base.encoder.compute_face_descriptor(chip, 1), 4)
    fast = NumpyEmbedder()
    fast.load()
    describe_fast = spin_rate(lambda: fast.descriptors([np.asarray(chip)] * 8), 4)
    one = statistics.median(timed_calls(lambda: base.encoder.compute_face_descriptor(chip, 1), 5))
    batch = statistics.median(timed_calls(lambda: base.encoder.compute_face_descriptor([chip] * 4, 1), 3)) / 4
    # The same images three ways, in the order s, t, p, p, t, s: one by one, 2 threads, 2 processes.
    images = distinct_images(16)
    engine = DlibEngine()
    engine.warm_up()
    pool = AnalyzePool(2, engine.options())
    pool.start()
    threads = ThreadPoolExecutor(2)
    ways: dict[str, Callable[[], Any]] = {
        "one by one": lambda: [engine.analyze(data) for data in images],
        "2 threads": lambda: list(threads.map(engine.analyze, images)),
        "2 processes": lambda: pool.analyze(images),
    }
    spent: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for name in ["one by one", "2 threads", "2 processes", "2 processes", "2 threads", "one by one"]:
            spent[name].extend(timed_calls(ways[name], 1))
    finally:
        threads.shutdown()
        pool.close()
    seq = sum(spent["one by one"])
    res.add("## Why processes, not threads")
    res.add()
    res.add(
        "A pure-Python loop in a second thread, while the main thread runs a step, keeps this share of its "
        f"speed: during HOG detection {detect / idle:.0%}, during dlib's `compute_face_descriptor` "
        f"{describe / idle:.0%}, during the default (numpy) embedder's batch of 8 {describe_fast / idle:.0%}. dlib "
        "releases the GIL while it detects but not while it computes a descriptor; landmarks and chips hold it too, "
        "so the images of one request are spread over worker processes, not threads. dlib gains nothing from "
        f"batches: one descriptor {ms(one)}; per face in a batch of 4, {ms(batch)} (ratio {batch / one:.2f}); the "
        "onnx and numpy embedders do (figure 8), so the faces of an image are embedded in one batch."
    )
    res.add()
    res.add(
        f"The same 16 photos analysed in-process, twice each way: one by one {seq / 2:.2f} s; 2 threads "
        f"{sum(spent['2 threads']) / 2:.2f} s ({seq / sum(spent['2 threads']):.2f}x); 2 processes "
        f"{sum(spent['2 processes']) / 2:.2f} s ({seq / sum(spent['2 processes']):.2f}x). A pure CPU loop ran "
        f"{parallelism_available():.2f}x faster in 2 processes than in 1 right after (2.0 on idle cores)."
    )
    res.add()
