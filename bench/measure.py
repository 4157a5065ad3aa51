"""What every figure measures with: the fixture photos, timing, percentiles, and CPU accounting (Linux ``/proc``)."""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from emulator.launcher import process_tree

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
PHOTO = "people/obama/obama-720p.jpg"  # the single-face 1280x720 photo
ENROL = "people/obama/obama.jpg"  # the photo `set` stores for person 1
CORES = os.cpu_count() or 1


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


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


# --- statistics ----------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --- timing --------------------------------------------------------------------------------------------------


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


def in_threads(work: Callable[[int], Any], n: int, timeout: float) -> float:
    """``work(0)`` .. ``work(n - 1)`` at once, one thread each; the wall seconds until all returned (each thread
    waited for at most ``timeout`` s)."""
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(number,)) for number in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return time.perf_counter() - started


# --- CPU accounting ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and all its live descendants (Linux /proc)."""
    return sum(s for s in map(cpu_seconds, process_tree(root)) if not math.isnan(s))  # NaN: exited meanwhile


def cpu_jiffies() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all cores so far (Linux /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values[:8])


def idle_since(before: tuple[int, int]) -> float:
    """Share of all cores idle since ``before`` (from :func:`cpu_jiffies`)."""
    idle, total = cpu_jiffies()
    return (idle - before[0]) / max(1, total - before[1])


def idle_fraction(seconds: float = 1.0) -> float:
    """Share of all cores idle over ``seconds`` (Linux /proc/stat); NaN elsewhere."""
    try:
        before = cpu_jiffies()
        time.sleep(seconds)
        return idle_since(before)
    except OSError:
        return float("nan")


def wait_for_quiet(max_wait: float, idle: float = 0.8) -> tuple[float, float]:
    """Wait (at most ``max_wait`` s) until the cores were ``idle`` idle for 2 s; (waited seconds, last idle share)."""
    start = time.perf_counter()
    share = idle_fraction()
    while time.perf_counter() - start < max_wait:
        share = idle_fraction()
        if share >= idle and idle_fraction() >= idle:
            break
    return time.perf_counter() - start, share


SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"


def parallelism_available(seconds: float = 0.5) -> float:
    """How much faster 2 CPU-bound processes finish 2 units of work than 1 process does, right now.

    A control for the figures that run work in parallel: on an idle 2-core machine this is ~2.0; when other sessions
    keep the cores busy (Linux shares CPU fairly between sessions, whatever the number of processes in each) it falls
    towards 1.0, and no process pool can do better than it.
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
