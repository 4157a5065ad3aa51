"""One HOG scan on several cores: its levels cut into parts (:mod:`emulator.face.hog`), run by a bounded thread pool.

dlib releases the GIL while it scans, so the parts of one scan run truly in parallel in threads of one process.

The pool is process-wide and small: one thread per core this process may run on (``os.sched_getaffinity``) minus
one, because the thread that asks for a detection always scans a part itself. It never oversubscribes the cores:

- the analysis worker processes of many-image requests (:mod:`emulator.face.pool`) detect with one thread each
  (``detect_threads=1``): there the processes already keep every core busy, one image each;
- in the server process, a part that no pool thread has started yet is never waited for: once the asking thread
  has scanned its own part, it takes back every part still queued and scans it itself. Concurrent requests thus never
  wait for each other's parts (each costs about what it costs alone on one core: a cut scan does 0-8 % more work
  than one call), and the pool adds at most ``cores - 1`` running scans to the process, whatever the number of
  requests;
- a pool belongs to the process that made it: a forked child makes its own, and none is made before a fork.

How a scan is cut: contiguous level ranges, balanced by a cost model (a level costs its pixel count; the resizes
that make the levels' images, ~0.25 of a pixel each, fall on the part that runs to the last level). On 2 cores a
scan becomes levels 0-1 and 2 onwards: ~45 % and ~55 % of the work (one more level would make it ~57 % and ~43 %).
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from emulator.face.hog import (
    Candidate,
    DetectorBank,
    LevelMapError,
    Pyramid,
    box_down,
    scan_levels,
    scan_whole,
    suppress,
)

T = TypeVar("T")

RESIZE_COST = 0.25  # dlib's bilinear resize per output pixel, relative to scanning one pixel of a level
PART_OVERHEAD = 20_000  # fixed cost of one scan call (setup, Python), in scanned-pixel equivalents (~0.6 ms)
MIN_PART_PIXELS = 60_000  # a part scanning fewer pixels than this is not worth a thread of its own
MIN_CUT_PIXELS = 250_000  # a scan of fewer pixels (all levels; ~8 ms) is not cut at all


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid that made it, pool)


def scan_pool() -> ThreadPoolExecutor | None:
    """This process's scan threads (``available_cores() - 1`` of them, made on first use), or None on one core."""
    global _pool
    size = available_cores() - 1
    if size < 1:
        return None
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=size, thread_name_prefix="hog-scan"))
        return _pool[1]


class Pending(Generic[T]):
    """A task handed to the pool; :meth:`result` scans it in the calling thread if no pool thread has started it."""

    def __init__(self, task: Callable[[], T], pool: ThreadPoolExecutor | None) -> None:
        self._task = task
        self._future: Future[T] | None = pool.submit(task) if pool is not None else None

    def result(self) -> T:
        if self._future is None or self._future.cancel():
            return self._task()
        return self._future.result()

    def drop(self) -> None:
        """Not needed any more: cancelled if not started (a started scan finishes on its own, unused)."""
        if self._future is not None:
            self._future.cancel()


def run_all(tasks: Sequence[Callable[[], T]], pool: ThreadPoolExecutor | None) -> list[T]:
    """Run ``tasks``: the first in this thread, the others in the pool (or here, if the pool has not started them)."""
    pending = [Pending(task, pool) for task in tasks[1:]]
    try:
        first = tasks[0]()
    except BaseException:
        for part in pending:
            part.drop()
        raise
    return [first, *(part.result() for part in pending)]


def split_levels(areas: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """Cut levels ``[0, len(areas))`` into at most ``parts`` contiguous ranges whose latest finish is the earliest.

    ``areas[k]`` is level k's pixel count, and scanning a level costs that much. The cost model follows
    :func:`scan_parallel`: the last range is one scan call that first waits for its first level's image (the resizes
    of every level before it, ``RESIZE_COST`` per pixel) and then resizes its own later levels; every other range
    scans its levels one call each, on images that the last range's resizes make; each call adds an overhead.
    """
    return list(_split_levels(tuple(areas), min(parts, len(areas))))  # a range holds one level at least


@functools.lru_cache(maxsize=256)
def _split_levels(areas: tuple[int, ...], parts: int) -> tuple[tuple[int, int], ...]:
    """:func:`split_levels`, remembered per pyramid shape (photos of one camera share it): the search below is
    O(parts x levels^2), which holds the GIL for milliseconds on hosts with many cores."""
    count = len(areas)
    if count <= 1 or parts <= 1 or sum(areas) < MIN_CUT_PIXELS:
        return ((0, count),)
    total = [0, *itertools.accumulate(areas)]  # total[k]: the pixels of levels [0, k)

    def pixels(a: int, b: int) -> int:
        return total[b] - total[a]

    def cost(a: int, b: int) -> float:
        ready = RESIZE_COST * pixels(1, a + 1)  # before level a's image exists
        if b == count:
            return ready + pixels(a, count) + RESIZE_COST * pixels(a + 1, count) + PART_OVERHEAD
        return ready + pixels(a, b) + PART_OVERHEAD * (b - a)

    # best[p][a]: (latest finish, ranges) covering [a, count) with at most p ranges
    best: list[dict[int, tuple[float, list[tuple[int, int]]]]] = [{} for _ in range(parts + 1)]
    for a in range(count - 1, -1, -1):
        best[1][a] = (cost(a, count), [(a, count)])
        for p in range(2, parts + 1):
            options = [best[p - 1][a]]
            for b in range(a + 1, count):
                if pixels(a, b) < MIN_PART_PIXELS:
                    continue
                finish, rest = best[p - 1][b]
                options.append((max(cost(a, b), finish), [(a, b), *rest]))
            best[p][a] = min(options, key=lambda option: (option[0], len(option[1])))
    return tuple(best[parts][0][1])


def plan_parts(pyramid: Pyramid, threads: int) -> list[tuple[int, int]]:
    """The level ranges that one scan of ``pyramid`` is cut into for ``threads`` threads (one range: no cut)."""
    return split_levels([pyramid.area(k) for k in range(pyramid.count)], threads)


def scan_parallel(
    bank: DetectorBank, source: np.ndarray, upsample: int, threads: int, pool: ThreadPoolExecutor | None
) -> list[Candidate]:
    """dlib's scan of ``source`` (boxes in its pixels, dlib's order), cut into up to ``threads`` parallel parts.

    The same boxes and scores as :func:`~emulator.face.hog.scan_whole`, which answers instead if a part's box
    cannot be mapped back to its level (:class:`~emulator.face.hog.LevelMapError`, never seen).
    """
    pyramid = Pyramid(source, upsample, bank.state)
    parts = plan_parts(pyramid, threads if pool is not None else 1)
    if len(parts) <= 1:
        return scan_whole(bank, source, upsample)
    if upsample:  # every part needs the doubled image (the first would double it itself): make it once, here
        pyramid.image(0)
    tasks = [_part(bank, pyramid, a, b, whole=b == pyramid.count) for a, b in parts]
    try:
        found = suppress([c for part in run_all(tasks, pool) for c in part], bank.state)
    except LevelMapError:
        return scan_whole(bank, source, upsample)
    if not upsample:
        return found
    return [Candidate(c.score, c.weight_index, box_down(c.box)) for c in found]


def _part(bank: DetectorBank, pyramid: Pyramid, a: int, b: int, *, whole: bool) -> Callable[[], list[Candidate]]:
    """Levels [a, b) in one scan call if they run to the last level; else one call per level, each from the shared
    pyramid: a call scanning several levels would resize its later levels again, which a later part also needs."""
    if whole:
        return lambda: scan_levels(bank, pyramid, a, b - a)
    return lambda: [c for level in range(a, b) for c in scan_levels(bank, pyramid, level, 1)]
