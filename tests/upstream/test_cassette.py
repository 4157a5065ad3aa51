"""The cassette format: the key, the file, redaction, the token check and atomic writes (no server needed)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.upstream.cassette import (
    FORMAT,
    REDACTED,
    Cassette,
    CassetteError,
    Image,
    Interaction,
    LeakRefused,
    Response,
    cassette_path,
    kept_headers,
    oauth_meta,
    redact_token_body,
    request_key,
    stored_meta,
)

META = b'{"space":"0","images":[{"name":"file","person_id":1}]}'


def interaction(key: str, body: bytes = b'{"status":200}', status: int = 200) -> Interaction:
    response = Response(status, {"content-type": "application/json"}, 12.34, body)
    return Interaction(key, "set", "/api/v1/persons/set", stored_meta(META), (Image("file", "ab" * 32, 3),), response)


def test_the_key_is_the_agreed_hash() -> None:
    canonical = json.dumps(json.loads(META), sort_keys=True, separators=(",", ":"))
    expected = json.dumps(["set", "/api/v1/persons/set", canonical, [["file", "ff"]]], separators=(",", ":"))
    key = request_key("set", "/api/v1/persons/set", META, [("file", "ff")])
    assert key == hashlib.sha256(expected.encode()).hexdigest()


def test_the_key_ignores_meta_spacing_and_key_order_but_not_values_or_image_order() -> None:
    key = request_key("set", "/p", META, [("a", "1"), ("b", "2")])
    reordered = b'{ "images": [{"person_id": 1, "name": "file"}],  "space": "0" }'
    assert request_key("set", "/p", reordered, [("a", "1"), ("b", "2")]) == key
    assert request_key("set", "/p", META.replace(b"1}", b"2}"), [("a", "1"), ("b", "2")]) != key
    assert request_key("set", "/p", META, [("b", "2"), ("a", "1")]) != key
    assert request_key("recognize", "/p", META, [("a", "1"), ("b", "2")]) != key
    assert request_key("set", "/p", META, [("a", "1"), ("b", "3")]) != key


def test_meta_that_is_not_json_keys_by_its_text_and_is_stored_raw() -> None:
    assert request_key("set", "/p", b"{not json", []) != request_key("set", "/p", b"{not  json", [])
    assert stored_meta(b"{not json") == {"raw": "{not json"}
    assert stored_meta(None) is None


def test_a_cassette_round_trips_exact_bytes(tmp_path: Path) -> None:
    path = cassette_path(tmp_path, "default")
    binary = bytes(range(256))
    cassette = Cassette(path, "https://smarty.mail.ru", [interaction("k1"), interaction("k2", binary, 502)])
    cassette.save()
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT and doc["version"] == 1 and doc["upstream"] == "https://smarty.mail.ru"
    first, second = doc["interactions"]
    assert first["response"]["body"] == '{"status":200}' and first["response"]["body_base64"] is None
    assert second["response"]["body"] is None and second["response"]["body_base64"]
    assert first["meta"] == {"space": "0", "images": [{"name": "file", "person_id": 1}]}
    assert first["images"] == [{"name": "file", "sha256": "ab" * 32, "size": 3}]
    loaded = Cassette.load(path)
    assert [i.response.body for i in loaded.interactions] == [b'{"status":200}', binary]
    assert loaded.interactions[1].response.status == 502


def test_interactions_sharing_a_key_keep_their_order(tmp_path: Path) -> None:
    path = cassette_path(tmp_path, "order")
    for body in (b"one", b"two", b"three"):
        Cassette.append(path, interaction("same", body), upstream="u")
    assert [i.response.body for i in Cassette.load(path).find("same")] == [b"one", b"two", b"three"]


def test_a_missing_cassette_is_empty_and_a_foreign_file_is_an_error(tmp_path: Path) -> None:
    assert Cassette.load(tmp_path / "none.json").interactions == []
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(CassetteError, match="bad.json"):
        Cassette.load(tmp_path / "bad.json")
    (tmp_path / "future.json").write_text(json.dumps({"format": FORMAT, "version": 99}))
    with pytest.raises(CassetteError, match="version 99"):
        Cassette.load(tmp_path / "future.json")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "a..b"])
def test_a_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CassetteError):
        cassette_path(tmp_path, name)


def test_blobs_are_stored_once_by_hash(tmp_path: Path) -> None:
    image = b"\xff\xd8 jpeg bytes"
    digest = hashlib.sha256(image).hexdigest()
    path = cassette_path(tmp_path, "blobs")
    Cassette.append(path, interaction("k"), upstream="u", blobs={digest: image})
    Cassette.append(path, interaction("k"), upstream="u", blobs={digest: image})
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [digest]
    assert (tmp_path / "blobs" / digest).read_bytes() == image
    with pytest.raises(CassetteError, match="does not hold"):
        Cassette.append(path, interaction("k"), upstream="u", blobs={"00" * 32: image})


def test_token_bodies_are_redacted_and_the_rest_kept() -> None:
    body = b'{"access_token":"acc-123456789","refresh_token":"ref-987654321","expires_in":3600}'
    assert redact_token_body(body) == b'{"access_token":"<redacted>","refresh_token":"<redacted>","expires_in":3600}'
    escaped = json.dumps({"access_token": 'a"b\\c-secret', "expires_in": 1}).encode()
    assert json.loads(redact_token_body(escaped)) == {"access_token": REDACTED, "expires_in": 1}
    assert redact_token_body(b"not json") == b"not json"
    assert oauth_meta({"grant_type": "client_credentials", "client_id": "id", "client_secret": "s"}) == {
        "client_id": "id",
        "grant_type": "client_credentials",
    }


def test_only_selected_headers_are_kept() -> None:
    headers = [("Content-Type", "application/json"), ("Set-Cookie", "s=1"), ("Authorization", "x"), ("Server", "n")]
    assert kept_headers(headers) == {"content-type": "application/json"}


def test_a_write_that_would_store_a_live_secret_is_refused(tmp_path: Path) -> None:
    token = "live-token-0123456789"
    path = cassette_path(tmp_path, "leak")
    Cassette.append(path, interaction("k"), upstream="u", secrets=[token])
    before = path.read_bytes()
    with pytest.raises(LeakRefused) as refused:
        Cassette.append(path, interaction("k", f'{{"echo":"{token}"}}'.encode()), upstream="u", secrets=[token])
    assert token not in str(refused.value)
    image = b"jpeg" + token.encode()
    with pytest.raises(LeakRefused):
        Cassette.append(
            path, interaction("k"), upstream="u", blobs={hashlib.sha256(image).hexdigest(): image}, secrets=[token]
        )
    assert path.read_bytes() == before  # nothing written, not even the blob
    assert not (tmp_path / "blobs").exists()


def test_a_crash_while_writing_leaves_the_last_good_cassette(tmp_path: Path) -> None:
    """A writer killed mid-write (here: between writing the temporary file and replacing) leaves the old file."""
    path = cassette_path(tmp_path, "crash")
    Cassette.append(path, interaction("k"), upstream="u")
    good = path.read_bytes()
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from emulator.upstream import cassette\n"
        "def crash(src, dst):\n"
        "    os._exit(9)\n"
        "cassette.os.replace = crash\n"
        "c = cassette.Cassette.load(Path(sys.argv[1]))\n"
        "c.interactions.append(c.interactions[0])\n"
        "c.save()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert done.returncode == 9
    assert path.read_bytes() == good
    assert len(Cassette.load(path).interactions) == 1


def test_a_folder_that_cannot_be_made_is_a_cassette_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the cassette folder should be")
    with pytest.raises(CassetteError, match="cannot write the cassette"):
        Cassette.append(cassette_path(tmp_path / "file", "x"), interaction("k"), upstream="u")
