"""The four persons endpoints. Each parses the request once, runs it through the hook chain that the app factory
gave (:mod:`emulator.persons.hooks`), whose last step calls the service off the event loop, and renders the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from emulator.api import PERSONS_PREFIX, envelope, requests
from emulator.api.middleware import drop_connection, observe
from emulator.api.multipart import parse_form
from emulator.ops.observe import RequestRecord
from emulator.ops.timing import Recorder
from emulator.persons.auth import authenticate
from emulator.persons.errors import INTERNAL_ERROR, InternalError, RequestError, StoreError
from emulator.persons.hooks import Answer, Hook, Next, Success, Verbatim, compose
from emulator.persons.request import PersonsRequest
from emulator.persons.types import ClientId
from emulator.runtime import Runtime

log = logging.getLogger("emulator.requests")


Handler = Callable[[PersonsRequest], dict[str, Any]]


def _handlers(runtime: Runtime) -> dict[str, Handler]:
    """One per method, at the end of the chain: build the typed request, run the service, render the body."""
    service = runtime.service

    def do_set(request: PersonsRequest) -> dict[str, Any]:
        return envelope.objects_body(service.set(request.client, requests.set_request(request)))

    def do_recognize(request: PersonsRequest) -> dict[str, Any]:
        result = service.recognize(request.client, requests.recognize_request(request))
        return envelope.recognize_body(result, request.settings.aliases_changed)

    def do_delete(request: PersonsRequest) -> dict[str, Any]:
        return envelope.objects_body(service.delete(request.client, requests.delete_request(request)))

    def do_truncate(request: PersonsRequest) -> dict[str, Any]:
        service.truncate(request.client, requests.truncate_request(request))
        return {}

    return {"set": do_set, "recognize": do_recognize, "delete": do_delete, "truncate": do_truncate}


def _verbatim_response(answer: Verbatim, request: Request) -> Response:
    """An answer sent as it is (an injected HTTP 502/503/504, say), or a dropped connection."""
    if answer.drop:
        drop_connection(request)
        return Response(b"", status_code=500)  # not sent: the transport is closed
    return Response(
        answer.content, status_code=answer.status, headers=dict(answer.headers), media_type=answer.media_type
    )


def build_router(runtime: Runtime, hooks: Sequence[Hook] = ()) -> APIRouter:
    """The four persons routes. Each request runs through ``hooks`` (outermost first), then the service."""
    router = APIRouter()
    handlers = _handlers(runtime)

    def endpoint(method: str) -> Callable[[Request], Any]:
        handler = handlers[method]

        def chain(recorder: Recorder) -> Next:
            """The hooks, then the service run off the event loop (its phases timed by ``recorder``)."""

            async def serve(request: PersonsRequest) -> Answer:
                return Success(await run_in_threadpool(recorder.run, handler, request))

            return compose(hooks, serve)

        async def persons(request: Request) -> Response:
            started = time.perf_counter()
            settings = runtime.settings
            record = RequestRecord(method=method, client=None, started_at=time.time())
            recorder = Recorder()  # the service's phases (decode, detect, embed, match) and face count
            verbatim: Verbatim | None = None
            try:
                if not await runtime.wait_until_ready():  # a request during the warm-up waits for it (bounded)
                    missing = ", ".join(runtime.readiness()["missing"])
                    raise InternalError(f"the emulator is not ready: waiting for {missing}")
                record.client = authenticate(request.query_params, runtime.directory)
                parts = await parse_form(
                    request.headers.get("content-type"),
                    request.stream(),
                    max_part_bytes=settings.max_image_bytes,
                    max_body_bytes=settings.max_request_bytes,
                )
                # Off the event loop: meta's decode is bounded by the per-part limit only (megabytes of JSON).
                parsed = await run_in_threadpool(
                    PersonsRequest.parsed, method, ClientId(record.client), parts, settings, record, request.url.query
                )
                answer = await chain(recorder)(parsed)
                if isinstance(answer, Verbatim):
                    verbatim, record.body, record.envelope_status = answer, answer.text, 0  # 0: no envelope sent
                    payload = b""
                else:
                    record.body = answer.body
                    payload = envelope.success(answer.body)
            except RequestError as exc:
                record.envelope_status, record.body = exc.status, exc.message
                payload = envelope.error(exc.status, exc.message)
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
            if verbatim is not None:
                record.http_status = verbatim.status
            record.duration_ms = (time.perf_counter() - started) * 1000
            await observe(runtime, record)
            if verbatim is not None:
                return _verbatim_response(verbatim, request)
            return Response(payload, status_code=record.http_status, media_type=envelope.JSON_MEDIA_TYPE)

        persons.__name__ = f"persons_{method}"
        return persons

    for method in handlers:
        router.add_api_route(PERSONS_PREFIX + method, endpoint(method), methods=["POST"], name=method)
    return router
