"""bench/RESULTS.md: the figures' text as they are measured (:class:`Results`), written as a whole after a full run,
or one figure replaced in the file of the last full run (:func:`replace_figure`)."""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.measure import CORES

# The soak's section is written by `make soak` (tests/ops/test_soak.py), not by the benchmark: a run keeps it.
SOAK_SECTION = re.compile(r"<!-- soak:start -->.*?<!-- soak:end -->", re.DOTALL)
Row = tuple[str, str, str, str]  # a headline row: figure, value, target, verdict


@dataclass
class Results:
    """The lines of the figures' sections, printed as they come, and the headline table's rows."""

    lines: list[str] = field(default_factory=list)
    headline: list[Row] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)

    def target(self, figure: str, value: str, target: str, met: bool | None) -> None:
        """A headline row; ``figure`` starts with its number (``"10a. "``), ``met`` is None where there is no
        target."""
        verdict = "n/a" if met is None else ("met" if met else "**missed**")
        self.headline.append((figure, value, target, verdict))


def figure_number(heading: str) -> int | None:
    """N of a ``## N. ...`` heading (or of a headline row's ``Na. ...``); None for an unnumbered section."""
    found = re.match(r"(?:## )?(\d+)[a-z]?\. ", heading)
    return int(found[1]) if found else None


def in_file_order(sections: Sequence[list[str]]) -> list[list[str]]:
    """The sections by their figure numbers, the unnumbered ones last (as the file has them)."""
    return sorted(sections, key=lambda lines: figure_number(lines[0]) or math.inf)


def full_report(
    command: str,
    stamp: str,
    seconds: float,
    load: tuple[float, float],
    sections: Sequence[list[str]],
    headline: Sequence[Row],
    previous: str,
) -> str:
    """The whole file: what produced it (``command``, at ``stamp``, in ``seconds``, the 1-minute load average before
    and after), on what machine, the headline table, the sections in file order, and ``previous``'s soak section."""
    import dlib
    import numpy as np

    out = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` on {stamp} in {seconds:.0f} s.",
        f"Machine: {CORES} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"dlib {dlib.__version__}, numpy {np.__version__}. Load average (1 min) before: {load[0]:.2f}, "
        f"after: {load[1]:.2f} — figures from a machine busy with other work are noisier and slower; the "
        "side-by-side ratios are the figures to compare.",
        "",
        "## Headline",
        "",
        "| figure | measured | target | |",
        "| --- | ---: | --- | --- |",
        *[f"| {figure} | {value} | {target} | {verdict} |" for figure, value, target, verdict in sorted(headline)],
        "",
    ]
    for lines in in_file_order(sections):
        out.extend(lines)
    soak = SOAK_SECTION.search(previous)
    if soak:
        out += ["", soak.group(0)]
    return "\n".join(out).rstrip() + "\n"


def replace_figure(previous: str, lines: Sequence[str], headline: Sequence[Row]) -> str | None:
    """``previous`` (a RESULTS.md) with one figure measured again: its section (``lines``, from its ``## ...``
    heading on) in place of the old one, or where a full run puts it if it had none, and its rows of the headline
    table (those of figure N and of every figure ``headline`` names: ``N.``, ``Na.``, ``Nb.``...) in place of the old
    ones. None if ``previous`` has no headline table to keep."""
    old = previous.splitlines()
    if "## Headline" not in old:
        return None
    number = figure_number(lines[0])
    numbers = {number, *(figure_number(row[0]) for row in headline)} - {None}
    first_row = old.index("## Headline") + 4  # the heading, a blank line, the table's header and its separator
    last_row = next((i for i in range(first_row, len(old)) if not old[i].startswith("| ")), len(old))
    kept = [tuple(row[2:-2].split(" | ")) for row in old[first_row:last_row]]
    rows = sorted([row for row in kept if figure_number(row[0]) not in numbers] + list(headline))
    text = [*old[:first_row], *("| " + " | ".join(row) + " |" for row in rows), *old[last_row:]]

    def after(line: str) -> bool:
        """Whether ``line`` starts what comes after this figure in a full run: a higher figure, an unnumbered
        section (for a numbered figure), the soak's."""
        if line.startswith("<!--"):
            return True
        if not line.startswith("## ") or number is None:
            return False
        other = figure_number(line)
        return other is None or other > number

    def mine(line: str) -> bool:
        return line == lines[0] if number is None else figure_number(line) == number and line.startswith("## ")

    sections = next(i for i in range(first_row, len(text)) if text[i].startswith("## "))
    start = next((i for i in range(sections, len(text)) if mine(text[i])), None)
    if start is None:  # no section yet: it goes where a full run puts it
        start = end = next((i for i in range(sections, len(text)) if after(text[i])), len(text))
    else:
        end = next((i for i in range(start + 1, len(text)) if text[i].startswith(("## ", "<!--"))), len(text))
    return "\n".join([*text[:start], *lines, *text[end:]]).rstrip() + "\n"
