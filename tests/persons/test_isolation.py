"""Isolation and access: client A never reaches client B's persons, by any path; the admin API is guarded.

A real server with two configured clients (``a`` and ``b``) and the admin API in ``token`` mode. Client B
stores two persons in two spaces; client A then tries every persons method in every space (recognize with
and without ``create_new``, delete of B's person ids, truncate of every space), with its own token and with
near-miss tokens, and tries every admin route. B's store is compared before and after, and B still
recognizes its persons exactly as before.
"""

from __future__ import annotations

import base64
import hmac
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from emulator.control import access as admin_access
from emulator.persons import auth
from emulator.persons.auth import TokenDirectory
from emulator.persons.types import ClientId, SpaceKey
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.emulator_server import EmulatorServer

pytestmark = BOTH_BACKENDS

A, B = "tok-a-5f1e2c", "tok-b-9d8c7b"
ADMIN = "admin-secret-31337"
OBAMA, BIDEN = "people/obama/obama.jpg", "people/biden/biden.jpg"
B_SPACES = (0, 7)
# Health and readiness are for orchestrators; the demo page's sign-in form only sets the admin cookie after it has
# checked the token itself (tests/test_ui.py).
# Open whatever SMARTY_ADMIN says: health and readiness, the sign-in page, and the CA certificate (public by nature;
# test_the_ca_certificate_is_open_to_anyone_and_holds_no_key checks that it is all it serves).
ALWAYS_OPEN = {"/emulator/health", "/emulator/ready", "/emulator/ui/login", "/emulator/ca.pem"}


@pytest.fixture(scope="module")
def two_clients(engine: Any, backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        tmp_path_factory.mktemp("iso"),
        **backend.settings(),
        engine=engine,
        clients=f"a={A};b={B}",
        oauth_clients="a=app-a:secret-a;b=app-b:secret-b",
        admin="token",
        admin_token=ADMIN,
    ).start()
    for space in B_SPACES:
        assert server.set(space, 1, OBAMA, token=B)["status"] == 0
        assert server.set(space, 2, BIDEN, token=B)["status"] == 0
    yield server
    server.stop()


def _b_store(server: EmulatorServer) -> dict[int, list[tuple[int, int]]]:
    out = {}
    for space in range(10):
        data = server.runtime.store.load_space(SpaceKey(ClientId("b"), space))
        out[space] = sorted(zip(data.person_ids.tolist(), data.face_ids.tolist(), strict=True))
    return out


def _b_sees_its_persons(server: EmulatorServer) -> None:
    for space in B_SPACES:
        assert server.tags(space, OBAMA, token=B, update_embedding=False) == ["person1"]
        assert server.tags(space, BIDEN, token=B, update_embedding=False) == ["person2"]


def test_a_cannot_read_match_delete_or_truncate_b(two_clients: EmulatorServer) -> None:
    server = two_clients
    before = _b_store(server)
    for space in range(10):
        # Read / match: A's space is empty, so B's faces are not even candidates (similarity 0).
        person = server.recognize(space, OBAMA, token=A, update_embedding=False)["persons"][0]
        assert (person["tag"], person["similarity"]) == ("undefined", 0)
        # Delete B's person ids, in A's name: A's own (empty) space is touched, nothing else.
        deleted = server.ok("delete", {"space": str(space), "images": [{"name": "x", "person_id": 1}]}, token=A)
        assert deleted == {"objects": [{"status": 0, "name": "x"}]}
        assert server.ok("truncate", {"space": str(space)}, token=A) == {}
    # create_new makes A's own person 1: B's person 1 is another person, and never an alias across clients.
    created = server.recognize(0, OBAMA, token=A, create_new=True)["persons"][0]
    assert created["tag"] == "person1" and "aliases" not in created
    assert _b_store(server) == before
    _b_sees_its_persons(server)
    again = server.recognize(0, BIDEN, token=A, update_embedding=False)["persons"][0]
    assert again["tag"] == "undefined"  # A has only its own Obama; B's Biden is not in A's space
    server.ok("truncate", {"space": "0"}, token=A)


def _oauth_token(server: EmulatorServer, client_id: str, secret: str) -> str:
    response = server.http.post(
        "/auth/oauth/v1/token",
        json={"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_oauth_tokens_are_bound_to_their_client(two_clients: EmulatorServer) -> None:
    """An access token A got from the OAuth endpoint reaches A's spaces only; a forged one reaches nothing."""
    server = two_clients
    before = _b_store(server)
    token_a = _oauth_token(server, "app-a", "secret-a")
    person = server.recognize(0, OBAMA, token=token_a, update_embedding=False)["persons"][0]
    assert (person["tag"], person["similarity"]) == ("undefined", 0)
    assert server.ok("truncate", {"space": "0"}, token=token_a) == {}
    wrong_secret = server.http.post(
        "/auth/oauth/v1/token",
        json={"client_id": "app-a", "client_secret": "secret-b", "grant_type": "client_credentials"},
    )
    assert wrong_secret.status_code in (400, 401) and "access_token" not in wrong_secret.text
    payload, _, signature = token_a.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims.get("c") == "a" or claims.get("k") == "a"  # the token names its client
    as_b = base64.urlsafe_b64encode(
        json.dumps({**claims, **{k: "b" for k in ("c", "k") if claims.get(k) == "a"}}, separators=(",", ":")).encode()
    )
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    for forged in (as_b.decode().rstrip("=") + "." + signature, f"{payload}.{flipped}", token_a[:-4], f"{payload}."):
        refused = server.call("truncate", {"space": "0"}, token=forged)
        assert refused.json()["status"] == 403, forged
    assert _b_store(server) == before
    _b_sees_its_persons(server)


@pytest.mark.parametrize(
    ("token", "provider", "error"),
    [
        ("", "mcs", "empty oauth_token"),
        (A, "", "empty oauth_provider"),
        (A, "vk", "unknown oauth_provider vk"),
        (A.upper(), "mcs", "invalid oauth_token"),
        (A[:-1], "mcs", "invalid oauth_token"),
        (A + "x", "mcs", "invalid oauth_token"),
        (" " + A, "mcs", "invalid oauth_token"),
        (f"{A},{B}", "mcs", "invalid oauth_token"),
        (ADMIN, "mcs", "invalid oauth_token"),  # the admin token is not a service token
        ("Bearer " + B, "mcs", "invalid oauth_token"),
    ],
)
def test_near_miss_tokens_are_refused_everywhere(
    two_clients: EmulatorServer, token: str, provider: str, error: str
) -> None:
    server = two_clients
    before = _b_store(server)
    for method, meta in (
        ("recognize", {"space": "0", "images": [{"name": "f"}], "create_new": True}),
        ("delete", {"space": "0", "images": [{"name": "f", "person_id": 1}]}),
        ("truncate", {"space": "0"}),
    ):
        response = server.call(method, meta, [("f", b"x")], token=token, provider=provider)
        assert response.json() == {"status": 403, "body": error, "htmlencoded": False, "last_modified": 0}
    assert _b_store(server) == before


def _admin_routes(server: EmulatorServer) -> list[tuple[str, str]]:
    """Every admin route of the app, as (method, concrete path)."""
    values = {"client": "b", "space": "0", "person_id": "1", "face_id": "1", "name": "index.html"}
    routes = []
    for prefix, route in _api_routes(server.app.routes, ""):
        full = prefix + route.path
        if full.startswith("/emulator/") and full not in ALWAYS_OPEN:
            path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "1"), full)
            routes.extend((method, path) for method in sorted(route.methods))
    assert len(routes) >= 1  # the admin API exists in this build
    return routes


def _api_routes(routes: list[Any], prefix: str) -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute, also inside included routers (FastAPI may keep those as their own route objects)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix, route
        elif hasattr(route, "original_router"):
            extra = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            yield from _api_routes(route.original_router.routes, prefix + extra)
        elif hasattr(route, "routes"):
            yield from _api_routes(route.routes, prefix)


def test_admin_api_needs_the_admin_token(two_clients: EmulatorServer) -> None:
    server = two_clients
    routes = _admin_routes(server)
    before = _b_store(server)
    wrong = [
        {},
        {"Authorization": f"Bearer {A}"},  # a service token is not the admin token
        {"Authorization": f"Bearer {ADMIN[:-1]}"},
        {"Authorization": f"Bearer {ADMIN}x"},
        {"Authorization": ADMIN},
        {"Authorization": f"Basic {ADMIN}"},
    ]
    for method, path in routes:
        for headers in wrong:
            response = server.http.request(method, path, headers=headers, params={"oauth_token": A})
            assert response.status_code == 403, (method, path, headers, response.text)
    assert _b_store(server) == before
    # With the admin token, the operator does get in.
    assert any(
        server.http.request(m, p, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        for m, p in routes
        if m == "GET"
    )


def test_the_ca_certificate_is_open_to_anyone_and_holds_no_key(two_clients: EmulatorServer) -> None:
    response = two_clients.http.get("/emulator/ca.pem")
    assert response.status_code == 200, response.text
    assert response.text.startswith("-----BEGIN CERTIFICATE-----") and response.text.count("-----BEGIN") == 1
    assert "PRIVATE KEY" not in response.text


def test_admin_api_is_never_open_on_a_public_bind(engine: Any, backend: Backend, tmp_path: Path) -> None:
    """``loopback`` mode on a non-loopback bind refuses even loopback clients; ``off`` hides the admin API."""
    server = EmulatorServer(
        tmp_path / "data", engine=engine, admin="loopback", host="0.0.0.0", **backend.settings()
    ).start()
    try:
        routes = _admin_routes(server)
        for method, path in routes:
            assert server.http.request(method, path).status_code == 403, (method, path)
        server.runtime.settings = server.runtime.settings.replace(host="127.0.0.1")
        probe = [(m, p) for m, p in routes if m == "GET" and "persons" not in p]
        if probe:  # same server, loopback bind: open to this loopback client
            assert any(server.http.request(m, p).status_code == 200 for m, p in probe)
        server.runtime.settings = server.runtime.settings.replace(admin="off")
        for method, path in routes:
            assert server.http.request(method, path).status_code == 404, (method, path)
        assert server.http.get("/emulator/health").status_code in (200, 404)  # never guarded (404: not built)
    finally:
        server.stop()


# --- constant time ---------------------------------------------------------------------------------------


_COMPARE_DIGEST = hmac.compare_digest


class _Spy:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, given: Any, known: Any) -> bool:
        self.calls.append((given, known))
        return _COMPARE_DIGEST(given, known)


def test_service_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured token is compared, with hmac.compare_digest, whether the token matches first, last or never."""
    spy = _Spy()
    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    directory = TokenDirectory({"a": ("t-1", "t-2"), "b": ("t-3",)})
    for token, client in (("t-1", "a"), ("t-3", "b"), ("nope", None), ("t-", None)):
        spy.calls.clear()
        assert directory.client_for(token) == client
        assert [known for _, known in spy.calls] == [b"t-1", b"t-2", b"t-3"]
    assert "hmac.compare_digest" in inspect.getsource(auth.TokenDirectory.client_for)


def test_admin_token_is_compared_in_constant_time(two_clients: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy()
    monkeypatch.setattr(admin_access.hmac, "compare_digest", spy)
    method, path = _admin_routes(two_clients)[0]
    two_clients.http.request(method, path, headers={"Authorization": "Bearer guess"})
    assert spy.calls == [(b"Bearer guess", f"Bearer {ADMIN}".encode())]
    assert "hmac.compare_digest" in inspect.getsource(admin_access.check_admin)
