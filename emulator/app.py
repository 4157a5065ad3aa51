"""The app factory: the one place where the parts are wired together."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from emulator.api.body_limit import ChunkedBodyLimitMiddleware
from emulator.api.middleware import OverloadMiddleware, SharedStateSyncMiddleware, keep_raw_send
from emulator.api.oauth_route import build_oauth_router
from emulator.api.routes import build_router
from emulator.control.faults import FaultHook
from emulator.control.routes import build_admin_router, build_testing_router
from emulator.control.ui import build_login_router, build_ui_router
from emulator.face.engine import DlibEngine, FaceEngine
from emulator.face.from_settings import engine_from_settings
from emulator.ops import logs
from emulator.ops.ca_route import build_ca_router
from emulator.ops.datadir import DataDirError
from emulator.ops.health import build_health_router
from emulator.ops.memory import enable_trimming
from emulator.ops.metrics import Metrics, build_metrics_router
from emulator.ops.tls import TLS_STATE, TlsError
from emulator.persons.hooks import Hook
from emulator.runtime import Runtime
from emulator.settings import Settings
from emulator.store import Store, store_from_settings
from emulator.store.records import StoreError
from emulator.upstream.hook import UpstreamHook
from emulator.upstream.library import CassetteLibrary
from emulator.upstream.shadow import ShadowCompare
from emulator.upstream.token import TokenUpstream

log = logging.getLogger("emulator.app")
WARM_UP_JOIN_SECONDS = 30.0


def default_engine(settings: Settings) -> DlibEngine:
    """The engine of a server that is given none (see :func:`emulator.face.from_settings.engine_from_settings`)."""
    return engine_from_settings(settings)


def create_app(settings: Settings, *, engine: FaceEngine | None = None, store: Store | None = None) -> FastAPI:
    """Build the emulator's ASGI app. ``engine`` and ``store`` may be injected (tests)."""
    runtime = Runtime(settings, engine or default_engine(settings), store or store_from_settings(settings))

    metrics = Metrics(runtime.store.space_counts, runtime.ready.is_set)
    runtime.observers += [metrics.observe, logs.RequestLog()]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:  # the lifespan state: a mapping with TLS on, else None
        # The server answers at once (liveness, readiness 503); the store and models come up in the background.
        warm_up = threading.Thread(target=_start, args=(runtime,), name="warm-up", daemon=True)
        warm_up.start()
        try:
            # The HTTPS port and the proxy (emulator/ops/listeners.py) find the process's certificate here.
            yield {TLS_STATE: runtime.tls} if runtime.tls.enabled else None
        finally:
            runtime.stopping.set()  # a startup still waiting for its database gives up
            warm_up.join(timeout=WARM_UP_JOIN_SECONDS)
            runtime.stop()

    app = FastAPI(title="smarty-emulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.state.metrics = metrics
    # The persons request's hook chain, outermost first (emulator/persons/hooks.py); the service call ends it.
    # The upstream hook records, replays or forwards (SMARTY_UPSTREAM_MODE); compare mode's seam is its on_forwarded.
    cassettes = CassetteLibrary(warn=lambda text: runtime.warn("cassette", text))
    # Compare mode runs the request again in a shadow namespace through the rest of the chain after the upstream hook.
    compare = ShadowCompare(runtime.compare_report)
    upstream = compare.around(UpstreamHook(cassettes, on_forwarded=compare))
    hooks: list[Hook] = [FaultHook(runtime.faults), upstream]
    app.include_router(build_router(runtime, hooks))
    app.include_router(build_oauth_router(runtime, TokenUpstream(cassettes)))
    app.include_router(build_testing_router(runtime))
    keep_raw_send(app)  # lets the "drop" fault close a connection without a response
    app.include_router(build_login_router(runtime))
    app.include_router(build_ui_router(runtime))
    app.include_router(build_health_router(runtime))
    app.include_router(build_ca_router(runtime))
    app.include_router(build_metrics_router(metrics, runtime))
    app.include_router(build_admin_router(runtime))
    app.add_exception_handler(StoreError, _storage_failed)  # the admin API's (persons requests answer envelopes)
    app.add_middleware(OverloadMiddleware, runtime=runtime)
    app.add_middleware(ChunkedBodyLimitMiddleware, runtime=runtime)  # a body without a length: bounded
    app.add_middleware(SharedStateSyncMiddleware, runtime=runtime)  # outermost: live settings and faults of all workers
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): settings from ``SMARTY_*`` variables."""
    settings = Settings.from_sources(os.environ)
    logs.configure(settings)
    enable_trimming()  # this process gives freed heap pages back now and then (see emulator.ops.memory)
    return create_app(settings)


async def _storage_failed(request: Request, exc: Exception) -> JSONResponse:
    """A storage failure of an admin call: 500 with the cause (the admin API is the operator's), one log line."""
    request.app.state.runtime.note_failure(exc)
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"storage failed: {exc}"}, status_code=500)


def _start(runtime: Runtime) -> None:
    try:
        runtime.start()
    except (StoreError, DataDirError, TlsError) as exc:  # a cause its message names (data dir, database, certificate)
        log.error("startup failed: the emulator will not become ready: %s", exc)
    except Exception:  # readiness reports it; the process stays up for the health check to see
        log.exception("startup failed: the emulator will not become ready")
    else:
        log.info("ready: store open, models loaded and warm")
