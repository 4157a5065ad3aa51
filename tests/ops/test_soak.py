"""Soak: 10 minutes of 8 loopback clients against ``serve --workers 2``, with nothing growing.

Each client owns a space and mixes ``set`` (a new person), ``recognize`` (learning on or off), ``delete`` (one of its
persons) and ``truncate`` (its space), every upload distinct (a real photo with a different tail), so every request
is analysed for real. Every two seconds the test reads, from ``/proc`` and the data dir: the summed resident memory
of the server's processes, their open file descriptors, and the SQLite WAL file's size.

Between the second minute and the last one:

* resident memory grows by at most 5 %;
* open file descriptors stay flat (the last minute's largest count at most ``FD_SLACK`` above the second's);
* the WAL file stays under ``WAL_BOUND`` all along, and it restarts after checkpoints (new salts in its header);
* the p95 latency drifts by at most 20 %;

and no request fails, and every person whose set was acknowledged, and not deleted or truncated since, is stored.

It is marked ``soak``: not part of ``make test``. ``make soak`` runs it and writes its figures into
``bench/RESULTS.md`` (its own section, replaced on each run). ``SMARTY_SOAK_SECONDS`` shortens it (at least 180 s)
for trying it out; then nothing is written.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.report import SOAK_SECTION
from emulator.store.sqlite import DB_FILENAME, WAL_SIZE_LIMIT
from tests.support.emulator_process import ROOT, EmulatorProcess
from tests.support.emulator_server import fixture

pytestmark = pytest.mark.soak

CLIENTS = 8
SECONDS = max(180.0, float(os.environ.get("SMARTY_SOAK_SECONDS", "600")))
RESULTS = os.environ.get("SMARTY_SOAK_RESULTS")  # set by `make soak`: the file to write the figures into
SAMPLE_SECONDS = 2.0
RSS_GROWTH = 0.05
P95_DRIFT = 0.20
FD_SLACK = 8
WAL_BOUND = 2 * WAL_SIZE_LIMIT
AUTH = {"oauth_token": "soak-token", "oauth_provider": "mcs"}
PHOTOS = (  # one face each
    "people/obama/obama-240p.jpg",
    "people/anthony_hopkins/Anthony_Hopkins_0001.jpg",
    "people/angelina_jolie/aligned-160.png",
    "people/kate_siegel/aligned-160.png",
    "people/kit_harington/john2.jpeg",
    "people/ivan/ivan.jpg",
    "people/rose_leslie/img2.jpg",
    "people/alex_lacamoire/alex-lacamoire.png",
)


@dataclass
class Run:
    requests: list[tuple[float, str, float]] = field(default_factory=list)  # (seconds since start, method, latency)
    failures: list[str] = field(default_factory=list)
    stored: dict[int, set[int]] = field(default_factory=dict)  # space -> person ids acknowledged and still there
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(space: int, base_url: str, started: float, stop: threading.Event, run: Run) -> None:
    rng = random.Random(space)
    photos = {p: fixture(p) for p in PHOTOS}
    mine: list[int] = []  # persons of this client's space, acknowledged and not deleted since
    next_id = 0
    with httpx.Client(base_url=base_url, timeout=120) as http:
        while not stop.is_set():
            roll = rng.random()
            person_id = None
            if roll < 0.35 or not mine:
                method = "set"
                next_id += 1
                person_id = next_id
                meta = f'{{"space":"{space}","images":[{{"name":"f","person_id":{person_id}}}]}}'
            elif roll < 0.80:
                method = "recognize"
                learn = "true" if rng.random() < 0.5 else "false"
                meta = f'{{"space":"{space}","images":[{{"name":"f"}}],"update_embedding":{learn}}}'
            elif roll < 0.97:
                method = "delete"
                person_id = mine[rng.randrange(len(mine))]
                meta = f'{{"space":"{space}","images":[{{"name":"d","person_id":{person_id}}}]}}'
            else:
                method = "truncate"
                meta = f'{{"space":"{space}"}}'
            files: list[tuple[str, tuple[str | None, bytes | str]]] = [("meta", (None, meta))]
            if method in ("set", "recognize"):
                upload = photos[rng.choice(PHOTOS)] + f"#{space}-{next_id}-{rng.random()}".encode()  # distinct
                files.insert(0, ("f", ("f.jpg", upload)))
            begun = time.monotonic()
            try:
                response = http.post(f"/api/v1/persons/{method}", params=AUTH, files=files)
                payload = response.json()
                ok = response.status_code == 200 and payload["status"] == 200
            except (httpx.HTTPError, ValueError) as exc:
                ok, payload = False, repr(exc)
            latency = time.monotonic() - begun
            with run.lock:
                run.requests.append((begun - started, method, latency))
                if not ok:
                    run.failures.append(f"{method}: {str(payload)[:200]}")
                    continue
                if method == "set" and payload["body"]["objects"][0]["status"] == 0:
                    mine.append(person_id)  # type: ignore[arg-type]
                elif method == "delete":
                    mine.remove(person_id)  # type: ignore[arg-type]
                elif method == "truncate":
                    mine.clear()
                run.stored[space] = set(mine)


def _open_fds(server: EmulatorProcess) -> int:
    total = 0
    for pid in server.pids():
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _wal_salt(wal: Path) -> bytes:
    """The WAL header's salts: SQLite draws new ones each time the WAL starts over after a checkpoint copied it into
    the database (a WAL that never restarts only grows)."""
    try:
        with open(wal, "rb") as handle:
            header = handle.read(24)
    except FileNotFoundError:
        return b""
    return header[16:24]


def _window(samples: list[tuple[float, ...]], start: float, end: float, index: int) -> list[float]:
    return [s[index] for s in samples if start <= s[0] < end]


def test_ten_minutes_of_mixed_load_leave_nothing_growing(two_workers: EmulatorProcess) -> None:
    server = two_workers
    wal = server.data_dir / f"{DB_FILENAME}-wal"
    run = Run()
    samples: list[tuple[float, ...]] = []  # (seconds, RSS bytes, open fds, WAL bytes, load average)
    salts: list[bytes] = []
    restarts = 0  # WAL restarts seen from the 2nd minute on
    stop = threading.Event()
    started = time.monotonic()
    clients = [
        threading.Thread(target=_client, args=(space, server.base_url, started, stop, run), daemon=True)
        for space in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    try:
        while (now := time.monotonic() - started) < SECONDS:
            salt = _wal_salt(wal)
            restarts += int(bool(salts) and salt != salts[-1] and now >= 60.0)
            salts.append(salt)
            samples.append((now, server.rss_bytes(), _open_fds(server), _size(wal), os.getloadavg()[0]))
            time.sleep(SAMPLE_SECONDS)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in clients)

    second = (60.0, 120.0)
    last = (SECONDS - 60.0, SECONDS)
    rss_second, rss_last = (statistics.mean(_window(samples, *w, 1)) for w in (second, last))
    fds_second, fds_last = (max(_window(samples, *w, 2)) for w in (second, last))
    wal_max = max(s[3] for s in samples)
    load_second, load_last = (statistics.mean(_window(samples, *w, 4)) for w in (second, last))
    latencies = {w: [lat for t, _, lat in run.requests if w[0] <= t < w[1]] for w in (second, last)}
    p95_second, p95_last = (statistics.quantiles(latencies[w], n=20)[-1] for w in (second, last))
    counts = {m: sum(1 for _, method, _ in run.requests if method == m) for m in ("set", "recognize", "delete")}
    counts["truncate"] = sum(1 for _, method, _ in run.requests if method == "truncate")

    figures = [
        (
            "resident memory, all processes (mean)",
            f"{rss_second / 2**20:.1f} MiB",
            f"{rss_last / 2**20:.1f} MiB",
            f"{(rss_last / rss_second - 1) * 100:+.1f} %",
            f"<= +{RSS_GROWTH * 100:.0f} %",
            rss_last <= rss_second * (1 + RSS_GROWTH),
        ),
        (
            "open file descriptors, all processes (max)",
            f"{fds_second}",
            f"{fds_last}",
            f"{fds_last - fds_second:+d}",
            f"<= +{FD_SLACK}",
            fds_last <= fds_second + FD_SLACK,
        ),
        (
            "p95 latency",
            f"{p95_second * 1000:.0f} ms",
            f"{p95_last * 1000:.0f} ms",
            f"{(p95_last / p95_second - 1) * 100:+.1f} %",
            f"<= +{P95_DRIFT * 100:.0f} %",
            p95_last <= p95_second * (1 + P95_DRIFT),
        ),
        (
            "SQLite WAL file (max over the run)",
            "",
            f"{wal_max / 2**20:.1f} MiB",
            "",
            f"<= {WAL_BOUND / 2**20:.0f} MiB",
            wal_max <= WAL_BOUND,
        ),
        (
            "WAL restarts after a checkpoint, from the 2nd minute on (new salts in its header)",
            "",
            f"{restarts}",
            "",
            ">= 1",
            restarts >= 1,
        ),
        (
            "load average of the machine (1 min, mean; not a bound: other work slows every request)",
            f"{load_second:.2f}",
            f"{load_last:.2f}",
            "",
            "-",
            True,
        ),
    ]
    summary = (
        f"{len(run.requests)} requests in {SECONDS:.0f} s ({len(run.requests) / SECONDS:.1f} req/s; "
        + ", ".join(f"{n} {m}" for m, n in counts.items())
        + f"), {len(run.failures)} failed; p50 over the run"
        f" {statistics.median(lat for _, _, lat in run.requests) * 1000:.0f} ms"
    )
    print(f"\nsoak: {summary}")
    for figure in figures:
        print("  " + " | ".join(str(part) for part in figure))
    if RESULTS and SECONDS >= 600:
        _write_results(Path(RESULTS), figures, summary, samples)

    assert run.failures == [], run.failures[:10]
    for figure, *_, met in figures:
        assert met, (figure, figures)
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        for space, persons in sorted(run.stored.items()):
            listed = http.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"]
            missing = persons - {p["person_id"] for p in listed}
            assert not missing, f"space {space}: acknowledged, never deleted, not stored: {sorted(missing)}"


def _write_results(
    path: Path, figures: list[tuple[object, ...]], summary: str, samples: list[tuple[float, ...]]
) -> None:
    load = os.getloadavg()
    rss_per_minute = [
        round(statistics.mean(_window(samples, m * 60.0, (m + 1) * 60.0, 1)) / 2**20) for m in range(int(SECONDS // 60))
    ]
    lines = [
        "<!-- soak:start -->",
        "## Soak",
        "",
        f"Produced by `make soak` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `serve --workers 2`,"
        f" {CLIENTS} loopback clients for {SECONDS / 60:.0f} minutes, each in its own space mixing set (35 %),"
        " recognize (45 %, half of them learning), delete (17 %) and truncate (3 %) with distinct uploads"
        f" (`tests/ops/test_soak.py`). Machine: {os.cpu_count()} cores; load average (1 min) at the end:"
        f" {load[0]:.2f}.",
        "",
        f"{summary}.",
        "",
        "| figure | 2nd minute | last minute | change | bound | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        *[
            f"| {f} | {a} | {b} | {c} | {bound} | {'' if bound == '-' else 'met' if met else 'NOT met'} |"
            for f, a, b, c, bound, met in figures
        ],
        "",
        f"Resident memory per minute (MiB, mean): {rss_per_minute}.",
        "<!-- soak:end -->",
    ]
    block = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    text, replaced = SOAK_SECTION.subn(lambda _: block, text)
    if not replaced:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
    print(f"wrote the soak figures into {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
