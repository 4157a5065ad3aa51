"""Mounts for the tests of hostile disks: a small tmpfs (a disk that fills up) and a read-only bind mount.

Both need root (as sessions and CI run). Where mounting is refused the test is skipped with the reason, except in CI
(``CI=true``, see :mod:`tests.support.ci`), where it fails: there the test must run.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.ci import unavailable


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        unavailable(f"cannot mount ({' '.join(args)}): {done.stderr.strip() or done.returncode}; this test needs root")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only_view(source: Path, path: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``path``: a bind mount remounted read-only (root ignores permissions and
    chattr is not everywhere, but a read-only mount stops root too)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,ro,bind", str(path))
        yield path
    finally:
        _unmount(path)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the disk is full (ENOSPC); the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1 << 9):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    return filler
