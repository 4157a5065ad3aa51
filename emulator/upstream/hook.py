"""The upstream hook: the link of the persons request chain that records, replays, spies and compares.

By ``SMARTY_UPSTREAM_MODE`` (read per request: a live setting):

* ``off``: the request goes on to the emulator's own service;
* ``record``: the request is forwarded to ``SMARTY_UPSTREAM_URL`` (the same path and query string, the same
  multipart parts under a new boundary), the client gets the upstream's status, content type and exact bytes, and
  the pair is appended to the cassette;
* ``replay``: the cassette answers, offline and byte for byte (header ``X-Smarty-Replay: hit``); a request that is
  not in it gets an error envelope naming the miss (status 500, header ``X-Smarty-Replay: miss``, a log line with
  its key), or with ``SMARTY_REPLAY_MISS=emulate`` the emulator's own answer;
* ``spy``: replay a hit, forward and record a miss;
* ``compare``: forward and answer like ``record`` (nothing is written to the cassette), then hand the request and
  the upstream's answer to ``on_forwarded``, the compare side's seam (see :data:`OnForwarded`).

An upstream that cannot be reached, times out or drops the connection gets the client the envelope of the
emulator's own internal errors, and nothing is recorded. A request with a part over the emulator's size bound
cannot be forwarded as sent (its bytes were not kept): the emulator answers it itself, and nothing is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool

from emulator.api import PERSONS_PREFIX, envelope
from emulator.persons.errors import INTERNAL_ERROR, InternalError
from emulator.persons.hooks import Answer, Next, Verbatim
from emulator.persons.request import PersonsRequest
from emulator.settings import Settings
from emulator.upstream.cassette import (
    DROPPED_PARAMS,
    SECRET_FIELDS,
    CassetteError,
    Image,
    Interaction,
    Response,
    kept_headers,
    request_key,
    stored_meta,
)
from emulator.upstream.forward import UpstreamAnswer, UpstreamFailed, multipart, post, target
from emulator.upstream.library import CassetteLibrary, active_path

log = logging.getLogger("emulator.upstream")

REPLAY_HEADER = "X-Smarty-Replay"  # hit | miss, on answers of replay and spy

# The compare side's seam: called in ``compare`` mode after the upstream answered (its answer is what the client
# gets, whatever this does or raises). An exception is logged and otherwise ignored.
OnForwarded = Callable[[PersonsRequest, UpstreamAnswer], Awaitable[None]]


def live_answer(answer: UpstreamAnswer) -> Verbatim:
    """The upstream's answer for the client: its status, content type and exact bytes."""
    return Verbatim(status=answer.status, content=answer.body, headers=tuple(kept_headers(answer.headers).items()))


def replayed(response: Response) -> Verbatim:
    """A recorded answer, as the upstream sent it."""
    headers = tuple(response.headers.items()) + ((REPLAY_HEADER, "hit"),)
    return Verbatim(status=response.status, content=response.body, headers=headers)


def query_secrets(query: str) -> list[str]:
    """The credentials of a query string (``oauth_token``, and the secret fields a token request may put there)."""
    names = (*DROPPED_PARAMS, *SECRET_FIELDS)
    return [value for name, value in parse_qsl(query, keep_blank_values=True) if name in names and value]


@dataclass(frozen=True)
class PersonsCall:
    """What the cassette needs of one persons request."""

    path: str
    key: str
    interaction_meta: object
    images: tuple[Image, ...]


def persons_call(request: PersonsRequest) -> PersonsCall:
    path = PERSONS_PREFIX + request.method
    images = tuple(Image(name, part.sha256, part.size) for name, part in request.parts.items() if name != "meta")
    key = request_key(request.method, path, request.meta.raw, [(image.name, image.sha256) for image in images])
    return PersonsCall(path, key, stored_meta(request.meta.raw), images)


def miss_text(what: str, key: str, settings: Settings) -> str:
    return f"replay miss: no recorded answer for {what} (key {key}) in the cassette {settings.cassette}"


class UpstreamHook:
    """The persons request's link to the upstream (see the module docstring). ``on_forwarded`` is compare's seam."""

    def __init__(self, library: CassetteLibrary, on_forwarded: OnForwarded | None = None) -> None:
        self.library = library
        self.on_forwarded = on_forwarded

    async def __call__(self, request: PersonsRequest, call_next: Next) -> Answer:
        settings = request.settings
        mode = settings.upstream_mode
        if mode == "off":
            return await call_next(request)
        if any(part.overflow for part in request.parts.values()):
            log.warning("%s: a part is over the size bound, not forwarded: the emulator answers", request.method)
            return await call_next(request)
        call = await run_in_threadpool(persons_call, request)  # meta may be megabytes of JSON to make canonical
        if mode in ("replay", "spy"):
            try:
                recorded = await run_in_threadpool(self.library.replay, settings, call.key)
            except CassetteError as exc:
                log.error("%s: %s", request.method, exc)
                raise InternalError(INTERNAL_ERROR) from None
            if recorded is not None:
                return replayed(recorded)
            if mode == "replay":
                text = miss_text(f"{request.method} {call.path}", call.key, settings)
                log.warning("%s (%s)", text, active_path(settings))
                if settings.replay_miss == "emulate":
                    return await call_next(request)
                status = envelope.http_status(500, settings.http_status)
                headers = (("content-type", envelope.JSON_MEDIA_TYPE), (REPLAY_HEADER, "miss"))
                return Verbatim(status=status, content=envelope.error(500, text), headers=headers)
        answer = await self._forward(request, call)
        if mode in ("record", "spy"):
            await run_in_threadpool(self._record, request, call, answer)
        elif mode == "compare" and self.on_forwarded is not None:
            try:
                await self.on_forwarded(request, answer)
            except Exception:
                log.exception("%s: the comparison failed", request.method)
        return live_answer(answer)

    async def _forward(self, request: PersonsRequest, call: PersonsCall) -> UpstreamAnswer:
        settings = request.settings
        url = target(settings.upstream_url, call.path, request.query)

        def send() -> UpstreamAnswer:  # in a worker thread: the body is encoded there, then sent
            body, content_type = multipart(
                (name, part.filename, part.data or b"") for name, part in request.parts.items()
            )
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            return post(url, body, headers, float(settings.upstream_timeout), target(settings.upstream_url, call.path))

        try:
            return await run_in_threadpool(send)
        except UpstreamFailed as exc:
            log.error("%s forwarded to the upstream failed: %s", request.method, exc)
            raise InternalError(INTERNAL_ERROR) from None

    def _record(self, request: PersonsRequest, call: PersonsCall, answer: UpstreamAnswer) -> None:
        settings = request.settings
        response = Response(answer.status, kept_headers(answer.headers), answer.latency_ms, answer.body)
        interaction = Interaction(call.key, request.method, call.path, call.interaction_meta, call.images, response)
        blobs: dict[str, bytes] = {}
        if settings.record_images == "full":
            for name, part in request.parts.items():
                if name != "meta" and part.sha256 is not None and part.data is not None:
                    blobs[part.sha256] = part.data
        self.library.record(settings, interaction, blobs, query_secrets(request.query))
