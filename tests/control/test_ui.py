"""The demo page at /emulator/ui, end to end: headless Chromium against a real server with the real engine.

Every browser test drives the page as a user would (pick a space, drop or choose a photo, press buttons) and
checks what the page shows against what the persons API itself answers.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from emulator.face.thumbnail import MAX_THUMBNAIL_BYTES, THUMBNAIL_SIDE, crop_region, face_thumbnail
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, drop_file, require_browser
from tests.support.emulator_server import FIXTURES, EmulatorServer, fixture

SCREENSHOT = ARTIFACTS / "ui-recognize.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: EmulatorServer) -> Iterator[Any]:
    """A fresh browser context; after the test, no script error and no request to any other host."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    errors: list[str] = []
    foreign: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on(
        "request",
        lambda request: (
            None if request.url.startswith((server.base_url + "/", "blob:", "data:")) else foreign.append(request.url)
        ),
    )
    yield tab
    context.close()
    assert errors == [], f"script errors on the page: {errors}"
    assert foreign == [], f"the page reached other hosts: {foreign}"


def open_page(page: Any, server: EmulatorServer, space: int) -> None:
    page.goto(server.base_url + "/emulator/ui")
    page.wait_for_selector("#space option", state="attached")
    page.select_option("#space", str(space))
    page.wait_for_selector(f'#persons[data-shows="default/{space}"]', state="attached")


def wait_for_faces(page: Any, count: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('#faces .face').length === n", arg=count)


def person_card(page: Any, person_id: int) -> Any:
    return page.locator(f'#persons .person[data-person-id="{person_id}"]')


def thumbnail_loaded(page: Any, person_id: int) -> None:
    """The person's card shows its thumbnail, and the browser decoded it."""
    image = person_card(page, person_id).locator("img.thumb")
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0 && img.naturalWidth <= 96", arg=image.element_handle()
    )


def expected_faces(server: EmulatorServer, space: int, photo: str) -> list[dict[str, Any]]:
    """What recognize says about a photo, without changing the space."""
    persons: list[dict[str, Any]] = server.recognize(space, photo, update_embedding=False).get("persons", [])
    return persons


def assert_boxes_on_faces(page: Any, faces: list[dict[str, Any]]) -> None:
    """Each box sits on its face's coord, scaled from the photo's pixels to the shown image (within 2 px)."""
    shown = page.evaluate(
        """() => {
            const photo = document.getElementById("photo");
            const img = photo.getBoundingClientRect();
            const natural = [photo.naturalWidth, photo.naturalHeight];
            const boxes = [...document.querySelectorAll("#stage .box")].map((b) => {
                const r = b.getBoundingClientRect();
                return [r.left - img.left, r.top - img.top, r.right - img.left, r.bottom - img.top];
            });
            return { width: img.width, height: img.height, natural, boxes };
        }"""
    )
    scale_x = shown["width"] / shown["natural"][0]
    scale_y = shown["height"] / shown["natural"][1]
    assert len(shown["boxes"]) == len(faces)
    for box, face in zip(shown["boxes"], faces, strict=True):
        left, top, right, bottom = face["coord"]
        want = [left * scale_x, top * scale_y, right * scale_x, bottom * scale_y]
        assert all(abs(a - b) <= 2 for a, b in zip(box, want, strict=True)), (box, want)


# --- the page in a browser -----------------------------------------------------------------------


def test_enroll_a_person_and_see_its_thumbnail(page: Any, server: EmulatorServer, space: int) -> None:
    open_page(page, server, space)
    page.set_input_files("#file", str(FIXTURES / "people/obama/obama.jpg"))
    wait_for_faces(page, 1)
    assert page.locator("#faces .face-tag").inner_text() == "undefined"

    page.fill("#enroll-id-0", "5")
    page.get_by_role("button", name="Enroll face 1").click()
    thumbnail_loaded(page, 5)
    card = person_card(page, 5)
    assert card.locator(".person-tag").inner_text() == "person5"
    assert card.inner_text().count("1 photo") == 1
    assert "enrolled as person5" in page.locator("#notice").inner_text()
    # The page enrolled the person for real: the API now knows another photo of them.
    assert server.tags(space, "people/obama/obama2.jpg", update_embedding=False) == ["person5"]
    # The thumbnail is a small JPEG of that face.
    source = card.locator("img.thumb").get_attribute("src")
    assert source is not None
    response = server.http.get(source)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) == THUMBNAIL_SIDE


def test_drop_a_photo_of_the_same_person_labels_its_box(page: Any, server: EmulatorServer, space: int) -> None:
    server.set(space, 3, "people/obama/obama.jpg")
    server.set(space, 8, "people/obama/obama1.jpg")  # the same man enrolled twice: one is the other's alias
    expected = expected_faces(server, space, "people/obama/obama2.jpg")
    assert [(f["tag"], f.get("aliases")) for f in expected] == [("person3", ["person8"])]

    open_page(page, server, space)
    drop_file(page, "#drop", "obama2.jpg", fixture("people/obama/obama2.jpg"), "image/jpeg")
    wait_for_faces(page, 1)
    box = page.locator("#stage .box")
    assert box.count() == 1
    assert box.get_attribute("data-tag") == "person3"
    label = box.locator(".box-label")
    assert label.locator(".box-tag").inner_text() == "person3"
    assert label.locator(".box-sim").inner_text() == f"{expected[0]['similarity']:.4f}"
    assert label.locator(".box-aliases").inner_text() == "aka person8"
    assert "aliases person8" in page.locator("#faces .face").inner_text()
    assert_boxes_on_faces(page, expected)

    # On a phone the page fits the screen, and the box still sits on the face.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_function("() => document.documentElement.scrollWidth <= 390")
    assert_boxes_on_faces(page, expected)


def test_a_group_photo_gets_one_box_per_face_and_a_face_can_be_enrolled(
    page: Any, server: EmulatorServer, space: int
) -> None:
    photo = "groups/multiface.jpg"
    expected = expected_faces(server, space, photo)
    assert len(expected) >= 5

    open_page(page, server, space)
    page.set_input_files("#file", str(FIXTURES / photo))
    wait_for_faces(page, len(expected))
    assert page.locator("#stage .box").count() == len(expected)
    assert page.locator("#stage .box-tag").all_inner_texts() == ["undefined"] * len(expected)
    assert_boxes_on_faces(page, expected)

    # Enroll the second face only: the page cuts it out of the photo, since set takes one face per image.
    page.fill("#enroll-id-1", "7")
    page.get_by_role("button", name="Enroll face 2").click()
    thumbnail_loaded(page, 7)
    page.fill("#enroll-id-3", "4")
    page.get_by_role("button", name="Enroll face 4").click()
    thumbnail_loaded(page, 4)
    assert page.locator("#error").is_hidden()

    # Recognize the photo again: those faces now carry their tags, the others do not.
    page.set_input_files("#file", str(FIXTURES / photo))
    page.wait_for_selector('#stage .box[data-tag="person7"]')
    tags = page.locator("#stage .box").evaluate_all("boxes => boxes.map((b) => b.dataset.tag)")
    assert tags == ["undefined", "person7", "undefined", "person4"] + ["undefined"] * (len(expected) - 4)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000


def test_delete_a_person_with_the_keyboard_after_confirming(page: Any, server: EmulatorServer, space: int) -> None:
    server.set(space, 4, "people/obama/obama.jpg")
    server.set(space, 9, "people/biden/biden.jpg")
    open_page(page, server, space)
    thumbnail_loaded(page, 4)

    delete = page.get_by_role("button", name="Delete person4")
    delete.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm")
    dialog.wait_for()
    assert "person4" in dialog.inner_text()
    page.keyboard.press("Escape")  # changed my mind
    dialog.wait_for(state="hidden")
    assert person_card(page, 4).count() == 1

    delete.focus()
    page.keyboard.press("Enter")
    dialog.wait_for()
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"  # the safe choice has the focus
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    person_card(page, 4).wait_for(state="detached")
    assert person_card(page, 9).count() == 1
    persons = server.http.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"]
    assert [p["person_id"] for p in persons] == [9]


def test_truncate_the_space_after_confirming(page: Any, server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama.jpg")
    server.set(space, 2, "people/biden/biden.jpg")
    open_page(page, server, space)
    person_card(page, 2).wait_for()

    page.get_by_role("button", name="Truncate space").click()
    page.locator("#confirm").wait_for()
    page.get_by_role("button", name="Cancel").click()
    assert page.locator("#persons .person").count() == 2

    page.get_by_role("button", name="Truncate space").click()
    page.locator("#confirm-ok").click()
    page.wait_for_function("() => document.querySelectorAll('#persons .person').length === 0")
    assert "is empty" in page.locator("#persons-summary").inner_text()
    assert server.http.get(f"/emulator/clients/default/spaces/{space}/persons").json()["persons"] == []


def test_errors_show_the_api_status_and_text(page: Any, server: EmulatorServer, space: int) -> None:
    not_an_image = b"these are notes, not a photo\n"
    answer = server.call("recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", not_an_image)]).json()
    failed = answer["body"]["objects"][0]
    assert failed["status"] != 0 and failed["error"]

    open_page(page, server, space)
    drop_file(page, "#drop", "notes.txt", not_an_image, "text/plain")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert f"status {failed['status']}: {failed['error']}" in alert.inner_text()
    assert page.locator("#result").is_hidden()

    # A request-level error (no token): the envelope's status and text.
    refused = server.call("recognize", {"space": str(space), "images": [{"name": "f"}]}, [], token="").json()
    assert refused["status"] != 200 and isinstance(refused["body"], str)
    page.fill("#token", "")
    page.set_input_files("#file", str(FIXTURES / "people/obama/obama.jpg"))
    page.wait_for_function("s => document.getElementById('error').textContent.includes(s)", arg=refused["body"])
    assert f"status {refused['status']}: {refused['body']}" in alert.inner_text()


# --- the router, without a browser ---------------------------------------------------------------


def test_page_files_are_served_with_a_strict_policy(server: EmulatorServer) -> None:
    page = server.http.get("/emulator/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "/emulator/ui/app.js" in page.text and "/emulator/ui/style.css" in page.text
    assert server.http.get("/emulator/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert server.http.get("/emulator/ui/style.css").headers["content-type"].startswith("text/css")
    assert server.http.get("/emulator/ui/secrets.py").status_code == 404


def test_thumbnails_are_addressed_by_face_and_client(server: EmulatorServer, space: int) -> None:
    server.set(space, 2, "people/biden/biden.jpg")
    photos = server.http.get(f"/emulator/clients/default/spaces/{space}/persons/2").json()["photos"]
    assert [p["has_thumbnail"] for p in photos] == [True]
    url = f"/emulator/faces/{photos[0]['face_id']}/thumbnail.jpg"
    first = server.http.get(url, params={"client": "default"})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    again = server.http.get(url, params={"client": "default"}, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert server.http.get(url).status_code == 200  # the admin API sees every client
    assert server.http.get(url, params={"client": "someone-else"}).status_code == 404
    assert server.http.get("/emulator/faces/999999999/thumbnail.jpg").status_code == 404


def test_the_page_is_behind_the_admin_setting(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama.jpg")
    face_id = server.http.get(f"/emulator/clients/default/spaces/{space}/persons/1").json()["photos"][0]["face_id"]
    before = server.runtime.settings
    try:
        server.configure(admin="off")
        for path in ("/emulator/ui", "/emulator/ui/app.js", f"/emulator/faces/{face_id}/thumbnail.jpg"):
            assert server.http.get(path).status_code == 404, path
        server.configure(admin="token", admin_token="secret-admin")
        assert server.http.get("/emulator/ui").status_code == 403
        assert server.http.get("/emulator/ui", headers={"Authorization": "Bearer secret-admin"}).status_code == 200
    finally:
        server.runtime.settings = before


def test_a_browser_signs_in_once_when_the_admin_api_is_guarded(server: EmulatorServer) -> None:
    """A browser cannot add an Authorization header: /emulator/ui/login sets an HttpOnly cookie instead."""
    before = server.runtime.settings
    browser = httpx.Client(base_url=server.base_url, timeout=30)
    try:
        server.configure(admin="token", admin_token="secret-admin")
        assert browser.get("/emulator/ui").status_code == 403
        assert browser.get("/emulator/ui/login").status_code == 200
        wrong = browser.post("/emulator/ui/login", data={"token": "guess"}, follow_redirects=False)
        assert wrong.status_code == 403 and "smarty_admin" not in browser.cookies
        signed_in = browser.post("/emulator/ui/login", data={"token": "secret-admin"}, follow_redirects=False)
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/emulator/ui")
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/emulator" in cookie
        assert browser.get("/emulator/ui").status_code == 200
        assert browser.get("/emulator/clients").status_code == 200
        server.configure(admin_token="rotated")  # a new token signs every browser out
        assert browser.get("/emulator/clients").status_code == 403
    finally:
        browser.close()
        server.runtime.settings = before


def test_create_new_stores_a_thumbnail_for_the_new_person(server: EmulatorServer, space: int) -> None:
    tags = server.tags(space, "groups/two_people.jpg", create_new=True)
    assert tags == ["person1", "person2"]
    for person_id in (1, 2):
        photos = server.http.get(f"/emulator/clients/default/spaces/{space}/persons/{person_id}").json()["photos"]
        assert [(p["kind"], p["has_thumbnail"]) for p in photos] == [("created", True)]


# --- the crop ------------------------------------------------------------------------------------


def _pixels(jpeg: bytes) -> Any:
    import numpy as np

    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32)


def test_thumbnail_is_upright_small_and_bounded(engine: Any) -> None:
    upright = fixture("people/obama/obama-480p.jpg")
    sideways = fixture("derived/obama_rotated_exif.jpg")  # the same pixels stored turned, with EXIF orientation
    thumbs = [face_thumbnail(data, engine.analyze(data)[0].box) for data in (upright, sideways)]
    assert all(t is not None and len(t) <= MAX_THUMBNAIL_BYTES for t in thumbs)
    a, b = (_pixels(t) for t in thumbs if t is not None)
    assert a.shape == b.shape == (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    assert float(abs(a - b).mean()) < 8  # the same face, the same way up
    assert float(abs(a - a[::-1, :]).mean()) > 15  # ...which a face upside down would not be

    assert face_thumbnail(b"not an image", (0, 0, 10, 10)) is None
    assert crop_region((0, 0, 40, 40), 100, 60) == (0, 0, 60, 60)  # grown, square, kept inside the image
    assert crop_region((90, 50, 100, 60), 100, 60) == (85, 45, 100, 60)
