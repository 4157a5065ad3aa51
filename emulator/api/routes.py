"""The four persons endpoints. Each parses, calls the service off the event loop, renders."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from emulator.api import PERSONS_PREFIX, envelope, requests
from emulator.api.middleware import drop_connection, observe
from emulator.api.multipart import Part, parse_form
from emulator.control.access import wait_until_ready
from emulator.control.faults import FaultResponse, run_with_faults
from emulator.ops.observe import ImageInfo, RequestRecord
from emulator.ops.timing import Recorder
from emulator.persons.auth import authenticate
from emulator.persons.errors import INTERNAL_ERROR, InternalError, RequestError, StoreError
from emulator.persons.types import ClientId
from emulator.runtime import Runtime
from emulator.settings import Settings

log = logging.getLogger("emulator.requests")


Handler = Callable[[ClientId, dict[str, Part], Settings, frozenset[str]], dict[str, Any]]


def _handlers(runtime: Runtime) -> dict[str, Handler]:
    """One per method: parse, run the service, render the body. ``skip``: images a per-object fault answers."""
    service = runtime.service

    def do_set(client: ClientId, parts: dict[str, Part], settings: Settings, skip: frozenset[str]) -> dict[str, Any]:
        return envelope.objects_body(service.set(client, requests.set_request(parts, settings, skip)))

    def do_recognize(
        client: ClientId, parts: dict[str, Part], settings: Settings, skip: frozenset[str]
    ) -> dict[str, Any]:
        result = service.recognize(client, requests.recognize_request(parts, settings, skip))
        return envelope.recognize_body(result, settings.aliases_changed)

    def do_delete(client: ClientId, parts: dict[str, Part], settings: Settings, skip: frozenset[str]) -> dict[str, Any]:
        return envelope.objects_body(service.delete(client, requests.delete_request(parts, settings, skip)))

    def do_truncate(
        client: ClientId, parts: dict[str, Part], settings: Settings, skip: frozenset[str]
    ) -> dict[str, Any]:
        service.truncate(client, requests.truncate_request(parts, settings, skip))
        return {}

    return {"set": do_set, "recognize": do_recognize, "delete": do_delete, "truncate": do_truncate}


def _describe(record: RequestRecord, parts: dict[str, Part]) -> None:
    """Fill what the request carried: its meta (if JSON) and its image parts (never the bytes)."""
    meta = parts.get("meta")
    if meta is not None and meta.data is not None:
        try:
            record.meta = json.loads(meta.data)
        except (ValueError, RecursionError):
            record.meta = None
        if isinstance(record.meta, dict) and isinstance(record.meta.get("space"), str):
            space = record.meta["space"]
            record.space = int(space) if space.isascii() and space.isdigit() and len(space) < 3 else None
    for name, part in parts.items():
        if name != "meta":
            record.images.append(ImageInfo(name, part.size, part.sha256))


def _fault_response(fault: FaultResponse, request: Request) -> Response:
    """An injected HTTP 502/503/504, or a dropped connection."""
    if fault.drop:
        drop_connection(request)
        return Response(b"", status_code=500)  # not sent: the transport is closed
    return Response(fault.content, status_code=fault.status, media_type="text/html" if fault.content else None)


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()
    handlers = _handlers(runtime)

    def endpoint(method: str) -> Callable[[Request], Any]:
        handler = handlers[method]

        async def persons(request: Request) -> Response:
            started = time.perf_counter()
            settings = runtime.settings
            record = RequestRecord(method=method, client=None, started_at=time.time())
            recorder = Recorder()  # the service's phases (decode, detect, embed, match) and face count
            fault: FaultResponse | None = None
            try:
                if not await wait_until_ready(runtime):  # a request during the warm-up waits for it (bounded)
                    missing = ", ".join(runtime.readiness()["missing"])
                    raise InternalError(f"the emulator is not ready: waiting for {missing}")
                record.client = authenticate(request.query_params, runtime.directory)
                parts = await parse_form(
                    request.headers.get("content-type"),
                    request.stream(),
                    max_part_bytes=settings.max_image_bytes,
                    max_body_bytes=settings.max_request_bytes,
                )
                _describe(record, parts)
                client = ClientId(record.client)

                async def call(skip: frozenset[str]) -> dict[str, Any]:
                    return await run_in_threadpool(recorder.run, handler, client, parts, settings, skip)

                names = functools.partial(requests.image_names, parts)
                record.body = await run_with_faults(runtime.faults, record, names, call)
                payload = envelope.success(record.body)
            except RequestError as exc:
                record.envelope_status, record.body = exc.status, exc.message
                payload = envelope.error(exc.status, exc.message)
            except FaultResponse as exc:  # an injected HTTP 502/503/504 or dropped connection
                fault, record.body, record.envelope_status = exc, exc.text, 0  # 0: no envelope was sent
            except (asyncio.CancelledError, Exception) as exc:  # the real service's internal error, never a traceback
                if isinstance(exc, asyncio.CancelledError):  # the server stops and its graceful shutdown timed out
                    log.error("%s cancelled: the server is shutting down", method)
                elif isinstance(exc, StoreError):
                    runtime.note_failure(exc)
                    log.error("%s failed: %s", method, exc)
                else:  # a bug
                    runtime.note_failure(exc)
                    log.exception("%s failed: %s: %s", method, type(exc).__name__, exc)
                record.envelope_status, record.body = 500, INTERNAL_ERROR
                payload = envelope.error(500, INTERNAL_ERROR)
            record.timings_ms, record.faces = recorder.timings_ms(), recorder.counts.get("faces", 0)
            record.http_status = envelope.http_status(record.envelope_status, settings.http_status)
            if fault is not None:
                record.http_status = fault.status
            record.duration_ms = (time.perf_counter() - started) * 1000
            await observe(runtime, record)
            if fault is not None:
                return _fault_response(fault, request)
            return Response(payload, status_code=record.http_status, media_type=envelope.JSON_MEDIA_TYPE)

        persons.__name__ = f"persons_{method}"
        return persons

    for method in handlers:
        router.add_api_route(PERSONS_PREFIX + method, endpoint(method), methods=["POST"], name=method)
    return router
