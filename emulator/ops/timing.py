"""Where a request's time goes: ``with timed("detect"):`` adds to the current request's recorder.

The persons routes make one :class:`Recorder` per request and runs the service inside it
(:meth:`Recorder.run`); code anywhere below (service, engine) marks phases with :func:`timed`
and counts things with :func:`count`. Outside a recorder both are no-ops, so the engine and
the service work the same in scripts and benchmarks.

The current recorder lives in a :class:`contextvars.ContextVar`. A context does not follow
work handed to a thread pool by itself: wrap the callable with :func:`bind` where work is
submitted, and the worker thread records into the submitting request's recorder. Phases
that run in parallel threads add up, so a phase's total may exceed the request's wall time.
Work sent to another *process* returns its phases with its result (:func:`measured`), and the
submitting thread adds them (:func:`merge`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class Recorder:
    """Seconds per phase and counts of one request; safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def timings_ms(self) -> dict[str, float]:
        with self._lock:
            return {phase: round(seconds * 1000, 3) for phase, seconds in self.seconds.items()}

    def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn`` with this recorder current (in the calling thread)."""
        token = _current.set(self)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)


_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("emulator_timing", default=None)


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Add the block's wall time to ``phase`` of the current request (no-op outside a request)."""
    recorder = _current.get()
    if recorder is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        recorder.add(phase, time.perf_counter() - started)


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to the current request's count ``name`` (no-op outside a request)."""
    recorder = _current.get()
    if recorder is not None:
        recorder.count(name, n)


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` made to record into the caller's recorder when it runs in another thread."""
    recorder = _current.get()
    if recorder is None:
        return fn

    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return recorder.run(fn, *args, **kwargs)

    return bound


def measured(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> tuple[R, dict[str, float]]:
    """Call ``fn`` under a fresh recorder; return its result and its seconds per phase.

    For work in another process: the worker returns the phases with its result, and the submitting
    thread hands them to :func:`merge`.
    """
    recorder = Recorder()
    result = recorder.run(fn, *args, **kwargs)
    return result, dict(recorder.seconds)


def merge(seconds: Mapping[str, float]) -> None:
    """Add phases measured elsewhere (another process) to the current request (no-op outside a request)."""
    recorder = _current.get()
    if recorder is not None:
        for phase, value in seconds.items():
            recorder.add(phase, value)
