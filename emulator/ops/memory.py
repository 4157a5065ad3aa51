"""Bound glibc's malloc arenas, so a server's resident memory settles low and stays flat.

glibc gives each thread that allocates concurrently its own arena (up to 8 per core), and an arena keeps its
high-water mark: each decode and detection (an image pyramid of tens of MB) raises the mark of whichever arena
served it, so a server's RSS creeps up for its first thousand or so requests, to well above what any moment
needs. Two arenas keep the same throughput (the work is in dlib's compute, not in malloc) and settle quickly at a
lower level (measured: ~270 MiB instead of ~410 MiB for one process after 2,000 uploads).

``MALLOC_ARENA_MAX`` set by the operator wins. Outside glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

DEFAULT_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h


def limit_malloc_arenas(default: int = DEFAULT_ARENAS) -> int | None:
    """Cap the arenas of this process (``mallopt``) and of processes it starts (``MALLOC_ARENA_MAX``).

    Returns the cap in force, or None where glibc's ``mallopt`` is not available.
    """
    raw = os.environ.setdefault("MALLOC_ARENA_MAX", str(default))
    try:
        arenas = max(1, int(raw))
    except ValueError:
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return arenas if mallopt(_M_ARENA_MAX, arenas) == 1 else None
