"""Liveness and readiness, reachable whatever ``SMARTY_ADMIN`` says (orchestrators need them).

``GET /emulator/health``: the process answers (200). ``GET /emulator/ready``: 200 once the store
is open and migrated, the models are loaded and one detection has run; until then 503 with what
is still missing (and the startup error, if the warm-up failed). Persons requests that arrive
before that wait for readiness (:func:`await_ready`) instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emulator.errors import InternalError
from emulator.runtime import Runtime

STARTUP_STEPS = ("store", "models", "warm-up")
READY_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.02


def readiness(runtime: Runtime) -> dict[str, Any]:
    """What readiness reports: ``ready``, the steps still ``missing``, and a startup ``error`` if any."""
    ready = runtime.ready.is_set()
    report: dict[str, Any] = {
        "ready": ready,
        "missing": [] if ready else [step for step in STARTUP_STEPS if step not in runtime.startup],
    }
    if runtime.startup_error:
        report["error"] = runtime.startup_error
    return report


async def await_ready(runtime: Runtime, timeout: float = READY_WAIT_SECONDS) -> None:
    """Wait (without holding a thread) until the runtime is ready; fail the request with 500 after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not runtime.ready.is_set():
        if runtime.startup_error or time.monotonic() >= deadline:
            missing = ", ".join(readiness(runtime)["missing"])
            raise InternalError(f"the emulator is not ready: waiting for {missing}")
        await asyncio.sleep(_POLL_SECONDS)


def build_health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/emulator/health")
    async def health() -> JSONResponse:
        return JSONResponse({"alive": True})

    @router.get("/emulator/ready")
    async def ready() -> JSONResponse:
        report = readiness(runtime)
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    return router
