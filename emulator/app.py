"""The app factory: the one place where the parts are wired together."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from emulator.face.engine import DlibEngine, FaceEngine
from emulator.runtime import Runtime
from emulator.settings import Settings
from emulator.store.sqlite import SqliteStore
from emulator.wire.routes import build_router


def default_engine(settings: Settings) -> DlibEngine:
    return DlibEngine(max_width=settings.max_image_width, max_height=settings.max_image_height)


def create_app(settings: Settings, *, engine: FaceEngine | None = None, store: SqliteStore | None = None) -> FastAPI:
    """Build the emulator's ASGI app. ``engine`` and ``store`` may be injected (tests)."""
    runtime = Runtime(settings, engine or default_engine(settings), store or SqliteStore(settings.data_dir))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runtime.start)
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(title="smarty-emulator", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.include_router(build_router(runtime))
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): settings from ``SMARTY_*`` variables."""
    return create_app(Settings.from_sources(os.environ))
