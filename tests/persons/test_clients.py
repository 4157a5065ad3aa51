"""Configured clients: their own tokens and spaces, never each other's persons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.face.engine import DlibEngine
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_server import EmulatorServer

pytestmark = BOTH_BACKENDS


@pytest.fixture(scope="module")
def clients_server(
    engine: DlibEngine, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorServer]:
    running = EmulatorServer(
        tmp_path_factory.mktemp("clients"),
        engine=engine,
        clients="shop=shop-1,shop-2;bank=bank-1",
        **backend.settings(),
    ).start()
    yield running
    running.stop()


def test_unknown_token_is_403(clients_server: EmulatorServer) -> None:
    response = clients_server.call("truncate", {"space": "0"}, token="nope")
    assert response.json()["status"] == 403
    assert response.json()["body"] == "invalid oauth_token"


def test_clients_never_see_each_other(clients_server: EmulatorServer) -> None:
    s = clients_server
    for token in ("shop-1", "bank-1"):
        s.ok("truncate", {"space": "0"}, token=token)
    s.set(0, 1, "people/obama/obama.jpg", token="shop-1")
    # Another token of the same client sees the person; the other client does not.
    assert [p["tag"] for p in s.recognize(0, "people/obama/obama2.jpg", token="shop-2")["persons"]] == ["person1"]
    bank = s.recognize(0, "people/obama/obama2.jpg", token="bank-1", create_new=True)["persons"]
    assert [p["tag"] for p in bank] == ["person1"]  # a new person of the bank, id 1 of its own sequence
    assert bank[0]["similarity"] == 1
    # The bank deleting and truncating its person 1 leaves the shop's person 1 alone.
    s.ok("delete", {"space": "0", "images": [{"name": "x", "person_id": 1}]}, token="bank-1")
    s.ok("truncate", {"space": "0"}, token="bank-1")
    shop = s.recognize(0, "people/obama/obama3.jpg", token="shop-1", update_embedding=False)["persons"]
    assert [p["tag"] for p in shop] == ["person1"]
    assert shop[0]["similarity"] < 1


def test_default_mode_any_token_is_one_client(server: EmulatorServer, space: int) -> None:
    server.set(space, 4, "people/rose_leslie/img1.jpg", token="first-token")
    tags = [p["tag"] for p in server.recognize(space, "people/rose_leslie/img2.jpg", token="refreshed")["persons"]]
    assert tags == ["person4"]
