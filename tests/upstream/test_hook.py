"""The upstream hook on its own: what reaches the upstream, what the client gets, compare's seam (no dlib).

The upstream here is a small HTTP server in a thread that keeps what it received and answers what a test tells it.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulator.api.multipart import parse_form
from emulator.ops.observe import RequestRecord
from emulator.persons.errors import InternalError
from emulator.persons.hooks import Answer, Success, Verbatim
from emulator.persons.request import Part, PersonsRequest
from emulator.persons.types import ClientId
from emulator.settings import Settings
from emulator.upstream.cassette import Cassette
from emulator.upstream.forward import UpstreamAnswer
from emulator.upstream.hook import UpstreamHook
from emulator.upstream.library import CassetteLibrary

QUERY = "oauth_token=tok-0123456789abcdef&oauth_provider=mcs&extra=%C3%A9"


@dataclass
class Upstream:
    url: str
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # (path?query, content type, body)
    answer: tuple[int, dict[str, str], bytes] = (200, {"Content-Type": "application/json"}, b'{"status":200}')


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((self.path, self.headers["Content-Type"], body))
            status, headers, content = state.answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def part(name: str, data: bytes, filename: str | None) -> Part:
    return Part(name, filename, len(data), [data])


def request(settings: Settings, method: str = "recognize") -> PersonsRequest:
    parts = {
        "b": part("b", b"second image", 'weird "name".jpg'),
        "a": part("a", b"first \r\n-- image", "a.jpg"),
        "meta": part("meta", b'{"space":"0","images":[{"name":"b"},{"name":"a"}]}', None),
    }
    record = RequestRecord(method=method, client="default", started_at=time.time())
    return PersonsRequest.parsed(method, ClientId("default"), parts, settings, record, QUERY)


def settings_for(upstream: Upstream, tmp_path: Path, **changes: Any) -> Settings:
    return Settings.from_sources({}, {"upstream_url": upstream.url, "cassette_dir": str(tmp_path), **changes})


async def the_emulator(request: PersonsRequest) -> Answer:
    return Success({"objects": "from the emulator"})


def test_off_passes_the_request_on(upstream: Upstream, tmp_path: Path) -> None:
    settings = settings_for(upstream, tmp_path, upstream_mode="off")
    answer = asyncio.run(UpstreamHook(CassetteLibrary())(request(settings), the_emulator))
    assert answer == Success({"objects": "from the emulator"}) and upstream.received == []


def test_the_upstream_gets_the_same_path_query_and_parts_and_the_client_its_exact_bytes(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.answer = (418, {"Content-Type": "text/plain", "Set-Cookie": "s=1"}, b"\xffodd bytes")
    settings = settings_for(upstream, tmp_path, upstream_mode="record")
    answer = asyncio.run(UpstreamHook(CassetteLibrary())(request(settings), the_emulator))
    assert answer == Verbatim(status=418, content=b"\xffodd bytes", headers=(("content-type", "text/plain"),))
    [(target, content_type, body)] = upstream.received
    assert target == f"/api/v1/persons/recognize?{QUERY}"

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    parts = asyncio.run(parse_form(content_type, chunks(), max_part_bytes=1 << 20, max_body_bytes=1 << 22))
    assert list(parts) == ["b", "a", "meta"]
    assert [(p.filename, p.data) for p in parts.values()] == [
        ("weird %22name%22.jpg", b"second image"),
        ("a.jpg", b"first \r\n-- image"),
        (None, b'{"space":"0","images":[{"name":"b"},{"name":"a"}]}'),
    ]
    [recorded] = Cassette.load(tmp_path / "default.json").interactions
    assert recorded.response.body == b"\xffodd bytes" and recorded.response.headers == {"content-type": "text/plain"}
    assert [image.name for image in recorded.images] == ["b", "a"]


def test_redirects_reach_the_client_as_they_are(upstream: Upstream, tmp_path: Path) -> None:
    upstream.answer = (302, {"Location": upstream.url + "/elsewhere"}, b"")
    settings = settings_for(upstream, tmp_path, upstream_mode="record")
    answer = asyncio.run(UpstreamHook(CassetteLibrary())(request(settings), the_emulator))
    assert isinstance(answer, Verbatim) and answer.status == 302 and len(upstream.received) == 1


def test_compare_answers_the_upstream_and_hands_both_to_the_seam(upstream: Upstream, tmp_path: Path) -> None:
    settings = settings_for(upstream, tmp_path, upstream_mode="compare")
    seen: list[tuple[PersonsRequest, UpstreamAnswer]] = []

    async def on_forwarded(forwarded: PersonsRequest, answer: UpstreamAnswer) -> None:
        seen.append((forwarded, answer))
        raise RuntimeError("a comparison that fails changes nothing for the client")

    sent = request(settings)
    answer = asyncio.run(UpstreamHook(CassetteLibrary(), on_forwarded)(sent, the_emulator))
    assert answer == Verbatim(status=200, content=b'{"status":200}', headers=(("content-type", "application/json"),))
    [(forwarded, upstream_answer)] = seen
    assert forwarded is sent and upstream_answer.body == b'{"status":200}' and upstream_answer.status == 200
    assert not list(tmp_path.iterdir())  # compare writes no cassette


def test_an_unreachable_upstream_is_an_internal_error_and_nothing_is_recorded(tmp_path: Path) -> None:
    gone = Upstream("http://127.0.0.1:9")  # the discard port: nothing listens
    settings = settings_for(gone, tmp_path, upstream_mode="record")
    with pytest.raises(InternalError):
        asyncio.run(UpstreamHook(CassetteLibrary())(request(settings), the_emulator))
    assert not list(tmp_path.iterdir())


def test_a_part_over_the_size_bound_is_answered_by_the_emulator(upstream: Upstream, tmp_path: Path) -> None:
    settings = settings_for(upstream, tmp_path, upstream_mode="record")
    sent = request(settings)
    sent.parts["a"].overflow = True
    answer = asyncio.run(UpstreamHook(CassetteLibrary())(sent, the_emulator))
    assert answer == Success({"objects": "from the emulator"}) and upstream.received == []


def test_a_cassette_that_cannot_be_written_still_answers_and_warns(upstream: Upstream, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the cassette folder should be")
    settings = settings_for(upstream, tmp_path / "file", upstream_mode="record")
    warnings: list[str] = []
    answer = asyncio.run(UpstreamHook(CassetteLibrary(warn=warnings.append))(request(settings), the_emulator))
    assert isinstance(answer, Verbatim) and answer.content == b'{"status":200}'
    [warning] = warnings
    assert "cannot write the cassette" in warning and "not recorded" in warning
