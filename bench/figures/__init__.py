"""The figures, one module each. A module names itself for ``--only`` (``NAME``) and measures with
``measure(res, run)``: it adds its section to ``res`` (from its ``## N. ...`` heading on) and its headline rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.server import Server


@dataclass
class Run:
    """The options of one benchmark run, and what its figures hand on to later ones."""

    runs: int = 21  # requests per latency figure
    images: int = 100  # images in the many-image request
    seconds: float = 15.0  # of sustained load
    quiet_wait: float = 60.0  # at most, for idle cores before the many-image request
    started: list[Server] = field(default_factory=list)  # every single-process server started: figure 6's samples
    baseline_p50: float | None = None  # the baseline's median seconds on the single-face photo (figure 1)
