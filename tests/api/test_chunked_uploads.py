"""A body without Content-Length (``Transfer-Encoding: chunked``) is refused once it passes
``SMARTY_MAX_REQUEST_BYTES``, on every path, while it streams in: the client has not sent all of it when the answer
comes, and the server serves on afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from emulator.api.body_limit import too_large_message
from tests.support import hostile
from tests.support.emulator_server import EmulatorServer, fixture
from tests.support.hostile import BOUNDARY, CONTENT_TYPE

pytestmark = pytest.mark.slow  # a real server, real dlib

MIB = 1024 * 1024
LIMIT = 2 * MIB
ENDLESS = 256 * MIB  # what the client would send if nobody stopped it


def _chunked(head: bytes, filler: bytes = b"\x00") -> Iterator[bytes]:
    """``head``, then 16 KiB chunks without end, each framed as HTTP/1.1 chunked transfer coding frames it."""
    yield f"{len(head):x}\r\n".encode() + head + b"\r\n"
    data = filler * 16384
    while True:
        yield f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _stream(server: EmulatorServer, path: str, content_type: str, head: bytes) -> hostile.RawResponse:
    return hostile.raw_post(
        server.port,
        path,
        {"Content-Type": content_type, "Transfer-Encoding": "chunked"},
        _chunked(head),
        max_bytes=ENDLESS,
        pause=0.0005,
    )


@pytest.fixture
def limited(server: EmulatorServer) -> Iterator[EmulatorServer]:
    server.configure(max_request_bytes=LIMIT)
    yield server
    server.configure(max_request_bytes=32 * MIB)


def _serves_on(server: EmulatorServer) -> None:
    """Healthy afterwards: ready, and a persons request is answered as usual."""
    assert httpx.get(f"{server.base_url}/emulator/ready", timeout=10).status_code == 200
    found = server.recognize(1, "people/obama/obama.jpg", create_new=False, update_embedding=False)
    assert found["status"] == 0 and "persons" in found


def test_a_chunked_persons_upload_gets_the_envelope_at_the_limit(limited: EmulatorServer) -> None:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n'.encode()
    answer = _stream(limited, "/api/v1/persons/set?oauth_token=t&oauth_provider=mcs", CONTENT_TYPE, head)
    assert answer.status == 200  # always-200 mode: the envelope carries the status
    assert json.loads(answer.body) == {
        "status": 400,
        "body": f"could not parse multipart form: request body too large, the limit is {LIMIT} bytes",
        "htmlencoded": False,
        "last_modified": 0,
    }
    assert LIMIT <= answer.sent < ENDLESS // 4  # loopback buffers hold a few MB the server never read
    _serves_on(limited)


def test_a_chunked_snapshot_upload_is_refused_at_the_request_limit(limited: EmulatorServer) -> None:
    """Not held until the snapshot bound (64 MiB): refused once past the request bound."""
    answer = _stream(limited, "/emulator/snapshot?mode=merge", "application/json", b'{"version": 1, "clients": {')
    assert answer.status == 413
    assert json.loads(answer.body) == {"detail": too_large_message(LIMIT)}
    assert LIMIT <= answer.sent < ENDLESS // 4
    _serves_on(limited)


def test_a_chunked_token_request_is_refused_at_the_request_limit(limited: EmulatorServer) -> None:
    answer = _stream(limited, "/auth/oauth/v1/token", "application/x-www-form-urlencoded", b"grant_type=")
    assert answer.status == 413
    assert json.loads(answer.body) == {"detail": too_large_message(LIMIT)}
    assert LIMIT <= answer.sent < ENDLESS // 4
    _serves_on(limited)


def test_a_chunked_body_within_the_limit_is_served(limited: EmulatorServer) -> None:
    """The bound counts, it does not refuse chunked bodies as such: a chunked set within it stores the face."""
    photo = fixture("people/biden/biden.jpg")
    meta = json.dumps({"space": "3", "images": [{"name": "a", "person_id": 1}]}).encode()
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"; filename="a.jpg"\r\n\r\n'.encode()
        + photo
        + f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="meta"\r\n\r\n'.encode()
        + meta
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    answer = limited.http.post(
        "/api/v1/persons/set",
        params={"oauth_token": "t", "oauth_provider": "mcs"},
        headers={"Content-Type": CONTENT_TYPE},
        content=chunks(),  # a generator: httpx sends it chunked, without Content-Length
    )
    assert json.loads(answer.content)["body"]["objects"][0]["status"] == 0
