"""A catalogue of bad input: each case gets a precise answer, the stored persons stay intact, the server stays up.

Every case is one real HTTP request to a real server (real dlib). Space 1 holds two persons (person 1 from
``people/obama``, person 2 from ``people/biden``); after each case the test checks that every person and face
of every space is exactly as before, and that the server still answers (``GET /emulator/health``).

Where the emulator decides what a correct answer is, the case says so. In short: a CMYK or grayscale JPEG,
a 16-bit, palette or RGBA PNG and a multi-page TIFF (its first page) are ordinary photos and are recognized;
GIF, WEBP, BMP and SVG are not JPEG/PNG/TIFF and get the contract's "unknown image type"; names are matched
byte for byte after the quoted-string unescaping of RFC 7578 (as Go's mime/multipart does).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from emulator.face.decode import ImageError, decode_image
from emulator.persons.types import DEFAULT_CLIENT, SpaceKey
from tests.support import hostile
from tests.support.emulator_server import EmulatorServer, fixture
from tests.support.hostile import BOUNDARY, CONTENT_TYPE, FACE, OTHER_FACE, form, multipart

SPACE = 1
AUTH = {"oauth_token": "test-token", "oauth_provider": "mcs"}
IMAGE_LIMIT = 4 * 1024 * 1024  # the default SMARTY_MAX_IMAGE_BYTES
BODY_LIMIT = 32 * 1024 * 1024  # the default SMARTY_MAX_REQUEST_BYTES
UNKNOWN = "The memory contains data of an unknown image type"
IMAGE_TYPE = 'struct { Name string "json:\\"name\\""; PersonID int64 "json:\\"person_id\\"" }'
META_TYPE = "struct { Space string; Images []struct; CreateNew bool; UpdateEmbedding bool; Searcher int }"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    body: Callable[[], bytes]
    error: str | None = None  # the whole request fails: envelope status 400 and this body
    objects: Callable[[list[dict[str, Any]]], None] | None = None  # else: a check of body.objects
    content_type: str | None = CONTENT_TYPE
    status: int = 400


def _set_meta(person_id: object = 99, name: str = "f") -> dict[str, Any]:
    return {"space": str(SPACE), "images": [{"name": name, "person_id": person_id}]}


def _recognize_meta(name: str = "f") -> dict[str, Any]:
    return {"space": str(SPACE), "images": [{"name": name}], "update_embedding": False}


def refused_image(case_id: str, data: Callable[[], bytes], error: str) -> Case:
    """``set`` of this image to a new person must fail for the image alone (status 1) and store nothing."""

    def check(objects: list[dict[str, Any]]) -> None:
        assert objects == [{"status": 1, "error": error, "name": "f"}]

    return Case(case_id, "set", lambda: form(_set_meta(), [("f", data())]), objects=check)


def recognized_image(case_id: str, data: Callable[[], bytes], tags: list[str], name: str = "f") -> Case:
    """``recognize`` (storing nothing) of this image must find exactly these persons."""

    def check(objects: list[dict[str, Any]]) -> None:
        assert len(objects) == 1 and objects[0]["status"] == 0 and objects[0]["name"] == name, objects
        assert [p["tag"] for p in objects[0].get("persons", [])] == tags

    return Case(case_id, "recognize", lambda: form(_recognize_meta(name), [(name, data())]), objects=check)


def _too_small(side: int) -> str:
    return f"image is {side}x{side} pixels, smaller than the allowed minimum 5x5"


# --- every field with every wrong JSON type ----------------------------------------------

# (field, method, how to place a value in meta, Go type, the JSON values of a wrong type)
_WRONG_TYPES: dict[str, Any] = {
    "number": 7,
    "float": 1.5,
    "string": "x",
    "bool": True,
    "array": [],
    "object": {},
}
_KIND = {
    "number": "number",
    "float": "number",
    "string": "string",
    "bool": "bool",
    "array": "array",
    "object": "object",
}


def _place(field: str, value: object) -> tuple[str, dict[str, Any]]:
    images: list[dict[str, Any]] = [{"name": "f", "person_id": 99}]
    if field == "space":
        return "truncate", {"space": value}
    if field == "images":
        return "set", {"space": str(SPACE), "images": value}
    if field == "images[]":
        return "set", {"space": str(SPACE), "images": [value]}
    if field == "name":
        return "set", {"space": str(SPACE), "images": [{"name": value, "person_id": 99}]}
    if field == "person_id":
        return "set", {"space": str(SPACE), "images": [{"name": "f", "person_id": value}]}
    return "recognize", {"space": str(SPACE), "images": images, field: value}


_FIELDS = {  # field: (Go path, Go type, the JSON types it takes)
    "space": (".space", "string", {"string"}),
    "images": (".images", "[]" + IMAGE_TYPE, {"array"}),
    "images[]": (".images", IMAGE_TYPE, {"object"}),
    "name": (".images.name", "string", {"string"}),
    "person_id": (".images.person_id", "int64", {"number"}),
    "create_new": (".create_new", "bool", {"bool"}),
    "update_embedding": (".update_embedding", "bool", {"bool"}),
    "searcher": (".searcher", "int", {"number"}),
}


def _wrong_type_cases() -> Iterator[Case]:
    for field, (path, go_type, takes) in _FIELDS.items():
        for kind, value in _WRONG_TYPES.items():
            if kind in takes or (kind == "float" and "number" in takes and go_type not in ("int", "int64")):
                continue
            method, meta = _place(field, value)
            shown = "number 1.5" if kind == "float" and go_type in ("int", "int64") else _KIND[kind]
            error = f"json: cannot unmarshal {shown} into Go struct field {path} of type {go_type}"
            yield Case(f"type-{field}-{kind}", method, lambda meta=meta: form(meta, [("f", b"x")]), error=error)


# --- the catalogue -------------------------------------------------------------------------


def _truncated_body() -> bytes:
    body = form(_set_meta(), [("f", fixture(FACE))])
    return body[: len(body) // 2]


def _deep_meta(depth: int) -> bytes:
    """``{"space": [[...]]}`` with ``depth`` levels of nesting in all (the object counts as one)."""
    inner = depth - 1
    return form(b'{"space":' + b"[" * inner + b"]" * inner + b"}")


CASES: list[Case] = [
    # transport
    Case(
        "no-multipart-json",
        "set",
        lambda: json.dumps(_set_meta()).encode(),
        "could not parse multipart form: request Content-Type isn't multipart/form-data",
        content_type="application/json",
    ),
    Case(
        "no-content-type",
        "set",
        lambda: b"meta=1",
        "could not parse multipart form: request Content-Type isn't multipart/form-data",
        content_type=None,
    ),
    Case(
        "multipart-no-boundary",
        "set",
        lambda: form(_set_meta(), [("f", fixture(FACE))]),
        "could not parse multipart form: no multipart boundary param in Content-Type",
        content_type="multipart/form-data",
    ),
    Case(
        "multipart-wrong-boundary",
        "set",
        lambda: form(_set_meta(), [("f", fixture(FACE))]),
        "could not parse multipart form: multipart: NextPart: the body does not begin with the boundary given in"
        " Content-Type",
        content_type="multipart/form-data; boundary=not-the-one",
    ),
    Case(
        "multipart-boundary-too-long",
        "set",
        lambda: form(_set_meta(), [("f", fixture(FACE))]),
        "could not parse multipart form: the multipart boundary is 200 bytes, at most 70 are allowed",
        content_type="multipart/form-data; boundary=" + "b" * 200,
    ),
    Case(
        "multipart-header-flood",
        "set",
        lambda: f"--{BOUNDARY}\r\nX-Pad: {'a' * 70000}\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
        "could not parse multipart form: multipart: NextPart: part headers are larger than 65536 bytes",
    ),
    Case(
        "multipart-too-many-headers",
        "set",
        lambda: (f"--{BOUNDARY}\r\n" + "X-A: 1\r\n" * 40 + f"\r\nx\r\n--{BOUNDARY}--\r\n").encode(),
        "could not parse multipart form: multipart: NextPart: a part has more than 32 headers",
    ),
    Case(
        "truncated-body", "set", _truncated_body, "could not parse multipart form: multipart: NextPart: unexpected EOF"
    ),
    Case(
        "no-closing-boundary",
        "set",
        lambda: multipart([("f", fixture(FACE)), ("meta", json.dumps(_set_meta()).encode())], close=False),
        "could not parse multipart form: multipart: NextPart: unexpected EOF",
    ),
    Case("empty-body", "truncate", lambda: b"", "could not parse multipart form: multipart: NextPart: unexpected EOF"),
    # meta
    Case("no-meta", "set", lambda: multipart([("f", fixture(FACE))]), "could not get meta: http: no such file"),
    Case(
        "meta-not-json",
        "set",
        lambda: form("space=1&images=f"),
        "could not parse meta: invalid character 's' looking for beginning of value",
    ),
    Case(
        "meta-python-dict",
        "set",
        lambda: form(str(_set_meta())),
        "could not parse meta: invalid character '\\'' looking for beginning of object key string",
    ),
    Case("meta-empty", "truncate", lambda: form(""), "could not parse meta: unexpected end of JSON input"),
    Case(
        "meta-json-array",
        "truncate",
        lambda: form([{"space": "1"}]),
        f"json: cannot unmarshal array into Go value of type {META_TYPE}",
    ),
    Case(
        "meta-json-null",
        "truncate",
        lambda: form("null"),
        'wrong space param : strconv.Atoi: parsing "": invalid syntax',
    ),
    # Go's decoder takes nesting up to 10000 deep and refuses deeper ("exceeded max depth"); the emulator too.
    Case(
        "meta-nested-10000",
        "truncate",
        lambda: _deep_meta(10000),
        "json: cannot unmarshal array into Go struct field .space of type string",
    ),
    Case("meta-nested-10001", "truncate", lambda: _deep_meta(10001), "could not parse meta: exceeded max depth"),
    Case("meta-nested-1m", "truncate", lambda: _deep_meta(1_000_000), "could not parse meta: exceeded max depth"),
    Case(
        "meta-10mb",
        "truncate",
        lambda: form(json.dumps({"space": "1", "pad": "x" * (10 * 1024 * 1024)})),
        f"could not parse meta: meta is {10 * 1024 * 1024 + 25} bytes, the limit is {IMAGE_LIMIT} bytes",
    ),
    Case(
        "meta-trailing-garbage",
        "truncate",
        lambda: form('{"space":"1"} {}'),
        "could not parse meta: invalid character '{' after top-level value",
    ),
    Case(
        "meta-utf8-bom",
        "truncate",
        lambda: form(b'\xef\xbb\xbf{"space":"1"}'),
        "could not parse meta: invalid character '\u00ef' looking for beginning of value",
    ),
    Case(
        "meta-missing-comma",
        "truncate",
        lambda: form('{"space":"1" "images":[]}'),
        "could not parse meta: invalid character '\"' after object key:value pair",
    ),
    Case(
        "meta-misspelt-literal",
        "recognize",
        lambda: form('{"space":"1","create_new":tru}'),
        "could not parse meta: invalid character '}' in literal true (expecting 'e')",
    ),
    Case(
        "meta-control-character",
        "truncate",
        lambda: form(b'{"space":"1\x01"}'),
        "could not parse meta: invalid character '\\x01' in string literal",
    ),
    Case(
        "searcher-5000-digits",
        "recognize",
        lambda: form('{"space":"1","searcher":1' + "0" * 5000 + "}"),
        "json: cannot unmarshal number 1" + "0" * 5000 + " into Go struct field .searcher of type int",
    ),
    # space
    Case("space-missing", "truncate", lambda: form({}), 'wrong space param : strconv.Atoi: parsing "": invalid syntax'),
    Case(
        "space-minus-1",
        "truncate",
        lambda: form({"space": "-1"}),
        "wrong space param : space -1 is out of range, allowed spaces are 0..9",
    ),
    Case(
        "space-10",
        "truncate",
        lambda: form({"space": "10"}),
        "wrong space param : space 10 is out of range, allowed spaces are 0..9",
    ),
    Case(
        "space-1.5",
        "truncate",
        lambda: form({"space": "1.5"}),
        'wrong space param : strconv.Atoi: parsing "1.5": invalid syntax',
    ),
    Case(
        "space-leading-blank",
        "truncate",
        lambda: form({"space": " 1"}),
        'wrong space param : strconv.Atoi: parsing " 1": invalid syntax',
    ),
    # int("١") is 1 in Python; Go's Atoi takes ASCII digits only, so must the emulator.
    Case(
        "space-arabic-indic-digit",
        "truncate",
        lambda: form({"space": "١"}),
        'wrong space param : strconv.Atoi: parsing "١": invalid syntax',
    ),
    Case(
        "space-huge",
        "truncate",
        lambda: form({"space": "99999999999999999999"}),
        'wrong space param : strconv.Atoi: parsing "99999999999999999999": value out of range',
    ),
    # images
    Case("images-missing", "set", lambda: form({"space": "1"}), "no images have been provided"),
    Case("images-empty", "set", lambda: form({"space": "1", "images": []}), "no images have been provided"),
    Case(
        "images-101",
        "set",
        lambda: form({"space": "1", "images": [{"name": f"f{i}", "person_id": 99} for i in range(101)]}),
        "too many images: 101, at most 100 are allowed per request",
    ),
    Case(
        "names-duplicate",
        "set",
        lambda: form(
            {"space": "1", "images": [{"name": "f", "person_id": 99}, {"name": "f", "person_id": 98}]},
            [("f", fixture(FACE))],
        ),
        "duplicate image name f",
    ),
    Case(
        "name-empty",
        "set",
        lambda: form({"space": "1", "images": [{"name": "", "person_id": 99}]}, [("f", fixture(FACE))]),
        "image name is empty (images[0])",
    ),
    Case(
        "name-missing",
        "set",
        lambda: form({"space": "1", "images": [{"person_id": 99}]}, [("f", fixture(FACE))]),
        "image name is empty (images[0])",
    ),
    Case(
        "name-no-such-part",
        "set",
        lambda: form(_set_meta(name="g"), [("f", fixture(FACE))]),
        "could not get image by name g: http: no such file",
    ),
    # A part name cannot hold a line break (headers are lines), so no part can match this name.
    Case(
        "name-newline",
        "recognize",
        lambda: form(_recognize_meta("a\nb"), [("a b", fixture(FACE))]),
        "could not get image by name a\nb: http: no such file",
    ),
    recognized_image("name-with-quotes", lambda: fixture(FACE), ["person1"], name='say "cheese"'),
    recognized_image("name-unicode", lambda: fixture(FACE), ["person1"], name="фото-😀-照片"),
    recognized_image("name-10kb", lambda: fixture(FACE), ["person1"], name="n" * 10240),
    # person_id
    Case("person-id-0", "set", lambda: form(_set_meta(0), [("f", fixture(FACE))]), "no person_id has been provided"),
    Case(
        "person-id-missing",
        "set",
        lambda: form({"space": "1", "images": [{"name": "f"}]}, [("f", fixture(FACE))]),
        "no person_id has been provided",
    ),
    Case(
        "person-id-negative",
        "set",
        lambda: form(_set_meta(-5), [("f", fixture(FACE))]),
        "wrong person_id -5 for image f: must be positive",
    ),
    Case(
        "person-id-2^63",
        "set",
        lambda: form(_set_meta(2**63), [("f", fixture(FACE))]),
        "json: cannot unmarshal number 9223372036854775808 into Go struct field .images.person_id of type int64",
    ),
    Case(
        "person-id-float",
        "set",
        lambda: form(_set_meta(2.5), [("f", fixture(FACE))]),
        "json: cannot unmarshal number 2.5 into Go struct field .images.person_id of type int64",
    ),
    Case(
        "person-id-float-integral",
        "set",
        lambda: form(_set_meta(3.0), [("f", fixture(FACE))]),
        "json: cannot unmarshal number 3.0 into Go struct field .images.person_id of type int64",
    ),
    Case(
        "person-id-string",
        "set",
        lambda: form(_set_meta("7"), [("f", fixture(FACE))]),
        "json: cannot unmarshal string into Go struct field .images.person_id of type int64",
    ),
    Case(
        "searcher-2",
        "recognize",
        lambda: form({**_recognize_meta(), "searcher": 2}, [("f", fixture(FACE))]),
        "wrong searcher param : 2, allowed values are 0 and 1",
    ),
    # images: bytes
    Case("image-zero-bytes", "set", lambda: form(_set_meta(), [("f", b"")]), "empty image"),
    refused_image("jpeg-truncated", lambda: fixture(FACE)[: len(fixture(FACE)) // 3], UNKNOWN),
    refused_image("jpeg-corrupt", lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 64, UNKNOWN),
    refused_image("not-an-image", lambda: b"hello, world" * 100, UNKNOWN),
    refused_image("gif", lambda: hostile.encode(hostile.face_image(), "GIF"), UNKNOWN),
    refused_image("webp", lambda: hostile.encode(hostile.face_image(), "WEBP"), UNKNOWN),
    refused_image("bmp", lambda: hostile.encode(hostile.face_image(), "BMP"), UNKNOWN),
    refused_image("svg", lambda: hostile.SVG, UNKNOWN),
    refused_image("1x1", lambda: hostile.tiny(1), _too_small(1)),
    refused_image("4x4", lambda: hostile.tiny(4), _too_small(4)),
    # Refused from the PNG header alone; see test_resource_bounds for the proof that it is never decoded.
    refused_image(
        "png-bomb-40000x40000",
        hostile.png_bomb,
        "image is 40000x40000 pixels, larger than the allowed 3840x2160 (or 2160x3840)",
    ),
    refused_image(
        "image-over-size-limit",
        lambda: hostile.over_size_limit(IMAGE_LIMIT),
        f"image is too large: {IMAGE_LIMIT + 1} bytes, the limit is {IMAGE_LIMIT} bytes",
    ),
    # Decided: these are ordinary photos; the emulator converts them to RGB and recognizes the face.
    recognized_image("jpeg-cmyk", hostile.jpeg_cmyk, ["person1"]),
    recognized_image("jpeg-grayscale", hostile.jpeg_gray, ["person1"]),
    recognized_image("png-16bit", hostile.png_16bit, ["person1"]),
    recognized_image("png-palette", hostile.png_palette, ["person1"]),
    recognized_image("png-rgba", hostile.png_rgba, ["person1"]),
    # Decided: a multi-page TIFF is read as its first page (as Go's image/tiff decoder does): person 1, not 2.
    recognized_image("tiff-multipage", hostile.multipage_tiff, ["person1"]),
    *_wrong_type_cases(),
]


# --- fixtures and checks ---------------------------------------------------------------------


def _snapshot(server: EmulatorServer) -> dict[int, list[tuple[int, int]]]:
    """Every (person, face) of every space: what no bad request may change."""
    store = server.runtime.store
    out = {}
    for space in range(10):
        data = store.load_space(SpaceKey(DEFAULT_CLIENT, space))
        out[space] = sorted(zip(data.person_ids.tolist(), data.face_ids.tolist(), strict=True))
    return out


def _assert_healthy(server: EmulatorServer) -> None:
    health = server.http.get("/emulator/health")
    assert health.status_code == 200, health.text


@pytest.fixture(scope="module")
def seeded(server: EmulatorServer) -> EmulatorServer:
    server.ok("truncate", {"space": str(SPACE)})
    assert server.set(SPACE, 1, FACE)["status"] == 0
    assert server.set(SPACE, 2, OTHER_FACE)["status"] == 0
    return server


def _post(server: EmulatorServer, case: Case) -> httpx.Response:
    headers = {"content-type": case.content_type} if case.content_type else {}
    return server.http.post(f"/api/v1/persons/{case.method}", params=AUTH, content=case.body(), headers=headers)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(seeded: EmulatorServer, case: Case) -> None:
    before = _snapshot(seeded)
    response = _post(seeded, case)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert list(payload) == ["status", "body", "htmlencoded", "last_modified"]
    if case.error is not None:
        assert payload == {"status": case.status, "body": case.error, "htmlencoded": False, "last_modified": 0}
    else:
        assert payload["status"] == 200, payload
        assert case.objects is not None
        case.objects(payload["body"]["objects"])
    assert _snapshot(seeded) == before
    _assert_healthy(seeded)


def test_body_of_1gb_streamed_slowly_is_refused_at_the_limit(seeded: EmulatorServer) -> None:
    """A 1 GB body (announced, then sent in 64 KB chunks with pauses) is refused once it passes the limit."""
    before = _snapshot(seeded)
    gigabyte = 1024**3
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="big.jpg"\r\n\r\n'.encode() + fixture(
        FACE
    )

    def chunks() -> Iterator[bytes]:
        yield head
        zeros = b"\x00" * 65536
        while True:
            yield zeros

    stop_at = 64 * 1024 * 1024  # never send more than this, whatever the server does
    answer = hostile.raw_post(
        seeded.port,
        "/api/v1/persons/set?oauth_token=t&oauth_provider=mcs",
        {"Content-Type": CONTENT_TYPE, "Content-Length": str(gigabyte)},
        chunks(),
        max_bytes=stop_at,
        pause=0.0005,
    )
    assert answer.status == 200
    assert json.loads(answer.body) == {
        "status": 400,
        "body": f"could not parse multipart form: request body too large, the limit is {BODY_LIMIT} bytes",
        "htmlencoded": False,
        "last_modified": 0,
    }
    # The answer came while the body was still streaming: far less than 1 GB (and than our 64 MB stop) was sent.
    assert BODY_LIMIT <= answer.sent < stop_at
    assert _snapshot(seeded) == before
    _assert_healthy(seeded)


def test_catalogue_size() -> None:
    """The catalogue covers what it promises (a guard against cases silently dropping out)."""
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken TIFF tags it skips
def test_mutated_images_fail_only_as_image_errors() -> None:
    """1,000 random mutations (flipped, cut, inserted bytes) of JPEG, PNG and TIFF files: each decodes or is an
    ``ImageError`` (status 1 for its object), never any other exception (a 500)."""
    rng = random.Random(20261126)
    small = hostile.face_image().resize((120, 150))
    seeds = [
        hostile.encode(small, "JPEG"),
        hostile.encode(small, "JPEG", progressive=True),
        hostile.encode(small, "PNG"),
        hostile.encode(small, "TIFF"),
        hostile.encode(small, "TIFF", compression="tiff_lzw"),
    ]
    outcomes = {"decoded": 0, "refused": 0}
    for data in seeds:
        for _ in range(200):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                pos, kind = rng.randrange(len(mutated)), rng.random()
                if kind < 0.6:
                    mutated[pos] = rng.randrange(256)
                elif kind < 0.8:
                    del mutated[pos : pos + rng.randint(1, 64)]
                else:
                    mutated[pos:pos] = rng.randbytes(rng.randint(1, 16))
            try:
                decode_image(bytes(mutated), max_width=3840, max_height=2160)
                outcomes["decoded"] += 1
            except ImageError:
                outcomes["refused"] += 1
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0  # both paths were exercised
