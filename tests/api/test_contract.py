"""Every status and error text of the contract, each in its own test, over HTTP with the real engine.

The tests of what is stored (set, delete, truncate, spaces, a request that fails whole) run on SQLite and on
PostgreSQL (``@BOTH_BACKENDS``); auth, meta and image checks answer before the store plays a part, on SQLite."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.backends import BOTH_BACKENDS
from tests.support.emulator_server import EmulatorServer, fixture

OBAMA = fixture("people/obama/obama.jpg")


def envelope(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200  # the default: HTTP 200 for every envelope
    assert response.headers["content-type"].startswith("application/json")
    payload: dict[str, object] = response.json()
    assert list(payload) == ["status", "body", "htmlencoded", "last_modified"]
    assert payload["htmlencoded"] is False and payload["last_modified"] == 0
    return payload


def error_of(response: httpx.Response) -> tuple[object, object]:
    payload = envelope(response)
    return payload["status"], payload["body"]


def post(server: EmulatorServer, method: str, params: dict[str, str], **kw: object) -> httpx.Response:
    return server.http.post(f"/api/v1/persons/{method}", params=params, **kw)  # type: ignore[arg-type]


# --- auth: 403 -----------------------------------------------------------------------------

AUTH_CASES = {
    "no token": ({"oauth_provider": "mcs"}, "empty oauth_token"),
    "empty token": ({"oauth_token": "", "oauth_provider": "mcs"}, "empty oauth_token"),
    "no provider": ({"oauth_token": "t"}, "empty oauth_provider"),
    "empty provider": ({"oauth_token": "t", "oauth_provider": ""}, "empty oauth_provider"),
    "unknown provider": ({"oauth_token": "t", "oauth_provider": "google"}, "unknown oauth_provider google"),
}


@pytest.mark.parametrize("case", AUTH_CASES)
@pytest.mark.parametrize("method", ["set", "recognize", "delete", "truncate"])
def test_auth_is_refused_with_403(server: EmulatorServer, method: str, case: str) -> None:
    params, text = AUTH_CASES[case]
    response = post(server, method, params, files={"meta": (None, '{"space":"0"}')})
    assert error_of(response) == (403, text)


@pytest.mark.parametrize("provider", ["mcs", "mr"])
def test_both_providers_are_accepted(server: EmulatorServer, provider: str) -> None:
    assert server.ok("truncate", {"space": "0"}, provider=provider) == {}


# --- multipart and meta ----------------------------------------------------------------------


def test_body_that_is_not_multipart(server: EmulatorServer) -> None:
    response = post(server, "truncate", {"oauth_token": "t", "oauth_provider": "mcs"}, json={"space": "0"})
    assert error_of(response) == (
        400,
        "could not parse multipart form: request Content-Type isn't multipart/form-data",
    )


def test_multipart_without_boundary(server: EmulatorServer) -> None:
    response = post(
        server,
        "truncate",
        {"oauth_token": "t", "oauth_provider": "mcs"},
        content=b'--x\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{"space":"0"}\r\n--x--\r\n',
        headers={"content-type": "multipart/form-data"},
    )
    assert error_of(response) == (400, "could not parse multipart form: no multipart boundary param in Content-Type")


def test_missing_meta(server: EmulatorServer) -> None:
    response = server.call("truncate", None)
    assert error_of(response) == (400, "could not get meta: http: no such file")


def test_meta_that_is_not_json(server: EmulatorServer) -> None:
    response = server.call("truncate", "space=0")
    assert error_of(response) == (400, "could not parse meta: invalid character 's' looking for beginning of value")


@pytest.mark.parametrize("method", ["set", "recognize", "delete", "truncate"])
def test_missing_space(server: EmulatorServer, method: str) -> None:
    response = server.call(method, {"azaza": "5"})
    assert error_of(response) == (400, 'wrong space param : strconv.Atoi: parsing "": invalid syntax')


def test_empty_space(server: EmulatorServer) -> None:
    response = server.call("truncate", {"space": ""})
    assert error_of(response) == (400, 'wrong space param : strconv.Atoi: parsing "": invalid syntax')


def test_space_that_is_not_digits(server: EmulatorServer) -> None:
    response = server.call("truncate", {"space": "five"})
    assert error_of(response) == (400, 'wrong space param : strconv.Atoi: parsing "five": invalid syntax')


def test_space_as_a_json_number(server: EmulatorServer) -> None:
    response = server.call("truncate", {"space": 5})
    assert error_of(response) == (400, "json: cannot unmarshal number into Go struct field .space of type string")


@pytest.mark.parametrize("space", ["10", "-1", "99"])
def test_space_outside_0_to_9(server: EmulatorServer, space: str) -> None:
    response = server.call("truncate", {"space": space})
    assert error_of(response) == (
        400,
        f"wrong space param : space {int(space)} is out of range, allowed spaces are 0..9",
    )


@pytest.mark.parametrize("method", ["set", "recognize", "delete"])
def test_images_missing_or_empty(server: EmulatorServer, method: str) -> None:
    for meta in ({"space": "0"}, {"space": "0", "images": []}):
        assert error_of(server.call(method, meta)) == (400, "no images have been provided")


def test_too_many_images(server: EmulatorServer) -> None:
    images = [{"name": f"f{i}", "person_id": 1} for i in range(101)]
    response = server.call("delete", {"space": "0", "images": images})
    assert error_of(response) == (400, "too many images: 101, at most 100 are allowed per request")


def test_duplicate_image_names(server: EmulatorServer) -> None:
    meta = {"space": "0", "images": [{"name": "a"}, {"name": "a"}]}
    assert error_of(server.call("recognize", meta, [("a", OBAMA)])) == (400, "duplicate image name a")


def test_empty_image_name(server: EmulatorServer) -> None:
    meta = {"space": "0", "images": [{"name": "a"}, {"name": ""}]}
    assert error_of(server.call("recognize", meta, [("a", OBAMA)])) == (400, "image name is empty (images[1])")


def test_image_named_in_meta_but_not_sent(server: EmulatorServer) -> None:
    meta = {"space": "5", "images": [{"name": "file_10", "person_id": 12}]}
    response = server.call("set", meta, [("file", OBAMA)])
    assert error_of(response) == (400, "could not get image by name file_10: http: no such file")


def test_image_named_in_meta_but_not_sent_on_recognize(server: EmulatorServer) -> None:
    response = server.call("recognize", {"space": "5", "images": [{"name": "file1"}]}, [("file", OBAMA)])
    assert error_of(response) == (400, "could not get image by name file1: http: no such file")


@pytest.mark.parametrize("method", ["set", "delete"])
@pytest.mark.parametrize("image", [{"name": "f"}, {"name": "f", "person_id": 0}, {"name": "f", "person_id": None}])
def test_person_id_missing_or_zero(server: EmulatorServer, method: str, image: dict[str, object]) -> None:
    response = server.call(method, {"space": "5", "images": [image]}, [("f", OBAMA)])
    assert error_of(response) == (400, "no person_id has been provided")


def test_person_id_negative(server: EmulatorServer) -> None:
    response = server.call("set", {"space": "5", "images": [{"name": "f", "person_id": -3}]}, [("f", OBAMA)])
    assert error_of(response) == (400, "wrong person_id -3 for image f: must be positive")


def test_person_id_of_the_wrong_type(server: EmulatorServer) -> None:
    response = server.call("set", {"space": "5", "images": [{"name": "f", "person_id": "1"}]}, [("f", OBAMA)])
    assert error_of(response) == (
        400,
        "json: cannot unmarshal string into Go struct field .images.person_id of type int64",
    )


def test_searcher_outside_0_and_1(server: EmulatorServer) -> None:
    response = server.call("recognize", {"space": "5", "images": [{"name": "f"}], "searcher": 2}, [("f", OBAMA)])
    assert error_of(response) == (400, "wrong searcher param : 2, allowed values are 0 and 1")


def test_unknown_meta_fields_are_ignored(server: EmulatorServer) -> None:
    assert server.ok("truncate", {"space": "0", "colour": "blue", "extra": {"a": [1, 2]}}) == {}


# --- images ----------------------------------------------------------------------------------


@BOTH_BACKENDS
@pytest.mark.parametrize("method", ["set", "recognize"])
def test_empty_image_fails_the_whole_request(server: EmulatorServer, method: str, space: int) -> None:
    meta = {"space": str(space), "images": [{"name": "ok", "person_id": 1}, {"name": "file", "person_id": 2}]}
    response = server.call(method, meta, [("ok", OBAMA), ("file", b"")])
    assert error_of(response) == (400, "empty image")
    assert server.tags(space, "people/obama/obama2.jpg") == ["undefined"]  # nothing stored


@BOTH_BACKENDS
@pytest.mark.parametrize("method", ["set", "recognize"])
def test_undecodable_image_fails_only_its_object(server: EmulatorServer, method: str, space: int) -> None:
    meta = {"space": str(space), "images": [{"name": "bad", "person_id": 1}, {"name": "good", "person_id": 2}]}
    body = server.ok(method, meta, [("bad", b"this is not an image"), ("good", OBAMA)])
    bad, good = body["objects"]
    assert bad == {"status": 1, "error": "The memory contains data of an unknown image type", "name": "bad"}
    assert good["status"] == 0 and good["name"] == "good"


def test_gif_is_an_unknown_image_type(server: EmulatorServer, space: int) -> None:
    import io

    from PIL import Image

    gif = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(gif, "GIF")
    obj = server.ok("recognize", {"space": str(space), "images": [{"name": "g"}]}, [("g", gif.getvalue())])
    assert obj["objects"][0]["error"] == "The memory contains data of an unknown image type"


def test_image_over_the_byte_limit(server: EmulatorServer, space: int) -> None:
    server.configure(max_image_bytes=100_000)
    try:
        body = server.ok("recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", OBAMA)])
    finally:
        server.configure(max_image_bytes=4 * 1024 * 1024)
    assert body["objects"] == [
        {"status": 1, "error": f"image is too large: {len(OBAMA)} bytes, the limit is 100000 bytes", "name": "f"}
    ]


def test_image_over_the_pixel_limit(server: EmulatorServer, space: int) -> None:
    import io

    from PIL import Image

    big = io.BytesIO()
    Image.new("RGB", (4000, 100), "white").save(big, "PNG")
    body = server.ok("recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", big.getvalue())])
    assert body["objects"][0]["status"] == 1
    assert body["objects"][0]["error"] == ("image is 4000x100 pixels, larger than the allowed 3840x2160 (or 2160x3840)")


def test_pixel_limit_raised_at_run_time(server: EmulatorServer, space: int) -> None:
    import io

    from PIL import Image

    wide = io.BytesIO()
    Image.new("RGB", (4000, 100), "white").save(wide, "PNG")
    meta = {"space": str(space), "images": [{"name": "f"}]}
    server.configure(max_image_width=4096)
    try:
        body = server.ok("recognize", meta, [("f", wide.getvalue())])
    finally:
        server.configure(max_image_width=3840)
    assert body["objects"] == [{"status": 0, "name": "f"}]  # decoded and scanned: no face


def test_image_under_the_pixel_minimum(server: EmulatorServer, space: int) -> None:
    import io

    from PIL import Image

    tiny = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(tiny, "PNG")
    body = server.ok("recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", tiny.getvalue())])
    assert body["objects"][0] == {
        "status": 1,
        "error": "image is 4x4 pixels, smaller than the allowed minimum 5x5",
        "name": "f",
    }


# --- set -------------------------------------------------------------------------------------


@BOTH_BACKENDS
@pytest.mark.parametrize("photo", ["no-face/rocket.jpg", "groups/two_people.jpg"])
def test_set_needs_exactly_one_face(server: EmulatorServer, space: int, photo: str) -> None:
    assert server.set(space, 12, photo) == {
        "status": 1,
        "error": "face set required only one face per image",
        "name": "f",
    }
    assert server.stored_faces(space) == 0


@BOTH_BACKENDS
def test_set_past_the_space_limit(server: EmulatorServer, space: int) -> None:
    server.configure(max_faces_per_space=1)
    try:
        assert server.set(space, 1, "people/obama/obama.jpg") == {"status": 0, "name": "f"}
        assert server.set(space, 2, "people/biden/biden2.jpg") == {
            "status": 1,
            "error": "space is full: it holds 1 faces, the limit is 1",
            "name": "f",
        }
    finally:
        server.configure(max_faces_per_space=75000)


@BOTH_BACKENDS
def test_set_many_photos_of_one_person(server: EmulatorServer, space: int) -> None:
    meta = {"space": str(space), "images": [{"name": "a", "person_id": 8}, {"name": "b", "person_id": 8}]}
    body = server.ok("set", meta, [("a", OBAMA), ("b", fixture("people/obama/obama3.jpg"))])
    assert body == {"objects": [{"status": 0, "name": "a"}, {"status": 0, "name": "b"}]}
    assert server.tags(space, "people/obama/obama2.jpg") == ["person8"]


# --- delete and truncate ---------------------------------------------------------------------


@BOTH_BACKENDS
def test_delete_removes_the_person_and_nothing_else(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama.jpg")
    server.set(space, 1, "people/obama/obama3.jpg")
    server.set(space, 2, "people/biden/biden2.jpg")
    body = server.ok("delete", {"space": str(space), "images": [{"name": "aaa", "person_id": 1}]})
    assert body == {"objects": [{"status": 0, "name": "aaa"}]}
    assert server.tags(space, "people/obama/obama2.jpg", update_embedding=False) == ["undefined"]
    assert server.tags(space, "people/biden/biden.jpg", update_embedding=False) == ["person2"]


@BOTH_BACKENDS
def test_delete_of_an_absent_person_is_status_0(server: EmulatorServer, space: int) -> None:
    body = server.ok("delete", {"space": str(space), "images": [{"name": "x", "person_id": 77}]})
    assert body == {"objects": [{"status": 0, "name": "x"}]}


@BOTH_BACKENDS
def test_delete_ignores_image_parts(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama.jpg")
    body = server.ok("delete", {"space": str(space), "images": [{"name": "f", "person_id": 1}]}, [("f", b"")])
    assert body == {"objects": [{"status": 0, "name": "f"}]}


@BOTH_BACKENDS
def test_truncate_empties_one_space_and_restarts_ids(server: EmulatorServer) -> None:
    server.ok("truncate", {"space": "3"})
    server.ok("truncate", {"space": "4"})
    server.set(3, 7, "people/obama/obama.jpg")
    server.set(4, 7, "people/obama/obama.jpg")
    assert server.ok("truncate", {"space": "3"}) == {}
    assert server.tags(3, "people/obama/obama2.jpg", update_embedding=False) == ["undefined"]
    assert server.tags(4, "people/obama/obama2.jpg", update_embedding=False) == ["person7"]
    assert server.tags(3, "people/biden/biden2.jpg", create_new=True) == ["person1"]


@BOTH_BACKENDS
def test_spaces_never_see_each_other(server: EmulatorServer) -> None:
    server.ok("truncate", {"space": "1"})
    server.ok("truncate", {"space": "2"})
    server.set(1, 5, "people/rose_leslie/img1.jpg")
    assert server.tags(2, "people/rose_leslie/img2.jpg", update_embedding=False) == ["undefined"]
    assert server.tags(1, "people/rose_leslie/img2.jpg", update_embedding=False) == ["person5"]


# --- the HTTP status setting -----------------------------------------------------------------


def test_http_status_mirror_mode(server: EmulatorServer) -> None:
    server.configure(http_status="mirror")
    try:
        assert server.call("truncate", {"space": "x"}).status_code == 400
        assert server.call("truncate", {"space": "0"}, token="").status_code == 403
        assert server.call("truncate", {"space": "0"}).status_code == 200
    finally:
        server.configure(http_status="always-200")
    assert server.call("truncate", {"space": "x"}).status_code == 200


def test_error_text_is_rendered_as_go_does(server: EmulatorServer) -> None:
    response = server.call("set", {"space": "0", "images": [{"name": "<a&b>", "person_id": 1}]})
    assert response.content == (
        b'{"status":400,"body":"could not get image by name \\u003ca\\u0026b\\u003e: http: no such file",'
        b'"htmlencoded":false,"last_modified":0}'
    )
    assert json.loads(response.content)["body"] == "could not get image by name <a&b>: http: no such file"
