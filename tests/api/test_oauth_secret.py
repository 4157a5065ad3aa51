"""The OAuth signing secret on SQLite (the data dir's ``oauth-secret`` file) is never read on the event loop: the
startup reads it in its own thread, and a token asked for before that gets it read in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.emulator_server import EmulatorServer
from tests.support.fake_engine import FakeEngine

TOKEN_URL = "/auth/oauth/v1/token"
OAUTH_CLIENTS = "shop=shop-id:shop-secret"  # tokens are checked (no open mode)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SecretReads:
    """Wraps ``Store.secret``: records, for each read, whether it ran on an event loop's thread."""

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self.read = read
        self.on_loop: list[bool] = []

    def __call__(self, name: str) -> bytes:
        self.on_loop.append(_on_event_loop())
        return self.read(name)


def _token(server: EmulatorServer) -> str:
    answer = server.http.post(
        TOKEN_URL, json={"grant_type": "client_credentials", "client_id": "shop-id", "client_secret": "shop-secret"}
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def _truncate_status(server: EmulatorServer, token: str) -> int:
    answer = server.http.post(
        "/api/v1/persons/truncate",
        params={"oauth_token": token, "oauth_provider": "mcs"},
        files={"meta": (None, '{"space": "1"}')},
    )
    status: int = answer.json()["status"]
    return status


def test_the_startup_reads_the_secret_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = EmulatorServer(tmp_path / "data", engine=FakeEngine(), oauth_clients=OAUTH_CLIENTS)
    reads = SecretReads(server.runtime.store.secret)
    monkeypatch.setattr(server.runtime.store, "secret", reads)
    server.start()
    try:
        assert reads.on_loop == [False]  # read once, at startup, in the startup thread
        token = _token(server)
        assert _truncate_status(server, token) == 200  # issued and checked with it ...
        assert _truncate_status(server, "forged." + token.partition(".")[2]) == 403
        assert reads.on_loop == [False]  # ... without reading it again
        assert (tmp_path / "data" / "oauth-secret").exists()
    finally:
        server.stop()


def test_a_token_asked_for_before_the_startup_read_reads_it_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmulatorServer(tmp_path / "data", engine=FakeEngine(), oauth_clients=OAUTH_CLIENTS)
    reads = SecretReads(server.runtime.store.secret)
    monkeypatch.setattr(server.runtime.store, "secret", reads)
    store_may_open = threading.Event()
    open_store = server.runtime.store.open

    def held_open() -> None:  # the startup waits here, before it would read the secret
        assert store_may_open.wait(60)
        open_store()

    monkeypatch.setattr(server.runtime.store, "open", held_open)
    server.start(wait_ready=False)
    try:
        token = _token(server)
        assert reads.on_loop == [False]  # read for this token, in a worker thread
        store_may_open.set()
        assert server.runtime.ready.wait(60)
        assert reads.on_loop == [False]  # the startup found it read
        assert _truncate_status(server, token) == 200
    finally:
        store_may_open.set()
        server.stop()


def test_a_token_works_across_a_restart(tmp_path: Path) -> None:
    """The secret read at startup is the one kept in the data dir: a token outlives its server."""
    first = EmulatorServer(tmp_path / "data", engine=FakeEngine(), oauth_clients=OAUTH_CLIENTS).start()
    try:
        token = _token(first)
    finally:
        first.stop()
    second = EmulatorServer(tmp_path / "data", engine=FakeEngine(), oauth_clients=OAUTH_CLIENTS).start()
    try:
        assert _truncate_status(second, token) == 200
        assert httpx.get(f"{second.base_url}/emulator/ready").status_code == 200
    finally:
        second.stop()
