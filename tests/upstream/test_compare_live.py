"""Compare mode end to end: the emulator under test (``front``) forwards to an upstream that is a second real emulator
on loopback, with a stricter threshold (0.999 against the default 0.93) and, once, an injected fault. The client
gets the upstream's answers; ``GET /emulator/compare`` finds exactly the planted differences (a tag mismatch where
the thresholds disagree, a status mismatch where the fault struck) and none elsewhere, and the user's own spaces in
the front are untouched. Real HTTP, real dlib, real photos."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture

pytestmark = pytest.mark.slow
BIDEN, BIDEN2, HANKS, OBAMA, NO_FACE, GROUP = (
    fixture(p)
    for p in (
        "people/biden/biden.jpg",
        "people/biden/biden2.jpg",
        "people/tom_hanks/Tom_Hanks_54745.png",
        "people/obama/obama.jpg",
        "no-face/no-faces.jpg",
        "groups/t1.jpg",
    )
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(the front in compare mode, the upstream): clients of both."""
    root = tmp_path_factory.mktemp("compare-live")
    upstream = EmulatorProcess(root / "upstream", match_threshold=0.999).start()
    try:
        front = EmulatorProcess(root / "front", upstream_mode="compare", upstream_url=upstream.url).start()
        try:
            with httpx.Client(base_url=front.url, timeout=120) as f, httpx.Client(base_url=upstream.url) as u:
                yield f, u
        finally:
            front.stop()
    finally:
        upstream.stop()


def persons(http: httpx.Client, method: str, meta: dict[str, Any], **images: bytes) -> dict[str, Any]:
    files: list[tuple[str, Any]] = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in images.items()]
    files.append(("meta", (None, json.dumps(meta), "text/plain")))
    response = http.post(
        f"/api/v1/persons/{method}", params={"oauth_token": "t0ken-abc", "oauth_provider": "mcs"}, files=files
    )
    assert response.status_code == 200, response.text
    envelope: dict[str, Any] = response.json()
    return envelope


def one(name: str = "q", **options: Any) -> dict[str, Any]:
    return {"space": "0", "images": [{"name": name}], **options}


def test_compare_finds_exactly_the_planted_differences(servers: tuple[httpx.Client, httpx.Client]) -> None:
    front, upstream = servers
    # The upstream's space already holds person 5, which the shadow space never saw: its next new id is 6.
    persons(upstream, "set", {"space": "0", "images": [{"name": "a", "person_id": 5}]}, a=HANKS)

    persons(front, "set", {"space": "0", "images": [{"name": "a", "person_id": 1}]}, a=BIDEN)
    strict = persons(front, "recognize", one(update_embedding=False), q=BIDEN2)  # planted: a tag mismatch
    assert strict["body"]["objects"][0]["persons"][0]["tag"] == "undefined"  # the client got the upstream's answer
    persons(front, "recognize", one(update_embedding=False), q=NO_FACE)
    created = persons(front, "recognize", one(create_new=True), q=OBAMA)
    assert created["body"]["objects"][0]["persons"][0]["tag"] == "person6"
    again = persons(front, "recognize", one(update_embedding=False), q=OBAMA)  # person6 there is person2 here
    assert again["body"]["objects"][0]["persons"][0]["tag"] == "person6"
    upstream.post("/emulator/faults", json={"kind": "envelope_500", "method": "recognize", "times": 1})
    failed = persons(front, "recognize", one(update_embedding=False), q=GROUP)  # planted: a status mismatch
    assert failed["status"] == 500
    persons(front, "recognize", one(update_embedding=False), q=GROUP)
    # The user's own spaces are untouched: what the front stored is in the shadow namespace only.
    clients = front.get("/emulator/clients").json()["clients"]
    assert clients == [{"client": "shadow=default", "spaces": [{"space": 0, "persons": 2, "faces": 2}]}]
    persons(front, "truncate", {"space": "0"})

    response = front.get("/emulator/compare")
    assert response.status_code == 200 and response.headers["X-Emulator-Worker"].isdigit()
    report = response.json()
    entries = report["entries"]
    assert [(e["method"], e["identical"]) for e in entries] == [
        ("set", True),
        ("recognize", False),
        ("recognize", True),
        ("recognize", True),
        ("recognize", True),
        ("recognize", False),
        ("recognize", True),
        ("truncate", True),
    ]
    [tag] = entries[1]["differences"]
    assert (tag["kind"], tag["upstream"], tag["emulator"]) == ("tag", "undefined", "person1")
    assert entries[4]["faces"][0]["upstream_tag"] == "person6" and entries[4]["faces"][0]["emulator_tag"] == "person2"
    assert entries[5]["upstream"]["status"] == 500 and entries[5]["emulator"]["status"] == 200
    assert {d["kind"] for d in entries[5]["differences"]} == {"status", "body"}
    assert len(entries[6]["faces"]) == 6 and all(f["tags_agree"] and f["iou"] == 1.0 for f in entries[6]["faces"])
    summary = report["summary"]
    assert summary["requests"] == 8 and summary["identical"] == 6 and summary["with_diffs"] == 2
    assert summary["status_mismatches"] == 1 and summary["mean_iou"] == 1.0
    assert summary["faces_only_upstream"] == summary["faces_only_emulator"] == 0
    # One engine on both sides: a face matched to the same photo has the same similarity on both (an unmatched
    # face's similarity is its best candidate's, and the upstream's space also holds person 5: those may differ).
    assert entries[1]["faces"][0]["similarity_delta"] == entries[4]["faces"][0]["similarity_delta"] == 0.0
    assert isinstance(summary["p95_similarity_delta"], float)

    assert front.get("/emulator/clients").json()["clients"] == []  # the truncate reached the shadow space too
    assert front.request("DELETE", "/emulator/compare").json() == {"removed": 8}
    assert front.get("/emulator/compare").json()["summary"]["requests"] == 0
