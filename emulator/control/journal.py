"""The request journal: the last persons requests, for tests to assert on (``GET /emulator/requests``).

An observer (see :mod:`emulator.ops.observe`) that keeps one entry per persons request in a
bounded ring (``SMARTY_JOURNAL_SIZE`` entries; the oldest go first). An entry holds what a
test needs: time, method, client, space, meta, each image's name, size and sha256 (never
the bytes), each object's result, the envelope and HTTP statuses, the duration, and the
fault rules that fired. Entries are numbered from 1 in the order requests finished.

The ring lives in the data dir's shared state (:mod:`emulator.control.state`): every
worker process of a server writes to it and reads all of it, so the journal lists the
requests of all workers, whichever worker answers ``GET /emulator/requests``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from emulator.control.state import SharedState
from emulator.ops.observe import RequestRecord
from emulator.store.records import StoreError

log = logging.getLogger("emulator.journal")


def entry_of(record: RequestRecord) -> dict[str, Any]:
    """The entry of a request, without its number (the shared ring hands it out)."""
    ok = record.envelope_status == 200 and isinstance(record.body, dict)
    return {
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
        "faults": list(record.faults),
    }


class Journal:
    """A bounded ring of request entries, shared by the server's worker processes. ``size`` 0 keeps nothing."""

    def __init__(self, shared: SharedState, size: int) -> None:
        self.shared = shared
        self.size = size
        self._failing = False

    def __call__(self, record: RequestRecord) -> None:
        """Record a request. A failed write (the disk is full, say) never fails the request: it is logged in one
        line when the journal starts failing and when it works again, and the entry is lost."""
        if self.size <= 0:
            return
        entry = json.dumps(entry_of(record), ensure_ascii=False, default=str)
        try:
            self.shared.journal_append(record.started_at, record.method, record.space, entry, self.size)
        except StoreError as exc:  # the request was answered; its entry is lost
            if not self._failing:
                log.warning("requests are not journaled until this is resolved: %s: %s", self.shared.location, exc)
            self._failing = True
            return
        if self._failing:
            log.warning("requests are journaled again")
            self._failing = False

    def entries(
        self, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; ``since`` is a unix time: entries of requests started at or after it."""
        found = self.shared.journal_entries(self.size, method, space, since)
        return [{"id": number, **json.loads(text)} for number, text in found]

    def clear(self) -> int:
        return self.shared.journal_clear(self.size)

    @property
    def total(self) -> int:
        """Requests recorded since the start (cleared or dropped from the ring included)."""
        return self.shared.journal_total()
