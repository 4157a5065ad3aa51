"""The admin API: listing, one person's photos, reset, and who may use it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.face.engine import DlibEngine
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_server import EmulatorServer, fixture

pytestmark = BOTH_BACKENDS

CLIENTS = "acme=tok-acme;beta=tok-beta"
ADMIN_ROUTES = [
    ("GET", "/emulator/clients", None),
    ("GET", "/emulator/clients/acme/spaces/0/persons", None),
    ("GET", "/emulator/clients/acme/spaces/0/persons/1", None),
    ("POST", "/emulator/reset", {}),
    ("GET", "/emulator/snapshot", None),
    ("POST", "/emulator/snapshot?mode=merge", {"format": "smarty-emulator-snapshot", "version": 1, "spaces": []}),
    ("GET", "/emulator/compare", None),
    ("DELETE", "/emulator/compare", None),
]


def _start(engine: DlibEngine, backend: Backend, data_dir: Path, **overrides: object) -> EmulatorServer:
    return EmulatorServer(data_dir, engine=engine, clients=CLIENTS, **backend.settings(), **overrides).start()


@pytest.fixture(scope="module")
def admin_server(
    engine: DlibEngine, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorServer]:
    server = _start(engine, backend, tmp_path_factory.mktemp("admin") / "data")
    yield server
    server.stop()


def _populate(server: EmulatorServer) -> None:
    server.http.post("/emulator/reset", json={})
    server.set(0, 1, "people/obama/obama.jpg", token="tok-acme")
    server.set(0, 1, "people/obama/obama1.jpg", token="tok-acme")
    server.set(0, 2, "people/biden/biden.jpg", token="tok-acme")
    server.set(4, 9, "people/rose_leslie/img1.jpg", token="tok-acme")
    server.set(0, 5, "people/kit_harington/john1.jpeg", token="tok-beta")


def test_clients_spaces_and_persons_are_listed(admin_server: EmulatorServer) -> None:
    _populate(admin_server)
    response = admin_server.http.get("/emulator/clients")
    assert response.status_code == 200
    assert response.json() == {
        "clients": [
            {
                "client": "acme",
                "spaces": [{"space": 0, "persons": 2, "faces": 3}, {"space": 4, "persons": 1, "faces": 1}],
            },
            {"client": "beta", "spaces": [{"space": 0, "persons": 1, "faces": 1}]},
        ]
    }
    persons = admin_server.http.get("/emulator/clients/acme/spaces/0/persons").json()
    assert persons == {
        "client": "acme",
        "space": 0,
        "persons": [{"person_id": 1, "photos": 2}, {"person_id": 2, "photos": 1}],
    }
    # A face learned through recognize counts as a photo of that person too.
    admin_server.recognize(0, "people/obama/obama2.jpg", token="tok-acme", update_embedding=True)
    persons = admin_server.http.get("/emulator/clients/acme/spaces/0/persons").json()["persons"]
    assert persons[0] == {"person_id": 1, "photos": 3}


def test_one_person_shows_its_photos_metadata(admin_server: EmulatorServer) -> None:
    _populate(admin_server)
    response = admin_server.http.get("/emulator/clients/acme/spaces/0/persons/1")
    assert response.status_code == 200
    body = response.json()
    assert (body["client"], body["space"], body["person_id"]) == ("acme", 0, 1)
    photos = body["photos"]
    assert [p["kind"] for p in photos] == ["set", "set"]
    assert photos[0]["sha256"] == hashlib.sha256(fixture("people/obama/obama.jpg")).hexdigest()
    assert photos[1]["sha256"] == hashlib.sha256(fixture("people/obama/obama1.jpg")).hexdigest()
    assert photos[0]["face_id"] < photos[1]["face_id"]
    assert photos[0]["name"] == "f"
    left, top, right, bottom = photos[0]["coord"]
    assert 0 <= left < right and 0 <= top < bottom
    assert isinstance(photos[0]["created_at"], float) and photos[0]["created_at"] <= photos[1]["created_at"]
    assert isinstance(photos[0]["has_thumbnail"], bool)


def test_an_absent_person_is_404_json(admin_server: EmulatorServer) -> None:
    _populate(admin_server)
    for path in ("/emulator/clients/acme/spaces/0/persons/3", "/emulator/clients/nobody/spaces/0/persons/1"):
        response = admin_server.http.get(path)
        assert response.status_code == 404
        assert "no person" in response.json()["detail"]
    assert admin_server.http.get("/emulator/clients/acme/spaces/10/persons").status_code == 404


def _spaces(server: EmulatorServer) -> dict[str, list[int]]:
    clients = server.http.get("/emulator/clients").json()["clients"]
    return {c["client"]: [s["space"] for s in c["spaces"]] for c in clients}


def test_reset_a_space_a_client_or_everything(admin_server: EmulatorServer) -> None:
    _populate(admin_server)
    assert admin_server.tags(0, "people/obama/obama2.jpg", token="tok-acme") == ["person1"]

    response = admin_server.http.post("/emulator/reset", json={"client": "acme", "space": 0})
    assert response.status_code == 200
    assert response.json() == {"reset": [{"client": "acme", "space": 0}]}
    assert _spaces(admin_server) == {"acme": [4], "beta": [0]}
    assert admin_server.tags(0, "people/obama/obama2.jpg", token="tok-acme") == ["undefined"]

    assert admin_server.http.post("/emulator/reset", json={"client": "acme"}).status_code == 200
    assert _spaces(admin_server) == {"beta": [0]}
    assert admin_server.tags(0, "people/kit_harington/john2.jpeg", token="tok-beta") == ["person5"]

    assert admin_server.http.post("/emulator/reset", json={}).status_code == 200
    assert admin_server.http.get("/emulator/clients").json() == {"clients": []}
    assert admin_server.tags(0, "people/kit_harington/john2.jpeg", token="tok-beta") == ["undefined"]

    # create_new starts again at 1 after a reset, as after truncate.
    created = admin_server.recognize(0, "people/biden/biden.jpg", token="tok-beta", create_new=True)
    assert created["persons"][0]["tag"] == "person1"


@pytest.mark.parametrize("body", [{"space": 1}, {"client": ""}, {"client": "acme", "space": "1"}, {"other": 1}, []])
def test_reset_refuses_a_malformed_scope(admin_server: EmulatorServer, body: object) -> None:
    _populate(admin_server)
    response = admin_server.http.post("/emulator/reset", json=body)
    assert response.status_code == 400
    assert _spaces(admin_server) == {"acme": [0, 4], "beta": [0]}


def _refusals(server: EmulatorServer, headers: dict[str, str] | None = None) -> set[int]:
    codes = set()
    for method, path, body in ADMIN_ROUTES:
        response = server.http.request(method, path, json=body, headers=headers or {})
        codes.add(response.status_code)
    return codes


def test_admin_off_refuses_every_route(engine: DlibEngine, backend: Backend, tmp_path: Path) -> None:
    server = _start(engine, backend, tmp_path / "data", admin="off")
    try:
        server.set(0, 1, "people/obama/obama.jpg", token="tok-acme")
        assert _refusals(server) == {404}
        assert server.http.get("/emulator/clients").json()["detail"].startswith("the admin API is off")
        assert server.tags(0, "people/obama/obama2.jpg", token="tok-acme") == ["person1"]  # reset did nothing
    finally:
        server.stop()


def test_admin_token_is_required_when_guarded(engine: DlibEngine, backend: Backend, tmp_path: Path) -> None:
    server = _start(engine, backend, tmp_path / "data", admin="token", admin_token="s3cret-admin")
    try:
        server.set(0, 1, "people/obama/obama.jpg", token="tok-acme")
        assert _refusals(server) == {403}
        assert _refusals(server, {"Authorization": "Bearer wrong"}) == {403}
        assert _refusals(server, {"Authorization": "s3cret-admin"}) == {403}
        assert server.tags(0, "people/obama/obama2.jpg", token="tok-acme") == ["person1"]  # reset did nothing
        granted = {"Authorization": "Bearer s3cret-admin"}
        response = server.http.get("/emulator/clients", headers=granted)
        assert response.status_code == 200
        assert response.json()["clients"][0]["client"] == "acme"
        assert server.http.post("/emulator/reset", json={}, headers=granted).status_code == 200
        assert server.tags(0, "people/obama/obama2.jpg", token="tok-acme") == ["undefined"]
    finally:
        server.stop()


def test_loopback_mode_refuses_when_the_server_listens_publicly(
    engine: DlibEngine, backend: Backend, tmp_path: Path
) -> None:
    # The test server always binds 127.0.0.1; the setting says it listens on every address.
    server = _start(engine, backend, tmp_path / "data", admin="loopback", host="0.0.0.0")
    try:
        assert _refusals(server) == {403}
    finally:
        server.stop()
