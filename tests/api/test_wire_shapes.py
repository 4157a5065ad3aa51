"""The multipart shapes real clients send, written byte by byte, against the real engine."""

from __future__ import annotations

import httpx
import pytest

from tests.support.emulator_server import EmulatorServer, fixture

BOUNDARY = "----WebKitFormBoundaryfCqTBHeLZlsicvMp"
AUTH = {"oauth_token": "t", "oauth_provider": "mcs"}


def part(name: str, data: bytes, *, filename: str | None = None, headers: tuple[str, ...] = ()) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    lines = [f"--{BOUNDARY}", disposition, *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def send(server: EmulatorServer, method: str, content: bytes) -> dict[str, object]:
    response = server.http.post(
        f"/api/v1/persons/{method}",
        params=AUTH,
        content=content,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 200
    payload: dict[str, object] = response.json()
    assert payload["status"] == 200, payload
    return payload


def recognize_tags(payload: dict[str, object]) -> list[str]:
    body_ = payload["body"]
    assert isinstance(body_, dict)
    return [p["tag"] for obj in body_["objects"] for p in obj.get("persons", [])]


@pytest.fixture
def enrolled(server: EmulatorServer, space: int) -> int:
    server.set(space, 1, "people/obama/obama.jpg")
    return space


@pytest.mark.parametrize("meta_first", [True, False], ids=["meta-first", "meta-last"])
def test_meta_first_or_last(server: EmulatorServer, enrolled: int, meta_first: bool) -> None:
    meta = part("meta", f'{{"space":"{enrolled}","images":[{{"name":"file_0"}}],"update_embedding":false}}'.encode())
    image = part("file_0", fixture("people/obama/obama2.jpg"), filename="", headers=("Content-Type: image/jpeg",))
    parts = (meta, image) if meta_first else (image, meta)
    assert recognize_tags(send(server, "recognize", body(*parts))) == ["person1"]


def test_meta_as_a_file_part(server: EmulatorServer, enrolled: int) -> None:
    meta = part(
        "meta",
        f'{{"space":"{enrolled}","images":[{{"name":"img"}}]}}'.encode(),
        filename="meta.json",
        headers=("Content-Type: application/json",),
    )
    image = part("img", fixture("people/obama/obama3.jpg"), filename="photo.jpg")
    assert recognize_tags(send(server, "recognize", body(image, meta))) == ["person1"]


def test_a_part_with_an_empty_name_is_ignored(server: EmulatorServer, enrolled: int) -> None:
    """Real PHP clients send a nameless "fake content" part on delete and truncate."""
    fake = part("", b"fake content")
    meta = part("meta", f'{{"space":"{enrolled}","images":[{{"name":"x","person_id":1}}]}}'.encode())
    assert send(server, "delete", body(fake, meta))["body"] == {"objects": [{"status": 0, "name": "x"}]}
    truncate_meta = part("meta", f'{{"space":"{enrolled}"}}'.encode())
    assert send(server, "truncate", body(fake, truncate_meta))["body"] == {}


def test_content_transfer_encoding_binary(server: EmulatorServer, enrolled: int) -> None:
    image = part(
        "file",
        fixture("people/obama/obama1.jpg"),
        filename="file.jpg",
        headers=("Content-Type: image/jpeg", "Content-Transfer-Encoding: binary"),
    )
    meta = part(
        "meta",
        f'{{"space":"{enrolled}","images":[{{"name":"file"}}]}}'.encode(),
        headers=("Content-Transfer-Encoding: binary",),
    )
    assert recognize_tags(send(server, "recognize", body(meta, image))) == ["person1"]


def test_person_id_zero_in_recognize_images_is_ignored(server: EmulatorServer, enrolled: int) -> None:
    meta = part("meta", f'{{"space":"{enrolled}","images":[{{"name":"f","person_id":0}}]}}'.encode())
    image = part("f", fixture("people/obama/obama2.jpg"), filename="f")
    assert recognize_tags(send(server, "recognize", body(meta, image))) == ["person1"]


def test_image_found_by_part_name_not_filename(server: EmulatorServer, space: int) -> None:
    meta = part("meta", f'{{"space":"{space}","images":[{{"name":"file_1","person_id":9}}]}}'.encode())
    decoy = part("file_0", b"not the image", filename="file_1")
    image = part("file_1", fixture("people/biden/biden2.jpg"), filename="file_0")
    assert send(server, "set", body(meta, decoy, image))["body"] == {"objects": [{"status": 0, "name": "file_1"}]}
    assert server.tags(space, "people/biden/biden.jpg", update_embedding=False) == ["person9"]


def test_the_original_documents_request_example(server: EmulatorServer, space: int) -> None:
    """The set example of the original document, with two parts and unknown data in the second."""
    meta = part(
        "meta",
        f'{{"space":"{space}", "images":[{{"name":"file_0", "person_id":1}},'
        f'{{"name":"file_1", "person_id":2}}]}}'.encode(),
    )
    photo = part(
        "file_0", fixture("people/kit_harington/john1.jpeg"), filename="", headers=("Content-Type: image/jpeg",)
    )
    junk = part("file_1", b"111111111111111111111111111\n" * 3, filename="", headers=("Content-Type: image/jpeg",))
    payload = send(server, "set", body(photo, junk, meta))
    assert payload["body"] == {
        "objects": [
            {"status": 0, "name": "file_0"},
            {"status": 1, "error": "The memory contains data of an unknown image type", "name": "file_1"},
        ]
    }


def test_truncated_body_is_refused(server: EmulatorServer) -> None:
    content = body(part("meta", b'{"space":"0"}'))[:-20]
    response = server.http.post(
        "/api/v1/persons/truncate",
        params=AUTH,
        content=content,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.json() == {
        "status": 400,
        "body": "could not parse multipart form: multipart: NextPart: unexpected EOF",
        "htmlencoded": False,
        "last_modified": 0,
    }


def test_curl_style_request(server: EmulatorServer, enrolled: int) -> None:
    """What `curl -F file=@x.jpg -F meta=...` sends."""
    files = {
        "file": ("persons_recognize.jpg", fixture("people/obama/obama-720p.jpg"), "image/jpeg"),
        "meta": (None, f'{{\n  "space": "{enrolled}",\n  "images": [{{"name": "file"}}]\n}}'),
    }
    response = httpx.post(f"{server.base_url}/api/v1/persons/recognize", params=AUTH, files=files, timeout=60)
    assert recognize_tags(response.json()) == ["person1"]
