"""Liveness and readiness, reachable whatever ``SMARTY_ADMIN`` says (orchestrators need them).

``GET /emulator/health``: the process answers (200; liveness stays 200 whatever failed, since a restart would not
free a disk), with the face detector that runs (``detector``: ``hog`` or ``yunet``, what ``SMARTY_DETECTOR=auto``
chose on this machine). After a persons request failed internally (storage: disk full, read-only, I/O error; or a
bug) it also shows ``last_failure``: the time, the cause and, once a write committed again, ``writes_ok_since``; and
under ``warnings`` the last warning of each topic (``cassette``: a recording the emulator refused to write, see
docs/record-replay.md). These are of the process that answers (with several workers, each reports its own).

``GET /emulator/ready``: 200 once the store is open and migrated, the models are loaded and one detection has run;
until then 503 with what is still missing (and the startup error, if the warm-up failed, e.g. a read-only data
directory or a database file that is not the emulator's, naming it; see :meth:`emulator.runtime.Runtime.readiness`).
Persons requests that arrive before that wait for readiness (:meth:`emulator.runtime.Runtime.wait_until_ready`)
instead of failing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emulator.runtime import Runtime


def build_health_router(runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/emulator/health")
    async def health() -> JSONResponse:
        return JSONResponse(health_report(runtime))

    @router.get("/emulator/ready")
    async def ready() -> JSONResponse:
        report = runtime.readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    return router


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def health_report(runtime: Runtime) -> dict[str, Any]:
    """``{"alive": true, "detector": ...}``, with the last internal failure of a request, if any (see the module
    docstring)."""
    report: dict[str, Any] = {"alive": True}
    detector = getattr(runtime.engine, "detector_in_use", None)  # an engine without a choice (a fake) has none
    if isinstance(detector, str):
        report["detector"] = detector
    failure = runtime.last_failure
    if failure is not None:
        at, error = failure
        recovered = runtime.writes_ok_since
        report["last_failure"] = {
            "time": _iso(at),
            "unix": round(at, 3),
            "error": error,
            "writes_ok_since": _iso(recovered) if recovered is not None else None,
        }
    if runtime.warnings:
        report["warnings"] = {
            topic: {"time": _iso(at), "unix": round(at, 3), "warning": text}
            for topic, (at, text) in sorted(runtime.warnings.items())
        }
    return report
