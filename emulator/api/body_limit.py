"""A request body without ``Content-Length`` (``Transfer-Encoding: chunked``) is refused as soon as more than
``SMARTY_MAX_REQUEST_BYTES`` of it arrived, on every path.

A body that announces its length is judged by each route from the header (a snapshot upload against
``SMARTY_MAX_SNAPSHOT_BYTES``, the OAuth token endpoint against its 64 KiB) before it is read. A chunked body
announces nothing, so a route that reads it whole (a snapshot upload, the admin API's JSON bodies, the token
endpoint) would hold it until its own, larger bound. :class:`ChunkedBodyLimitMiddleware` counts such a body as it
streams in and, past the bound, answers at once with 413 and ``{"detail": "..."}`` (the admin API's error shape),
closing the connection; the rest of the body is never read.

The persons paths are left to their own parser (:mod:`emulator.api.multipart`), which counts every body, chunked or
not, against the same setting and refuses it with the contract's error envelope.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.api import PERSONS_PREFIX
from emulator.runtime import Runtime

STATUS = 413


def too_large_message(limit: int) -> str:
    return (
        f"request body too large: more than {limit} bytes arrived without a Content-Length; the limit is {limit} "
        "bytes (SMARTY_MAX_REQUEST_BYTES)"
    )


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(too_large_message(limit))
        self.limit = limit


class ChunkedBodyLimitMiddleware:
    """ASGI middleware: a body without ``Content-Length`` past ``max_request_bytes`` is refused with 413."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or str(scope.get("path", "")).startswith(PERSONS_PREFIX)
            or any(name == b"content-length" for name, _ in scope.get("headers", ()))
        ):
            await self.app(scope, receive, send)
            return
        limit = int(self.runtime.settings.max_request_bytes)  # live: read per request
        received = 0
        answered = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if answered:  # too late to answer: the route had begun its response
                raise
            payload = json.dumps({"detail": str(exc)}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": STATUS, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
