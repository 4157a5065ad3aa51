"""The persons rules of the contract, on the service itself: a fake engine, a SQLite store, no server, no dlib.

Faces are named by their image bytes (``tests/support/fake_engine.py``): ``fake(1)`` is one face with the embedding
of seed 1, ``fake(1, 2)`` two faces left to right, ``fake("1~0.95")`` a face whose cosine similarity to seed 1's is
0.95. The default match threshold is 0.93.

The module's tests share one SQLite file (opening one costs more than a test); each test is a client of its own,
with its own service and live settings, so no test sees another's persons.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emulator.persons import errors
from emulator.persons.index import SpaceIndex
from emulator.persons.service import UNDEFINED, PersonsService
from emulator.persons.types import (
    ClientId,
    DeleteRequest,
    ObjectResult,
    PersonResult,
    RecognizeRequest,
    RecognizeResult,
    SetRequest,
    SpaceKey,
    TruncateRequest,
)
from emulator.store import Store
from emulator.store.records import SpaceData, StoredFace, StoreError
from tests.support.backends import Backend
from tests.support.domain import LiveSettings, assert_same_index, domain_settings, fake, image
from tests.support.fake_engine import FakeEngine, embedding, near

SQLITE = Backend("sqlite")  # the store as the server opens it (tests/support/backends.py)


@dataclass
class Domain:
    """One test's client of the shared store, with a service of its own; every call is on ``client`` unless given."""

    service: PersonsService
    store: Store
    live: LiveSettings
    client: ClientId

    def key(self, space: int = 0, client: ClientId | None = None) -> SpaceKey:
        return SpaceKey(client or self.client, space)

    def enroll(
        self, *photos: tuple[int, bytes | None], space: int = 0, client: ClientId | None = None
    ) -> list[ObjectResult]:
        """``set`` with one image per ``(person_id, bytes)``, named ``img0``, ``img1``..."""
        images = tuple(image(f"img{i}", data, person_id) for i, (person_id, data) in enumerate(photos))
        return self.service.set(client or self.client, SetRequest(space, images))

    def recognize(
        self,
        *datas: bytes,
        space: int = 0,
        client: ClientId | None = None,
        create_new: bool = False,
        update_embedding: bool = True,
        searcher: int = 0,
    ) -> RecognizeResult:
        images = tuple(image(f"img{i}", data) for i, data in enumerate(datas))
        request = RecognizeRequest(space, images, create_new, update_embedding, searcher)
        return self.service.recognize(client or self.client, request)

    def one(self, data: bytes, **options: object) -> PersonResult:
        """The only face found by recognize on one image."""
        [obj] = self.recognize(data, **options).objects  # type: ignore[arg-type]
        assert obj.status == 0 and obj.persons is not None
        [person] = obj.persons
        return person

    def delete(self, *person_ids: int, space: int = 0, client: ClientId | None = None) -> list[ObjectResult]:
        entries = tuple((f"del{p}", p) for p in person_ids)
        return self.service.delete(client or self.client, DeleteRequest(space, entries))

    def truncate(self, space: int = 0, client: ClientId | None = None) -> None:
        self.service.truncate(client or self.client, TruncateRequest(space))

    def counts(self, space: int = 0, client: ClientId | None = None) -> dict[int, int]:
        """``{person_id: stored faces}`` of a space, from the store."""
        return dict(self.store.person_photo_counts(self.key(space, client)))

    def faces(self, person_id: int, space: int = 0) -> list[StoredFace]:
        return self.store.person_faces(self.key(space), person_id)

    def fresh_index(self, space: int = 0) -> SpaceIndex:
        """The space's index as a process starting now would load it."""
        return SpaceIndex.from_data(self.store.load_space(self.key(space)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("persons")


@pytest.fixture(scope="module")
def shared_store(data_dir: Path) -> Iterator[Store]:
    store = SQLITE.store(data_dir)
    yield store
    store.close()


@pytest.fixture
def live(data_dir: Path) -> LiveSettings:
    return LiveSettings(domain_settings(data_dir))


@pytest.fixture
def d(shared_store: Store, live: LiveSettings, request: pytest.FixtureRequest) -> Iterator[Domain]:
    service = PersonsService(FakeEngine(), shared_store, live)
    yield Domain(service, shared_store, live, ClientId(request.node.name))
    service.close()


def tags(result: RecognizeResult) -> list[list[str] | None]:
    """Each object's person tags, left to right (None for an object without ``persons``)."""
    return [None if o.persons is None else [p.tag for p in o.persons] for o in result.objects]


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "gray").save(out, format="PNG")
    return out.getvalue()


# --- set --------------------------------------------------------------------------------------------------------------


def test_set_stores_each_photo_under_its_person_id(d: Domain) -> None:
    results = d.enroll((3, fake(1)), (4, fake(2)), (3, fake(5)))
    assert results == [ObjectResult("img0"), ObjectResult("img1"), ObjectResult("img2")]
    assert d.counts() == {3: 2, 4: 1}
    faces = d.faces(3)
    assert [f.kind for f in faces] == ["set", "set"]
    assert np.array_equal(faces[0].embedding, embedding(1))
    assert np.array_equal(faces[1].embedding, embedding(5))
    assert faces[0].meta["name"] == "img0" and faces[0].meta["coord"] == [10, 20, 90, 100]


def test_set_refuses_an_image_without_exactly_one_face(d: Domain) -> None:
    results = d.enroll((3, fake()), (4, fake(1, 2)), (5, fake(3)))
    assert [(r.status, r.error) for r in results] == [
        (1, errors.ONE_FACE_REQUIRED),
        (1, errors.ONE_FACE_REQUIRED),
        (0, None),
    ]
    assert d.counts() == {5: 1}


def test_set_refuses_an_unknown_image_type_and_keeps_the_others(d: Domain) -> None:
    results = d.enroll((3, b"GIF89a not a face"), (4, fake(1)))
    assert (results[0].status, results[0].error) == (1, errors.UNKNOWN_IMAGE_TYPE)
    assert results[1].status == 0
    assert d.counts() == {4: 1}


def test_nothing_is_written_when_every_image_of_set_is_refused(d: Domain) -> None:
    d.enroll((3, b"junk"), (4, fake()))
    assert d.counts() == {}
    assert d.store.generation(d.key()) == 0


def test_an_image_past_the_byte_limit_is_refused_for_itself(d: Domain) -> None:
    limit = d.live().max_image_bytes
    oversized = image("big", None, person_id=3, size=limit + 1)  # the wire layer does not read past the limit
    results = d.service.set(d.client, SetRequest(0, (oversized, image("ok", fake(1), 4))))
    expected = f"image is too large: {limit + 1} bytes, the limit is {limit} bytes"
    assert (results[0].status, results[0].error) == (1, expected)
    assert results[1].status == 0
    assert d.counts() == {4: 1}


def test_pixel_limits_are_read_live_before_the_engine_sees_the_image(d: Domain) -> None:
    wide = png(40, 10)
    assert d.enroll((3, wide))[0].error == errors.UNKNOWN_IMAGE_TYPE  # within the limits: the engine's word
    d.live.change(max_image_width=32, max_image_height=32)
    refused = d.enroll((3, wide))[0]
    assert (refused.status, refused.error) == (1, "image is 40x10 pixels, larger than the allowed 32x32 (or 32x32)")
    d.live.change(min_image_side=12)
    small = d.enroll((3, png(20, 10)))[0]
    assert (small.status, small.error) == (1, "image is 20x10 pixels, smaller than the allowed minimum 12x12")
    assert d.counts() == {}


def test_set_stops_storing_when_the_space_is_full(d: Domain) -> None:
    d.live.change(max_faces_per_space=2)
    results = d.enroll((1, fake(1)), (2, fake(2)), (3, fake(3)))
    assert [r.status for r in results] == [0, 0, 1]
    assert results[2].error == errors.space_full(2)
    assert d.counts() == {1: 1, 2: 1}


# --- recognize: matching ----------------------------------------------------------------------------------------------


def test_recognize_finds_the_enrolled_person(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(2)))
    person = d.one(fake(2))
    assert person.tag == "person4"
    assert person.similarity == pytest.approx(1.0, abs=1e-6)
    assert person.aliases == ()
    assert person.coord == (10, 20, 90, 100)
    assert (person.confidence, person.awesomeness) == (FakeEngine().confidence, FakeEngine().awesomeness)
    assert person.attributes is None


def test_similarity_is_the_cosine_to_the_persons_best_photo(d: Domain) -> None:
    d.enroll((3, fake("7~0.5")), (3, fake("7~0.96")), (3, fake("7~0.7")))
    person = d.one(fake(7), update_embedding=False)
    assert (person.tag, person.similarity) == ("person3", pytest.approx(0.96, abs=1e-5))


def test_a_stranger_is_undefined_with_the_best_candidates_similarity(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(2)))
    person = d.one(fake("2~0.6"))
    assert person.tag == UNDEFINED
    assert person.similarity == pytest.approx(0.6, abs=1e-5)
    assert person.aliases == ()
    assert d.counts() == {3: 1, 4: 1}  # a stranger is not stored without create_new


def test_similarity_of_a_stranger_is_clipped_at_zero(d: Domain) -> None:
    d.enroll((3, fake("1~-0.4")))
    person = d.one(fake(1))
    assert (person.tag, person.similarity) == (UNDEFINED, 0.0)


def test_in_an_empty_space_every_face_is_undefined_with_similarity_zero(d: Domain) -> None:
    person = d.one(fake(1))
    assert (person.tag, person.similarity) == (UNDEFINED, 0.0)


def test_the_threshold_separates_match_from_stranger(d: Domain) -> None:
    assert d.live().match_threshold == pytest.approx(0.93)
    d.enroll((3, fake(1)))
    assert d.one(fake("1~0.94"), update_embedding=False).tag == "person3"
    assert d.one(fake("1~0.92"), update_embedding=False).tag == UNDEFINED
    d.live.change(match_threshold=0.9)  # a live setting
    assert d.one(fake("1~0.92"), update_embedding=False).tag == "person3"


def test_a_face_exactly_at_the_threshold_matches(d: Domain) -> None:
    d.enroll((3, fake(1)))
    d.live.change(match_threshold=0.99)
    score = d.one(fake("1~0.95"), update_embedding=False).similarity
    d.live.change(match_threshold=score)
    person = d.one(fake("1~0.95"), update_embedding=False)
    assert (person.tag, person.similarity) == ("person3", score)


def test_every_face_of_an_image_is_reported_left_to_right(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(2)))
    result = d.recognize(fake(2, 9, 1), fake(), update_embedding=False)
    assert tags(result) == [["person4", UNDEFINED, "person3"], None]
    assert [p.coord[0] for p in result.objects[0].persons or ()] == [10, 110, 210]
    assert result.objects[1] == ObjectResult("img1")  # no face: status 0, no persons


def test_a_bad_image_fails_only_its_own_object(d: Domain) -> None:
    d.enroll((3, fake(1)))
    result = d.recognize(b"junk", fake(1), create_new=True)
    bad = result.objects[0]
    assert (bad.status, bad.error, bad.persons) == (1, errors.UNKNOWN_IMAGE_TYPE, None)
    assert tags(result)[1] == ["person3"]
    assert d.counts() == {3: 1}


def test_an_oversized_image_creates_nobody(d: Domain) -> None:
    oversized = image("big", None, size=d.live().max_image_bytes + 1)
    result = d.service.recognize(d.client, RecognizeRequest(0, (oversized,), create_new=True))
    assert result.objects[0].status == 1 and result.objects[0].persons is None
    assert d.counts() == {}


def test_searcher_1_adds_the_same_attributes_for_the_same_face(d: Domain) -> None:
    first = d.one(fake(4), searcher=1).attributes
    again = d.one(fake(4), searcher=1).attributes
    assert first is not None and first == again
    assert first["sex"] in ("female", "male") and 18 <= first["age"] < 68
    assert -1 <= first["valence"] <= 1 and -1 <= first["arousal"] <= 1


# --- recognize: aliases -----------------------------------------------------------------------------------------------


def test_other_persons_above_the_threshold_are_aliases_best_first(d: Domain) -> None:
    d.enroll((3, fake("1~0.95")), (4, fake(1)), (5, fake("1~0.97")), (6, fake("1~0.5")))
    person = d.one(fake(1), update_embedding=False)
    assert (person.tag, person.aliases) == ("person4", ("person5", "person3"))


def test_two_person_ids_with_the_same_face_are_aliases(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(1)))
    person = d.one(fake(1))
    assert {person.tag, *person.aliases} == {"person3", "person4"}
    assert len(person.aliases) == 1
    assert person.similarity == pytest.approx(1.0, abs=1e-6)


def test_aliases_changed_only_when_a_pair_is_first_reported(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(1)), (5, fake(2)))
    assert d.recognize(fake(2)).aliases_changed is False  # no aliases at all
    assert d.recognize(fake(1)).aliases_changed is True
    assert d.recognize(fake(1)).aliases_changed is False
    assert d.recognize(fake(2)).aliases_changed is False


def test_a_deleted_person_forgets_its_alias_pairs(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(1)))
    assert d.recognize(fake(1)).aliases_changed is True
    d.delete(4)
    d.enroll((4, fake(1)))
    assert d.recognize(fake(1)).aliases_changed is True


def test_truncate_forgets_alias_pairs(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(1)))
    assert d.recognize(fake(1)).aliases_changed is True
    d.truncate()
    d.enroll((3, fake(1)), (4, fake(1)))
    assert d.recognize(fake(1)).aliases_changed is True


def test_recognize_without_update_embedding_records_no_alias_pair(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(1)))
    assert d.recognize(fake(1), update_embedding=False).aliases_changed is False
    assert d.recognize(fake(1)).aliases_changed is True


# --- recognize: create_new --------------------------------------------------------------------------------------------


def test_create_new_gives_a_stranger_the_next_id_and_stores_it(d: Domain) -> None:
    d.enroll((3, fake(1)), (7, fake(2)))
    person = d.one(fake(9), create_new=True)
    assert (person.tag, person.similarity, person.aliases) == ("person8", 1.0, ())
    [created] = d.faces(8)
    assert created.kind == "created"
    assert np.array_equal(created.embedding, embedding(9))
    again = d.one(fake(9))
    assert again.tag == "person8" and again.similarity == pytest.approx(1.0, abs=1e-6)


def test_create_new_in_an_empty_space_starts_at_person1(d: Domain) -> None:
    assert d.one(fake(9), create_new=True).tag == "person1"


def test_create_new_does_not_touch_a_matched_face(d: Domain) -> None:
    d.enroll((3, fake(1)))
    assert d.one(fake(1), create_new=True).tag == "person3"
    assert d.counts() == {3: 1}


def test_create_new_numbers_strangers_in_order_and_matches_them_within_the_request(d: Domain) -> None:
    d.enroll((2, fake(1)))
    result = d.recognize(fake(8, 9), fake(9, 1, 8), create_new=True)
    assert tags(result) == [["person3", "person4"], ["person4", "person2", "person3"]]
    assert d.counts() == {2: 1, 3: 1, 4: 1}


def test_create_new_reuses_the_id_of_a_deleted_largest_person(d: Domain) -> None:
    d.enroll((3, fake(1)), (5, fake(2)))
    d.delete(5)
    assert d.one(fake(9), create_new=True).tag == "person4"


def test_create_new_after_truncate_starts_again_at_person1(d: Domain) -> None:
    d.enroll((3, fake(1)), (5, fake(2)))
    d.truncate()
    assert d.one(fake(9), create_new=True).tag == "person1"


def test_create_new_in_a_full_space_is_an_object_error(d: Domain) -> None:
    d.live.change(max_faces_per_space=1)
    d.enroll((1, fake(1)))
    result = d.recognize(fake(9), fake(1), create_new=True)
    assert (result.objects[0].status, result.objects[0].error) == (1, errors.space_full(1))
    assert tags(result)[1] == ["person1"]
    assert d.counts() == {1: 1}


# --- recognize: update_embedding --------------------------------------------------------------------------------------


def test_a_matched_face_is_learned_by_its_person(d: Domain) -> None:
    d.enroll((3, fake(1)))
    first = d.one(fake("1~0.95"))
    assert (first.tag, first.similarity) == ("person3", pytest.approx(0.95, abs=1e-5))
    faces = d.faces(3)
    assert [f.kind for f in faces] == ["set", "learned"]
    assert np.array_equal(faces[1].embedding, near(1, 0.95))
    assert d.one(fake("1~0.95")).similarity == pytest.approx(1.0, abs=1e-5)  # the person now holds this face


def test_a_learned_face_lets_the_person_match_faces_its_photos_did_not(d: Domain) -> None:
    d.enroll((3, fake(1)))
    assert d.one(fake("1~0.92~5")).tag == UNDEFINED  # 0.92 to the photo
    assert d.one(fake("1~0.95~5")).tag == "person3"  # 0.95 to the photo: learned
    person = d.one(fake("1~0.92~5"), update_embedding=False)
    assert person.tag == "person3"
    assert person.similarity == pytest.approx(float(near(1, 0.92, 5) @ near(1, 0.95, 5)), abs=1e-5)


def test_update_embedding_false_stores_nothing(d: Domain) -> None:
    d.enroll((3, fake(1)))
    generation = d.store.generation(d.key())
    d.recognize(fake("1~0.95"), update_embedding=False)
    assert d.counts() == {3: 1}
    assert d.store.generation(d.key()) == generation


def test_a_near_duplicate_is_not_learned(d: Domain) -> None:
    d.enroll((3, fake(1)))
    d.recognize(fake(1), fake("1~0.99"))
    assert d.counts() == {3: 1}


def test_a_stranger_is_not_learned(d: Domain) -> None:
    d.enroll((3, fake(1)))
    d.recognize(fake("1~0.9"))
    assert d.counts() == {3: 1}


def test_a_person_keeps_only_its_newest_learned_faces_and_all_its_photos(d: Domain) -> None:
    d.live.change(learned_per_person=2)
    d.enroll((3, fake(1)), (3, fake("1~0.8")))
    for variant in range(1, 5):
        d.recognize(fake(f"1~0.95~{variant}"))
    faces = d.faces(3)
    assert [f.kind for f in faces] == ["set", "set", "learned", "learned"]
    assert np.array_equal(faces[2].embedding, near(1, 0.95, 3))
    assert np.array_equal(faces[3].embedding, near(1, 0.95, 4))


def test_learned_per_person_zero_learns_nothing(d: Domain) -> None:
    d.live.change(learned_per_person=0)
    d.enroll((3, fake(1)))
    d.recognize(fake("1~0.95"))
    assert d.counts() == {3: 1}


def test_a_full_space_learns_nothing(d: Domain) -> None:
    d.live.change(max_faces_per_space=1)
    d.enroll((3, fake(1)))
    assert d.one(fake("1~0.95")).tag == "person3"
    assert d.counts() == {3: 1}


def test_when_the_store_cannot_write_recognize_still_matches_but_create_new_fails(
    d: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[StoreError] = []
    service = PersonsService(FakeEngine(), d.store, d.live, on_store_failure=failures.append)
    try:
        d.enroll((3, fake(1)), (4, fake(1)))

        @contextmanager
        def full_disk(key: SpaceKey) -> Iterator[None]:
            raise StoreError(f"could not write {key}: disk full")
            yield

        monkeypatch.setattr(d.store, "write", full_disk)
        request = RecognizeRequest(0, (image("a", fake("1~0.95")),))  # would learn, and record the alias pair
        result = service.recognize(d.client, request)
        assert tags(result) == [["person3"]] and (result.objects[0].persons or ())[0].aliases == ("person4",)
        assert result.aliases_changed is False
        assert len(failures) == 1
        with pytest.raises(StoreError):
            service.recognize(d.client, RecognizeRequest(0, (image("b", fake(9)),), create_new=True))
        monkeypatch.undo()
        assert d.counts() == {3: 1, 4: 1}
    finally:
        service.close()


# --- delete, truncate -------------------------------------------------------------------------------------------------


def test_delete_removes_every_face_of_the_person(d: Domain) -> None:
    d.enroll((3, fake(1)), (3, fake(2)), (4, fake(3)))
    d.recognize(fake("1~0.95"))  # a learned face goes too
    results = d.service.delete(d.client, DeleteRequest(0, (("a", 3), ("b", 99))))
    assert results == [ObjectResult("a"), ObjectResult("b")]  # an absent person is no error
    assert d.counts() == {4: 1}
    for face in (fake(1), fake(2), fake("1~0.95")):
        assert d.one(face).tag == UNDEFINED
    assert d.one(fake(3)).tag == "person4"


def test_truncate_empties_only_its_space(d: Domain) -> None:
    d.enroll((3, fake(1)), (4, fake(2)))
    d.enroll((3, fake(1)), space=1)
    d.truncate()
    assert d.counts() == {}
    assert d.one(fake(1)).similarity == 0.0
    assert d.one(fake(1), space=1).tag == "person3"


# --- isolation --------------------------------------------------------------------------------------------------------


def test_spaces_do_not_see_each_other(d: Domain) -> None:
    d.enroll((3, fake(1)), space=0)
    d.enroll((3, fake(2)), space=1)
    assert d.one(fake(1), space=1).tag == UNDEFINED
    assert d.one(fake(2), space=0).tag == UNDEFINED
    assert d.one(fake(9), space=2, create_new=True).tag == "person1"
    d.delete(3, space=1)
    assert d.one(fake(1), space=0).tag == "person3"


def test_clients_do_not_see_each_other(d: Domain) -> None:
    other = ClientId(f"{d.client}-other")
    d.enroll((3, fake(1)))
    d.enroll((5, fake(2)), client=other)
    assert d.one(fake(1), client=other).tag == UNDEFINED
    assert d.one(fake(9), client=other, create_new=True).tag == "person6"
    d.truncate(client=other)
    assert d.counts() == {3: 1}
    assert d.counts(client=other) == {}
    assert d.one(fake(1)).tag == "person3"


# --- the in-memory index follows the store ----------------------------------------------------------------------------


@pytest.fixture
def loads(d: Domain, monkeypatch: pytest.MonkeyPatch) -> list[SpaceKey]:
    """Every space loaded from the store while the test runs."""
    seen: list[SpaceKey] = []
    original = d.store.load_space

    def counting(key: SpaceKey) -> SpaceData:
        seen.append(key)
        return original(key)

    monkeypatch.setattr(d.store, "load_space", counting)
    return seen


def test_the_index_follows_every_write_without_reloading(d: Domain, loads: list[SpaceKey]) -> None:
    d.live.change(learned_per_person=2)
    d.service.index.get(d.key())
    steps = [
        lambda: d.enroll((3, fake(1)), (4, fake(2)), (3, fake(3)), (5, fake())),
        lambda: d.recognize(fake(9, 2), create_new=True),
        lambda: d.recognize(fake("1~0.95~1")),
        lambda: d.recognize(fake("1~0.95~2")),
        lambda: d.recognize(fake("1~0.95~3")),  # the oldest learned face is replaced
        lambda: d.delete(4),
        lambda: d.enroll((4, fake(7))),
        lambda: d.recognize(fake(8), create_new=True),
        lambda: d.truncate(),
        lambda: d.enroll((1, fake(1))),
    ]
    generations = []
    for step in steps:
        step()
        expected = d.fresh_index()
        assert_same_index(d.service.index.get(d.key()), expected)
        generations.append(expected.generation)
    assert len(loads) == 1 + len(steps)  # the service's first get, then only this test's fresh loads
    assert generations == sorted(set(generations))  # every step wrote, and bumped the generation


def test_the_index_follows_several_faces_learned_in_one_request(d: Domain) -> None:
    d.live.change(learned_per_person=1)
    d.enroll((3, fake(1)))
    d.service.index.get(d.key())
    d.recognize(fake("1~0.95~1"), fake("1~0.95~2"))  # the second replaces the first
    assert [f.kind for f in d.faces(3)] == ["set", "learned"]
    assert_same_index(d.service.index.get(d.key()), d.fresh_index())


def test_a_deleted_person_is_not_matched_by_a_face_it_learned_and_lost(d: Domain) -> None:
    d.live.change(learned_per_person=1)
    d.enroll((3, fake(1)))
    d.service.index.get(d.key())
    d.recognize(fake("1~0.95~1"), fake("1~0.95~2"))
    d.delete(3)
    assert d.one(fake("1~0.95~1")).tag == UNDEFINED


def test_a_write_by_another_process_is_seen_on_the_next_request(d: Domain) -> None:
    d.enroll((3, fake(1)))
    assert d.one(fake(2)).tag == UNDEFINED
    other = SQLITE.store(d.live().data_dir)  # the same database, as a second worker process opens it
    try:
        with other.write(d.key()) as writer:
            writer.add_face(4, embedding(2), "set")
    finally:
        other.close()
    assert d.one(fake(2)).tag == "person4"
