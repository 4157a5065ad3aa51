"""Figure 3: a many-image request (distinct bytes, cache off) on one core, on one analysis worker per core, and with
dlib's own descriptor on all cores."""

from __future__ import annotations

import os
import statistics
import time

from bench.figures import Run
from bench.measure import (
    CORES,
    cpu_jiffies,
    distinct_images,
    idle_since,
    ms,
    parallelism_available,
    tree_cpu_seconds,
    wait_for_quiet,
)
from bench.report import Results
from bench.server import enrol, recognize_meta, running

NAME = "many"


def measure(res: Results, run: Run) -> None:
    """Rounds in the order 1, all, all, 1 cores, so that both see the same changes of machine load; then the same
    request with dlib's own descriptor (what the emulator ran before its numpy descriptor), on all cores."""
    n, quiet_wait = run.images, run.quiet_wait
    images = distinct_images(n)
    files = [(f"i{i}", data) for i, data in enumerate(images)]
    meta = recognize_meta(n)
    walls: dict[str, list[float]] = {"1": [], "all": [], "dlib": []}
    cores_used: dict[str, list[float]] = {key: [] for key in walls}
    machine_idle: dict[str, list[float]] = {key: [] for key in walls}
    cache_off = {"cache_size": 0}
    one_core = frozenset(sorted(os.sched_getaffinity(0))[:1])  # one core for the server and all it runs
    with (
        running({**cache_off, "analyze_workers": 1}, cpus=one_core) as one,  # pinned: not a sample of figure 6
        running({**cache_off, "analyze_workers": CORES}, started=run.started) as many,
        running({**cache_off, "analyze_workers": CORES, "embedder": "dlib"}) as before,
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
            assert server.process is not None
            cpu_before = tree_cpu_seconds(server.process.pid)
            jiffies = cpu_jiffies()
            start = time.perf_counter()
            body = server.call("recognize", meta, files)
            wall = time.perf_counter() - start
            machine_idle[key].append(idle_since(jiffies))
            walls[key].append(wall)
            cores_used[key].append((tree_cpu_seconds(server.process.pid) - cpu_before) / wall)
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
