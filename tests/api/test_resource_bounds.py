"""A request's memory is bounded by settings, and requests leave no files behind.

Each bound gets its own proof: bytes per image and bytes per body (on the parser, measuring what it
buffers and what it reads; then over HTTP), pixels per image (and a decompression bomb that is never
decoded), images per request. Then: no temporary or stray files, also after a client that disconnects
in the middle of an upload.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from emulator.api.multipart import parse_form
from emulator.face.engine import DlibEngine
from emulator.ops import memory
from emulator.ops.observe import RequestRecord
from emulator.persons.errors import BadRequest
from tests.support import hostile
from tests.support.emulator_server import EmulatorServer, fixture
from tests.support.hostile import BOUNDARY, CONTENT_TYPE, FACE

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
SMALL_FACE = "people/obama/obama-240p.jpg"


class CountingBody:
    """An async request body of ``total`` bytes: a multipart head, then one huge part. Counts what was read."""

    def __init__(self, head: bytes, total: int, chunk: int = 64 * 1024, tail: bytes = b"") -> None:
        self.head, self.total, self.chunk, self.tail = head, total, chunk, tail
        self.consumed = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._count(self.head)
        zeros = b"\x00" * self.chunk
        while self.consumed + self.chunk + len(self.tail) <= self.total:
            yield self._count(zeros)
        yield self._count(self.tail)

    def _count(self, data: bytes) -> bytes:
        self.consumed += len(data)
        return data


def _part_head(name: str) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="x"\r\n\r\n'.encode()


def _closing(meta: dict[str, object]) -> bytes:
    return (
        f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{json.dumps(meta)}\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode()


# --- bytes per image -------------------------------------------------------------------------


def test_a_part_over_the_image_limit_is_counted_not_buffered() -> None:
    """A 40 MB part with a 1 MB per-part limit: the parser's Python allocations peak near the limit, not at 40 MB."""
    meta = {"space": "0", "images": [{"name": "big", "person_id": 1}]}
    body = CountingBody(_part_head("big"), 40 * MIB, tail=_closing(meta))
    tracemalloc.start()
    try:
        parts = asyncio.run(parse_form(CONTENT_TYPE, body.__aiter__(), max_part_bytes=1 * MIB, max_body_bytes=64 * MIB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    big = parts["big"]
    assert big.overflow and big.data is None and big.chunks == []
    assert big.size == body.consumed - len(_part_head("big")) - len(_closing(meta))  # every byte was counted
    assert body.consumed > body.total - 2 * body.chunk  # read to the end: the request goes on, this image gets status 1
    assert peak < 3 * MIB, f"parser peaked at {peak} bytes for a 40 MB part with a 1 MB limit"
    assert json.loads(parts["meta"].data or b"") == meta


def test_image_limit_over_http(server: EmulatorServer) -> None:
    """``max_image_bytes``: a photo one byte over is refused for itself (status 1); one at the limit works."""
    small = fixture(SMALL_FACE)
    server.configure(max_image_bytes=len(small))
    try:
        body = server.ok(
            "set",
            {"space": "4", "images": [{"name": "fits", "person_id": 1}, {"name": "over", "person_id": 2}]},
            [("fits", small), ("over", small + b"\x00")],
        )
    finally:
        server.configure(max_image_bytes=4 * MIB)
    assert body["objects"] == [
        {"status": 0, "name": "fits"},
        {
            "status": 1,
            "error": f"image is too large: {len(small) + 1} bytes, the limit is {len(small)} bytes",
            "name": "over",
        },
    ]
    server.ok("truncate", {"space": "4"})


# --- bytes per request body --------------------------------------------------------------------


def test_a_1gb_body_is_refused_at_the_limit_without_being_read() -> None:
    """A 1 GB body against an 8 MB limit: the parser stops reading one chunk past the limit."""
    body = CountingBody(_part_head("f"), 1024**3)
    with pytest.raises(BadRequest) as refused:
        asyncio.run(parse_form(CONTENT_TYPE, body.__aiter__(), max_part_bytes=4 * MIB, max_body_bytes=8 * MIB))
    assert refused.value.message == "could not parse multipart form: request body too large, the limit is 8388608 bytes"
    assert 8 * MIB < body.consumed <= 8 * MIB + body.chunk


def test_body_limit_over_http_streamed_slowly(server: EmulatorServer) -> None:
    """Over a socket, 1 GB announced and sent slowly: refused once past a 2 MB limit; far less than 1 GB sent."""
    server.configure(max_request_bytes=2 * MIB)

    def chunks() -> Iterator[bytes]:
        yield _part_head("f")
        while True:
            yield b"\x00" * 16384

    try:
        answer = hostile.raw_post(
            server.port,
            "/api/v1/persons/set?oauth_token=t&oauth_provider=mcs",
            {"Content-Type": CONTENT_TYPE, "Content-Length": str(1024**3)},
            chunks(),
            max_bytes=64 * MIB,
            pause=0.001,
        )
    finally:
        server.configure(max_request_bytes=32 * MIB)
    assert json.loads(answer.body)["body"] == (
        "could not parse multipart form: request body too large, the limit is 2097152 bytes"
    )
    # Loopback socket buffers may hold a few MB the server never read; the point is it stopped far short.
    assert 2 * MIB <= answer.sent < 64 * MIB


# --- pixels per image ------------------------------------------------------------------------------


def test_pixel_limit(server: EmulatorServer) -> None:
    """``max_image_width`` x ``max_image_height`` (either orientation) and ``min_image_side``."""
    server.configure(max_image_width=640, max_image_height=480)
    try:
        objects = server.ok(
            "recognize",
            {"space": "4", "images": [{"name": "big"}, {"name": "fits"}], "update_embedding": False},
            [("big", fixture(FACE)), ("fits", fixture(SMALL_FACE))],
        )["objects"]
    finally:
        server.configure(max_image_width=3840, max_image_height=2160)
    assert objects[0] == {
        "status": 1,
        "error": "image is 910x1137 pixels, larger than the allowed 640x480 (or 480x640)",
        "name": "big",
    }
    assert objects[1]["status"] == 0 and len(objects[1]["persons"]) == 1


def test_decompression_bomb_is_never_decoded(tmp_path: Path) -> None:
    """The 40000x40000 PNG (4.8 GB as RGB) is refused from its header: a fresh process's peak memory stays small."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(hostile.png_bomb())
    script = (
        "import resource, sys\n"
        "from emulator.face.decode import ImageTooLarge, decode_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_image(data, max_width=3840, max_height=2160)\n"
        "except ImageTooLarge as exc:\n"
        "    print(exc.message)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    message, grown_kb = done.stdout.strip().splitlines()
    assert message == "image is 40000x40000 pixels, larger than the allowed 3840x2160 (or 2160x3840)"
    assert int(grown_kb) < 50 * 1024, f"peak RSS grew by {grown_kb} KB while refusing the bomb"


# --- images per request ------------------------------------------------------------------------------


def test_images_per_request(server: EmulatorServer) -> None:
    server.configure(max_images=2)
    try:
        three = server.call("recognize", {"space": "4", "images": [{"name": n} for n in "abc"]})
        two = server.ok(
            "recognize",
            {"space": "4", "images": [{"name": "a"}, {"name": "b"}], "update_embedding": False},
            [("a", fixture(SMALL_FACE)), ("b", fixture(SMALL_FACE))],
        )
    finally:
        server.configure(max_images=100)
    assert three.json()["body"] == "too many images: 3, at most 2 are allowed per request"
    assert [o["status"] for o in two["objects"]] == [0, 0]


# --- files -----------------------------------------------------------------------------------------


def _listing(*roots: Path) -> set[str]:
    return {str(p) for root in roots for p in root.rglob("*")}


def _disconnect_mid_upload(port: int) -> None:
    """Announce 10 MB, send 2 MB of an image part, and hang up."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /api/v1/persons/set?oauth_token=t&oauth_provider=mcs HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {10 * MIB}\r\n\r\n"
            ).encode()
            + _part_head("f")
            + b"\xff" * (2 * MIB)
        )


def test_no_files_are_left_behind(server: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads (ok, over the limit, refused mid-stream, abandoned mid-upload) create no temp or data files."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # any tempfile use by the in-process server lands here
    monkeypatch.setenv("TMPDIR", str(temp))
    data_dir = Path(server.settings.data_dir)
    server.ok("truncate", {"space": "6"})  # the store's files all exist by now
    before = _listing(temp, data_dir)
    disconnects: list[RequestRecord] = []
    observer = lambda record: disconnects.append(record) if "disconnected" in str(record.body) else None  # noqa: E731
    server.runtime.observers.append(observer)

    assert server.set(6, 1, FACE)["status"] == 0
    tiff = server.ok(  # TIFF goes through libtiff, which is given the bytes in memory
        "recognize",
        {"space": "6", "images": [{"name": "t"}], "update_embedding": False},
        [("t", hostile.multipage_tiff())],
    )
    assert [p["tag"] for p in tiff["objects"][0]["persons"]] == ["person1"]
    over = server.ok(
        "set", {"space": "6", "images": [{"name": "f", "person_id": 2}]}, [("f", hostile.over_size_limit(4 * MIB))]
    )
    assert over["objects"][0]["status"] == 1
    server.configure(max_request_bytes=1 * MIB)
    try:
        refused = server.call(
            "set", {"space": "6", "images": [{"name": "f", "person_id": 3}]}, [("f", b"\x00" * 2 * MIB)]
        )
    finally:
        server.configure(max_request_bytes=32 * MIB)
    assert refused.json()["status"] == 400
    for _ in range(3):
        _disconnect_mid_upload(server.port)

    # The server is still well, recorded the abandoned uploads as such, and left no file anywhere.
    deadline = time.monotonic() + 30
    while len(disconnects) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = 2 * MIB + len(_part_head("f"))
    assert [r.body for r in disconnects] == [
        f"could not parse multipart form: the client disconnected after {sent} bytes of the body"
    ] * 3
    assert server.tags(6, FACE, update_embedding=False) == ["person1"]
    assert _listing(temp, data_dir) == before
    server.runtime.observers.remove(observer)
    server.ok("truncate", {"space": "6"})


def test_malloc_arenas_are_capped_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` caps glibc's malloc arenas (RSS settles low and flat); an operator's MALLOC_ARENA_MAX wins."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert memory.limit_malloc_arenas() == 2
    assert os.environ["MALLOC_ARENA_MAX"] == "2"  # inherited by the worker processes
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_malloc_arenas() == 4


def test_each_served_process_trims_its_heap_every_few_analyses(engine: DlibEngine, tmp_path: Path) -> None:
    """The app factory that ``serve`` runs in each process switches trimming on; the engine then gives freed heap
    pages back after every TRIM_EVERY-th image (RSS does not creep under sustained load: ``make soak``)."""
    memory.disable_trimming()
    engine.analyze(fixture(SMALL_FACE))
    assert (memory.trimming_interval(), memory.trims_done()) == (None, 0)  # off outside ``serve``
    probe = "from emulator.app import app_from_env; from emulator.ops import memory; app_from_env(); "
    probe += "print(memory.trimming_interval())"  # a process of its own: the factory also configures logging
    env = {**os.environ, "SMARTY_DATA_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == [str(memory.TRIM_EVERY)], run.stderr
    try:
        assert memory.enable_trimming(every=3)
        for _ in range(7):
            engine.analyze(fixture(SMALL_FACE))
        assert memory.trims_done() == 2
    finally:
        memory.disable_trimming()
