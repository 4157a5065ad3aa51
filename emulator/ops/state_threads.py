"""A few threads of their own for the per-request calls of the shared state over the network (PostgreSQL).

Every HTTP request reads the testing aids' state (one primary-key read) before it is served, and every persons
request writes its journal row after it is answered. With PostgreSQL both are network round trips and run off
the event loop. In the server's general thread pool (anyio's default limiter: 40 threads) they would queue behind
the analyses that fill it under load: a request whose face analysis has not begun yet would wait for its state
read, and an answered one for its journal row, as long as the whole queue of analyses takes. :class:`StateThreads`
gives them a limiter of their own, as large as the process's database pool (more threads would only wait for a
connection), so they go through while every analysis thread is busy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class StateThreads:
    """Runs a call in a worker thread taken from a limiter of ``size`` threads, apart from the analyses'."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Made on first use: a limiter belongs to the event loop it is first used in."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        return self._limiter

    async def run(self, call: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(call, limiter=self.limiter)
