"""The middleware of the HTTP app, outermost first: the raw ``send`` keeper, :class:`SharedStateSyncMiddleware`
and :class:`OverloadMiddleware`. All are pure ASGI.

**Overload.** A bound on in-flight persons requests, so overload is answered fast instead of queued.

Each worker process admits at most ``max_inflight`` persons requests at a time (counted from
the first byte of the request to the last byte of the answer). One more is refused at once,
before its body is read, with the contract's error envelope::

    {"status":500,"body":"server is overloaded: 64 requests in flight, the limit is 64; retry later",...}

The envelope status is 500 because the contract (and the official OpenAPI spec) allow only 400,
403 and 500 in an error envelope, and an overload is the server's fault, not the request's. The
HTTP status follows ``SMARTY_HTTP_STATUS``: 200 in ``always-200`` mode (as for every envelope),
and **503** (not 500) in ``mirror`` mode, with ``Retry-After: 1``, so that HTTP-aware clients and
proxies see a retryable answer. The real service's overload behaviour is not documented.

It reads the limit from ``runtime.settings`` on every request (the setting may change live) and touches nothing
but the ``/api/v1/persons/`` paths.

**Shared state.** Before each HTTP request, :class:`SharedStateSyncMiddleware` picks up live settings and fault rules
changed through another worker process (:meth:`emulator.runtime.Runtime.sync_shared`: one primary-key read), outside
all others, so that everything a request reads from ``runtime.settings`` (the overload limit included) already has
the changes made through any worker.

**Raw send.** :func:`keep_raw_send` makes the server's own ``send`` reachable from a route, so that the ``drop``
fault can close a connection without a response (:func:`drop_connection`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from emulator.api import PERSONS_PREFIX, envelope
from emulator.ops.observe import RequestRecord
from emulator.persons.errors import StoreError
from emulator.runtime import Runtime

log = logging.getLogger("emulator.shared_state")
RAW_SEND_KEY = "emulator.raw_send"
OVERLOAD_ENVELOPE_STATUS = 500
OVERLOAD_HTTP_STATUS = 503  # in mirror mode only


def overloaded_message(in_flight: int, limit: int) -> str:
    return f"server is overloaded: {in_flight} requests in flight, the limit is {limit}; retry later"


class InflightGate:
    """Counts the persons requests in flight in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.refused = 0

    def try_enter(self, limit: int) -> bool:
        with self._lock:
            if self.in_flight >= limit:
                self.refused += 1
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class OverloadMiddleware:
    """ASGI middleware: admit a persons request only while fewer than ``max_inflight`` are in flight."""

    def __init__(self, app: ASGIApp, runtime: Runtime, gate: InflightGate | None = None) -> None:
        self.app = app
        self.runtime = runtime
        self.gate = gate or InflightGate()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PERSONS_PREFIX):
            await self.app(scope, receive, send)
            return
        settings = self.runtime.settings
        limit = int(settings.max_inflight)
        if not self.gate.try_enter(limit):
            await self._refuse(scope, send, limit, settings.http_status)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()

    async def _refuse(self, scope: Scope, send: Send, limit: int, http_mode: str) -> None:
        message = overloaded_message(self.gate.in_flight, limit)
        payload = envelope.error(OVERLOAD_ENVELOPE_STATUS, message)
        status = OVERLOAD_HTTP_STATUS if http_mode == "mirror" else 200
        # Observers (journal, metrics, logs) see the refusal too; the request was not authenticated or read.
        record = RequestRecord(
            method=str(scope.get("path", ""))[len(PERSONS_PREFIX) :],
            client=None,
            started_at=time.time(),
            body=message,
            envelope_status=OVERLOAD_ENVELOPE_STATUS,
            http_status=status,
        )
        await observe(self.runtime, record)
        headers: list[Any] = [
            (b"content-type", envelope.JSON_MEDIA_TYPE.encode()),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", b"1"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def observe(runtime: Runtime, record: RequestRecord) -> None:
    """Hand a finished request to the observers; in a worker thread when the journal is over the network."""
    if runtime.state_is_remote:  # in threads of their own: not behind the analyses that fill the thread pool
        await runtime.state_threads.run(functools.partial(runtime.observe, record))
    else:
        runtime.observe(record)


class SharedStateSyncMiddleware:
    """Read the shared testing-aid state's version once per HTTP request (see the module docstring).

    Liveness, readiness and metrics do not read it (they must answer at once, whatever the database does). With
    PostgreSQL the read is a network round trip, so it runs in a worker thread, never on the event loop, and in
    threads of its own (:class:`emulator.ops.state_threads.StateThreads`), never queued behind analyses."""

    UNSYNCED_PATHS = frozenset({"/emulator/health", "/emulator/ready", "/metrics"})

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.UNSYNCED_PATHS:
            try:
                if self.runtime.state_is_remote:  # not behind the analyses in the thread pool
                    await self.runtime.state_threads.run(self.runtime.sync_shared)
                else:
                    self.runtime.sync_shared()
            except StoreError as exc:  # the database is unreachable: the request itself will say so if it needs it
                log.warning("could not read the shared testing-aid state; using the last one read: %s", exc)
            except Exception:  # a failed read must not fail the request (nor health checks): keep the last state
                log.exception("could not read the shared testing-aid state; using the last one read")
        await self.app(scope, receive, send)


def keep_raw_send(app: Any) -> None:
    """Make the server's own ``send`` reachable from a route (for the ``drop`` fault): wraps the Starlette app's
    middleware stack, outside every middleware (also outside Starlette's own error middleware, which a middleware
    class added with ``add_middleware`` would sit inside of)."""
    build = app.build_middleware_stack

    def build_with_raw_send() -> ASGIApp:
        inner = build()

        async def outer(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                scope[RAW_SEND_KEY] = send
            await inner(scope, receive, send)

        return outer

    app.build_middleware_stack = build_with_raw_send


def drop_connection(request: Request) -> None:
    """Close the client's connection without a response (uvicorn's transport, found through the raw ``send`` that
    :func:`keep_raw_send` put into the scope)."""
    raw_send = request.scope.get(RAW_SEND_KEY)
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("cannot drop the connection: not served by uvicorn")
    transport.abort()
