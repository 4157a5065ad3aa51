"""The admin API under ``/emulator/`` (not part of the real service). Every route is guarded by
:func:`emulator.control.access.check_admin`.

State (these wait for readiness, and every response carries ``X-Emulator-Worker: <pid>``, the process that
answered: with ``--workers N`` this shows which worker a connection reached; the persons API never sends it):

* ``GET /emulator/clients``, ``GET /emulator/clients/{client}/spaces/{space}/persons[/{person_id}]`` — inspect;
* ``POST /emulator/reset`` — empty everything, a client or a space;
* ``GET /emulator/snapshot`` / ``POST /emulator/snapshot?mode=replace|merge`` — download and upload snapshots (an
  upload past ``SMARTY_MAX_SNAPSHOT_BYTES`` or ``SMARTY_MAX_SNAPSHOT_FACES`` is a 413, refused before it is parsed).

Testing aids (shared by the worker processes of a server through :mod:`emulator.control.state`: whichever worker
answers, it lists, clears or changes the same journal, rules and settings):

* ``GET /emulator/requests?method=&space=&since=`` — journal entries, oldest first (``since``: unix seconds or an
  ISO 8601 time); ``DELETE /emulator/requests`` clears it;
* ``POST /emulator/faults`` adds a rule (see :mod:`emulator.control.faults`), ``GET`` lists the rules with their
  counters, ``DELETE`` removes them all;
* ``GET /emulator/settings`` — the settings that may change live, with their values; ``PATCH`` with a JSON object
  changes some of them (validated; any other name is a 400);
* ``GET /emulator/compare`` — the report of ``compare`` mode (:mod:`emulator.upstream.report`: the summary and the
  entries of the worker that answers); ``DELETE /emulator/compare`` clears it.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from emulator.control import admin, snapshot
from emulator.control.access import check_admin
from emulator.control.faults import METHODS, FaultRule, FaultRuleError
from emulator.persons.types import MAX_SPACE, ClientId, SpaceKey, space_out_of_range
from emulator.runtime import Runtime
from emulator.settings import SETTINGS, SETTINGS_BY_NAME, Settings, SettingsError
from emulator.store.records import WriteDelta

WORKER_HEADER = "X-Emulator-Worker"
LIVE_SETTINGS = tuple(s.name for s in SETTINGS if s.live)


def _worker_header(response: Response) -> None:
    response.headers[WORKER_HEADER] = str(os.getpid())


async def _ready(request: Request) -> None:
    """The store opens in the background at startup: wait for it (503 if it never comes)."""
    if not await request.app.state.runtime.wait_until_ready():
        raise HTTPException(status_code=503, detail="the emulator is not ready (see GET /emulator/ready)")


def _space(space: int) -> int:
    if not 0 <= space <= MAX_SPACE:
        raise HTTPException(status_code=404, detail=space_out_of_range(space))
    return space


def _json_object(body: bytes, *, empty: dict[str, Any] | None = None, what: str = "a JSON object") -> dict[str, Any]:
    """The body as a JSON object, else a 400 that says what it must be. ``empty``: the value of an empty body."""
    if not body.strip() and empty is not None:
        return empty
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise HTTPException(400, detail=f"the body must be {what}")
    return doc


def _scope(body: bytes) -> snapshot.Scope:
    """``{}``, ``{"client": "x"}`` or ``{"client": "x", "space": 3}`` (an empty body means ``{}``)."""
    doc = _json_object(body, empty={}, what='JSON: {}, {"client": ...} or {"client": ..., "space": ...}')
    if set(doc) - {"client", "space"}:
        raise HTTPException(400, detail="the body may only hold client and space")
    client, space = doc.get("client"), doc.get("space")
    if client is not None and (not isinstance(client, str) or not client):
        raise HTTPException(400, detail="client must be a non-empty string")
    if space is not None and (not isinstance(space, int) or isinstance(space, bool)):
        raise HTTPException(400, detail="space must be a whole number")
    try:
        return snapshot.Scope(ClientId(client) if client is not None else None, space)
    except snapshot.SnapshotError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise HTTPException(400, detail="since must be unix seconds or an ISO 8601 time") from None


def live_values(settings: Settings) -> dict[str, Any]:
    return {name: settings.values[name] for name in LIVE_SETTINGS}


def build_admin_router(runtime: Runtime) -> APIRouter:
    """Inspect and reset state, download and upload snapshots."""
    guards = [Depends(check_admin), Depends(_worker_header), Depends(_ready)]
    router = APIRouter(prefix="/emulator", dependencies=guards)
    store = runtime.store

    def on_write(delta: WriteDelta) -> None:
        runtime.service.index.apply(delta)

    @router.get("/clients")
    def list_clients() -> dict[str, Any]:
        return {"clients": admin.clients_overview(store)}

    @router.get("/clients/{client}/spaces/{space}/persons")
    def list_persons(client: str, space: int) -> dict[str, Any]:
        key = SpaceKey(ClientId(client), _space(space))
        return {"client": client, "space": space, "persons": admin.persons(store, key)}

    @router.get("/clients/{client}/spaces/{space}/persons/{person_id}")
    def show_person(client: str, space: int, person_id: int) -> dict[str, Any]:
        photos = admin.person_photos(store, SpaceKey(ClientId(client), _space(space)), person_id)
        if photos is None:
            raise HTTPException(status_code=404, detail=f"no person {person_id} in space {space} of client {client}")
        return {
            "client": client,
            "space": space,
            "person_id": person_id,
            "photos": [p.to_json() for p in photos],
        }

    @router.get("/clients/{client}/spaces/{space}/index")
    def show_index(client: str, space: int) -> dict[str, Any]:
        """This process's index of the space, brought current first (as a request's match would): its generation,
        size, digest (equal to a fresh load's digest when it holds the same faces) and how it followed the store."""
        key = SpaceKey(ClientId(client), _space(space))
        cache = runtime.service.index
        index = cache.get(key)
        counts = cache.counts(key)
        return {
            "client": client,
            "space": space,
            "generation": index.generation,
            "faces": len(index),
            "persons": len(index.unique_person_ids),
            "digest": index.digest(),
            "loads": counts.loads,
            "catch_ups": counts.catch_ups,
        }

    @router.post("/reset")
    async def reset(request: Request) -> dict[str, Any]:
        scope = _scope(await request.body())
        emptied = await run_in_threadpool(admin.reset, store, scope.client, scope.space, on_write)
        return {"reset": [{"client": k.client, "space": k.space} for k in emptied]}

    @router.get("/snapshot")
    def download(client: str | None = None, space: int | None = None) -> Response:
        try:
            scope = snapshot.Scope(ClientId(client) if client else None, space)
        except snapshot.SnapshotError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        data = snapshot.dumps(snapshot.take(store, scope))
        name = "-".join(["snapshot", *([client] if client else []), *([str(space)] if space is not None else [])])
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return Response(
            data,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}-{stamp}.json"'},
        )

    @router.post("/snapshot")
    async def upload(request: Request, mode: str = Query("replace")) -> dict[str, Any]:
        limits = snapshot.SnapshotLimits.from_settings(runtime.settings)
        try:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:  # refused from the header, never read
                raise limits.too_large(f"it holds {declared} bytes")
            data = bytearray()
            async for chunk in request.stream():  # counted as it streams in: a huge body is refused, not read
                data += chunk
                if len(data) > limits.max_bytes:
                    raise limits.too_large("it holds more")

            def load() -> snapshot.ImportReport:
                return snapshot.restore(
                    store,
                    snapshot.loads(data, limits),
                    mode,
                    max_faces_per_space=runtime.settings.max_faces_per_space,
                    on_write=on_write,
                )

            report = await run_in_threadpool(load)
        except snapshot.SnapshotTooLarge as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None
        except snapshot.SnapshotError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return {"mode": mode, **report.to_json()}

    return router


def build_testing_router(runtime: Runtime) -> APIRouter:
    """The request journal, fault rules and the live settings."""
    router = APIRouter(prefix="/emulator", dependencies=[Depends(check_admin)])

    @router.get("/requests")
    def list_requests(
        method: str | None = Query(None), space: int | None = Query(None), since: str | None = Query(None)
    ) -> dict[str, Any]:
        if method is not None and method not in METHODS:
            raise HTTPException(400, detail=f"method must be one of {', '.join(METHODS)}")
        entries = runtime.journal.entries(method=method, space=space, since=_since(since))
        return {"requests": entries, "size": runtime.journal.size, "total": runtime.journal.total}

    @router.delete("/requests")
    def clear_requests() -> dict[str, Any]:
        return {"removed": runtime.journal.clear()}

    @router.post("/faults", status_code=201)
    async def add_fault(request: Request) -> dict[str, Any]:
        try:
            rule = FaultRule.from_json(_json_object(await request.body()))
        except FaultRuleError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        return (await run_in_threadpool(runtime.faults.add, rule)).to_json()  # a write of the shared state

    @router.get("/faults")
    def list_faults() -> dict[str, Any]:
        return {"faults": [rule.to_json() for rule in runtime.faults.rules()]}

    @router.delete("/faults")
    def clear_faults() -> dict[str, Any]:
        return {"removed": runtime.faults.clear()}

    @router.get("/settings")
    def get_settings() -> dict[str, Any]:
        return {"settings": live_values(runtime.settings)}

    @router.patch("/settings")
    async def patch_settings(request: Request) -> dict[str, Any]:
        changes = _json_object(await request.body())
        unknown = sorted(name for name in changes if name not in SETTINGS_BY_NAME)
        if unknown:
            raise HTTPException(400, detail=f"unknown setting(s): {', '.join(unknown)}")
        fixed = sorted(name for name in changes if name not in LIVE_SETTINGS)
        if fixed:
            raise HTTPException(400, detail=f"not changeable at runtime (restart to change): {', '.join(fixed)}")
        try:
            # For every worker process (and replica), from their next request; a write of the shared state.
            await run_in_threadpool(runtime.change_settings, changes)
        except SettingsError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        return {"settings": live_values(runtime.settings)}

    @router.get("/compare")
    def compare_report(response: Response) -> dict[str, Any]:
        _worker_header(response)  # each worker keeps its own share of the report
        return runtime.compare_report.to_json()

    @router.delete("/compare")
    def clear_compare_report(response: Response) -> dict[str, Any]:
        _worker_header(response)
        return {"removed": runtime.compare_report.clear()}

    return router
