"""Liveness and readiness, reachable whatever ``SMARTY_ADMIN`` says (orchestrators need them).

``GET /emulator/health``: the process answers (200). ``GET /emulator/ready``: 200 once the store is open and
migrated, the models are loaded and one detection has run; until then 503 with what is still missing (and the
startup error, if the warm-up failed; see :meth:`emulator.runtime.Runtime.readiness`). Persons requests that arrive
before that wait for readiness (:func:`emulator.control.access.wait_until_ready`) instead of failing.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emulator.runtime import Runtime


def build_health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/emulator/health")
    async def health() -> JSONResponse:
        return JSONResponse({"alive": True})

    @router.get("/emulator/ready")
    async def ready() -> JSONResponse:
        report = runtime.readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    return router
