"""Tune glibc's malloc, so a server's resident memory settles low and stays flat.

Two measures, both switched on for ``smarty-emulator serve`` (the arena cap first thing, trimming in each
process's app factory):

- **Arenas.** glibc gives each thread that allocates concurrently its own arena (up to 8 per core), and an arena
  keeps its high-water mark: each decode and detection (an image pyramid of tens of MB) raises the mark of
  whichever arena served it, so a server's RSS creeps up for its first thousand or so requests, to well above what
  any moment needs. Two arenas keep the same throughput (the work is in dlib's compute, not in malloc) and settle
  quickly at a lower level (measured: ~270 MiB instead of ~410 MiB for one process after 2,000 uploads).
  ``MALLOC_ARENA_MAX`` set by the operator wins; worker processes inherit the variable.
- **Trimming.** glibc raises its mmap threshold each time a large block is freed, so after a few uploads the
  decoded images and pyramid levels come from the heap, where blocks of ever different sizes leave free pages
  between live ones that the heap never gives back: RSS keeps creeping up under sustained load (measured in a
  10-minute soak of two workers: +7.6 % from the 2nd to the last minute). Every ``TRIM_EVERY`` analyses,
  ``malloc_trim(0)`` returns those free pages to the system (1-3 ms; measured on one process, three threads and
  600 analyses: ~155 MiB instead of ~230 MiB, at the same CPU per analysis). A fixed mmap threshold
  (``MALLOC_MMAP_THRESHOLD_``) would keep RSS as low, but cost 10-30 % more CPU per analysis in page faults, so it
  is left to the operator.

Outside glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_ARENAS = 2
TRIM_EVERY = 64
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else ctypes.CDLL(None)
    except OSError:
        return None


class _Trimmer:
    """Counts analyses and calls ``malloc_trim(0)`` after every ``every``-th (from any thread)."""

    def __init__(self, trim: Callable[[int], int], every: int) -> None:
        self._trim = trim
        self.every = every
        self._count = 0
        self._lock = threading.Lock()
        self.trims = 0

    def note(self) -> None:
        with self._lock:
            self._count += 1
            due = self._count % self.every == 0
        if due:
            self._trim(0)
            self.trims += 1


_trimmer: _Trimmer | None = None


def limit_malloc_arenas(default: int = DEFAULT_ARENAS) -> int | None:
    """Cap the arenas of this process (``mallopt``) and of processes it starts (``MALLOC_ARENA_MAX``).

    Returns the cap in force, or None where glibc's ``mallopt`` is not available.
    """
    raw = os.environ.setdefault("MALLOC_ARENA_MAX", str(default))
    try:
        arenas = max(1, int(raw))
    except ValueError:
        return None
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return arenas if mallopt(_M_ARENA_MAX, arenas) == 1 else None


def _malloc_trim() -> Callable[[int], int] | None:
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def trim_now() -> None:
    """Give the heap's free pages back to the system at once (glibc's ``malloc_trim``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def enable_trimming(every: int = TRIM_EVERY) -> bool:
    """Have ``after_analysis`` give freed heap pages back every ``every`` analyses; False outside glibc."""
    global _trimmer
    trim = _malloc_trim()
    if trim is None:
        return False
    _trimmer = _Trimmer(trim, max(1, every))
    return True


def disable_trimming() -> None:
    global _trimmer
    _trimmer = None


def trimming_interval() -> int | None:
    """Every how many analyses this process trims its heap; None when trimming is off."""
    return _trimmer.every if _trimmer is not None else None


def trims_done() -> int:
    """How many times this process has trimmed its heap (0 when trimming is off)."""
    return _trimmer.trims if _trimmer is not None else 0


def after_analysis() -> None:
    """Called by the engine after each image: trims now and then, when ``serve`` has switched trimming on."""
    trimmer = _trimmer
    if trimmer is not None:
        trimmer.note()
