"""Figure 11: a big space under writes. A space of 75,000 faces (synthetic unit embeddings written straight into the
store before the servers start, as an import of that size would hold), the face cache off:

- interleaved ``set`` of a new person and ``recognize`` of another photo, on 2 worker processes (SQLite) and on 2
  replicas (PostgreSQL), against the same run on one process;
- what a write costs the other process (its catch-up) as a function of the space's size (1k, 10k, 75k);
- throughput of 8 clients, half set and half recognize, on 2 PostgreSQL replicas vs 1;
- the resident memory of each server process holding the space.

Every loop is bounded; loopback only.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.figures import Run
from bench.measure import ENROL, PHOTO, fixture, in_threads, ms, pct
from bench.report import Results
from bench.server import Server, recognize
from emulator.launcher import process_tree
from emulator.store.postgres import Database, PostgresStore
from emulator.store.records import ClientId, SpaceKey, Store
from emulator.store.sqlite import SqliteStore
from tests.support import persons_client
from tests.support.postgres import PostgresCluster, missing_reason

NAME = "big_space"
FACES = 75_000
SIZES = (1_000, 10_000, FACES)
ROUNDS = 24  # set + recognize pairs per setup
CATCH_UP_ROUNDS = 12
KEY = SpaceKey(ClientId("default"), 1)
# Room for the sets the figure adds on top of a full space (the default limit is 75,000).
SETTINGS: dict[str, Any] = {"cache_size": 0, "max_faces_per_space": FACES + 10_000, "journal_size": 1000}


def measure(res: Results, run: Run) -> None:
    res.add("## 11. A big space under writes")
    res.add()
    reason = missing_reason()
    if reason is not None:
        res.add(f"Skipped: {reason}.")
        res.add()
        res.target("11. big-space figures", "skipped", "-", None)
        return
    cluster = PostgresCluster(fsync=True).start()
    try:
        res.add(
            f"A space of {FACES:,} faces (random unit embeddings written into the store before the servers start), "
            "the face cache off (`SMARTY_CACHE_SIZE=0`), the single-face 1280x720 photo recognized (nothing "
            f"learned) and `fixtures/{ENROL}` stored by each `set` for a new person. PostgreSQL 15 on this machine "
            "(loopback, fsync on), started by the run."
        )
        res.add()
        _interleaved(res, cluster)
        _catch_up(res, cluster)
        _throughput(res, cluster, run.seconds)
    finally:
        cluster.stop()


# --- building big spaces ---------------------------------------------------------------------------------------


def _unit_rows(n: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def fill(store: Store, n: int, seed: int = 75) -> None:
    """``n`` faces of ``n // 2`` persons in space 1 of the default client, in one write transaction."""
    matrix = _unit_rows(n, seed)
    store.open()
    try:
        with store.write(KEY) as writer:
            for i in range(n):
                writer.add_face(i // 2 + 1, matrix[i], "set", {})
    finally:
        store.close()


def sqlite_server(n: int, workers: int) -> Server:
    server = Server(SETTINGS, workers)
    fill(SqliteStore(server.data_dir), n)
    return server.start(timeout=180)


def postgres_database(cluster: PostgresCluster, n: int) -> str:
    url = cluster.create_database("big")
    fill(PostgresStore(Database(url, timeout=120)), n)
    return url


@contextmanager
def started(servers: Sequence[Server]) -> Iterator[Sequence[Server]]:
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


# --- the requests ----------------------------------------------------------------------------------------------

_person = iter(range(1_000_000, 2_000_000))
_person_lock = threading.Lock()


def set_new_person(http: httpx.Client, enrol: bytes) -> None:
    with _person_lock:
        person_id = next(_person)
    body = persons_client.call(
        http, "set", {"space": "1", "images": [{"name": "a", "person_id": person_id}]}, [("a", enrol)]
    )["body"]
    assert body["objects"][0]["status"] == 0, body


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm(server: Server, photo: bytes, workers: int) -> None:
    """Every worker process has loaded the space (a worker is picked by the kernel: ask a few times each)."""
    for _ in range(3 * workers):
        recognize(server.http, photo)


def rss_mib(server: Server) -> list[float]:
    """Resident memory of each worker process of ``server``: the largest ``workers`` processes of its tree (the
    supervisor of ``--workers 2`` and its helpers are small)."""
    assert server.process is not None
    out = []
    for pid in process_tree(server.process.pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if rss is not None:
            out.append(int(rss.split()[1]) / 1024)
    return sorted(out, reverse=True)[: server.workers]


# --- 11a: interleaved set and recognize --------------------------------------------------------------------------


def pinned(server: Server, workers: int, tries: int = 40) -> list[httpx.Client]:
    """One kept-alive connection to each worker process of ``server`` (the admin API names the worker that
    answered in ``X-Emulator-Worker``), so that a figure decides which process serves which request."""
    found: dict[str, httpx.Client] = {}
    spare: list[httpx.Client] = []
    for _ in range(tries):
        if len(found) == workers:
            break
        http = httpx.Client(base_url=server.url, timeout=120)
        worker = http.get("/emulator/clients").headers.get("X-Emulator-Worker", "")
        if worker in found:
            spare.append(http)
        else:
            found[worker] = http
    for http in spare:
        http.close()
    assert len(found) == workers, f"reached {len(found)} of {workers} workers"
    return list(found.values())


def _interleaved(res: Results, cluster: PostgresCluster) -> None:
    photo, enrol = fixture(PHOTO), fixture(ENROL)
    url = postgres_database(cluster, FACES)
    with ExitStack() as stack:
        one = stack.enter_context(started([sqlite_server(FACES, 1)]))[0]
        two = stack.enter_context(started([sqlite_server(FACES, 2)]))[0]
        settings = {**SETTINGS, "database_url": url}
        first, second = stack.enter_context(started([Server(settings).start(180), Server(settings).start(180)]))
        labels = ("SQLite, 1 worker", "SQLite, `--workers 2`", "PostgreSQL, 1 replica", "PostgreSQL, 2 replicas")
        samples: dict[tuple[str, str], list[float]] = {}
        for order in (labels, tuple(reversed(labels))):  # A B C D, D C B A: the same changes of machine load
            for label in order:
                # Where sets go and where recognitions go: with 2 processes, each to its own, so that every
                # recognition follows a write made by the other process (connections pinned afresh each half:
                # an idle kept-alive connection is closed after a few seconds).
                clients = {
                    "SQLite, 1 worker": [one.http, one.http],
                    "SQLite, `--workers 2`": pinned(two, 2),
                    "PostgreSQL, 1 replica": [first.http, first.http],
                    "PostgreSQL, 2 replicas": [first.http, second.http],
                }[label]
                writer, reader = clients
                for http in clients:
                    recognize(http, photo)  # loaded (the first half) and warm
                for _ in range(ROUNDS // 2):
                    samples.setdefault((label, "set"), []).append(timed(partial(set_new_person, writer, enrol)))
                    samples.setdefault((label, "recognize"), []).append(timed(partial(recognize, reader, photo)))
                if label == "SQLite, `--workers 2`":
                    for http in clients:
                        http.close()
        memory = {
            "SQLite, 1 worker": rss_mib(one),
            "SQLite, `--workers 2`": rss_mib(two),
            "PostgreSQL, replica 1 (took the sets)": rss_mib(first),
            "PostgreSQL, replica 2": rss_mib(second),
        }
        loads = {"PostgreSQL, replica 2": _index_report(second)}
    res.add("### Interleaved set and recognize")
    res.add()
    res.add(
        f"{ROUNDS} pairs per setup (a `set` of a new person, then a `recognize`), in two halves in the order "
        "1 worker, 2 workers, 1 replica, 2 replicas and back. With 2 processes every `set` goes to the first and "
        "every `recognize` to the second (with `--workers 2` over a kept-alive connection to each worker), so "
        "each recognition follows a write made by the other process. `ratio`: the same percentile against one "
        "process."
    )
    res.add()
    res.add("| setup | recognize p50 | recognize p90 | set p50 | set p90 | ratio p50 | ratio p90 |")
    res.add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios: dict[str, float] = {}
    pairs = {
        "SQLite, 1 worker": "SQLite, 1 worker",
        "SQLite, `--workers 2`": "SQLite, 1 worker",
        "PostgreSQL, 1 replica": "PostgreSQL, 1 replica",
        "PostgreSQL, 2 replicas": "PostgreSQL, 1 replica",
    }
    for label, base in pairs.items():
        rec, put, ref = samples[(label, "recognize")], samples[(label, "set")], samples[(base, "recognize")]
        r50, r90 = statistics.median(rec) / statistics.median(ref), pct(rec, 90) / pct(ref, 90)
        ratios[label] = r50
        res.add(
            f"| {label} | {ms(statistics.median(rec))} | {ms(pct(rec, 90))} | {ms(statistics.median(put))} | "
            f"{ms(pct(put, 90))} | {r50:.2f}x | {r90:.2f}x |"
        )
    res.add()
    for label, values in memory.items():
        res.add(f"Resident memory at {FACES:,} faces, {label}: " + ", ".join(f"{v:.0f} MiB" for v in values) + ".")
    for label, report in loads.items():
        if report is not None:
            res.add(f"The index of {label} after the run: {report}.")
    res.add()
    for label in ("SQLite, `--workers 2`", "PostgreSQL, 2 replicas"):
        ratio = ratios[label]
        res.target(
            f"11a. interleaved set/recognize at {FACES // 1000}k faces, recognize p50 {label.replace('`', '')} / 1",
            f"{ratio:.2f}x",
            "<= 1.2x",
            ratio <= 1.2,
        )
    for label, values in memory.items():
        res.target(
            f"11d. resident memory per process at {FACES // 1000}k faces, {label.replace('`', '')}",
            ", ".join(f"{v:.0f} MiB" for v in values),
            "-",
            None,
        )


def _index_report(server: Server) -> str | None:
    """What the server's index admin endpoint says about space 1 (loads and catch-ups), where it has one."""
    answer = server.http.get("/emulator/clients/default/spaces/1/index")
    if answer.status_code != 200:
        return None
    doc = answer.json()
    shown = {k: v for k, v in doc.items() if k in ("faces", "generation", "loads", "catch_ups")}
    return ", ".join(f"{k} {v}" for k, v in shown.items()) or None


# --- 11b: catch-up cost per write, by space size ------------------------------------------------------------------


def _catch_up(res: Results, cluster: PostgresCluster) -> None:
    photo, enrol = fixture(PHOTO), fixture(ENROL)
    costs: dict[int, tuple[float, float, float]] = {}
    for size in SIZES:
        settings = {**SETTINGS, "database_url": postgres_database(cluster, size)}
        with started([Server(settings).start(180), Server(settings).start(180)]) as (writer, reader):
            warm(writer, photo, 1)
            warm(reader, photo, 1)
            quiet: list[float] = []
            after: list[float] = []
            for _ in range(CATCH_UP_ROUNDS):
                quiet.append(timed(lambda: recognize(reader.http, photo)))
                set_new_person(writer.http, enrol)
                after.append(timed(lambda: recognize(reader.http, photo)))
        q, a = statistics.median(quiet), statistics.median(after)
        costs[size] = (q, a, a - q)
    res.add("### What a write costs the other process, by space size")
    res.add()
    res.add(
        f"2 PostgreSQL replicas; {CATCH_UP_ROUNDS} rounds of: a `recognize` on the second (nothing changed since its "
        "last request), a `set` on the first, a `recognize` on the second (which must first take in that write). "
        "`cost`: the difference of the medians, what one write costs the other replica's next request."
    )
    res.add()
    res.add("| faces | recognize, no write before | recognize after a write | cost per write |")
    res.add("| ---: | ---: | ---: | ---: |")
    for size, (q, a, cost) in costs.items():
        res.add(f"| {size:,} | {ms(q)} | {ms(a)} | {cost * 1000:+.1f} ms |")
    res.add()
    res.target(
        "11b. catch-up cost per write, 1k / 10k / 75k faces",
        " / ".join(f"{costs[s][2] * 1000:+.0f} ms" for s in SIZES),
        "flat",
        None,
    )


# --- 11c: throughput, half set and half recognize -------------------------------------------------------------------


def _mixed(servers: Sequence[Server], seconds: float, photo: bytes, enrol: bytes) -> tuple[int, int, int, float]:
    """8 clients for ``seconds``, even-numbered ones recognizing, odd ones setting, spread over ``servers``."""
    done = {"set": 0, "recognize": 0, "errors": 0}
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(number: int) -> None:
        kind = "set" if number % 2 else "recognize"
        with httpx.Client(base_url=servers[(number // 2) % len(servers)].url, timeout=60) as http:
            while time.perf_counter() < stop_at:
                try:
                    set_new_person(http, enrol) if kind == "set" else recognize(http, photo)
                except Exception:  # noqa: BLE001 - counted, reported
                    with lock:
                        done["errors"] += 1
                    continue
                with lock:
                    done[kind] += 1

    wall = in_threads(client, 8, seconds + 120)
    return done["set"], done["recognize"], done["errors"], wall


def _throughput(res: Results, cluster: PostgresCluster, seconds: float) -> None:
    photo, enrol = fixture(PHOTO), fixture(ENROL)
    settings = {**SETTINGS, "database_url": postgres_database(cluster, FACES)}
    windows: dict[str, list[tuple[int, int, int, float]]] = {"1 replica": [], "2 replicas": []}
    with started([Server(settings).start(180), Server(settings).start(180)]) as (first, second):
        warm(first, photo, 1)
        warm(second, photo, 1)
        setups = {"1 replica": [first], "2 replicas": [first, second]}
        for label in ("1 replica", "2 replicas", "2 replicas", "1 replica"):
            windows[label].append(_mixed(setups[label], seconds / 2, photo, enrol))
    res.add("### Throughput, half set and half recognize")
    res.add()
    res.add(
        f"8 concurrent loopback clients on a {FACES:,}-face space in PostgreSQL, 4 storing new persons and 4 "
        f"recognizing, twice {seconds / 2:.0f} s per setup in the order 1, 2, 2, 1 replicas (the 1-replica setup "
        "is the first replica alone; the space grows by the sets)."
    )
    res.add()
    res.add("| setup | req/s | set/s | recognize/s | errors |")
    res.add("| --- | ---: | ---: | ---: | ---: |")
    rates = {}
    for label, runs in windows.items():
        wall = sum(w[3] for w in runs)
        sets, recs, errs = sum(w[0] for w in runs), sum(w[1] for w in runs), sum(w[2] for w in runs)
        rates[label] = (sets + recs) / wall
        res.add(f"| {label} | {rates[label]:.1f} | {sets / wall:.1f} | {recs / wall:.1f} | {errs} |")
    res.add()
    gain = rates["2 replicas"] / rates["1 replica"]
    res.target(f"11c. mixed req/s at {FACES // 1000}k faces, 2 replicas / 1 replica", f"{gain:.2f}x", "-", None)
