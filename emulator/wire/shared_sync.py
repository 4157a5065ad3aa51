"""Before each HTTP request: pick up live settings and fault rules changed through another worker process.

A pure ASGI middleware, outside all others, so that everything a request reads from ``runtime.settings``
(the overload limit included) already has the changes made through any worker (see
:meth:`emulator.runtime.Runtime.sync_shared`: one primary-key read of the shared state per request).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from emulator.runtime import Runtime

log = logging.getLogger("emulator.shared_state")


class SharedStateSync:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                self.runtime.sync_shared()
            except Exception:  # a failed read must not fail the request (nor health checks): keep the last state
                log.exception("could not read the shared testing-aid state; using the last one read")
        await self.app(scope, receive, send)
