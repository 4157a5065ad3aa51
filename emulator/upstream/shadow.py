"""``compare`` mode's other half: the same request run on the emulator's own engine in a shadow namespace, and its
answer compared with the upstream's (:mod:`emulator.upstream.diff`).

The shadow namespace is a reserved client id derived from the real one, ``shadow=<client>``: a configured client's
name can never hold ``=`` (``SMARTY_CLIENTS`` and ``SMARTY_OAUTH_CLIENTS`` split on it), so no token reaches it,
and the user's own spaces are never touched. Its spaces live in the store like any other client's (they show in
``GET /emulator/clients``, and ``POST /emulator/reset`` empties them too), so every worker sees the same shadow
state; each shadow space follows its real space's history only as far as the requests compared in compare mode.

The requests carry the upstream's person ids. Where the upstream created a person (``create_new``) its id differs
from the one the shadow space gave (the upstream's space may hold persons the shadow never saw): a ``set`` or
``delete`` that names such a person is run in the shadow space with the linked id (:func:`translated`, through the
report's :class:`~emulator.upstream.diff.TagMap`).

The shadow request is passed to the rest of the hook chain after the upstream hook (its ``call_next``: the service
call), so it never goes through the upstream hook again. The upstream hook's seam (``on_forwarded``) hands over the
request and the upstream's answer only: :meth:`ShadowCompare.around` wraps the upstream hook to keep each request's
``call_next`` in a context variable, which the seam reads in the same task.

The client's answer (the upstream's) waits for the shadow run: the requests of a client run in the shadow space in
the order they were answered, so that a ``set`` is in the shadow space before the ``recognize`` that follows it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from contextvars import ContextVar
from typing import Protocol

from emulator.api import envelope
from emulator.ops.observe import RequestRecord
from emulator.persons.errors import INTERNAL_ERROR, RequestError
from emulator.persons.hooks import Answer, Hook, Next, Success
from emulator.persons.request import Part, PersonsRequest
from emulator.persons.types import ClientId
from emulator.upstream.diff import DEFAULT_MIN_IOU, TagMap, WireAnswer, compare, translate_meta
from emulator.upstream.report import CompareReport

log = logging.getLogger("emulator.upstream.compare")
SHADOW_PREFIX = "shadow="
_REST: ContextVar[Next | None] = ContextVar("compare_rest_of_chain", default=None)


class Forwarded(Protocol):
    """The upstream's answer as the upstream hook hands it over."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


def shadow_client(client: str) -> ClientId:
    """The shadow namespace of ``client``."""
    return ClientId(SHADOW_PREFIX + client)


def is_shadow(client: str) -> bool:
    return client.startswith(SHADOW_PREFIX)


def translated(request: PersonsRequest, tags: TagMap) -> PersonsRequest:
    """``request`` with the upstream's person ids in a ``set`` or ``delete`` replaced by the shadow space's where
    they are linked (the same request when none is)."""
    meta = translate_meta(request.method, request.meta.json, tags)
    if meta is None:
        return request
    raw = json.dumps(meta).encode()
    parts = {**request.parts, "meta": Part("meta", None, len(raw), [raw])}
    record = RequestRecord(method=request.method, client=request.client, started_at=time.time())
    parsed = PersonsRequest.parsed(request.method, request.client, parts, request.settings, record)
    return dataclasses.replace(parsed, skip=request.skip)


async def run_shadow(request: PersonsRequest, call_next: Next) -> WireAnswer:
    """``request`` run in its client's shadow namespace; its answer as the wire would carry it."""
    shadow = dataclasses.replace(
        request,
        client=shadow_client(request.client),
        record=RequestRecord(method=request.method, client=shadow_client(request.client), started_at=time.time()),
    )
    http_mode = request.settings.http_status
    try:
        answer = await call_next(shadow)
    except RequestError as exc:
        return WireAnswer(envelope.http_status(exc.status, http_mode), envelope.error(exc.status, exc.message))
    except Exception:  # the emulator's internal error, as the route would answer it
        log.exception("the shadow %s failed", request.method)
        return WireAnswer(envelope.http_status(500, http_mode), envelope.error(500, INTERNAL_ERROR))
    if isinstance(answer, Success):
        return WireAnswer(envelope.http_status(200, http_mode), envelope.success(answer.body))
    return WireAnswer(0 if answer.drop else answer.status, answer.content)  # bytes sent as they are, or a drop


class ShadowCompare:
    """The seam of the upstream hook in ``compare`` mode (``on_forwarded``): once the upstream answered, run the
    request in the shadow namespace and add the comparison to ``report``."""

    def __init__(self, report: CompareReport, min_iou: float = DEFAULT_MIN_IOU) -> None:
        self.report, self.min_iou = report, min_iou

    def around(self, hook: Hook) -> Hook:
        """``hook`` (the upstream hook), with each request's ``call_next`` kept for the seam."""

        async def run(request: PersonsRequest, call_next: Next) -> Answer:
            token = _REST.set(call_next)
            try:
                return await hook(request, call_next)
            finally:
                _REST.reset(token)

        return run

    async def __call__(self, request: PersonsRequest, upstream: Forwarded) -> None:
        call_next = _REST.get()
        if call_next is None:  # the upstream hook was not wrapped by around(): nothing to run the shadow with
            log.error("compare: the rest of the chain is unknown, %s not compared", request.method)
            return
        await self.compare(request, WireAnswer(upstream.status, upstream.body), call_next)

    async def compare(self, request: PersonsRequest, upstream: WireAnswer, call_next: Next) -> None:
        """Run ``request`` in the shadow namespace through ``call_next`` and compare with ``upstream``."""
        if is_shadow(request.client):  # never a shadow of a shadow
            return
        tags = self.report.tags(request.client, request.meta.journal_space)
        emulator = await run_shadow(translated(request, tags), call_next)
        meta = request.meta.json
        label = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(request.record.started_at))
        entry = compare(request.method, meta, upstream, emulator, tags, min_iou=self.min_iou, label=label)
        self.report.add(entry)
        if not entry.identical:
            kinds = sorted({d["kind"] for d in entry.differences})
            log.info("compare: %s differs from the upstream: %s", request.method, ", ".join(kinds))
