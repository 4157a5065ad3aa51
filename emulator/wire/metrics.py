"""``GET /metrics``: Prometheus text format, reachable whatever ``SMARTY_ADMIN`` says.

It carries counts and timings and, per space, the client name and the numbers of persons and
embeddings; never a token, an image or an embedding.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from emulator.metrics import Metrics


def build_metrics_router(metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def scrape() -> Response:
        body, content_type = await run_in_threadpool(metrics.exposition)  # reads the store and, maybe, files
        return Response(body, media_type=content_type)

    return router
