"""Analyse the images of one request in parallel worker processes.

Much of an image's analysis holds the GIL (dlib's landmarks and chips, numpy's small steps, and all of dlib's own
descriptor with ``SMARTY_EMBEDDER=dlib``), so threads spread a many-image request over the cores poorly;
processes can. ``AnalyzePool`` is a ``ProcessPoolExecutor`` whose workers each hold their own
:class:`DlibEngine` (~130 MB of memory per worker with the default embedder, models included). It starts lazily,
on the first request that needs it, so it never delays readiness. Each worker computes on one thread (BLAS and
ONNX Runtime alike, :func:`emulator.face.embedder.limit_blas_threads`), so ``workers`` processes use ``workers``
cores.

Workers come from a ``forkserver`` that preloads :mod:`emulator.face.pool_preload`, which loads and warms the models
once: each worker is a fork of that process, ready at once. The server's own process (threads, sockets, SQLite) is
never forked. (Worker processes import the main module again: it must guard its entry point with
``if __name__ == "__main__"``.)

Each worker detects with one thread (``detect_threads=1``): the workers already keep every core busy, one image
each, so the threads that scan one image in parallel (:mod:`emulator.face.parallel_scan`) would only oversubscribe
the cores.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from emulator.face.decode import ImageError
from emulator.face.embedder import limit_blas_threads
from emulator.face.engine import DlibEngine, Face
from emulator.ops.memory import enable_trimming, trimming_interval
from emulator.ops.timing import measured, merge

# What a worker returns for one image: its faces, or the ImageError for the bytes.
Outcome = tuple[Face, ...] | ImageError

_worker_engine: DlibEngine | None = None


def _init_worker(options: Mapping[str, Any], trim_every: int | None) -> None:
    global _worker_engine
    options = {**options, "detect_threads": 1}  # the processes already use every core
    limit_blas_threads()  # one per worker process: the pool has a process per core
    if trim_every is not None:  # as the server's process does (emulator.ops.memory): the workers churn images too
        enable_trimming(trim_every)
    try:
        from emulator.face.pool_preload import ENGINE  # already imported (and warm) in a forkserver child
    except Exception:  # noqa: BLE001 - no preloaded engine: build one here
        _worker_engine = DlibEngine(**options)
        _worker_engine.warm_up()
        return
    for name, value in options.items():  # the same models; limits, detection options or the embedder may differ
        setattr(ENGINE, name, value)
    _worker_engine = ENGINE


def _analyze(data: bytes, attributes: bool = False) -> Outcome:
    assert _worker_engine is not None, "the worker was not initialised"
    try:
        return tuple(_worker_engine.analyze(data, attributes=attributes))
    except ImageError as exc:
        return exc


def _analyze_timed(data: bytes, attributes: bool = False) -> tuple[Outcome, dict[str, float]]:
    """``_analyze`` and its phases (decode, detect, embed), which the parent adds to the request's timings."""
    return measured(_analyze, data, attributes)


def _ping(_: int) -> bool:
    return _worker_engine is not None


class AnalyzePool:
    """A lazily started pool of ``workers`` processes, each with a ``DlibEngine(**options)``."""

    def __init__(self, workers: int, options: Mapping[str, Any]) -> None:
        self.workers = workers
        self.options = dict(options)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([__name__, "emulator.face.pool_preload"])
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=context,
                    initializer=_init_worker,
                    initargs=(self.options, trimming_interval()),
                )
            return self._executor

    def start(self) -> None:
        """Start the workers now and wait until each has loaded its models."""
        executor = self._get()
        list(executor.map(_ping, range(self.workers)))

    def analyze(self, images: Sequence[bytes], attributes: bool = False) -> list[Outcome]:
        """The faces (or the error) of every image, in order; with ``attributes``, each face's sex, age and
        expression too (each worker loads those networks on its first such image). A broken pool is restarted
        once, then raises."""
        flags = [attributes] * len(images)
        try:
            results = list(self._get().map(_analyze_timed, images, flags))
        except BrokenProcessPool:  # a worker died (killed, out of memory): start afresh and retry once
            self._discard()
            results = list(self._get().map(_analyze_timed, images, flags))
        for _, seconds in results:
            merge(seconds)  # the workers' phases count for the request that sent the images
        return [outcome for outcome, _ in results]

    def _discard(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def started(self) -> bool:
        return self._executor is not None

    def close(self) -> None:
        """Stop the workers (pending work is cancelled)."""
        self._discard()
