"""Applying :mod:`emulator.faults` to a persons request, around the service call.

Decided before the service runs, so that a faulted request stores nothing: a request-level
fault skips the service entirely, and images with a per-object fault are taken out of meta
before the service sees the request (validated with the rest of it, then left out: see ``skip`` in
emulator/wire/requests.py), their objects put back in meta's order afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from emulator.errors import BadRequest, InternalError
from emulator.faults import FaultInjector, FaultPlan, FaultRule
from emulator.observe import RequestRecord
from emulator.wire.meta import decode_meta, validate_space
from emulator.wire.multipart import Part

RAW_SEND_KEY = "emulator.raw_send"

# What nginx, the usual proxy in front of such a service, answers.
_GATEWAY_TEXT = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def _gateway_page(status: int) -> bytes:
    title = f"{status} {_GATEWAY_TEXT[status]}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


class FaultResponse(Exception):
    """A request-level fault that is not an envelope: an HTTP 502/503/504, or a dropped connection."""

    def __init__(self, rule: FaultRule) -> None:
        super().__init__(rule.kind)
        self.drop = rule.kind == "drop"
        self.status = 0 if self.drop else int(rule.kind.removeprefix("http_"))
        self.content = b"" if self.drop or rule.body == "empty" else _gateway_page(self.status)

    @property
    def text(self) -> str:
        return "connection dropped" if self.drop else self.content.decode()

    def response(self, request: Request) -> Response:
        if self.drop:
            _drop_connection(request)
            return Response(b"", status_code=500)  # not sent: the transport is closed
        return Response(self.content, status_code=self.status, media_type="text/html" if self.content else None)


def _drop_connection(request: Request) -> None:
    """Close the client's connection without a response (uvicorn's transport, found through
    the raw ``send`` that :func:`keep_raw_send` put into the scope)."""
    raw_send = request.scope.get(RAW_SEND_KEY)
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("cannot drop the connection: not served by uvicorn")
    transport.abort()


def keep_raw_send(app: Any) -> None:
    """Make the server's own ``send`` reachable from a route (for the ``drop`` fault): wraps
    the Starlette app's middleware stack, outside every middleware."""
    build = app.build_middleware_stack

    def build_with_raw_send() -> ASGIApp:
        inner = build()

        async def outer(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                scope[RAW_SEND_KEY] = send
            await inner(scope, receive, send)

        return outer

    app.build_middleware_stack = build_with_raw_send


def _image_names(parts: dict[str, Part]) -> list[str] | None:
    """The image names of meta, or ``None`` unless meta decodes and names a valid space (per-object faults
    apply only to requests the service would accept as a whole)."""
    part = parts.get("meta")
    if part is None or part.data is None:
        return None
    try:
        meta = decode_meta(part.data)
        validate_space(meta)
    except BadRequest:
        return None
    return [image.name for image in meta.images or []]


Call = Callable[[frozenset[str]], Awaitable[dict[str, Any]]]


async def run_with_faults(faults: FaultInjector, record: RequestRecord, parts: dict[str, Part], call: Call) -> Any:
    """Run ``call`` (the handler, told which images to leave out) under the faults that fire for this request;
    the envelope body."""
    if not faults.active:  # the usual case: no rules, no extra work
        return await call(frozenset())
    names = _image_names(parts)
    plan: FaultPlan = faults.plan(record.method, record.space, names)
    record.faults = plan.fired
    if plan.delay_s:
        await asyncio.sleep(plan.delay_s)
    if plan.abort is not None:
        if plan.abort.kind == "envelope_500":
            raise InternalError("Internal Server Error")
        raise FaultResponse(plan.abort)
    if not plan.objects or names is None:
        return await call(frozenset())
    body = await call(frozenset(plan.objects))
    served = iter(body.get("objects", []))
    merged = []
    for name in names:
        fault = plan.objects.get(name)
        if fault is None:
            merged.append(next(served))
        else:
            merged.append({"status": fault.status, "error": fault.error, "name": name})
    return {**body, "objects": merged}
