"""Is the data directory usable? Checked once at startup, before anything is opened in it.

A data dir that cannot be created or written (a read-only mount or volume, missing permissions) would otherwise
surface as SQLite's ``unable to open database file`` or ``attempt to write a readonly database``, which names
neither the directory nor the cause. The check creates an empty file and removes it again: it needs no free space,
so a full disk passes (the emulator still serves what is stored; writes fail one by one until space is freed).
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path


class DataDirError(OSError):
    """The data directory cannot be used; the message names it, says why and what to do."""


_REMEDY = "make it writable for this user, or choose another directory with SMARTY_DATA_DIR (then restart)"


def check_data_dir(path: Path) -> None:
    """Create ``path`` if missing and prove that files can be created in it; raise :class:`DataDirError` if not."""
    where = Path(path).absolute()
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"data directory {where} cannot be created ({_reason(exc)}): {_REMEDY}") from exc
    if not where.is_dir():
        raise DataDirError(f"data directory {where} is not a directory: {_REMEDY}")
    probe = where / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # full, not unusable: what is stored can still be served
            return
        kind = "is read-only" if exc.errno == errno.EROFS else "is not writable"
        raise DataDirError(f"data directory {where} {kind} ({_reason(exc)}): {_REMEDY}") from exc
    os.close(fd)
    probe.unlink(missing_ok=True)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
