"""Admin endpoints for tests: the request journal, fault rules and the live settings.

* ``GET /emulator/requests?method=&space=&since=`` — journal entries, oldest first
  (``since``: unix seconds or an ISO 8601 time); ``DELETE /emulator/requests`` clears it.
* ``POST /emulator/faults`` adds a rule (see :mod:`emulator.faults`), ``GET`` lists the
  rules with their counters, ``DELETE`` removes them all.
* ``GET /emulator/settings`` — the settings that may change live, with their values;
  ``PATCH`` with a JSON object changes some of them (validated; any other name is a 400).

All three are shared by the worker processes of a server (see :mod:`emulator.store.shared_state`):
whichever worker answers, it lists, clears or changes the same journal, rules and settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from emulator.faults import METHODS, FaultRule, FaultRuleError
from emulator.runtime import Runtime
from emulator.settings import SETTINGS, SETTINGS_BY_NAME, Settings, SettingsError
from emulator.wire.admin_access import check_admin

LIVE_SETTINGS = tuple(s.name for s in SETTINGS if s.live)


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


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        doc = await request.json()
    except ValueError:
        raise HTTPException(400, detail="the body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise HTTPException(400, detail="the body must be a JSON object")
    return doc


def build_testing_router(runtime: Runtime) -> APIRouter:
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
            rule = FaultRule.from_json(await _json_object(request))
        except FaultRuleError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        return runtime.faults.add(rule).to_json()

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
        changes = await _json_object(request)
        unknown = sorted(name for name in changes if name not in SETTINGS_BY_NAME)
        if unknown:
            raise HTTPException(400, detail=f"unknown setting(s): {', '.join(unknown)}")
        fixed = sorted(name for name in changes if name not in LIVE_SETTINGS)
        if fixed:
            raise HTTPException(400, detail=f"not changeable at runtime (restart to change): {', '.join(fixed)}")
        try:
            runtime.change_settings(changes)  # for every worker process, from their next request
        except SettingsError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        return {"settings": live_values(runtime.settings)}

    return router
