"""The exact bytes of envelopes: golden files, Go's JSON rendering and float formatting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.api import gojson
from tests.support.emulator_server import EmulatorServer, fixture
from tests.support.fake_engine import FakeEngine

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes().rstrip(b"\n")


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    running = EmulatorServer(tmp_path_factory.mktemp("fake"), engine=FakeEngine()).start()
    yield running
    running.stop()


def test_recognize_success_envelope_bytes(fake_server: EmulatorServer) -> None:
    fake_server.ok("truncate", {"space": "0"})
    fake_server.call("set", {"space": "0", "images": [{"name": "a", "person_id": 3}]}, [("a", b"FAKE:1")])
    fake_server.call("set", {"space": "0", "images": [{"name": "a", "person_id": 4}]}, [("a", b"FAKE:1")])
    response = fake_server.call(
        "recognize",
        {"space": "0", "create_new": True, "images": [{"name": "file"}, {"name": "bad"}]},
        [("file", b"FAKE:1,2"), ("bad", b"junk")],
    )
    assert response.content == golden("recognize_success.json")


def test_searcher_envelope_bytes(fake_server: EmulatorServer) -> None:
    fake_server.ok("truncate", {"space": "1"})
    response = fake_server.call(
        "recognize", {"space": "1", "searcher": 1, "images": [{"name": "f"}]}, [("f", b"FAKE:5")]
    )
    assert response.content == golden("recognize_searcher.json")


def test_error_envelope_bytes(fake_server: EmulatorServer) -> None:
    response = fake_server.call("truncate", {"azaza": "5"})
    assert response.content == golden("error_space.json")


def test_truncate_and_set_envelope_bytes(server: EmulatorServer, space: int) -> None:
    """The real engine: set and truncate envelopes are fully deterministic."""
    response = server.call(
        "set",
        {"space": str(space), "images": [{"name": "file", "person_id": 1}]},
        [("file", fixture("people/obama/obama.jpg"))],
    )
    assert response.content == golden("set_success.json")
    assert server.call("truncate", {"space": str(space)}).content == golden("truncate_success.json")


def test_real_recognize_envelope_is_go_rendered(server: EmulatorServer, space: int) -> None:
    """Whatever the floats, the real engine's bytes are exactly Go's rendering of the same values."""
    server.set(space, 1, "people/obama/obama.jpg")
    response = server.call(
        "recognize",
        {"space": str(space), "images": [{"name": "f"}], "searcher": 1},
        [("f", fixture("groups/two_people.jpg"))],
    )
    assert gojson.dumps_bytes(json.loads(response.content)) == response.content
    person = json.loads(response.content)["body"]["objects"][0]["persons"][0]
    assert list(person) == [
        "tag", "coord", "confidence", "awesomeness", "similarity",
        "sex", "emotion", "age", "valence", "arousal", "frontality", "visibility",
    ]  # fmt: skip
    for key, decimals in (("confidence", 5), ("similarity", 4), ("awesomeness", 4), ("valence", 4)):
        assert round(person[key], decimals) == person[key]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.0, "0"),
        (30.0, "30"),
        (0.5, "0.5"),
        (0.99977, "0.99977"),
        (-0.1527, "-0.1527"),
        (1e-5, "0.00001"),
        (1.5e-7, "1.5e-7"),
        (1e21, "1e+21"),
        (123456789.0, "123456789"),
        (1e20, "100000000000000000000"),
    ],
)
def test_go_float_formatting(value: float, text: str) -> None:
    assert gojson.go_float(value) == text


def test_go_string_escaping() -> None:
    assert gojson.dumps('a<b>&"\\\n\t\u2028é\x01') == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\t\\u2028é\\u0001"'


@pytest.mark.parametrize(
    ("value", "decimals", "rounded"), [(0.99977, 4, 0.9998), (0.12345, 4, 0.1235), (-0.5, 0, -1.0)]
)
def test_go_round_is_half_away_from_zero(value: float, decimals: int, rounded: float) -> None:
    assert gojson.go_round(value, decimals) == rounded
