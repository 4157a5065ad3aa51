"""A store that reports its committed writes, so that health can say when storage worked again after a failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from emulator.store.records import SpaceKey, SpaceWriter, Store


class WatchedStore:
    """Wraps any :class:`Store`; ``on_commit()`` is called after every write transaction that committed a change.
    Everything else is the wrapped store's own."""

    def __init__(self, inner: Store, on_commit: Callable[[], None]) -> None:
        self.inner = inner
        self._on_commit = on_commit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @contextmanager
    def write(self, key: SpaceKey) -> Iterator[SpaceWriter]:
        with self.inner.write(key) as writer:
            yield writer
        if writer.delta.new_generation != writer.delta.old_generation:  # the generation moved: a change
            self._on_commit()
