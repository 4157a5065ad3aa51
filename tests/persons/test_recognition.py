"""End to end over HTTP with real dlib on real photos: who is recognized, and who is not."""

from __future__ import annotations

import pytest

from tests.support.backends import BOTH_BACKENDS, BOTH_DETECTORS, BOTH_EMBEDDERS
from tests.support.emulator_server import EmulatorServer, fixture

# Every tag and alias below holds for either descriptor and either face detector.
pytestmark = [BOTH_BACKENDS, BOTH_EMBEDDERS, BOTH_DETECTORS]

# One enrolled photo per person, and the other (distinct) photos of that person.
PEOPLE = {
    1: ("people/obama/obama.jpg", ["people/obama/obama2.jpg", "people/obama/obama3.jpg", "people/obama/obama1.jpg"]),
    2: ("people/biden/biden2.jpg", ["people/biden/biden.jpg"]),
    3: (
        "people/kit_harington/john1.jpeg",
        ["people/kit_harington/john2.jpeg", "people/kit_harington/johnsnow_test1.jpg"],
    ),
    4: ("people/rose_leslie/img1.jpg", ["people/rose_leslie/img2.jpg"]),
    5: ("people/alex_lacamoire/img1.jpg", ["people/alex_lacamoire/alex-lacamoire.png"]),
    6: ("people/anthony_hopkins/Anthony_Hopkins_0001.jpg", ["people/anthony_hopkins/Anthony_Hopkins_0002.jpg"]),
    7: ("people/angelina_jolie/full.jpg", ["people/angelina_jolie/aligned-160.png"]),
}
STRANGERS = [
    "people/bradley_cooper/aligned-160.png",
    "people/kate_siegel/aligned-160.png",
    "people/paul_rudd/aligned-160.png",
    "people/shea_whigham/aligned-160.png",
    "people/tom_hanks/Tom_Hanks_54745.png",
    "people/ivan/ivan.jpg",
]
PROBES = [(person_id, probe) for person_id, (_, probes) in PEOPLE.items() for probe in probes]


@pytest.fixture(scope="module")
def enrolled(server: EmulatorServer) -> int:
    """Space 9 holds one photo of each person in PEOPLE."""
    server.ok("truncate", {"space": "9"})
    for person_id, (photo, _) in PEOPLE.items():
        assert server.set(9, person_id, photo) == {"status": 0, "name": "f"}
    return 9


@pytest.mark.parametrize(("person_id", "probe"), PROBES, ids=[p for _, p in PROBES])
def test_another_photo_of_an_enrolled_person_is_recognized(
    server: EmulatorServer, enrolled: int, person_id: int, probe: str
) -> None:
    obj = server.recognize(enrolled, probe, update_embedding=False)
    assert obj["status"] == 0
    [person] = obj["persons"]
    assert person["tag"] == f"person{person_id}"
    assert server.settings.match_threshold <= person["similarity"] <= 1
    assert "aliases" not in person


@pytest.mark.parametrize("stranger", STRANGERS)
def test_a_stranger_is_undefined(server: EmulatorServer, enrolled: int, stranger: str) -> None:
    [person] = server.recognize(enrolled, stranger, update_embedding=False)["persons"]
    assert person["tag"] == "undefined"
    assert 0 <= person["similarity"] < server.settings.match_threshold


def test_create_new_gives_ids_max_plus_one_then_recognizes_them(server: EmulatorServer, space: int) -> None:
    server.set(space, 40, "people/obama/obama.jpg")
    server.set(space, 3, "people/biden/biden2.jpg")
    first, second = STRANGERS[4], STRANGERS[5]
    assert server.tags(space, first, create_new=True) == ["person41"]
    assert server.tags(space, second, create_new=True) == ["person42"]
    # A new person is a person: recognized next time, with or without create_new.
    assert server.tags(space, first) == ["person41"]
    assert server.tags(space, second, create_new=True) == ["person42"]
    new = server.recognize(space, "people/kit_harington/john1.jpeg", create_new=True)["persons"][0]
    assert (new["tag"], new["similarity"]) == ("person43", 1)


def test_create_new_in_an_empty_space_starts_at_one(server: EmulatorServer, space: int) -> None:
    assert server.tags(space, "people/ivan/ivan.jpg", create_new=True) == ["person1"]


def test_undefined_in_an_empty_space_has_similarity_zero(server: EmulatorServer, space: int) -> None:
    [person] = server.recognize(space, "people/ivan/ivan.jpg")["persons"]
    assert (person["tag"], person["similarity"]) == ("undefined", 0)
    assert server.tags(space, "people/ivan/ivan.jpg") == ["undefined"]  # nothing was stored


def test_create_new_twice_in_one_request_makes_one_person(server: EmulatorServer, space: int) -> None:
    body = server.ok(
        "recognize",
        {"space": str(space), "create_new": True, "images": [{"name": "a"}, {"name": "b"}]},
        [("a", fixture("people/biden/biden2.jpg")), ("b", fixture("people/biden/biden.jpg"))],
    )
    tags = [obj["persons"][0]["tag"] for obj in body["objects"]]
    assert tags == ["person1", "person1"]


def test_group_photo_one_entry_per_face_left_to_right(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama2.jpg")
    server.set(space, 2, "people/biden/biden2.jpg")
    server.set(space, 3, "people/kit_harington/john1.jpeg")
    server.set(space, 4, "people/rose_leslie/img1.jpg")
    cases = {"groups/two_people.jpg": (1126, 661), "groups/kit_with_rose.jpg": (501, 700)}
    expected_tags = {
        "groups/two_people.jpg": {"person1", "person2"},
        "groups/kit_with_rose.jpg": {"person3", "person4"},
    }
    for photo, (width, height) in cases.items():
        persons = server.recognize(space, photo, update_embedding=False)["persons"]
        assert len(persons) == 2
        lefts = [p["coord"][0] for p in persons]
        assert lefts == sorted(lefts)
        for p in persons:
            left, top, right, bottom = p["coord"]
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            assert 0 < p["confidence"] <= 1 and 0 <= p["awesomeness"] <= 1
        assert {p["tag"] for p in persons} == expected_tags[photo]


def test_multiface_group_reports_every_face(server: EmulatorServer, space: int) -> None:
    persons = server.recognize(space, "groups/multiface.jpg")["persons"]
    assert len(persons) == 6
    assert all(p["tag"] == "undefined" for p in persons)
    lefts = [p["coord"][0] for p in persons]
    assert lefts == sorted(lefts)


def test_rgba_png_and_exif_rotated_jpeg_recognized_like_their_twins(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama-480p.jpg")
    server.set(space, 2, "people/biden/biden2.jpg")
    plain = server.recognize(space, "people/obama/obama-480p.jpg", update_embedding=False)["persons"]
    rotated = server.recognize(space, "derived/obama_rotated_exif.jpg", update_embedding=False)["persons"]
    assert [p["tag"] for p in rotated] == ["person1"]
    assert rotated[0]["coord"] == plain[0]["coord"]  # upright pixels
    rgba = server.recognize(space, "derived/biden_rgba.png", update_embedding=False)["persons"]
    assert [p["tag"] for p in rgba] == ["person2"]
    assert rgba[0]["similarity"] > 0.99


def test_aliases_list_the_other_ids_of_the_same_person(server: EmulatorServer, space: int) -> None:
    server.set(space, 11, "people/obama/obama.jpg")
    server.set(space, 12, "people/obama/obama3.jpg")
    server.set(space, 13, "people/biden/biden2.jpg")
    first = server.ok(
        "recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", fixture("people/obama/obama2.jpg"))]
    )
    [person] = first["objects"][0]["persons"]
    assert person["tag"] in {"person11", "person12"}
    assert person["aliases"] == [{"person11": "person12", "person12": "person11"}[person["tag"]]]
    assert first["aliases_changed"] is True
    again = server.ok(
        "recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", fixture("people/obama/obama2.jpg"))]
    )
    assert "aliases_changed" not in again  # written only when true (default setting)
    assert again["objects"][0]["persons"][0]["aliases"] == person["aliases"]


def test_aliases_changed_always_mode_writes_false(server: EmulatorServer, space: int) -> None:
    server.configure(aliases_changed="always")
    try:
        body = server.ok(
            "recognize", {"space": str(space), "images": [{"name": "f"}]}, [("f", fixture("people/ivan/ivan.jpg"))]
        )
        assert body["aliases_changed"] is False
        assert list(body) == ["objects", "aliases_changed"]
    finally:
        server.configure(aliases_changed="when-true")


def test_update_embedding_learns_and_false_stores_nothing(server: EmulatorServer, space: int) -> None:
    server.set(space, 5, "people/kit_harington/john1.jpeg")
    before = server.stored_faces(space)
    assert server.tags(space, "people/kit_harington/john2.jpeg", update_embedding=False) == ["person5"]
    assert server.stored_faces(space) == before
    assert server.tags(space, "people/kit_harington/john2.jpeg") == ["person5"]
    assert server.stored_faces(space) == before + 1
    # The same face again is a near-duplicate of what was learned: nothing more is stored.
    again = server.recognize(space, "people/kit_harington/john2.jpeg")["persons"][0]
    assert again["similarity"] == 1
    assert server.stored_faces(space) == before + 1


def test_searcher_1_adds_valid_deterministic_attributes(server: EmulatorServer, space: int) -> None:
    first = server.recognize(space, "people/rose_leslie/img2.jpg", searcher=1)["persons"][0]
    second = server.recognize(space, "people/rose_leslie/img2.jpg", searcher=1)["persons"][0]
    assert first == second
    assert list(first)[-7:] == ["sex", "emotion", "age", "valence", "arousal", "frontality", "visibility"]
    assert first["sex"] in {"female", "male"}
    assert first["emotion"] in {"Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt"}
    assert first["age"] == int(first["age"]) and 0 < first["age"] < 120
    for key in ("valence", "arousal", "frontality"):
        assert -1 <= first[key] <= 1
    assert 0 <= first["visibility"] <= 1
    plain = server.recognize(space, "people/rose_leslie/img2.jpg")["persons"][0]
    assert "sex" not in plain and "age" not in plain


def test_no_face_photo_on_recognize_has_no_persons_key(server: EmulatorServer, space: int) -> None:
    for photo in ("no-face/rocket.jpg", "no-face/chelsea.png", "no-face/pilatus800.jpg"):
        assert server.recognize(space, photo, create_new=True) == {"status": 0, "name": "f"}
