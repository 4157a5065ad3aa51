"""The emulator's benchmark: every figure measured side by side in one run, written to bench/RESULTS.md.

Run ``make bench`` (or ``python bench/run.py``) from the repository root. Servers are started as subprocesses
(``python -m emulator serve``) on free loopback ports with temporary data directories, and stopped at the end;
every loop is bounded. The baseline is face_recognition's default pipeline, called in-process on dlib directly
exactly as face_recognition's api.py does: Pillow decode, HOG with upsample 1 on the full image, the 5-point
landmarks, ``compute_face_descriptor(image, shape, num_jitters=1)``.

Figures (medians unless said otherwise; ratios are ours / baseline):
  1. recognize latency over HTTP of a single-face 1280x720 photo, cache off ("cold") and on ("repeat"),
     vs the baseline in-process;
  2. faces found on every fixture photo, ours vs baseline;
  3. a 100-image request (distinct bytes): wall time with 1 analysis worker vs one per core;
  4. the same photo again (cache on): latency;
  5. matching alone vs 1k, 10k, 75k embeddings in a space: time per query and memory;
  6. process start to ready;
  7. sustained requests per second, 2 server worker processes, 8 concurrent loopback clients;
  8. the face descriptor per face on the same chips: dlib's ``compute_face_descriptor`` vs the onnx and numpy
     embedders, one face at a time and in a batch of 8.
  9. detection alone on a small 5-face group photo: ours (one thread per core, and one thread) vs
     face_recognition's HOG at upsample 1, side by side in-process.
 10. SQLite vs PostgreSQL (``SMARTY_DATABASE_URL``): latency of recognize and set, the store's write rate, loading
     a 75,000-embedding space, sustained req/s of 2 replicas on one database vs 2 workers on SQLite.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlib  # noqa: E402

from bench.compare_detection import Baseline, compare, fixture_photos  # noqa: E402
from emulator.face.decode import decode_image  # noqa: E402
from emulator.face.embedder import DEFAULT_EMBEDDER, DlibEmbedder, NumpyEmbedder, OnnxEmbedder  # noqa: E402
from emulator.face.engine import DlibEngine  # noqa: E402
from emulator.persons.index import SpaceIndex  # noqa: E402

FIXTURES = ROOT / "fixtures"
PHOTO = "people/obama/obama-720p.jpg"  # the single-face 1280x720 photo
GROUP_PHOTO = "derived/t1_crop_700x394.jpg"  # a small group photo: 700x394, 5 faces
ENROL = "people/obama/obama.jpg"
CORES = os.cpu_count() or 1
TOKEN = "bench-token"
SOAK_SECTION = re.compile(r"<!-- soak:start -->.*?<!-- soak:end -->", re.DOTALL)


# --- statistics ----------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- servers -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """``python -m emulator serve`` in a subprocess, on a free loopback port, with a temporary data dir."""

    env: dict[str, str]
    workers: int = 1
    cpus: frozenset[int] | None = None  # pin the server and every process it starts to these cores
    port: int = field(default_factory=free_port)
    ready_seconds: float = float("nan")
    ready_cpu_seconds: float = float("nan")  # CPU time the server process used until ready (load-independent)

    def __post_init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="bench-data-"))
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=120)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        env = {**os.environ, **self.env, "SMARTY_LOG_LEVEL": "warning"}
        command = [sys.executable, "-m", "emulator", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--workers", str(self.workers)]
        started = time.perf_counter()
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin
        )
        deadline = started + timeout
        consecutive = 0
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                ok = self.http.get("/emulator/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and consecutive == 0:
                self.ready_seconds = time.perf_counter() - started
                self.ready_cpu_seconds = cpu_seconds(self.proc.pid)
            consecutive = consecutive + 1 if ok else 0
            if consecutive >= 4 * self.workers:  # with several processes, every one should answer ready
                return self
            time.sleep(0.01 if not ok else 0.002)
        self.stop()
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def call(self, method: str, meta: dict[str, Any], files: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
        return call(self.http, method, meta, files)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def call(client: httpx.Client, method: str, meta: dict[str, Any], files: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    import json

    parts: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
        (name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files
    ]
    parts.append(("meta", (None, json.dumps(meta), "text/plain")))
    response = client.post(
        f"/api/v1/persons/{method}", params={"oauth_token": TOKEN, "oauth_provider": "mcs"}, files=parts
    )
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    if payload.get("status") != 200:
        raise RuntimeError(f"{method} failed: {payload}")
    body: dict[str, Any] = payload["body"]
    return body


@contextmanager
def running(
    env: dict[str, str], workers: int = 1, ready: list[Server] | None = None, cpus: frozenset[int] | None = None
) -> Iterator[Server]:
    server = Server(env, workers, cpus).start()
    if ready is not None and workers == 1:
        ready.append(server)
    try:
        yield server
    finally:
        server.stop()


def recognize_meta(n: int, space: str = "1") -> dict[str, Any]:
    return {
        "space": space,
        "images": [{"name": f"i{i}"} for i in range(n)],
        "create_new": False,
        "update_embedding": False,
    }


def enrol(server: Server) -> None:
    server.call("set", {"space": "1", "images": [{"name": "a", "person_id": 1}]}, [("a", fixture(ENROL))])


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_calls(fn: Callable[[], Any], n: int) -> list[float]:
    return [timed(fn) for _ in range(n)]


def interleaved(ways: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """``rounds`` rounds, each calling every way once in the order given, so that all see the same machine load:
    the seconds of each call, by way."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            times[name].append(timed(fn))
    return times


# --- the baseline: face_recognition's defaults ---------------------------------------------------------------


class FaceRecognitionDefaults:
    """face_recognition.load_image_file + face_encodings(img) (which calls face_locations with upsample 1)."""

    def __init__(self) -> None:
        self.base = Baseline()

    def __call__(self, data: bytes) -> int:
        img = np.array(Image.open(io.BytesIO(data)).convert("RGB"))  # load_image_file(mode="RGB")
        rects = self.base.detector(img, 1)  # _raw_face_locations(img, number_of_times_to_upsample=1, "hog")
        for rect in rects:
            shape = self.base.predictor(img, rect)  # pose_predictor_5_point
            np.array(self.base.encoder.compute_face_descriptor(img, shape, 1))
        return len(rects)


# --- the figures ---------------------------------------------------------------------------------------------


@dataclass
class Results:
    lines: list[str] = field(default_factory=list)
    headline: list[tuple[str, str, str, str]] = field(default_factory=list)  # figure, value, target, verdict

    def add(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)

    def target(self, figure: str, value: str, target: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else ("met" if met else "**missed**")
        self.headline.append((figure, value, target, verdict))


def bench_latency(res: Results, ready: list[Server], runs: int) -> float:
    """Figures 1 and 4. Returns the baseline's median seconds."""
    photo = fixture(PHOTO)
    baseline = FaceRecognitionDefaults()
    baseline(photo)
    meta = recognize_meta(1)
    with running({"SMARTY_CACHE_SIZE": "0", "SMARTY_ANALYZE_WORKERS": "1"}, ready=ready) as server:
        enrol(server)
        body = server.call("recognize", meta, [("i0", photo)])
        assert body["objects"][0]["persons"][0]["tag"] == "person1", body
        times = interleaved(
            {"cold": lambda: server.call("recognize", meta, [("i0", photo)]), "baseline": lambda: baseline(photo)}, runs
        )
    cold, base = times["cold"], times["baseline"]
    with running({"SMARTY_ANALYZE_WORKERS": "1"}, ready=ready) as server:
        enrol(server)
        server.call("recognize", meta, [("i0", photo)])  # first sight: analysed and cached
        repeat = timed_calls(lambda: server.call("recognize", meta, [("i0", photo)]), runs * 2)
    b50, c50, r50 = statistics.median(base), statistics.median(cold), statistics.median(repeat)
    res.add("## 1. Recognize latency, single-face 1280x720 photo (`fixtures/" + PHOTO + "`)")
    res.add()
    res.add(f"{runs} requests each, interleaved with the baseline. Ours is over HTTP (multipart upload, JSON).")
    res.add()
    res.add("| pipeline | p50 | p95 | ratio p50 (ours / baseline) |")
    res.add("| --- | ---: | ---: | ---: |")
    res.add(f"| baseline: face_recognition defaults, in-process | {ms(b50)} | {ms(pct(base, 95))} | 1 |")
    res.add(f"| ours over HTTP, cache off (cold) | {ms(c50)} | {ms(pct(cold, 95))} | {c50 / b50:.3f} |")
    res.add(f"| ours over HTTP, same photo again (cache on) | {ms(r50)} | {ms(pct(repeat, 95))} | {r50 / b50:.4f} |")
    res.add()
    ratio = c50 / b50
    res.target("1. single-face 1280x720 recognize, p50 ours/baseline (cold)", f"{ratio:.3f}", "<= 0.12", ratio <= 0.12)
    res.target("4. same photo again, p50", ms(r50), "<= 5 ms", r50 <= 0.005)
    return b50


def bench_gil(res: Results) -> None:
    """Why worker processes: which dlib steps let other Python threads run, and whether batching helps."""
    base = Baseline()
    rgb = decode_image(fixture(PHOTO), max_width=3840, max_height=2160)
    rect = base.detector(rgb, 1)[0]
    shape = base.predictor(rgb, rect)
    chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
    small = np.ascontiguousarray(rgb[::2, ::2])

    def spin_rate(work: Callable[[], Any], rounds: int) -> float:
        """Iterations per second of a pure-Python loop in another thread while ``work`` runs ``rounds`` times."""
        counter = [0]
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                counter[0] += 1

        thread = threading.Thread(target=spin)
        thread.start()
        time.sleep(0.02)
        before, start = counter[0], time.perf_counter()
        for _ in range(rounds):
            work()
        rate = (counter[0] - before) / (time.perf_counter() - start)
        stop.set()
        thread.join()
        return rate

    idle = spin_rate(lambda: time.sleep(0.05), 4)
    detect = spin_rate(lambda: base.detector(small, 0), 4)
    describe = spin_rate(lambda: base.encoder.compute_face_descriptor(chip, 1), 4)
    fast = NumpyEmbedder()
    fast.load()
    describe_fast = spin_rate(lambda: fast.descriptors([np.asarray(chip)] * 8), 4)
    one = statistics.median(timed_calls(lambda: base.encoder.compute_face_descriptor(chip, 1), 5))
    batch = statistics.median(timed_calls(lambda: base.encoder.compute_face_descriptor([chip] * 4, 1), 3)) / 4
    # The same images three ways, in the order s, t, p, p, t, s: one by one, 2 threads, 2 processes.
    from concurrent.futures import ThreadPoolExecutor

    from emulator.face.pool import AnalyzePool

    images = distinct_images(16)
    engine = DlibEngine()
    engine.warm_up()
    pool = AnalyzePool(2, engine.options())
    pool.start()
    threads = ThreadPoolExecutor(2)
    ways: dict[str, Callable[[], Any]] = {
        "one by one": lambda: [engine.analyze(data) for data in images],
        "2 threads": lambda: list(threads.map(engine.analyze, images)),
        "2 processes": lambda: pool.analyze(images),
    }
    spent: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for name in ["one by one", "2 threads", "2 processes", "2 processes", "2 threads", "one by one"]:
            spent[name].extend(timed_calls(ways[name], 1))
    finally:
        threads.shutdown()
        pool.close()
    seq = sum(spent["one by one"])
    res.add("## Why processes, not threads")
    res.add()
    res.add(
        "A pure-Python loop in a second thread, while the main thread runs a step, keeps this share of its "
        f"speed: during HOG detection {detect / idle:.0%}, during dlib's `compute_face_descriptor` "
        f"{describe / idle:.0%}, during the default (numpy) embedder's batch of 8 {describe_fast / idle:.0%}. dlib "
        "releases the GIL while it detects but not while it computes a descriptor; landmarks and chips hold it too, "
        "so the images of one request are spread over worker processes, not threads. dlib gains nothing from "
        f"batches: one descriptor {ms(one)}; per face in a batch of 4, {ms(batch)} (ratio {batch / one:.2f}); the "
        "onnx and numpy embedders do (figure 8), so the faces of an image are embedded in one batch."
    )
    res.add()
    res.add(
        f"The same 16 photos analysed in-process, twice each way: one by one {seq / 2:.2f} s; 2 threads "
        f"{sum(spent['2 threads']) / 2:.2f} s ({seq / sum(spent['2 threads']):.2f}x); 2 processes "
        f"{sum(spent['2 processes']) / 2:.2f} s ({seq / sum(spent['2 processes']):.2f}x). A pure CPU loop ran "
        f"{parallelism_available():.2f}x faster in 2 processes than in 1 right after (2.0 on idle cores)."
    )
    res.add()


def bench_fixtures(res: Results) -> None:
    """Figure 2."""
    engine = DlibEngine(max_width=4000, max_height=4000)  # some fixtures are larger than the 4K default limit
    engine.warm_up()
    baseline = Baseline()
    photos = [file for file, _ in fixture_photos()]
    res.add("## 2. Faces found on every fixture photo, ours vs baseline")
    res.add()
    res.add("Baseline: HOG upsample 1 on the full image. `pass`: the scan that answered (copy scale / upsample).")
    res.add("`min IoU`: worst box overlap of matched faces; `min cos`: worst cosine between matched embeddings.")
    res.add()
    res.add("| fixture | size | baseline | ours | same | pass | min IoU | min cos | baseline ms | ours ms |")
    res.add("| --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    different = []
    worst_cos = 1.0
    t_base: list[float] = []
    t_ours: list[float] = []
    for file in photos:
        c = compare(engine, baseline, file)
        if not c.same:
            different.append(c.file)
        worst_cos = min([worst_cos, *c.cosines])
        t_base.append(c.baseline_s)
        t_ours.append(c.ours_s)
        res.add(
            f"| {c.file} | {c.width}x{c.height} | {c.baseline_faces} | {c.our_faces} | {'yes' if c.same else '**no**'} "
            f"| {c.scale:.2f}/u{c.upsample} | {c.min_iou:.3f} | {c.min_cos:.4f} | {c.baseline_s * 1000:.0f} "
            f"| {c.ours_s * 1000:.0f} |"
        )
    res.add()
    res.add(
        f"{len(photos)} photos; faces differ on {len(different)}{': ' + ', '.join(different) if different else ''}. "
        f"Median time per photo: baseline {ms(statistics.median(t_base))}, ours {ms(statistics.median(t_ours))} "
        f"(ratio {statistics.median(t_ours) / statistics.median(t_base):.2f}); worst embedding cosine {worst_cos:.4f}."
    )
    res.add()
    same_count = f"{len(photos) - len(different)}/{len(photos)}"
    res.target("2. same faces as the baseline on every fixture", same_count, "all", not different)


def distinct_images(n: int) -> list[bytes]:
    """``n`` different JPEGs (fixtures with faces, re-encoded at varying quality; long side at most 1280)."""
    rows = [r for r in csv.DictReader((FIXTURES / "MANIFEST.csv").open()) if r["kind"] in ("single", "group")]
    sources = []
    for row in rows:
        img = Image.open(FIXTURES / row["file"]).convert("RGB")
        img.thumbnail((1280, 1280))
        sources.append(img)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        sources[i % len(sources)].save(buf, "JPEG", quality=95 - (i // len(sources)) * 3)
        out.append(buf.getvalue())
    assert len(set(out)) == n
    return out


SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"


def parallelism_available(seconds: float = 0.5) -> float:
    """How much faster 2 CPU-bound processes finish 2 units of work than 1 process does, right now.

    A control for figure 3: on an idle 2-core machine this is ~2.0; when other sessions keep the cores busy (Linux
    shares CPU fairly between sessions, whatever the number of processes in each) it falls towards 1.0, and no
    process pool can do better than it.
    """
    code = SPIN.format(seconds=seconds)

    def wall(processes: int, rounds: int) -> float:
        start = time.perf_counter()
        for _ in range(rounds):
            procs = [subprocess.Popen([sys.executable, "-S", "-c", code]) for _ in range(processes)]
            for proc in procs:
                proc.wait(timeout=120)
        return time.perf_counter() - start

    return wall(1, 2) / wall(2, 1)


def idle_fraction(seconds: float = 1.0) -> float:
    """Share of all cores idle over ``seconds`` (Linux /proc/stat); NaN elsewhere."""

    try:
        before = cpu_jiffies()
        time.sleep(seconds)
        return idle_since(before)
    except OSError:
        return float("nan")


def cpu_jiffies() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all cores so far (Linux /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values[:8])


def idle_since(before: tuple[int, int]) -> float:
    """Share of all cores idle since ``before`` (from :func:`cpu_jiffies`)."""
    idle, total = cpu_jiffies()
    return (idle - before[0]) / max(1, total - before[1])


def wait_for_quiet(max_wait: float, idle: float = 0.8) -> tuple[float, float]:
    """Wait (at most ``max_wait`` s) until the cores were ``idle`` idle for 2 s; (waited seconds, last idle share)."""
    start = time.perf_counter()
    share = idle_fraction()
    while time.perf_counter() - start < max_wait:
        share = idle_fraction()
        if share >= idle and idle_fraction() >= idle:
            break
    return time.perf_counter() - start, share


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and all its live descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def bench_group_detect(res: Results, ready: list[Server], runs: int) -> None:
    """Figure 9: a small group photo, recognized over HTTP, interleaved with face_recognition's default pipeline;
    then detection alone, interleaved with face_recognition's HOG (upsample 1)."""
    photo = fixture(GROUP_PHOTO)
    pipeline = FaceRecognitionDefaults()
    meta = recognize_meta(1)
    with running({"SMARTY_CACHE_SIZE": "0", "SMARTY_ANALYZE_WORKERS": "1"}, ready=ready) as server:
        persons = server.call("recognize", meta, [("i0", photo)])["objects"][0].get("persons", [])
        faces_http = len(persons)
        faces_pipeline = pipeline(photo)
        pair = interleaved(
            {"http": lambda: server.call("recognize", meta, [("i0", photo)]), "pipeline": lambda: pipeline(photo)}, runs
        )
    over_http, in_process = pair["http"], pair["pipeline"]
    h50, f50 = statistics.median(over_http), statistics.median(in_process)

    rgb = decode_image(fixture(GROUP_PHOTO), max_width=3840, max_height=2160)
    detector = dlib.get_frontal_face_detector()
    engines = {"ours": DlibEngine(), "ours, 1 thread": DlibEngine(detect_threads=1)}
    for engine in engines.values():
        engine.warm_up()
    expected = len(detector(rgb, 1))
    found = {name: len(engine.detect(rgb)[0]) for name, engine in engines.items()}
    ways: dict[str, Callable[[], Any]] = {
        # face_recognition.face_locations(img): _raw_face_locations(img, 1, "hog")
        "baseline": lambda: detector(rgb, 1),
        **{name: functools.partial(engine.detect, rgb) for name, engine in engines.items()},
    }
    control_before = parallelism_available()
    times = interleaved(ways, runs)
    control_after = parallelism_available()
    b50 = statistics.median(times["baseline"])
    height, width = rgb.shape[:2]
    res.add(f"## 9. A small group photo (`fixtures/{GROUP_PHOTO}`, {width}x{height}, {expected} faces)")
    res.add()
    res.add(
        f"Recognize over HTTP (cache off; {faces_http} faces reported) against face_recognition's default pipeline "
        f"in-process ({faces_pipeline} faces: HOG upsample 1, then landmarks and dlib's descriptor per face), "
        f"{runs} requests each, interleaved: p50 {ms(h50)} vs {ms(f50)}, **{h50 / f50:.3f}** "
        f"(p95 {ms(pct(over_http, 95))} vs {ms(pct(in_process, 95))})."
    )
    res.add()
    res.add(
        f"Detection alone (decoded image in, boxes out), {runs} runs each, interleaved. Baseline: face_recognition's "
        "`face_locations(img)`, dlib's HOG with upsample 1 on the full image. Ours: the engine's `detect` with one "
        f"thread per core ({engines['ours'].scan_threads()} here), and with one thread."
    )
    res.add()
    res.add("| detection | faces | p50 | p95 | ratio p50 (ours / baseline) |")
    res.add("| --- | ---: | ---: | ---: | ---: |")
    b95 = pct(times["baseline"], 95)
    res.add(f"| baseline: face_recognition HOG, upsample 1 | {expected} | {ms(b50)} | {ms(b95)} | 1 |")
    for name in engines:
        p50 = statistics.median(times[name])
        res.add(f"| {name} | {found[name]} | {ms(p50)} | {ms(pct(times[name], 95))} | {p50 / b50:.3f} |")
    res.add()
    res.add(
        f"Control: a pure CPU loop ran {control_before:.2f}x faster in 2 processes than in 1 just before these runs "
        f"and {control_after:.2f}x just after (2.0 on an idle 2-core machine): the most two threads could gain."
    )
    res.add()
    ratio = statistics.median(times["ours"]) / b50
    same = all(count == expected for count in found.values())
    value = f"{ratio:.3f}, {'same' if same else '**different**'} faces"
    figure = "9. group photo (5 faces) detect, p50 ours/face_recognition HOG"
    res.target(figure, value, "< 1, same faces", ratio < 1 and same)
    http_ok = h50 / f50 <= 0.3 and faces_http == faces_pipeline == expected
    figure = "9b. group photo (5 faces) recognize over HTTP, p50 ours/face_recognition"
    res.target(figure, f"{h50 / f50:.3f}", "<= 0.3", http_ok)


def bench_many(res: Results, ready: list[Server], n: int, quiet_wait: float) -> None:
    """Figure 3: rounds in the order 1, all, all, 1 cores, so that both see the same changes of machine load; then
    the same request with dlib's own descriptor (what the emulator ran before its numpy descriptor), on all cores."""
    images = distinct_images(n)
    files = [(f"i{i}", data) for i, data in enumerate(images)]
    meta = recognize_meta(n)
    walls: dict[str, list[float]] = {"1": [], "all": [], "dlib": []}
    cores_used: dict[str, list[float]] = {key: [] for key in walls}
    machine_idle: dict[str, list[float]] = {key: [] for key in walls}
    env = {"SMARTY_CACHE_SIZE": "0"}
    one_core = frozenset(sorted(os.sched_getaffinity(0))[:1])  # one core for the server and all it runs
    with (
        running({**env, "SMARTY_ANALYZE_WORKERS": "1"}, cpus=one_core) as one,  # pinned: not a sample of figure 6
        running({**env, "SMARTY_ANALYZE_WORKERS": str(CORES)}, ready=ready) as many,
        running({**env, "SMARTY_ANALYZE_WORKERS": str(CORES), "SMARTY_EMBEDDER": "dlib"}) as before,
    ):
        servers = {"1": one, "all": many, "dlib": before}
        for server in servers.values():
            enrol(server)
        start = time.perf_counter()  # the pool starts on the first many-image request: time that apart
        many.call("recognize", recognize_meta(2), files[:2])
        pool_start = time.perf_counter() - start
        before.call("recognize", recognize_meta(2), files[:2])
        waited, idle = wait_for_quiet(quiet_wait)  # a speed-up needs free cores: wait a bounded time for them
        controls = [parallelism_available()]
        for key in ("1", "all", "dlib", "dlib", "all", "1"):
            server = servers[key]
            assert server.proc is not None
            cpu_before = tree_cpu_seconds(server.proc.pid)
            jiffies = cpu_jiffies()
            start = time.perf_counter()
            body = server.call("recognize", meta, files)
            wall = time.perf_counter() - start
            machine_idle[key].append(idle_since(jiffies))
            walls[key].append(wall)
            cores_used[key].append((tree_cpu_seconds(server.proc.pid) - cpu_before) / wall)
            assert len(body["objects"]) == n
    controls.append(parallelism_available())
    speedup = sum(walls["1"]) / sum(walls["all"])
    faster = sum(walls["dlib"]) / sum(walls["all"])
    res.add(f"## 3. A {n}-image request (distinct bytes, cache off)")
    res.add()
    res.add(
        "Two rounds each, in the order 1 core, all cores, dlib's descriptor, and back. `1 core`: the server pinned to "
        "one core (one analysis worker, detection on one thread); `all cores`: one analysis worker process per "
        "core; `dlib's descriptor`: the same on all cores with `SMARTY_EMBEDDER=dlib`, dlib's own "
        "`compute_face_descriptor`, as the emulator computed descriptors before. `cores used`: CPU seconds of the "
        "server and its worker processes during the request, divided by its wall time. `machine idle`: share of all "
        "cores idle during the request (0% with one core left unused by the emulator means other work took it)."
    )
    res.add()
    res.add("| configuration | wall time (each round) | per image | cores used | machine idle |")
    res.add("| --- | ---: | ---: | ---: | ---: |")
    names = {"1": "1 core", "all": f"all cores ({CORES})", "dlib": f"dlib's descriptor, all cores ({CORES})"}
    for key, name in names.items():
        rounds = ", ".join(f"{wall:.2f} s" for wall in walls[key])
        used = ", ".join(f"{c:.2f}" for c in cores_used[key])
        idle_shares = ", ".join(f"{share:.0%}" for share in machine_idle[key])
        res.add(f"| {name} | {rounds} | {ms(statistics.mean(walls[key]) / n)} | {used} | {idle_shares} |")
    res.add()
    res.add(
        f"Speed-up with {CORES} cores: **{speedup:.2f}x**. Against dlib's own descriptor on the same cores: "
        f"**{faster:.2f}x** faster. The worker processes start on the first many-image request; that first "
        f"(2-image) request took {pool_start:.2f} s, and is not included above."
    )
    res.add()
    res.add(
        f"Control: a pure CPU loop ran {controls[0]:.2f}x faster in 2 processes than in 1 just before these "
        f"requests, and {controls[1]:.2f}x just after (2.0 on an idle 2-core machine): the most any process pool "
        f"could gain at that moment. Before the rounds the run waited {waited:.0f} s (at most {quiet_wait:.0f} s) "
        f"for idle cores; the cores were {idle:.0%} idle when it went on. Linux shares the CPU fairly between "
        "sessions (autogroup), so while another session keeps a core busy, a single run gets about one core, "
        "however many processes it has."
    )
    res.add()
    res.target(f"3. {n}-image request, speed-up 1 -> {CORES} cores", f"{speedup:.2f}x", ">= 1.7x", speedup >= 1.7)
    res.target(f"3b. {n}-image request, wall time dlib's descriptor / ours", f"{faster:.2f}x", ">= 3x", faster >= 3)


def bench_descriptor(res: Results, rounds: int) -> None:
    """Figure 8: descriptor time per face on the same 8 chips, in rounds that interleave every way of computing it."""
    from threadpoolctl import threadpool_info

    engine = DlibEngine()
    chips: list[np.ndarray] = []
    for photo in ("groups/multiface.jpg", "groups/two_people.jpg", "people/obama/obama-720p.jpg"):
        chips += engine.face_chips(decode_image(fixture(photo), max_width=3840, max_height=2160))
    chips = chips[:8]
    assert len(chips) == 8
    reference = DlibEmbedder()
    fast = {"numpy": NumpyEmbedder(), "onnx": OnnxEmbedder()}
    for embedder in (reference, *fast.values()):
        embedder.load()
        embedder.descriptors(chips[:2])
    ways: dict[str, tuple[Callable[[], Any], int]] = {"dlib": (lambda: reference.descriptors(chips[:4]), 4)}
    for name, embedder in fast.items():
        ways[f"{name} one"] = (lambda e=embedder: [e.descriptors([chip]) for chip in chips], len(chips))
        ways[f"{name} batch"] = (functools.partial(embedder.descriptors, chips), len(chips))
    # every round measures every way, so all see the same machine load
    times = interleaved({key: work for key, (work, _) in ways.items()}, rounds)
    p50 = {key: statistics.median(t / faces for t in times[key]) for key, (_, faces) in ways.items()}
    expected = reference.descriptors(chips)
    res.add("## 8. Face descriptor per face (the same 8 chips)")
    res.add()
    res.add(
        f"{rounds} rounds; each times dlib's `compute_face_descriptor` (4 chips, one at a time), then each fast "
        "embedder on the 8 chips one at a time and as one batch. Medians of the per-face times; ratios to dlib. "
        "`worst cosine`, `max abs diff`: against dlib's descriptors of the same chips."
    )
    res.add()
    res.add("| embedder | one face | ratio | batch of 8, per face | ratio | worst cosine | max abs diff |")
    res.add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    res.add(f"| dlib `compute_face_descriptor` | {ms(p50['dlib'])} | 1 | | | | |")
    for name, embedder in fast.items():
        ours = embedder.descriptors(chips)
        cosine = (ours * expected).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
        one, batch = p50[f"{name} one"], p50[f"{name} batch"]
        label = f"{name}{' (default)' if name == DEFAULT_EMBEDDER else ''}"
        res.add(
            f"| {label} | {ms(one)} | {one / p50['dlib']:.3f} | {ms(batch)} "
            f"| {batch / p50['dlib']:.3f} | {cosine.min():.8f} | {np.abs(ours - expected).max():.1e} |"
        )
    res.add()
    blas = [
        f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i['num_threads']} thread)"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    tuned = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    import onnxruntime

    res.add(
        f"One thread per call for both: ONNX Runtime {onnxruntime.__version__} with one intra-op thread; numpy's BLAS: "
        f"{', '.join(blas) or 'none found'}{'; environment ' + str(tuned) if tuned else ''}. dlib {dlib.__version__} "
        f"is built {'with' if dlib.DLIB_USE_BLAS else 'without'} BLAS."
    )
    res.add()
    for name in fast:  # the targets hold for the default embedder; the optional onnx one is reported beside it
        ratio_one, ratio_batch = p50[f"{name} one"] / p50["dlib"], p50[f"{name} batch"] / p50["dlib"]
        one_ok, batch_ok = ratio_one <= 0.2, ratio_batch <= 0.1
        label = f"{name}{' (default)' if name == DEFAULT_EMBEDDER else ', optional'}"
        res.target(f"8. descriptor per face, one face, {label}/dlib", f"{ratio_one:.3f}", "<= 0.2", one_ok)
        res.target(f"8. descriptor per face, batch of 8, {label}/dlib", f"{ratio_batch:.3f}", "<= 0.1", batch_ok)


def bench_matching(res: Results) -> None:
    """Figure 5."""
    rng = np.random.default_rng(6)
    res.add("## 5. Matching alone (one face against a space)")
    res.add()
    res.add(
        "Random unit embeddings, two per person; `SpaceIndex.search` with the threshold, as recognize calls it "
        "(one float32 mat-vec, per-person max with `np.maximum.reduceat`, sort of the persons above the threshold)."
    )
    res.add()
    res.add("| embeddings | p50 per query | p95 | index memory | matrix memory |")
    res.add("| ---: | ---: | ---: | ---: | ---: |")
    p50_75k = float("nan")
    for n in (1_000, 10_000, 75_000):
        matrix = rng.standard_normal((n, 128)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        index = SpaceIndex(1, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64) // 2, matrix)
        queries = matrix[rng.integers(0, n, 20)] + rng.standard_normal((20, 128)).astype(np.float32) * 0.05
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        times = []
        for k in range(200):
            q = queries[k % len(queries)]
            start = time.perf_counter()
            index.search(q, min_score=0.93)
            times.append(time.perf_counter() - start)
        memory = index.matrix.nbytes + index.face_ids.nbytes + index.person_ids.nbytes
        memory += index.unique_person_ids.nbytes + index._starts.nbytes
        p50 = statistics.median(times)
        if n == 75_000:
            p50_75k = p50
        res.add(
            f"| {n:,} | {p50 * 1000:.2f} ms | {pct(times, 95) * 1000:.2f} ms | {memory / 2**20:.1f} MiB "
            f"| {index.matrix.nbytes / 2**20:.1f} MiB |"
        )
    res.add()
    value = f"{p50_75k * 1000:.2f} ms"
    res.target("5. matching one face against 75,000 embeddings, p50", value, "<= 5 ms", p50_75k <= 0.005)


def bench_ready(res: Results, ready: list[Server]) -> None:
    """Figure 6 (every single-process server started by this run is a sample, but the one pinned to one core)."""
    with running({}, ready=ready):
        pass
    walls = [server.ready_seconds for server in ready]
    cpus = [server.ready_cpu_seconds for server in ready]
    p50 = statistics.median(walls)
    res.add("## 6. Process start to ready")
    res.add()
    res.add(
        f"From `python -m emulator serve` being spawned to `GET /emulator/ready` answering 200 (imports, store open, "
        f"models loaded, one detection run), over the {len(walls)} single-process servers this run started (not the "
        f"one pinned to one core for figure 3): median {p50:.2f} s, max {max(walls):.2f} s. CPU time the process used "
        f"until ready (independent of other load on the machine): median {statistics.median(cpus):.2f} s."
    )
    res.add()
    res.target("6. process start to ready, median", f"{p50:.2f} s", "<= 3 s", p50 <= 3.0)


def bench_throughput(res: Results, ready: list[Server], seconds: float, baseline_p50: float) -> None:
    """Figure 7."""
    photo = fixture(PHOTO)
    meta = recognize_meta(1)
    env = {"SMARTY_CACHE_SIZE": "0"}
    with running(env, workers=2, ready=ready) as server:
        enrol(server)
        for _ in range(4):  # both processes warm
            server.call("recognize", meta, [("i0", photo)])
        window = _sustained([server], [], seconds, photo, meta)
    latencies, errors = window.latencies, window.errors
    rps = window.requests / window.wall
    res.add("## 7. Sustained throughput")
    res.add()
    res.add(
        f"`serve --workers 2`, cache off, 8 concurrent loopback clients sending the 1280x720 single-face photo for "
        f"{seconds:.0f} s: **{rps:.1f} req/s**, p50 {ms(statistics.median(latencies))}, p95 "
        f"{ms(pct(latencies, 95))}, {len(latencies)} requests, {errors} errors. The baseline pipeline on one core "
        f"would serve {1 / baseline_p50:.1f} req/s (ratio {rps * baseline_p50:.2f}x)."
    )
    res.add()
    res.target("7. sustained req/s, 2 workers, 8 clients", f"{rps:.1f} req/s (p95 {ms(pct(latencies, 95))})", "-", None)


# --- 10. SQLite vs PostgreSQL ---------------------------------------------------------------------------------


def bench_postgres(res: Results, runs: int, seconds: float) -> None:
    """Figure 10: the same requests against a SQLite server and a PostgreSQL one, side by side (a throw-away
    PostgreSQL server started here, fsync on, as PostgreSQL runs by default)."""
    from tests.support.postgres import PostgresCluster, missing_reason

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
        _pg_latency(res, cluster, runs)
        _pg_write_rate(res, cluster)
        _pg_load_space(res, cluster)
        _pg_throughput(res, cluster, seconds)
    finally:
        cluster.stop()


def _pg_latency(res: Results, cluster: Any, runs: int) -> None:
    photo, set_photo = fixture(PHOTO), fixture(ENROL)
    meta = recognize_meta(1)
    env = {"SMARTY_CACHE_SIZE": "0", "SMARTY_ANALYZE_WORKERS": "1"}
    database = cluster.create_database("bench")
    with running(env) as lite, running({**env, "SMARTY_DATABASE_URL": database}) as pg:
        servers = {"SQLite": lite, "PostgreSQL": pg}
        for server in servers.values():
            enrol(server)
            server.call("recognize", meta, [("i0", photo)])
        samples: dict[tuple[str, str], list[float]] = {}

        def one(server: Server, kind: str, run: int) -> None:
            if kind == "recognize":
                server.call("recognize", meta, [("i0", photo)])
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


def _pg_write_rate(res: Results, cluster: Any) -> None:
    """What a set costs the database, and how many writes per second one space and several spaces take."""
    from emulator.store.postgres import Database, PostgresStore
    from emulator.store.records import ClientId, SpaceKey
    from emulator.store.sqlite import SqliteStore

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


def _writes_per_second(store: Any, spaces: int, embedding: np.ndarray, thumbnail: bytes, seconds: float) -> float:
    from emulator.store.records import ClientId, SpaceKey

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

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    return done[0] / (time.perf_counter() - started)


def _pg_load_space(res: Results, cluster: Any) -> None:
    """Loading a full space (75,000 embeddings) into a replica's index: what a replica does when another one
    changed the space."""
    from emulator.store.postgres import Database, PostgresStore
    from emulator.store.records import ClientId, SpaceKey, embedding_to_blob
    from emulator.store.sqlite import SqliteStore

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


def _pg_throughput(res: Results, cluster: Any, seconds: float) -> None:
    """2 replicas (1 worker each) on one PostgreSQL vs 1 server with 2 workers on SQLite, 8 clients."""
    photo = fixture(PHOTO)
    meta = recognize_meta(1)
    env = {"SMARTY_CACHE_SIZE": "0"}
    database = cluster.create_database("throughput")
    pg_env = {**env, "SMARTY_DATABASE_URL": database}
    with running(env, workers=2) as lite, running(pg_env) as first, running(pg_env) as second:
        setups = {"SQLite, 1 server x 2 workers": [lite], "PostgreSQL, 2 replicas x 1 worker": [first, second]}
        enrol(lite)
        enrol(first)
        for server in (lite, lite, lite, lite, first, second):  # every process warm
            server.call("recognize", meta, [("i0", photo)])
        windows: dict[str, list[Window]] = {label: [] for label in setups}
        for label in [*setups, *reversed(setups)]:  # S, P, P, S: both see the same changes of machine load
            database = [cluster.pid()] if label.startswith("PostgreSQL") else []
            windows[label].append(_sustained(setups[label], database, seconds / 2, photo, meta))
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


@dataclass
class Window:
    """What one window of sustained load did."""

    requests: int
    errors: int
    wall: float
    cpu: float  # CPU seconds of the servers and of the other processes watched
    database_cpu: float  # CPU seconds of the other processes watched (the PostgreSQL server)
    latencies: list[float]


def _sustained(
    servers: Sequence[Server], database_pids: Sequence[int], seconds: float, photo: bytes, meta: dict[str, Any]
) -> Window:
    """8 clients for ``seconds``, spread over ``servers``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    roots = [server.proc.pid for server in servers if server.proc is not None]
    cpu_before = sum(tree_cpu_seconds(pid) for pid in roots)
    database_before = sum(tree_cpu_seconds(pid) for pid in database_pids)
    stop_at = time.perf_counter() + seconds

    def client(number: int) -> None:
        with httpx.Client(base_url=servers[number % len(servers)].base_url, timeout=60) as http:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    call(http, "recognize", meta, [("i0", photo)])
                except Exception:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    wall = time.perf_counter() - started
    database = sum(tree_cpu_seconds(pid) for pid in database_pids) - database_before
    cpu = sum(tree_cpu_seconds(pid) for pid in roots) - cpu_before + database
    return Window(len(latencies), errors[0], wall, cpu, database, latencies)


def replace_figure(previous: str, lines: Sequence[str], headline: Sequence[tuple[str, str, str, str]]) -> str | None:
    """``previous`` (a RESULTS.md) with one figure measured again: its section (``lines``, from its ``## N.``
    heading on) in place of the old one, or among the numbered sections where it had none, and its rows of the
    headline table (those of figure N: ``N.``, ``Na.``, ``Nb.``...) in place of the old ones. None if ``previous`` has
    no headline table to keep."""
    old = previous.splitlines()
    if "## Headline" not in old:
        return None
    number = int(lines[0].removeprefix("## ").split(".", 1)[0])
    mine = re.compile(rf"{number}[a-z]?\. ")
    first_row = old.index("## Headline") + 4  # the heading, a blank line, the table's header and its separator
    last_row = next((i for i in range(first_row, len(old)) if not old[i].startswith("| ")), len(old))
    kept = [tuple(row[2:-2].split(" | ")) for row in old[first_row:last_row]]
    rows = sorted([row for row in kept if not mine.match(row[0])] + list(headline))
    text = [*old[:first_row], *("| " + " | ".join(row) + " |" for row in rows), *old[last_row:]]

    def after(line: str) -> bool:
        """Whether ``line`` starts what comes after figure N: a higher figure, an unnumbered section, the soak's."""
        heading = re.match(r"## (\d+)\. ", line)
        return line.startswith("<!--") or (line.startswith("## ") and (heading is None or int(heading[1]) > number))

    sections = next(i for i in range(first_row, len(text)) if text[i].startswith("## "))
    start = next((i for i in range(sections, len(text)) if text[i].startswith(f"## {number}. ")), None)
    if start is None:  # no section yet: it goes where a full run puts it
        start = end = next((i for i in range(sections, len(text)) if after(text[i])), len(text))
    else:
        end = next((i for i in range(start + 1, len(text)) if text[i].startswith(("## ", "<!--"))), len(text))
    return "\n".join([*text[:start], *lines, *text[end:]]).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--runs", type=int, default=21, help="requests per latency figure")
    parser.add_argument("--images", type=int, default=100, help="images in the many-image request")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of the throughput run (max 20)")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max seconds to wait for idle cores before figure 3"
    )
    parser.add_argument(
        "--only",
        choices=("postgres",),
        help="only this figure (10: SQLite vs PostgreSQL), replaced in the existing results file",
    )
    args = parser.parse_args(argv)
    seconds = min(args.seconds, 20.0)
    load_before = os.getloadavg()
    started = time.perf_counter()
    res = Results()
    ready: list[Server] = []
    sections: list[list[str]] = []

    def section(fn: Callable[[], Any]) -> Any:
        mark = len(res.lines)
        value = fn()
        sections.append(res.lines[mark:])
        return value

    if args.only == "postgres":
        section(lambda: bench_postgres(res, args.runs, seconds))
        numbered = [sections[0]]
    else:
        section(lambda: bench_gil(res))
        baseline_p50 = section(lambda: bench_latency(res, ready, args.runs))
        section(lambda: bench_fixtures(res))
        section(lambda: bench_many(res, ready, args.images, args.quiet_wait))
        section(lambda: bench_matching(res))
        section(lambda: bench_throughput(res, ready, seconds, baseline_p50))
        section(lambda: bench_ready(res, ready))
        section(lambda: bench_descriptor(res, max(5, args.runs // 3)))
        section(lambda: bench_group_detect(res, ready, args.runs))
        section(lambda: bench_postgres(res, args.runs, seconds))
        numbered = [sections[i] for i in (1, 2, 3, 4, 6, 5, 7, 8, 9, 0)]
    total = time.perf_counter() - started
    load_after = os.getloadavg()

    given = " ".join(argv if argv is not None else sys.argv[1:])
    command = "make bench" if os.environ.get("BENCH_VIA_MAKE") else f"python bench/run.py {given}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    previous = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    if args.only:  # the figure measured again, into the file of the last full run where there is one
        [lines] = numbered
        note = (
            f"Measured again alone by `{command.strip()}` on {stamp} in {total:.0f} s; load average (1 min) before: "
            f"{load_before[0]:.2f}, after: {load_after[0]:.2f}. The other figures are from the run named at the top."
        )
        text = replace_figure(previous, [lines[0], "", note, *lines[1:]], res.headline)
        if text is not None:
            args.out.write_text(text, encoding="utf-8")
            print(f"wrote figure {lines[0].removeprefix('## ').split('.')[0]} into {args.out} in {total:.0f} s")
            return 0
    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command.strip()}` on {stamp} in {total:.0f} s.",
        f"Machine: {CORES} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"dlib {dlib.__version__}, numpy {np.__version__}. Load average (1 min) before: {load_before[0]:.2f}, "
        f"after: {load_after[0]:.2f} — figures from a machine busy with other work are noisier and slower; the "
        "side-by-side ratios are the figures to compare.",
        "",
        "## Headline",
        "",
        "| figure | measured | target | |",
        "| --- | ---: | --- | --- |",
        *[f"| {figure} | {value} | {target} | {verdict} |" for figure, value, target, verdict in sorted(res.headline)],
        "",
    ]
    for lines in numbered:
        out.extend(lines)
    # The soak section is written by `make soak` (tests/ops/test_soak.py), not by this run: keep it.
    soak = SOAK_SECTION.search(previous)
    if soak:
        out += ["", soak.group(0)]
    args.out.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
