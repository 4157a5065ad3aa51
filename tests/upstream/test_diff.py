"""The domain-aware diff on hand-built envelopes: every kind of difference it reports, and none where the answers
agree (the numbers the two sides compute each in their own way are measured, not differences)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from emulator.upstream.diff import TagMap, WireAnswer, compare, iou, pair_faces, percentile, report, summary


def answer(body: Any, status: int = 200, http: int = 200) -> WireAnswer:
    envelope = {"status": status, "body": body, "htmlencoded": False, "last_modified": 0}
    return WireAnswer(http, json.dumps(envelope).encode())


def face(tag: str, coord: list[int], similarity: float = 1.0, confidence: float = 0.99, **extra: Any) -> dict[str, Any]:
    return {"tag": tag, "coord": coord, "confidence": confidence, "awesomeness": 0.5, "similarity": similarity, **extra}


def recognized(*faces: dict[str, Any], name: str = "file_0") -> dict[str, Any]:
    obj: dict[str, Any] = {"status": 0, "name": name}
    if faces:
        obj["persons"] = list(faces)
    return {"objects": [obj]}


META = {"space": "0", "images": [{"name": "file_0"}]}


def kinds(entry: Any) -> list[str]:
    return sorted(d["kind"] for d in entry.differences)


def test_iou_of_boxes() -> None:
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 10], [0, 0, 10, 10]) == 0.0  # malformed


def test_pairing_is_greedy_by_iou_with_a_minimum() -> None:
    up = [{"coord": [0, 0, 100, 100]}, {"coord": [200, 0, 300, 100]}, {"coord": [500, 0, 600, 100]}]
    em = [{"coord": [210, 0, 310, 100]}, {"coord": [5, 5, 105, 105]}, {"coord": [560, 0, 660, 100]}]
    pairs, only_up, only_em = pair_faces(up, em, min_iou=0.5)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]
    assert only_up == [2] and only_em == [2]  # IoU 40/160 = 0.25: below the minimum
    pairs, _, _ = pair_faces(up, em, min_iou=0.2)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0), (2, 2)]


def test_identical_answers_have_no_differences_and_numbers_are_measured() -> None:
    up = answer(recognized(face("person1", [10, 10, 110, 110], similarity=0.91, confidence=0.99)))
    em = answer(recognized(face("person1", [12, 10, 112, 110], similarity=0.87, confidence=0.97)))
    tags = TagMap()
    tags.note_request("set", {"space": "0", "images": [{"name": "a", "person_id": 1}]})
    entry = compare("recognize", META, up, em, tags)
    assert entry.identical and not entry.status_mismatch
    [pair] = entry.faces
    assert pair.tags_agree and pair.iou == pytest.approx(iou([10, 10, 110, 110], [12, 10, 112, 110]))
    assert pair.similarity_delta == pytest.approx(-0.04) and pair.confidence_delta == pytest.approx(-0.02)


def test_a_tag_mismatch() -> None:
    tags = TagMap()
    tags.note_request("set", {"space": "0", "images": [{"name": "a", "person_id": 1}]})
    up = answer(recognized(face("person1", [0, 0, 100, 100])))
    em = answer(recognized(face("undefined", [0, 0, 100, 100], similarity=0.5)))
    entry = compare("recognize", META, up, em, tags)
    assert kinds(entry) == ["tag"] and entry.differences[0]["upstream"] == "person1"
    assert not entry.faces[0].tags_agree


def test_ids_set_named_must_be_equal_but_created_ids_are_mapped() -> None:
    tags = TagMap()
    tags.note_request("set", {"space": "0", "images": [{"name": "a", "person_id": 7}]})
    mismatch = compare(
        "recognize",
        META,
        answer(recognized(face("person7", [0, 0, 9, 9]))),
        answer(recognized(face("person8", [0, 0, 9, 9]))),
        tags,
    )
    assert kinds(mismatch) == ["tag"]
    # create_new: the upstream's space held 41 persons, the shadow space 8: person42 there is person9 here.
    created = compare(
        "recognize",
        META,
        answer(recognized(face("person42", [0, 0, 9, 9]))),
        answer(recognized(face("person9", [0, 0, 9, 9]))),
        tags,
    )
    assert created.identical
    again = compare(
        "recognize",
        META,
        answer(recognized(face("person42", [0, 0, 9, 9]))),
        answer(recognized(face("person9", [0, 0, 9, 9]))),
        tags,
    )
    assert again.identical
    other = compare(
        "recognize",
        META,
        answer(recognized(face("person43", [0, 0, 9, 9]))),
        answer(recognized(face("person9", [0, 0, 9, 9]))),
        tags,
    )
    assert kinds(other) == ["tag"]  # person9 already stands for person42
    aliases = compare(
        "recognize",
        META,
        answer(recognized(face("person7", [0, 0, 9, 9], aliases=["person42"]))),
        answer(recognized(face("person7", [0, 0, 9, 9], aliases=["person9"]))),
        tags,
    )
    assert aliases.identical  # the upstream's alias is mapped too
    tags.note_request("truncate", {"space": "0"})
    assert tags.expected("person42") is None and tags.expected("person7") is None


def test_faces_only_one_side_found() -> None:
    up = answer(recognized(face("undefined", [0, 0, 100, 100]), face("undefined", [300, 0, 400, 100])))
    em = answer(recognized(face("undefined", [5, 0, 105, 100]), face("undefined", [700, 0, 800, 100])))
    entry = compare("recognize", META, up, em, TagMap())
    assert kinds(entry) == ["face_only_emulator", "face_only_upstream"] and len(entry.faces) == 1
    none = compare(
        "recognize", META, answer(recognized(face("undefined", [0, 0, 9, 9]))), answer(recognized()), TagMap()
    )
    assert kinds(none) == ["face_only_upstream"]


def test_status_and_error_text_mismatches() -> None:
    entry = compare("recognize", META, answer("internal error", status=500), answer(recognized()), TagMap())
    assert "status" in kinds(entry) and entry.status_mismatch
    text = compare("set", META, answer("empty image", status=400), answer("meta is bad", status=400), TagMap())
    assert kinds(text) == ["error_text"] and not text.status_mismatch
    http = compare("set", META, WireAnswer(502, b"Bad Gateway"), answer({"objects": []}), TagMap())
    assert kinds(http) == ["http_status", "status"] and http.status_mismatch
    objects = compare(
        "set",
        META,
        answer({"objects": [{"status": 1, "error": "face set required only one face per image", "name": "a"}]}),
        answer({"objects": [{"status": 0, "name": "a"}, {"status": 0, "name": "b"}]}),
        TagMap(),
    )
    assert kinds(objects) == ["object_error", "object_only_emulator", "object_status"]


def test_extra_and_missing_fields() -> None:
    up = answer({**recognized(face("undefined", [0, 0, 9, 9], sex="male")), "aliases_changed": False})
    em = answer(recognized(face("undefined", [0, 0, 9, 9], emotion="Neutral")))
    entry = compare("recognize", META, up, em, TagMap())
    found = sorted((d["kind"], d["field"]) for d in entry.differences)
    assert found == [("field_extra", "emotion"), ("field_missing", "aliases_changed"), ("field_missing", "sex")]


def test_summary_and_report() -> None:
    tags = TagMap()
    same = compare(
        "recognize",
        META,
        answer(recognized(face("undefined", [0, 0, 10, 10], similarity=0.2))),
        answer(recognized(face("undefined", [0, 0, 10, 10], similarity=0.3))),
        tags,
    )
    status = compare("truncate", {"space": "0"}, answer("internal error", status=500), answer({}), tags)
    only = compare("recognize", META, answer(recognized()), answer(recognized(face("undefined", [0, 0, 10, 10]))), tags)
    result = summary([same, status, only])
    assert result["requests"] == 3 and result["identical"] == 1 and result["with_diffs"] == 2
    assert (
        result["status_mismatches"] == 1 and result["faces_only_emulator"] == 1 and result["faces_only_upstream"] == 0
    )
    assert result["mean_iou"] == 1.0 and result["p95_similarity_delta"] == pytest.approx(0.1)
    assert summary([])["mean_iou"] is None
    assert [e["identical"] for e in report([same, status])["entries"]] == [True, False]
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95) == 10 and percentile([3.0], 0.95) == 3.0
