"""How ``make test`` spreads the suite over the cores (pytest-xdist, ``-n auto --dist loadscope``).

The unit a worker process runs whole is a test module, so that its module-scoped servers start once; a module run on
several backends is one unit per backend (``tests/support/backends.py``), and the container tests (``tests/container``)
are two units: the image built once, and the arm64 image under emulation apart. Units are handed out in collection
order, which ``tests/conftest.py`` sorts heaviest first, so that no long unit starts last.

The units are computed from node ids alone (:func:`unit_of`), by a scheduler of our own: pytest-xdist's ``loadgroup``
marks a test's group by assigning ``item._nodeid``, which pytest 9.2 no longer reads (its node id is ``item._id``).
:func:`tell_apart` still has to set that private attribute, for items that share a node id: it is written for
both, and ``tests/test_parallel.py`` fails if it stops working.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.backends import BACKENDS, DETECTOR_BACKENDS, DLIB_DESCRIPTOR

FIGURE = "figure"  # a report's user property that tests/conftest.py prints at the end of the run ("name: text")

# Longest first: "sqlite-dlib" before "sqlite".
_BACKEND_IDS = tuple(sorted((*BACKENDS, DLIB_DESCRIPTOR, *DETECTOR_BACKENDS), key=len, reverse=True))


def unit_of(nodeid: str) -> str:
    """The unit of a test: its module (``path:backend`` when parametrized by backend), or a container unit."""
    path, _, rest = nodeid.partition("::")
    if path.startswith("tests/container/"):
        return "container-arm64" if path.endswith("test_arm64.py") else "container"
    params = rest[rest.index("[") + 1 : -1] if rest.endswith("]") and "[" in rest else ""
    backend = next((b for b in _BACKEND_IDS if params == b or params.startswith(b + "-")), None)
    return f"{path}:{backend}" if backend else path


def weight(item: pytest.Item) -> int:
    """How long a unit is, roughly: the arm64 image, then the container tests, then ``slow`` ones, then the rest."""
    if item.get_closest_marker("arm64"):
        return 3
    if item.get_closest_marker("container"):
        return 2
    return 1 if item.get_closest_marker("slow") else 0


def order_heaviest_first(items: list[pytest.Item]) -> None:
    """Sort ``items`` by their unit's weight, keeping the collection order within a unit and among equals."""
    weights: dict[str, int] = {}
    for item in items:
        unit = unit_of(item.nodeid)
        weights[unit] = max(weights.get(unit, 0), weight(item))
    items.sort(key=lambda item: -weights[unit_of(item.nodeid)])


def tell_apart(items: list[pytest.Item]) -> None:
    """Give items that share a node id their own (schemathesis makes one item per API operation, all with the test's
    node id; pytest-xdist would take them for one test and run only the first)."""
    seen: dict[str, int] = {}
    for item in items:
        seen[item.nodeid] = seen.get(item.nodeid, 0) + 1
    for item in items:
        if seen[item.nodeid] > 1 and item.parent is not None and not item.nodeid.endswith(item.name):
            if hasattr(item, "_id"):  # pytest >= 9.2: the structured node id
                item._id = item.parent.id.child(item.name)
            else:
                item._nodeid = f"{item.parent.nodeid}::{item.name}"


def figures(stats: dict[str, list[Any]]) -> dict[str, str]:
    """The figures the tests' reports carry (the worker processes' too), the last of each name."""
    found: dict[str, str] = {}
    for reports in stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == FIGURE:
                    name, _, text = str(value).partition(": ")
                    found[name] = text
    return found


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scope scheduling with our units as the scopes."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ModuleUnits(config, log)
