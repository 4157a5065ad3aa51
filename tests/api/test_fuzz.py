"""Schema fuzzing: schemathesis drives the persons paths of the official OpenAPI spec against a real server.

Positive and negative cases (valid and invalid meta, random image bytes, random or missing query
parameters), a fixed number of examples per operation and a fixed seed, so a run is bounded and
repeatable. Every answer must not be a server error (no 5xx), must be JSON of the documented content
type, use a documented status (the spec documents HTTP 200 only, so the server runs in the default
``always-200`` mode), and conform to the spec's response schema (success or error envelope).

The spec's ``persons_recognize_response`` requires ``aliases_changed``, while the emulator by default
writes it only when true (as the current service's examples show); the fuzzed server therefore runs with
``SMARTY_ALIASES_CHANGED=always``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.emulator_server import EmulatorServer, fixture

SPEC = Path(__file__).resolve().parents[1] / "data" / "spec" / "visionapi-openapi.json"
EXAMPLES_PER_OPERATION = 150
SEED = 20261126
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
RUN: dict[str, int] = {}  # operation -> examples sent


@pytest.fixture(scope="module")
def fuzz_server(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = EmulatorServer(tmp_path_factory.mktemp("fuzz"), engine=engine, aliases_changed="always").start()
    yield server
    server.stop()


schema = schemathesis.openapi.from_path(SPEC).include(path_regex=r"^/v1/persons/")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@seed(SEED)
def test_persons_paths_conform(case: Any, fuzz_server: EmulatorServer) -> None:
    RUN[case.operation.label] = RUN.get(case.operation.label, 0) + 1
    case.call_and_validate(base_url=f"{fuzz_server.base_url}/api", checks=CHECKS)


def test_fuzzing_covered_every_persons_operation() -> None:
    """Runs after the fuzzing above (same module): every operation was fuzzed with many examples."""
    assert sorted(RUN) == [
        "POST /v1/persons/delete",
        "POST /v1/persons/recognize",
        "POST /v1/persons/set",
        "POST /v1/persons/truncate",
    ]
    assert all(count >= EXAMPLES_PER_OPERATION // 2 for count in RUN.values()), RUN
    print(f"schemathesis examples sent: {sum(RUN.values())} {RUN}")


def _recognize_case() -> Any:
    """A hand-made recognize of a real photo, in an empty space (so the answer is ``undefined``)."""
    operation = schema["/v1/persons/recognize"]["POST"]
    return operation.Case(
        query={"oauth_token": "t", "oauth_provider": "mcs"},
        body={
            "file": [fixture("people/obama/obama.jpg")],
            "meta": {"space": "9", "create_new": False, "images": [{"name": "file"}]},
        },
        media_type="multipart/form-data",
    )


def test_schema_checks_have_teeth(fuzz_server: EmulatorServer) -> None:
    """The same checks fail on a real recognize answer without ``aliases_changed`` (the default mode)."""
    case = _recognize_case()
    base_url = f"{fuzz_server.base_url}/api"
    response = case.call_and_validate(base_url=base_url, checks=CHECKS)
    assert response.json()["body"]["aliases_changed"] is False
    fuzz_server.configure(aliases_changed="when-true")
    try:
        with pytest.raises(FailureGroup) as failures:
            case.call_and_validate(base_url=base_url, checks=CHECKS)
    finally:
        fuzz_server.configure(aliases_changed="always")
    (failure,) = failures.value.exceptions
    assert failure.title == "Response violates schema"  # the envelope matches neither success nor error schema
