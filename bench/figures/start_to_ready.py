"""Figure 6: process start to ready, from spawning ``python -m emulator serve`` to ``GET /emulator/ready`` = 200,
over every single-process server the run started; and the CPU time the process used until then."""

from __future__ import annotations

import statistics

from bench.figures import Run
from bench.report import Results
from bench.server import running

NAME = "ready"


def measure(res: Results, run: Run) -> None:
    """Every single-process server started before this figure is a sample (but the one pinned to one core), and one
    more started here."""
    with running({}, started=run.started):
        pass
    walls = [server.ready_seconds for server in run.started if server.ready_seconds is not None]
    cpus = [server.ready_cpu_seconds for server in run.started]
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
