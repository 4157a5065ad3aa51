"""Record, replay and spy against an upstream that is a second real emulator on loopback.

``front`` is the emulator under test (upstream mode, cassettes, the HTTPS proxy); ``upstream`` plays the real service.
Every request is real HTTP, every answer comes from real dlib on real photos.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.api import envelope
from emulator.persons.errors import INTERNAL_ERROR
from emulator.upstream.cassette import Cassette
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import FIXTURES, fixture, free_port

pytestmark = pytest.mark.slow

TOKEN = "live-token-4f9c2a7e51b3d8"
OTHER_TOKEN = "another-token-99e1c0ffee42"
SECRET = "client-secret-7d1e93ab56"
OBAMA, OBAMA2, BIDEN = (
    fixture(p) for p in ("people/obama/obama.jpg", "people/obama/obama2.jpg", "people/biden/biden.jpg")
)


class Front:
    def __init__(self, server: EmulatorProcess, cassettes: Path, proxy_port: int, ca: Path) -> None:
        self.server, self.cassettes, self.proxy_port, self.ca = server, cassettes, proxy_port, ca
        self.http = httpx.Client(base_url=server.base_url, timeout=60)

    def configure(self, **changes: Any) -> None:
        response = self.http.patch("/emulator/settings", json=changes)
        assert response.status_code == 200, response.text

    def cassette(self, name: str) -> Cassette:
        return Cassette.load(self.cassettes / f"{name}.json")


def persons(
    http: httpx.Client,
    method: str,
    meta: dict[str, Any],
    files: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = (),
    token: str = TOKEN,
) -> httpx.Response:
    """One persons request as a client sends it (httpx picks a fresh boundary each time)."""
    parts: list[tuple[str, Any]] = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files]
    parts.append(("meta", (None, json.dumps(meta), "text/plain")))
    query = {"oauth_token": token, "oauth_provider": "mcs"}
    return http.post(f"/api/v1/persons/{method}", params=query, files=parts)


def token_request(http: httpx.Client, secret: str = SECRET) -> httpx.Response:
    body = {"client_id": "shop", "client_secret": secret, "grant_type": "client_credentials"}
    return http.post("/auth/oauth/v1/token", json=body)


def the_session(http: httpx.Client, token: str = TOKEN, secret: str = SECRET) -> list[httpx.Response]:
    """A client's session: a token, then set, recognize (twice: it learns), delete, recognize again, truncate."""
    recognize_meta = {"space": "3", "images": [{"name": "photo"}]}
    return [
        token_request(http, secret),
        persons(http, "set", {"space": "3", "images": [{"name": "face", "person_id": 7}]}, [("face", OBAMA)], token),
        persons(http, "recognize", recognize_meta, [("photo", OBAMA2)], token),
        persons(http, "recognize", recognize_meta, [("photo", OBAMA2)], token),
        persons(http, "delete", {"space": "3", "images": [{"name": "d", "person_id": 7}]}, [], token),
        persons(http, "recognize", recognize_meta, [("photo", OBAMA2)], token),
        persons(http, "truncate", {"space": "3"}, [], token),
    ]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    server = EmulatorProcess(tmp_path_factory.mktemp("upstream") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, upstream: EmulatorProcess) -> Iterator[Front]:
    root = tmp_path_factory.mktemp("front")
    proxy_port = free_port()
    server = EmulatorProcess(
        root / "data",
        proxy_port=proxy_port,
        upstream_mode="record",
        upstream_url=upstream.base_url,
        oauth_upstream_url=upstream.base_url,
        cassette_dir=root / "cassettes",
    ).start()
    try:
        ca = root / "ca.pem"
        ca.write_bytes(httpx.get(f"{server.base_url}/emulator/ca.pem", timeout=30).content)
        front = Front(server, root / "cassettes", proxy_port, ca)
        yield front
        front.http.close()
    finally:
        server.stop()


def test_recorded_answers_replay_byte_identical_with_the_upstream_gone(front: Front, tmp_path: Path) -> None:
    lone = EmulatorProcess(tmp_path / "upstream").start()
    try:
        front.configure(upstream_mode="record", cassette="session", upstream_url=lone.base_url,
                        oauth_upstream_url=lone.base_url)  # fmt: skip
        recorded = the_session(front.http)
        with httpx.Client(base_url=lone.base_url, timeout=60) as direct:
            assert direct.get("/emulator/requests").json()["requests"], "the upstream answered the session"
    finally:
        lone.stop()
    assert [r.status_code for r in recorded] == [200] * 7
    issued = recorded[0].json()
    assert recorded[2].json()["body"]["objects"][0]["persons"][0]["tag"] == "person7"
    assert recorded[5].json()["body"]["objects"][0]["persons"][0]["tag"] == "undefined"  # same request, new answer

    front.configure(upstream_mode="replay")
    replayed = the_session(front.http, token=OTHER_TOKEN, secret="another-secret-5566")  # new boundary, new token
    for before, after in zip(recorded[1:], replayed[1:], strict=True):
        assert after.content == before.content
        assert after.status_code == before.status_code and after.headers["x-smarty-replay"] == "hit"
    # The token answer: byte for byte, but for the issued tokens, which were never stored.
    expected = recorded[0].content
    for name in ("access_token", "refresh_token"):
        expected = expected.replace(issued[name].encode(), b"<redacted>")
    assert replayed[0].content == expected and replayed[0].json()["expires_in"] == issued["expires_in"]
    # After the last recorded answer of a key, the last one repeats.
    again = persons(front.http, "recognize", {"space": "3", "images": [{"name": "photo"}]}, [("photo", OBAMA2)])
    assert again.content == recorded[5].content

    # Nothing secret anywhere in the cassette folder: not the tokens, the provider, the secret or the issued tokens.
    stored = b"".join(path.read_bytes() for path in front.cassettes.rglob("*") if path.is_file())
    for secret in (TOKEN, SECRET, issued["access_token"], issued["refresh_token"], "oauth_token", "oauth_provider"):
        assert secret.encode() not in stored, secret
    assert (front.cassettes / "blobs").is_dir() and OBAMA in [
        p.read_bytes() for p in (front.cassettes / "blobs").iterdir()
    ]
    assert [i.method for i in front.cassette("session").interactions] == [
        "oauth", "set", "recognize", "recognize", "delete", "recognize", "truncate"
    ]  # fmt: skip


def test_a_changed_image_is_a_miss_named_in_the_answer_and_the_log(front: Front) -> None:
    front.configure(upstream_mode="replay", cassette="session", replay_miss="error")
    miss = persons(front.http, "recognize", {"space": "3", "images": [{"name": "photo"}]}, [("photo", BIDEN)])
    assert miss.status_code == 200 and miss.headers["x-smarty-replay"] == "miss"
    doc = miss.json()
    assert doc["status"] == 500 and "replay miss" in doc["body"] and "cassette session" in doc["body"]
    key = doc["body"].split("(key ")[1].split(")")[0]
    assert len(key) == 64 and key not in {i.key for i in front.cassette("session").interactions}
    deadline = time.monotonic() + 10
    while key not in front.server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"key {key}" in front.server.log()
    # The token endpoint misses alike (another client id), in its own error shape.
    other = {"client_id": "other", "client_secret": SECRET, "grant_type": "client_credentials"}
    token_miss = front.http.post("/auth/oauth/v1/token", json=other)
    assert token_miss.status_code == 500 and token_miss.headers["x-smarty-replay"] == "miss"
    assert token_miss.json()["error"] == "server_error" and "replay miss" in token_miss.json()["error_description"]
    # emulate: the emulator's own engine answers the miss.
    front.configure(replay_miss="emulate")
    emulated = persons(front.http, "recognize", {"space": "3", "images": [{"name": "photo"}]}, [("photo", BIDEN)])
    assert "x-smarty-replay" not in emulated.headers
    assert emulated.json()["status"] == 200 and emulated.json()["body"]["objects"][0]["persons"][0]["tag"]
    front.configure(replay_miss="error")


def test_spy_replays_a_hit_and_records_a_miss(front: Front, upstream: EmulatorProcess) -> None:
    front.configure(upstream_mode="spy", cassette="spy", upstream_url=upstream.base_url)
    meta = {"space": "4", "images": [{"name": "p"}], "update_embedding": False}
    with httpx.Client(base_url=upstream.base_url, timeout=60) as direct:
        direct.delete("/emulator/requests")
        first = persons(front.http, "recognize", meta, [("p", BIDEN)])
        second = persons(front.http, "recognize", meta, [("p", BIDEN)])
        seen = direct.get("/emulator/requests").json()["requests"]
    assert "x-smarty-replay" not in first.headers and second.headers["x-smarty-replay"] == "hit"
    assert second.content == first.content and first.json()["status"] == 200
    assert len(seen) == 1  # the upstream saw the miss only
    assert len(front.cassette("spy").interactions) == 1


@pytest.mark.parametrize("fault", [{"kind": "latency", "latency_ms": 4000}, {"kind": "drop"}])
def test_an_upstream_that_times_out_or_drops_gets_the_internal_error_envelope(
    front: Front, upstream: EmulatorProcess, fault: dict[str, Any]
) -> None:
    name = f"fault-{fault['kind']}"
    front.configure(upstream_mode="record", cassette=name, upstream_url=upstream.base_url, upstream_timeout=1)
    with httpx.Client(base_url=upstream.base_url, timeout=60) as direct:
        assert direct.post("/emulator/faults", json={**fault, "method": "recognize"}).status_code == 201
        try:
            answer = persons(front.http, "recognize", {"space": "0", "images": [{"name": "p"}]}, [("p", OBAMA2)])
        finally:
            direct.delete("/emulator/faults")
            front.configure(upstream_timeout=30)
    assert answer.status_code == 200 and answer.content == envelope.error(500, INTERNAL_ERROR)
    assert not (front.cassettes / f"{name}.json").exists()  # nothing recorded


def test_a_write_that_would_store_the_token_is_refused_and_health_warns(
    front: Front, upstream: EmulatorProcess
) -> None:
    front.configure(upstream_mode="record", cassette="leak", upstream_url=upstream.base_url, record_images="full")
    image = b"not a photo, but it holds " + TOKEN.encode()
    answer = persons(front.http, "recognize", {"space": "0", "images": [{"name": "p"}]}, [("p", image)])
    assert answer.json()["status"] == 200  # the client still gets the upstream's answer
    assert answer.json()["body"]["objects"][0]["status"] == 1
    assert not (front.cassettes / "leak.json").exists()
    warning = front.http.get("/emulator/health").json()["warnings"]["cassette"]["warning"]
    assert "refused" in warning and TOKEN not in warning and TOKEN not in front.server.log()
    # With images stored as hashes only, the same request is recorded.
    front.configure(record_images="hash")
    persons(front.http, "recognize", {"space": "0", "images": [{"name": "p"}]}, [("p", image)])
    assert len(front.cassette("leak").interactions) == 1
    front.configure(record_images="full")


def test_a_client_behind_https_proxy_records_against_the_real_host_name(
    front: Front, upstream: EmulatorProcess
) -> None:
    """curl with HTTPS_PROXY calls https://smarty.mail.ru itself; the proxy hands it to the app, whose upstream
    hook forwards to SMARTY_UPSTREAM_URL (the second emulator)."""
    front.configure(upstream_mode="record", cassette="proxied", upstream_url=upstream.base_url)
    proxy = f"http://127.0.0.1:{front.proxy_port}"
    env = {**os.environ, "HTTPS_PROXY": proxy, "https_proxy": proxy, "CURL_CA_BUNDLE": str(front.ca)}
    env.pop("NO_PROXY", None), env.pop("no_proxy", None)
    url = f"https://smarty.mail.ru/api/v1/persons/recognize?oauth_token={TOKEN}&oauth_provider=mcs"
    form = [
        "-F",
        f"photo=@{FIXTURES / 'groups/two_people.jpg'}",
        "-F",
        'meta={"space":"5","images":[{"name":"photo"}]}',
    ]
    done = subprocess.run(["curl", "-sS", "--fail-with-body", url, *form], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["body"]["objects"][0]["persons"]) == 2
    [recorded] = front.cassette("proxied").interactions
    assert recorded.response.body == done.stdout and recorded.path == "/api/v1/persons/recognize"
    with httpx.Client(base_url=upstream.base_url, timeout=60) as direct:
        seen = direct.get("/emulator/requests").json()["requests"]
    assert [r["method"] for r in seen if r["space"] == 5] == ["recognize"]


def test_kill_9_while_recording_leaves_a_readable_cassette(upstream: EmulatorProcess, tmp_path: Path) -> None:
    cassettes = tmp_path / "cassettes"
    server = EmulatorProcess(
        tmp_path / "data", upstream_mode="record", upstream_url=upstream.base_url, cassette_dir=cassettes,
        record_images="hash",
    ).start()  # fmt: skip
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            for n in range(10_000):
                if stop.is_set():
                    return
                try:
                    persons(http, "truncate", {"space": str(n % 10)})
                except httpx.HTTPError:
                    return

    senders = [threading.Thread(target=client) for _ in range(3)]
    try:
        for sender in senders:
            sender.start()
        path = cassettes / "default.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or len(Cassette.load(path).interactions) < 20):
            time.sleep(0.05)
        os.killpg(server.process.pid, signal.SIGKILL)  # mid-record: the senders are still sending
    finally:
        stop.set()
        for sender in senders:
            sender.join()
        server.stop()
    survived = Cassette.load(path)
    assert len(survived.interactions) >= 20
    assert all(i.method == "truncate" and i.response.status == 200 for i in survived.interactions)
