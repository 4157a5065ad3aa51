"""The request journal: the last persons requests, for tests to assert on (``GET /emulator/requests``).

An observer (see :mod:`emulator.observe`) that keeps one entry per persons request in a
bounded ring (``SMARTY_JOURNAL_SIZE`` entries; the oldest go first). An entry holds what a
test needs: time, method, client, space, meta, each image's name, size and sha256 (never
the bytes), each object's result, the envelope and HTTP statuses, the duration, and the
fault rules that fired. Entries are numbered from 1 in the order requests finished.

The journal lives in the process's memory: with several workers, each worker keeps its own
(run tests against one worker, as the pytest plugin does).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from emulator.observe import RequestRecord


def entry_of(number: int, record: RequestRecord) -> dict[str, Any]:
    ok = record.envelope_status == 200 and isinstance(record.body, dict)
    return {
        "id": number,
        "time": datetime.fromtimestamp(record.started_at, UTC).isoformat(timespec="milliseconds"),
        "started_at": record.started_at,
        "method": record.method,
        "client": record.client,
        "space": record.space,
        "meta": record.meta,
        "images": [{"name": i.name, "size": i.size, "sha256": i.sha256} for i in record.images],
        "objects": record.objects if ok else [],
        "aliases_changed": record.body.get("aliases_changed") if ok else None,
        "error": None if ok else (record.body if isinstance(record.body, str) else None),
        "envelope_status": record.envelope_status,
        "http_status": record.http_status,
        "duration_ms": round(record.duration_ms, 3),
        "faults": list(getattr(record, "faults", ())),
    }


class Journal:
    """A bounded, thread-safe ring of request entries. ``size`` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: deque[dict[str, Any]] = deque(maxlen=max(size, 1))
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self, record: RequestRecord) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._count += 1
            self._entries.append(entry_of(self._count, record))

    def entries(
        self, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; ``since`` is a unix time: entries of requests started at or after it."""
        with self._lock:
            found: Iterable[dict[str, Any]] = list(self._entries)
        return [
            entry
            for entry in found
            if (method is None or entry["method"] == method)
            and (space is None or entry["space"] == space)
            and (since is None or entry["started_at"] >= since)
        ]

    def clear(self) -> int:
        with self._lock:
            removed = len(self._entries)
            self._entries.clear()
        return removed

    @property
    def total(self) -> int:
        """Requests recorded since the start (cleared or dropped from the ring included)."""
        return self._count
