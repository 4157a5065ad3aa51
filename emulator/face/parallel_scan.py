"""One HOG scan on several cores: its levels cut into parts (:mod:`emulator.face.hog`), run by a bounded thread pool.

dlib releases the GIL while it scans, so the parts of one scan run truly in parallel in threads of one process.

The pool is process-wide and small: one thread per core this process may run on (``os.sched_getaffinity``) minus
one, because the thread that asks for a detection always scans a part itself. It never oversubscribes the cores:

- the analysis worker processes of many-image requests (:mod:`emulator.face.pool`) detect with one thread each
  (``detect_threads=1``): there the processes already keep every core busy, one image each;
- in the server process, a part that no pool thread has started yet is never waited for: once the asking thread
  has scanned its own part, it takes back every part still queued and scans it itself. Concurrent requests thus never
  wait for each other's parts (each costs at most what it costs alone on one core), and the pool adds at most
  ``cores - 1`` running scans to the process, whatever the number of requests;
- a pool belongs to the process that made it: a forked child makes its own, and none is made before a fork.

How a scan is cut: contiguous level ranges, balanced by a cost model (a level costs its pixel count; a part that
starts at level a first waits for the resizes that make level a's image, ~0.2 of a pixel each). On 2 cores a scan
becomes 2 parts of about equal cost.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from emulator.face.hog import Candidate, DetectorBank, LevelMapError, Pyramid, scan_levels, suppress

T = TypeVar("T")

RESIZE_COST = 0.2  # dlib's bilinear resize per output pixel, relative to scanning one pixel of a level
PART_OVERHEAD = 20_000  # fixed cost of one scan call (setup, Python), in scanned-pixel equivalents (~0.6 ms)
MIN_PART_PIXELS = 60_000  # a part scanning fewer pixels than this is not worth a thread of its own


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


def split_levels(
    areas: Sequence[int], start: int, end: int, parts: int, ready: Callable[[int], float], upsample: int
) -> list[tuple[int, int]]:
    """Cut levels ``[start, end)`` into at most ``parts`` contiguous ranges whose latest finish is the earliest.

    ``areas[k]`` is level k's pixel count; ``ready(a)`` is the resize work (in pixels) before level a's image exists.
    A range from level 0 with upsample also pays for dlib's own doubling of the image. Each range: ready + its
    levels' pixels + a fixed overhead; ranges run at once, one per thread.
    """
    if end - start <= 1 or parts <= 1:
        return [(start, end)] if end > start else []

    def cost(a: int, b: int) -> float:
        doubling = areas[0] * RESIZE_COST if a == 0 and upsample else 0.0
        return ready(a) + doubling + sum(areas[a:b]) + PART_OVERHEAD

    # best[p][a]: (latest finish, ranges) covering [a, end) with at most p ranges
    best: list[dict[int, tuple[float, list[tuple[int, int]]]]] = [{} for _ in range(parts + 1)]
    for a in range(end - 1, start - 1, -1):
        best[1][a] = (cost(a, end), [(a, end)])
        for p in range(2, parts + 1):
            options = [best[p - 1][a]]
            for b in range(a + 1, end):
                if sum(areas[a:b]) < MIN_PART_PIXELS:
                    continue
                finish, rest = best[p - 1][b]
                options.append((max(cost(a, b), finish), [(a, b), *rest]))
            best[p][a] = min(options, key=lambda option: (option[0], len(option[1])))
    return best[parts][start][1]


class LevelScan:
    """One HOG scan of one image, scanned progressively from its coarse levels to its fine ones.

    :meth:`scan_from` scans the levels from ``first`` to the coarsest not scanned yet, in parallel parts, and
    returns the suppressed candidates of every level from ``first`` up. A later call with a smaller ``first`` adds
    only the finer levels: with ``first`` 0 the answer is exactly dlib's one scan of the image.

    With ``prefetch`` a coarse call also hands the first part of the finer levels to the pool before it scans: a
    free core starts on the work the next call would do (the largest level), while the caller scans the coarse
    levels. If the coarse levels end detection, the prefetched part is dropped (or, if a core already took it,
    finishes unused); if not, the next call collects it.
    """

    def __init__(
        self, bank: DetectorBank, source: np.ndarray, upsample: int, threads: int, pool: ThreadPoolExecutor | None
    ) -> None:
        self.bank = bank
        self.pyramid = Pyramid(source, upsample, bank.state)
        self.threads = max(1, threads)
        self.pool = pool if self.threads > 1 else None
        self.scanned_from = self.pyramid.count  # levels [scanned_from, count) are scanned
        self.candidates: list[Candidate] = []
        self.parts = 0  # scan calls made (for tests and the bench)
        self._prefetched: tuple[tuple[int, int], Pending[list[Candidate]]] | None = None

    @property
    def count(self) -> int:
        return self.pyramid.count

    def _ready(self, level: int) -> float:
        """Resize work (pixels) before level ``level``'s image exists; 0 for level 0 (dlib doubles it itself)."""
        if level == 0:
            return 0.0
        pyramid = self.pyramid
        have = pyramid.computed_levels()
        missing = [k for k in range(level + 1) if k not in have]
        return RESIZE_COST * sum(pyramid.area(k) for k in missing)

    def _split(self, start: int, end: int) -> list[tuple[int, int]]:
        areas = [self.pyramid.area(k) for k in range(self.count)]
        return split_levels(areas, start, end, self.threads, self._ready, self.pyramid.upsample)

    def plan(self, first: int) -> list[tuple[int, int]]:
        """The parts that :meth:`scan_from` would scan now (a prefetched part first)."""
        first = max(0, min(first, self.scanned_from))
        if self._prefetched is not None and first == 0:
            (a, b), _ = self._prefetched
            return [(a, b), *self._split(b, self.scanned_from)]
        return self._split(first, self.scanned_from)

    def scan_from(self, first: int, prefetch: bool = False) -> list[Candidate]:
        """Suppressed candidates of levels ``[first, count)``, boxes in the scanned image's pixels.

        Raises :class:`~emulator.face.hog.LevelMapError` if a part's box cannot be mapped back (never seen).
        """
        first = max(0, min(first, self.scanned_from))
        if self._prefetched is not None and first > 0:
            raise ValueError("after a prefetch, the next call scans down to level 0")
        prefetched = None
        if self._prefetched is not None:
            (_, end), prefetched = self._prefetched
            self._prefetched = None
            ranges = self._split(end, self.scanned_from)
        else:
            ranges = self._split(first, self.scanned_from)
            if prefetch and self.pool is not None and first > 0 and self._prefetched is None:
                finer = self._split(0, first)[0]
                self._prefetched = (finer, Pending(self._task(*finer), self.pool))
        tasks = [self._task(a, b) for a, b in ranges]
        if tasks:
            for found in run_all(tasks, self.pool):
                self.candidates.extend(found)
            self.parts += len(tasks)
        if prefetched is not None:
            self.candidates.extend(prefetched.result())
            self.parts += 1
        self.scanned_from = first
        return suppress(self.candidates, self.bank.state)

    def drop_prefetched(self) -> None:
        """The finer levels will not be needed: a prefetched part not started yet is cancelled."""
        if self._prefetched is not None:
            self._prefetched[1].drop()
            self._prefetched = None

    def _task(self, a: int, b: int) -> Callable[[], list[Candidate]]:
        return lambda: scan_levels(self.bank, self.pyramid, a, b - a)


__all__ = ["LevelMapError", "LevelScan", "Pending", "available_cores", "run_all", "scan_pool", "split_levels"]
