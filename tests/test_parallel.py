"""The units of ``make test``'s parallel run (tests/support/parallel.py): a module, a module per backend, the
container tests as two units; and items that share a node id are told apart."""

from __future__ import annotations

import pytest

from tests.support.parallel import unit_of


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


def test_every_collected_item_has_its_own_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis's items (one per API operation) shared one node id before tests/conftest.py told them apart."""
    ids = [item.nodeid for item in request.session.items]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]
    assert sum("test_persons_paths_conform[" in i for i in ids) in (0, 4)
