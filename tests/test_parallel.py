"""The units of ``make test``'s parallel run (tests/support/parallel.py): a module, a module per backend, the
container tests as two units; and items that share a node id are told apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.parallel import unit_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("nodeid", "unit"),
    [
        ("tests/api/test_bad_input.py::test_x[set-meta]", "tests/api/test_bad_input.py"),
        ("tests/api/test_contract.py::test_x", "tests/api/test_contract.py"),
        ("tests/api/test_contract.py::test_x[postgres-set]", "tests/api/test_contract.py:postgres"),
        (
            "tests/persons/test_recognition.py::t[sqlite-dlib-people/a.jpg]",
            "tests/persons/test_recognition.py:sqlite-dlib",
        ),
        ("tests/persons/test_recognition.py::t[sqlite-people/a.jpg]", "tests/persons/test_recognition.py:sqlite"),
        ("tests/store/test_restart.py::t[sqlite]", "tests/store/test_restart.py:sqlite"),
        ("tests/api/test_x.py::t[sqlitey]", "tests/api/test_x.py"),
        ("tests/container/test_image.py::t", "container"),
        ("tests/container/test_builder_install.py::t", "container"),
        ("tests/container/test_arm64.py::t", "container-arm64"),
    ],
)
def test_units(nodeid: str, unit: str) -> None:
    assert unit_of(nodeid) == unit


def test_schemathesis_items_get_node_ids_of_their_own() -> None:
    """schemathesis makes one item per API operation, all with the test's node id; tests/conftest.py tells them
    apart, or pytest-xdist would run only the first operation."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/api/test_fuzz.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    ids = [line for line in collected.stdout.splitlines() if "::test_persons_paths_conform" in line]
    assert sorted(ids) == [
        f"tests/api/test_fuzz.py::test_persons_paths_conform[POST /v1/persons/{name}]"
        for name in ("delete", "recognize", "set", "truncate")
    ], collected.stdout[-2000:]
