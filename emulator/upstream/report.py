"""The compare report of ``compare`` mode: the entries of one process, kept in memory, and the tag maps.

Each worker process keeps its own report: ``GET /emulator/compare`` answers the share of the worker that answered
(its pid is in ``X-Emulator-Worker``), so measure fidelity with one worker (the default). The entries are large
(every face of every request) and written on every persons request; the testing aids' shared database is made for
small, rare writes, and a report that only has to live as long as one measuring run does not need it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from emulator.upstream.diff import Entry, TagMap, report

MAX_ENTRIES = 10_000  # the oldest entries leave past this; the summary counts what is kept


class CompareReport:
    """Thread-safe: the entries in arrival order, and one :class:`TagMap` per (client, space)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._entries: deque[Entry] = deque(maxlen=max_entries)
        self._tags: dict[tuple[str, int | None], TagMap] = {}
        self.dropped = 0

    def tags(self, client: str, space: int | None) -> TagMap:
        with self._lock:
            return self._tags.setdefault((client, space), TagMap())

    def add(self, entry: Entry) -> None:
        with self._lock:
            if len(self._entries) == self._entries.maxlen:
                self.dropped += 1
            self._entries.append(entry)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> int:
        """Forget the entries (the tag maps stay: the shadow spaces keep their persons, as the upstream does)."""
        with self._lock:
            removed = len(self._entries)
            self._entries.clear()
            self.dropped = 0
            return removed

    def to_json(self) -> dict[str, Any]:
        entries = self.entries()
        return {**report(entries), "dropped": self.dropped}
