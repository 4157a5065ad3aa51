"""The admin API under ``/emulator/`` (not part of the real service): inspect and reset state,
download and upload snapshots. Every route is guarded by :func:`check_admin`.

Every response carries ``X-Emulator-Worker: <pid>``, the process that answered: with
``--workers N`` this shows which worker a connection reached. The persons API never sends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from emulator import admin, snapshot
from emulator.runtime import Runtime
from emulator.store.sqlite import WriteDelta
from emulator.types import ClientId, SpaceKey
from emulator.wire.admin_access import check_admin

WORKER_HEADER = "X-Emulator-Worker"


READY_WAIT_SECONDS = 60.0


def _worker_header(response: Response) -> None:
    response.headers[WORKER_HEADER] = str(os.getpid())


async def _await_ready(request: Request) -> None:
    """The store opens in the background at startup: wait for it (503 if it never comes)."""
    runtime: Runtime = request.app.state.runtime
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while not runtime.ready.is_set():
        if runtime.startup_error or time.monotonic() >= deadline:
            raise HTTPException(status_code=503, detail="the emulator is not ready (see GET /emulator/ready)")
        await asyncio.sleep(0.02)


def _space(space: int) -> int:
    if not 0 <= space <= snapshot.MAX_SPACE:
        raise HTTPException(status_code=404, detail=f"space {space} is out of range, allowed spaces are 0..9")
    return space


def build_admin_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(
        prefix="/emulator", dependencies=[Depends(check_admin), Depends(_worker_header), Depends(_await_ready)]
    )
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

    @router.post("/reset")
    async def reset(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            scope = snapshot.Scope(**_scope_json(body))
        except snapshot.SnapshotError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
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
        data = await request.body()

        def load() -> snapshot.ImportReport:
            return snapshot.restore(
                store,
                snapshot.loads(data),
                mode,
                max_faces_per_space=runtime.settings.max_faces_per_space,
                on_write=on_write,
            )

        try:
            report = await run_in_threadpool(load)
        except snapshot.SnapshotError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return {"mode": mode, **report.to_json()}

    return router


def _scope_json(body: bytes) -> dict[str, Any]:
    """``{}``, ``{"client": "x"}`` or ``{"client": "x", "space": 3}`` (an empty body means ``{}``)."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise snapshot.SnapshotError(
            'the body must be JSON: {}, {"client": ...} or {"client": ..., "space": ...}'
        ) from None
    if not isinstance(doc, dict) or set(doc) - {"client", "space"}:
        raise snapshot.SnapshotError("the body may only hold client and space")
    client, space = doc.get("client"), doc.get("space")
    if client is not None and (not isinstance(client, str) or not client):
        raise snapshot.SnapshotError("client must be a non-empty string")
    if space is not None and (not isinstance(space, int) or isinstance(space, bool)):
        raise snapshot.SnapshotError("space must be a whole number")
    return {"client": ClientId(client) if client is not None else None, "space": space}
