"""The OAuth token endpoint: a client gets a token, uses it, sees 403 after expiry, refreshes, goes on."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.face.engine import DlibEngine
from emulator.persons.oauth import OAuthError, TokenIssuer
from emulator.settings import Settings, SettingsError
from emulator.store.sqlite import SqliteStore, file_secret
from tests.support.emulator_server import EmulatorServer, fixture

TOKEN_URL = "/auth/oauth/v1/token"


class FakeClock:
    """An injectable clock: an hour passes when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def oauth_server(engine: DlibEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    running = EmulatorServer(
        tmp_path_factory.mktemp("oauth"),
        engine=engine,
        clients="legacy=service-token",
        oauth_clients="shop=shop-id:shop-secret;bank=bank-id:bank-secret",
        token_lifetime=120,
    ).start()
    yield running
    running.stop()


@pytest.fixture
def clock(oauth_server: EmulatorServer) -> Iterator[FakeClock]:
    fake = FakeClock()
    real = oauth_server.runtime.oauth.clock
    oauth_server.runtime.oauth.clock = fake
    yield fake
    oauth_server.runtime.oauth.clock = real


def envelope_status(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text  # always-200 mode: the envelope carries the status
    status: int = response.json()["status"]
    return status


def recognize(server: EmulatorServer, token: str) -> httpx.Response:
    meta = {"space": "3", "images": [{"name": "f"}]}
    return server.call("recognize", meta, [("f", fixture("people/obama/obama2.jpg"))], token=token)


def test_client_credentials_recognize_expiry_refresh(oauth_server: EmulatorServer, clock: FakeClock) -> None:
    http = oauth_server.http
    # 1. Get a token pair, with JSON as the official curl example sends it.
    got = http.post(
        TOKEN_URL, json={"client_id": "shop-id", "client_secret": "shop-secret", "grant_type": "client_credentials"}
    )
    assert got.status_code == 200, got.text
    tokens = got.json()
    assert set(tokens) == {"access_token", "refresh_token", "expires_in"}
    assert tokens["expires_in"] == 120
    assert got.headers["cache-control"] == "no-store"

    # 2. The access token authenticates as the client "shop": its data is its own.
    oauth_server.ok("truncate", {"space": "3"}, token=tokens["access_token"])
    oauth_server.set(3, 1, "people/obama/obama.jpg", token=tokens["access_token"])
    response = recognize(oauth_server, tokens["access_token"])
    assert envelope_status(response) == 200
    assert response.json()["body"]["objects"][0]["persons"][0]["tag"] == "person1"
    journal = http.get("/emulator/requests", params={"method": "recognize"}).json()["requests"]
    assert journal[-1]["client"] == "shop"

    # 3. Just before the lifetime passes the token still works; at the lifetime it is refused with 403.
    clock.now += 119
    assert envelope_status(recognize(oauth_server, tokens["access_token"])) == 200
    clock.now += 1
    expired = recognize(oauth_server, tokens["access_token"])
    assert envelope_status(expired) == 403
    assert expired.json()["body"] == "oauth_token has expired"

    # 4. Refresh (form-encoded this time) and go on with the new access token, same client, same data.
    refreshed = http.post(
        TOKEN_URL,
        data={"client_id": "shop-id", "refresh_token": tokens["refresh_token"], "grant_type": "refresh_token"},
    )
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["access_token"] != tokens["access_token"]
    assert new["refresh_token"] == tokens["refresh_token"]
    again = recognize(oauth_server, new["access_token"])
    assert envelope_status(again) == 200
    assert again.json()["body"]["objects"][0]["persons"][0]["tag"] == "person1"
    # The old one stays expired.
    assert envelope_status(recognize(oauth_server, tokens["access_token"])) == 403


def test_clients_do_not_share_data_and_service_tokens_still_work(
    oauth_server: EmulatorServer, clock: FakeClock
) -> None:
    shop = oauth_server.http.post(
        TOKEN_URL, json={"client_id": "shop-id", "client_secret": "shop-secret", "grant_type": "client_credentials"}
    ).json()["access_token"]
    bank = oauth_server.http.post(
        TOKEN_URL,
        data={"client_id": "bank-id", "client_secret": "bank-secret", "grant_type": "client_credentials"},
    ).json()["access_token"]
    oauth_server.ok("truncate", {"space": "3"}, token=shop)
    oauth_server.ok("truncate", {"space": "3"}, token=bank)
    oauth_server.set(3, 7, "people/obama/obama.jpg", token=shop)
    assert recognize(oauth_server, shop).json()["body"]["objects"][0]["persons"][0]["tag"] == "person7"
    assert recognize(oauth_server, bank).json()["body"]["objects"][0]["persons"][0]["tag"] == "undefined"
    assert envelope_status(recognize(oauth_server, "service-token")) == 200
    assert envelope_status(recognize(oauth_server, "any-other-token")) == 403


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"client_id": "shop-id", "client_secret": "wrong", "grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"client_id": "nobody", "client_secret": "x", "grant_type": "client_credentials"}, 401, "invalid_client"),
        ({"client_id": "shop-id", "grant_type": "client_credentials"}, 400, "invalid_request"),
        ({"client_id": "shop-id", "refresh_token": "made-up", "grant_type": "refresh_token"}, 400, "invalid_grant"),
        ({"client_id": "shop-id", "grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_id": "shop-id"}, 400, "invalid_request"),
    ],
)
def test_oauth_errors(oauth_server: EmulatorServer, body: dict[str, Any], status: int, error: str) -> None:
    response = oauth_server.http.post(TOKEN_URL, json=body)
    assert response.status_code == status
    payload = response.json()
    assert payload["error"] == error
    assert payload["error_description"]


def test_refresh_token_of_another_client_and_basic_auth(oauth_server: EmulatorServer) -> None:
    shop = oauth_server.http.post(
        TOKEN_URL, auth=("shop-id", "shop-secret"), data={"grant_type": "client_credentials"}
    ).json()
    stolen = oauth_server.http.post(
        TOKEN_URL, json={"client_id": "bank-id", "refresh_token": shop["refresh_token"], "grant_type": "refresh_token"}
    )
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"


def test_default_mode_issues_tokens_that_expire(server: EmulatorServer) -> None:
    tokens = server.http.post(
        TOKEN_URL, json={"client_id": "anything", "client_secret": "anything", "grant_type": "client_credentials"}
    ).json()
    assert tokens["expires_in"] == 3600
    fake = FakeClock()
    fake.now = server.runtime.oauth.clock()
    real, server.runtime.oauth.clock = server.runtime.oauth.clock, fake
    try:
        assert envelope_status(server.call("truncate", {"space": "0"}, token=tokens["access_token"])) == 200
        fake.now += 3600
        assert envelope_status(server.call("truncate", {"space": "0"}, token=tokens["access_token"])) == 403
        assert envelope_status(server.call("truncate", {"space": "0"}, token="any-token")) == 200  # default mode
    finally:
        server.runtime.oauth.clock = real


def test_tokens_verify_across_processes_sharing_a_data_dir(tmp_path: Path) -> None:
    """Workers are separate processes: each builds its own issuer over the same data dir."""
    clients = {"shop": ("shop-id", "shop-secret")}
    first = TokenIssuer(clients, lambda: SqliteStore(tmp_path).secret("oauth"), lambda: 60)
    second = TokenIssuer(clients, lambda: SqliteStore(tmp_path).secret("oauth"), lambda: 60)
    issued = first.client_credentials("shop-id", "shop-secret")
    check = second.check_access(issued.access_token)
    assert check is not None and check.client == "shop" and not check.expired
    assert second.refresh("shop-id", issued.refresh_token).expires_in == 60
    other_dir = TokenIssuer(clients, lambda: SqliteStore(tmp_path / "other").secret("oauth"), lambda: 60)
    assert other_dir.check_access(issued.access_token) is None
    with pytest.raises(OAuthError):
        other_dir.refresh("shop-id", issued.refresh_token)
    tampered = issued.access_token[:-2] + ("AA" if not issued.access_token.endswith("AA") else "BB")
    assert second.check_access(tampered) is None


@pytest.mark.parametrize("spec", ["shop", "shop=id", "shop=:secret", "a=id:s;b=id:t", "a=x:s;a=y:t"])
def test_malformed_oauth_clients_fail_fast(spec: str) -> None:
    with pytest.raises(SettingsError, match="SMARTY_OAUTH_CLIENTS"):
        Settings.from_sources({"SMARTY_OAUTH_CLIENTS": spec})


def test_worker_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    """Each worker creates the secret if it is missing; the first writer wins and all read the same."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        secrets = pool.map(file_secret, [tmp_path / "oauth-secret"] * 8)
    assert len(set(secrets)) == 1
    assert SqliteStore(tmp_path).secret("oauth") == secrets[0]
    assert [p.name for p in tmp_path.iterdir()] == ["oauth-secret"]  # no temporary files left behind


def test_service_token_clients_without_oauth_clients_get_no_tokens(tmp_path: Path) -> None:
    issuer = TokenIssuer({}, lambda: SqliteStore(tmp_path).secret("oauth"), lambda: 60, open_allowed=False)
    with pytest.raises(OAuthError) as refused:
        issuer.client_credentials("anyone", "anything")
    assert (refused.value.error, refused.value.http_status) == ("invalid_client", 401)


def test_a_token_has_no_look_alike_twins(tmp_path: Path) -> None:
    """Every other last character of the signature is refused, also those that decode to the same bytes."""
    issuer = TokenIssuer({"shop": ("id-1", "s3cret")}, lambda: SqliteStore(tmp_path).secret("oauth"), lambda: 60)
    token = issuer.client_credentials("id-1", "s3cret").access_token
    assert issuer.check_access(token) is not None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twins = [token[:-1] + c for c in alphabet if c != token[-1]]
    assert [t for t in twins if issuer.check_access(t) is not None] == []
    head, _, tail = token.partition(".")
    assert issuer.check_access(f"{head}=.{tail}") is None
