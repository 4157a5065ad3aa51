"""Figure 10: SQLite vs PostgreSQL (``SMARTY_DATABASE_URL``), side by side against a throw-away PostgreSQL server
(fsync on) started by the run: recognize and set over HTTP, the store's write transactions per second, loading a
75,000-embedding space into the index, sustained req/s of 2 replicas on one database vs 2 workers on SQLite."""

from __future__ import annotations

import functools
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.figures import Run
from bench.measure import ENROL, PHOTO, fixture, in_threads, ms, pct, timed
from bench.report import Results
from bench.server import Server, Window, enrol, running, sustained
from emulator.persons.index import SpaceIndex
from emulator.store.postgres import Database, PostgresStore
from emulator.store.records import ClientId, SpaceKey, Store, embedding_to_blob
from emulator.store.sqlite import SqliteStore
from tests.support.postgres import PostgresCluster, missing_reason

NAME = "postgres"


def measure(res: Results, run: Run) -> None:
    """A throw-away PostgreSQL server started here, fsync on, as PostgreSQL runs by default."""
    res.add("## 10. SQLite vs PostgreSQL (`SMARTY_DATABASE_URL`)")
    res.add()
    reason = missing_reason()
    if reason is not None:
        res.add(f"Skipped: {reason}.")
        res.add()
        res.target("10. PostgreSQL figures", "skipped", "-", None)
        return
    cluster = PostgresCluster(fsync=True).start()
    try:
        res.add(
            "A PostgreSQL 15 server on this machine (loopback TCP, fsync on, default settings otherwise), started by "
            "the run; the SQLite store is the default one (WAL, `synchronous=FULL`)."
        )
        res.add()
        _latency(res, cluster, run.runs)
        _write_rate(res, cluster)
        _load_space(res, cluster)
        _throughput(res, cluster, run.seconds)
    finally:
        cluster.stop()


def _latency(res: Results, cluster: PostgresCluster, runs: int) -> None:
    photo, set_photo = fixture(PHOTO), fixture(ENROL)
    settings: dict[str, Any] = {"cache_size": 0, "analyze_workers": 1}
    database = cluster.create_database("bench")
    with running(settings) as lite, running({**settings, "database_url": database}) as pg:
        servers = {"SQLite": lite, "PostgreSQL": pg}
        for server in servers.values():
            enrol(server)
            server.recognize(photo)
        samples: dict[tuple[str, str], list[float]] = {}

        def one(server: Server, kind: str, run: int) -> None:
            if kind == "recognize":
                server.recognize(photo)
            else:
                person = {"name": "a", "person_id": 100 + run % 50}
                server.call("set", {"space": "2", "images": [person]}, [("a", set_photo)])

        def rounds(cache: str, n: int) -> None:
            for server in servers.values():
                server.http.patch("/emulator/settings", json={"cache_size": int(cache)}).raise_for_status()
            state = "cold" if cache == "0" else "cached"
            for run in range(n):  # interleaved, alternating which goes first
                order = ("SQLite", "PostgreSQL") if run % 2 == 0 else ("PostgreSQL", "SQLite")
                for kind in ("recognize", "set"):
                    for label in order:
                        seconds = timed(functools.partial(one, servers[label], kind, run))
                        samples.setdefault((label, f"{kind} {state}"), []).append(seconds)

        rounds("0", runs)
        rounds("1024", runs * 2)
    res.add("### Latency over HTTP, one server each")
    res.add()
    res.add(
        f"The single-face 1280x720 photo; `set` stores `fixtures/{ENROL}` for a person (a space of up to 50 "
        f"persons). {runs} requests of each kind with the cache off (`cold`: the face is analysed every time), "
        f"{runs * 2} with it on (`cached`: what is left is HTTP, the store and matching), interleaved."
    )
    res.add()
    res.add(
        "| request | SQLite p50 | PostgreSQL p50 | SQLite p95 | PostgreSQL p95 | PostgreSQL / SQLite p50 | difference |"
    )
    res.add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    figures = {}
    for kind in ("recognize cold", "set cold", "recognize cached", "set cached"):
        lite_, pg_ = samples[("SQLite", kind)], samples[("PostgreSQL", kind)]
        l50, p50 = statistics.median(lite_), statistics.median(pg_)
        figures[kind] = (l50, p50)
        res.add(
            f"| {kind} | {ms(l50)} | {ms(p50)} | {ms(pct(lite_, 95))} | {ms(pct(pg_, 95))} | {p50 / l50:.3f} "
            f"| {(p50 - l50) * 1000:+.1f} ms |"
        )
    res.add()
    l50, p50 = figures["recognize cold"]
    res.target(
        "10a. recognize single face over HTTP, p50 PostgreSQL / SQLite", f"{p50 / l50:.3f}", "<= 1.1", p50 / l50 <= 1.1
    )
    l50, p50 = figures["set cold"]
    diff = (p50 - l50) * 1000
    res.target("10b. set over HTTP, p50 PostgreSQL - SQLite", f"{diff:+.1f} ms", "<= +5 ms", diff <= 5.0)


def _write_rate(res: Results, cluster: PostgresCluster) -> None:
    """What a set costs the database, and how many writes per second one space and several spaces take."""
    rng = np.random.default_rng(8)
    embedding = rng.standard_normal(128).astype(np.float32)
    embedding /= np.linalg.norm(embedding)
    thumbnail = rng.bytes(4000)  # about a stored face's thumbnail (a JPEG: it does not compress)
    stores: dict[str, Any] = {
        "SQLite": SqliteStore(Path(tempfile.mkdtemp(prefix="bench-writes-"))),
        "PostgreSQL": PostgresStore(Database(cluster.create_database("writes"), pool_size=8)),
    }
    rates: dict[tuple[str, int], float] = {}
    wal_per_write = float("nan")
    try:
        for label, store in stores.items():
            store.open()
            for spaces in (1, 4):
                rates[(label, spaces)] = _writes_per_second(store, spaces, embedding, thumbnail, 3.0)
        pg = stores["PostgreSQL"]
        with pg.database.connection() as conn:
            before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            for _ in range(50):
                with pg.write(SpaceKey(ClientId("default"), 9)) as writer:
                    writer.add_face(1, embedding, "set", {"name": "a", "sha256": "0" * 64}, thumbnail)
            wal_per_write = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s) / 50", (before,)).fetchone()[
                0
            ]
    finally:
        for store in stores.values():
            store.close()
        shutil.rmtree(stores["SQLite"].data_dir, ignore_errors=True)
    res.add("### The store's write rate")
    res.add()
    res.add(
        "In-process, 4 threads each committing one write transaction after another for 3 s, each storing one face "
        "(embedding, metadata and a 4 KB thumbnail, as `set` does): writes to one space wait for each other (its "
        "lock; SQLite's `BEGIN IMMEDIATE` is one lock for all spaces); writes to different spaces do not in "
        "PostgreSQL."
    )
    res.add()
    res.add("| store | 1 space: writes/s | 4 spaces: writes/s |")
    res.add("| --- | ---: | ---: |")
    for label in stores:
        res.add(f"| {label} | {rates[(label, 1)]:.0f} | {rates[(label, 4)]:.0f} |")
    res.add()
    res.add(
        f"A write transaction storing one face writes {float(wal_per_write) / 1024:.1f} KiB of PostgreSQL WAL (the "
        "face row with its 4 KB thumbnail, its index entries, the generation bump); a `set` request adds the "
        "journal's row, committed without waiting for the disk."
    )
    res.add()
    res.target("10e. PostgreSQL writes/s, one space (4 writers)", f"{rates[('PostgreSQL', 1)]:.0f}", "-", None)


def _writes_per_second(store: Store, spaces: int, embedding: np.ndarray, thumbnail: bytes, seconds: float) -> float:
    done = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def writer(number: int) -> None:
        key = SpaceKey(ClientId("default"), number % spaces)
        while time.perf_counter() < stop_at:
            with store.write(key) as write:
                write.add_face(number + 1, embedding, "set", {"name": "a", "sha256": "0" * 64}, thumbnail)
            with lock:
                done[0] += 1

    wall = in_threads(writer, 4, seconds + 60)
    return done[0] / wall


def _load_space(res: Results, cluster: PostgresCluster) -> None:
    """Loading a full space (75,000 embeddings) into a replica's index: what a replica does when another one
    changed the space."""
    n = 75_000
    rng = np.random.default_rng(75)
    matrix = rng.standard_normal((n, 128)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    key = SpaceKey(ClientId("default"), 1)
    pg = PostgresStore(Database(cluster.create_database("load"), timeout=60))
    lite = SqliteStore(Path(tempfile.mkdtemp(prefix="bench-load-")))
    timings: dict[str, list[tuple[float, float]]] = {"SQLite": [], "PostgreSQL": []}
    try:
        pg.open()
        with pg.database.connection() as conn, conn.transaction():  # bulk: COPY, as an import of that size would
            columns = "client, space, person_id, kind, embedding, created_at, meta"
            with conn.cursor().copy(f"COPY faces ({columns}) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row(("default", 1, i // 2 + 1, "set", embedding_to_blob(matrix[i]), 0.0, "{}"))
            conn.execute("INSERT INTO spaces (client, space, generation) VALUES ('default', 1, 1)")
            conn.execute("ANALYZE faces")
        lite.open()
        with lite.write(key) as writer:
            for i in range(n):
                writer.add_face(i // 2 + 1, matrix[i], "set", {})
        for _ in range(5):  # alternating
            for label, store in (("SQLite", lite), ("PostgreSQL", pg)):
                start = time.perf_counter()
                data = store.load_space(key)
                loaded = time.perf_counter()
                index = SpaceIndex.from_data(data)
                timings[label].append((loaded - start, time.perf_counter() - loaded))
                assert len(index) == n and np.array_equal(data.embeddings, matrix)
    finally:
        pg.close()
        lite.close()
        shutil.rmtree(lite.data_dir, ignore_errors=True)
    res.add("### Loading a 75,000-embedding space into the index")
    res.add()
    res.add(
        "`Store.load_space` (one read: the generation and the faces' ids, person ids and embeddings; PostgreSQL "
        "sends them as three byte strings in binary), then `SpaceIndex.from_data` (sort by person, one float32 "
        "matrix). Five times each, alternating; medians."
    )
    res.add()
    res.add("| store | load_space | build the index | total |")
    res.add("| --- | ---: | ---: | ---: |")
    totals = {}
    for label, pairs in timings.items():
        load, build = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        totals[label] = statistics.median(p[0] + p[1] for p in pairs)
        res.add(f"| {label} | {ms(load)} | {ms(build)} | {ms(totals[label])} |")
    res.add()
    total = totals["PostgreSQL"]
    res.target(
        "10c. load a 75,000-embedding space from PostgreSQL into the index", f"{total:.2f} s", "<= 1.5 s", total <= 1.5
    )


def _throughput(res: Results, cluster: PostgresCluster, seconds: float) -> None:
    """2 replicas (1 worker each) on one PostgreSQL vs 1 server with 2 workers on SQLite, 8 clients."""
    photo = fixture(PHOTO)
    cache_off = {"cache_size": 0}
    on_postgres = {**cache_off, "database_url": cluster.create_database("throughput")}
    with running(cache_off, workers=2) as lite, running(on_postgres) as first, running(on_postgres) as second:
        setups = {"SQLite, 1 server x 2 workers": [lite], "PostgreSQL, 2 replicas x 1 worker": [first, second]}
        enrol(lite)
        enrol(first)
        for server in (lite, lite, lite, lite, first, second):  # every process warm
            server.recognize(photo)
        windows: dict[str, list[Window]] = {label: [] for label in setups}
        for label in [*setups, *reversed(setups)]:  # S, P, P, S: both see the same changes of machine load
            database = [cluster.pid()] if label.startswith("PostgreSQL") else []
            windows[label].append(sustained(setups[label], database, seconds / 2, photo))
    res.add("### Sustained throughput")
    res.add()
    res.add(
        f"8 concurrent loopback clients sending the single-face photo (cache off), spread evenly over the servers, "
        f"twice {seconds / 2:.0f} s per setup in the order SQLite, PostgreSQL, PostgreSQL, SQLite. `cores used`: "
        "CPU seconds of the servers (and of the PostgreSQL server's processes) divided by wall time; `CPU per "
        "request`: the same CPU seconds divided by the requests served (what sizing needs: 1 / it is the requests "
        "per second one core serves)."
    )
    res.add()
    res.add("| setup | req/s | p50 | p95 | errors | cores used | CPU per request | of which PostgreSQL |")
    res.add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rates = {}
    for label, runs in windows.items():
        wall = sum(w.wall for w in runs)
        latencies = [x for w in runs for x in w.latencies]
        requests = sum(w.requests for w in runs)
        rates[label] = requests / wall
        res.add(
            f"| {label} | {rates[label]:.1f} | {ms(statistics.median(latencies))} | {ms(pct(latencies, 95))} | "
            f"{sum(w.errors for w in runs)} | {sum(w.cpu for w in runs) / wall:.2f} | "
            f"{ms(sum(w.cpu for w in runs) / max(1, requests))} | "
            f"{ms(sum(w.database_cpu for w in runs) / max(1, requests))} |"
        )
    res.add()
    lite_rate, pg_rate = rates.values()
    res.target(
        "10d. sustained req/s, 2 replicas on PostgreSQL vs 2 workers on SQLite",
        f"{pg_rate:.1f} vs {lite_rate:.1f}",
        "-",
        None,
    )
