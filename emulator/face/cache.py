"""Faces by image bytes: a bounded LRU keyed by the sha256 of the bytes.

The same bytes always give the same faces (the engine is deterministic), so an integration suite that sends one
photo again and again pays for detection and embedding once. The key also carries the engine's options (size
limits, detection plan), so an engine configured differently never sees another's results. Only successful
analyses are kept; a bad image is cheap to refuse again. Cached embeddings are made read-only, so no caller can
change what a later hit returns.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from emulator.face.engine import Face


def image_key(sha256: str, options: Hashable = ()) -> tuple[str, Hashable]:
    """The cache key of the image with this SHA-256 (hex), analysed by an engine with ``options``."""
    return sha256, options


class FaceCache:
    """A thread-safe LRU of ``tuple[Face, ...]`` holding at most ``capacity`` images (0 disables it)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(0, capacity)
        self._entries: OrderedDict[Hashable, tuple[Face, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Change the bound; the least recently used entries beyond it are dropped."""
        with self._lock:
            self._capacity = max(0, capacity)
            self._trim()

    def get(self, key: Hashable) -> tuple[Face, ...] | None:
        with self._lock:
            faces = self._entries.get(key)
            if faces is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return faces

    def put(self, key: Hashable, faces: tuple[Face, ...]) -> None:
        if self._capacity == 0:
            return
        for face in faces:
            face.embedding.flags.writeable = False
        with self._lock:
            self._entries[key] = faces
            self._entries.move_to_end(key)
            self._trim()

    def __len__(self) -> int:
        return len(self._entries)

    def _trim(self) -> None:
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
