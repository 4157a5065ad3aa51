"""Prometheus metrics of the persons API, served by ``GET /metrics`` (text format). They carry counts and timings
and, per space, the client name and the numbers of persons and embeddings; never a token, an image or an embedding.

Who may read them is ``SMARTY_METRICS``: ``open``; ``admin``, behind the admin API's guard
(:func:`emulator.control.access.check_admin`, so ``SMARTY_ADMIN`` decides: a loopback client on a loopback bind, or
the admin token); ``off`` (404); ``auto`` (the default): open on a loopback bind, ``admin`` on any other, because
client names are not for everyone on the network.

One :class:`Metrics` per app, with its own registry, so several apps in one process (tests)
never share counters. With several worker processes (``smarty-emulator serve --workers N``)
the CLI sets ``PROMETHEUS_MULTIPROC_DIR``: every worker then writes its counters and
histograms to files in that directory, and a scrape served by any worker adds up all of
them (prometheus-client's multiprocess mode).

The persons and embeddings per space are not counted along the way: they are read from the
store when scraped, with one grouped query, so they are right in every worker and after a
restart, and cost nothing between scrapes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from emulator.control.access import check_admin, is_loopback
from emulator.ops.observe import RequestRecord
from emulator.runtime import Runtime
from emulator.settings import Settings
from emulator.store.records import SpaceCounts, StoreError

log = logging.getLogger("emulator.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PHASES = ("decode", "detect", "embed", "attributes", "match")  # attributes: searcher=1 with SMARTY_ATTRIBUTES=model
# Seconds. A recognize of one photo on one core is ~0.05-1 s; 100 large photos take minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

SpaceSizes = Callable[[], list[SpaceCounts]]


class SpaceSizesCollector(Collector):
    """Gauges ``smarty_space_persons`` and ``smarty_space_embeddings``, read from the store when scraped."""

    def __init__(self, sizes: SpaceSizes, available: Callable[[], bool]) -> None:
        self._sizes = sizes
        self._available = available

    def collect(self) -> Iterator[Metric]:
        persons = GaugeMetricFamily("smarty_space_persons", "Persons in a space.", labels=["client", "space"])
        faces = GaugeMetricFamily(
            "smarty_space_embeddings", "Face embeddings (photos) in a space.", labels=["client", "space"]
        )
        if self._available():  # before the store is open there is nothing to read
            try:
                for counts in self._sizes():
                    labels = [counts.key.client, str(counts.key.space)]
                    persons.add_metric(labels, counts.persons)
                    faces.add_metric(labels, counts.faces)
            except StoreError as exc:  # e.g. the database is unreachable: the scrape goes on without the gauges
                log.warning("reading space sizes for metrics failed: %s", exc)
            except Exception:  # a scrape must not fail because the store is busy
                log.exception("reading space sizes for metrics failed")
        yield persons
        yield faces


class Metrics:
    """The emulator's metrics; :meth:`observe` is a request observer (see emulator/ops/observe.py)."""

    def __init__(self, sizes: SpaceSizes, available: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self._sizes_collector = SpaceSizesCollector(sizes, available)
        registry = self.registry
        self.requests = Counter(
            "smarty_requests",
            "Persons API requests by method and envelope status.",
            ["method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "smarty_request_duration_seconds",
            "Persons API request latency (server side, body read to response) by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.phase = Histogram(
            "smarty_request_phase_seconds",
            "Time of one request spent in a phase (decode, detect, embed, attributes, match), by method. Phases of "
            "images analysed in parallel add up.",
            ["method", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.faces = Counter(
            "smarty_faces_detected", "Faces detected in the images of persons requests.", ["method"], registry=registry
        )
        self.images = Counter("smarty_images", "Images received by persons requests.", ["method"], registry=registry)
        self.object_errors = Counter(
            "smarty_object_errors",
            "Images whose object got a non-zero status (1 permanent, 2 temporary), by method and status.",
            ["method", "status"],
            registry=registry,
        )
        if self.multiprocess_dir is None:
            registry.register(self._sizes_collector)

    def observe(self, record: RequestRecord) -> None:
        """Count one finished persons request."""
        method = record.method
        self.requests.labels(method, str(record.envelope_status)).inc()
        self.duration.labels(method).observe(record.duration_ms / 1000)
        for phase in PHASES:
            if phase in record.timings_ms:
                self.phase.labels(method, phase).observe(record.timings_ms[phase] / 1000)
        self.images.labels(method).inc(len(record.images))
        if record.faces:
            self.faces.labels(method).inc(record.faces)
        for obj in record.objects:
            status = obj.get("status", 0) if isinstance(obj, dict) else 0
            if status:
                self.object_errors.labels(method, str(status)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every metric (all workers' in multiprocess mode), and its content type."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self._sizes_collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST


@contextmanager
def multiprocess_dir(workers: int) -> Iterator[str | None]:
    """For several workers, a fresh ``PROMETHEUS_MULTIPROC_DIR`` while the block runs, removed afterwards.

    A directory the environment already names is used as it is (and kept). Must be entered before any worker
    process starts: prometheus-client picks its storage when it is first imported.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if workers <= 1 or given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="smarty-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def metrics_access(settings: Settings) -> str:
    """``open``, ``admin`` or ``off``: ``SMARTY_METRICS``, with ``auto`` decided by the bind address."""
    if settings.metrics != "auto":
        return str(settings.metrics)
    return "open" if is_loopback(settings.host) else "admin"


def build_metrics_router(metrics: Metrics, runtime: Runtime) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def scrape(request: Request) -> Response:
        access = metrics_access(runtime.settings)
        if access == "off":
            raise HTTPException(status_code=404, detail="metrics are off (SMARTY_METRICS=off)")
        if access == "admin":
            check_admin(request)  # 403/404 as for the admin API
        body, content_type = await run_in_threadpool(metrics.exposition)  # reads the store and, maybe, files
        return Response(body, media_type=content_type)

    return router
