"""``smarty-emulator compare --cassettes DIR`` end to end: cassettes recorded by the record mode from a real
emulator on loopback whose threshold is stricter (0.999 against the default 0.93) and which had one fault injected,
compared offline by the real command with real dlib. Exactly the planted differences are found: a tag mismatch where
the thresholds disagree, a status mismatch where the fault struck, and none elsewhere; the exit status follows the
bounds; the formats."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.emulator_process import EmulatorProcess, run_cli
from tests.support.emulator_server import FIXTURES

pytestmark = pytest.mark.slow
STRICT = 0.999
BIDEN = "people/biden/biden.jpg"


def photo(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


class Recording:
    """A client of ``front``, an emulator in record mode in front of the upstream, writing the cassette ``name``."""

    def __init__(self, front: httpx.Client, upstream: httpx.Client) -> None:
        self.front, self.upstream = front, upstream

    def cassette(self, name: str) -> None:
        assert self.front.patch("/emulator/settings", json={"cassette": name}).status_code == 200

    def call(self, method: str, meta: dict[str, Any], *images: tuple[str, bytes]) -> None:
        files: list[tuple[str, Any]] = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in images]
        files.append(("meta", (None, json.dumps(meta), "text/plain")))
        query = {"oauth_token": "a-real-looking-token-5e1f", "oauth_provider": "mcs"}
        response = self.front.post(f"/api/v1/persons/{method}", params=query, files=files)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def cassettes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two cassettes recorded by the record mode: ``threshold`` (answers of the strict upstream) and ``fault`` (one
    injected envelope 500)."""
    root = tmp_path_factory.mktemp("compare-offline")
    directory = root / "cassettes"
    upstream = EmulatorProcess(root / "upstream", match_threshold=STRICT).start()
    front = EmulatorProcess(root / "front", upstream_mode="record", upstream_url=upstream.url, cassette_dir=directory)
    try:
        front.start()
        with httpx.Client(base_url=front.url, timeout=120) as f, httpx.Client(base_url=upstream.url) as u:
            tape = Recording(f, u)
            tape.cassette("threshold")
            q = {"space": "0", "images": [{"name": "q"}]}
            tape.call("set", {"space": "0", "images": [{"name": "a", "person_id": 1}]}, ("a", photo(BIDEN)))
            # Biden again, another photo: a match at 0.93, none at 0.999 (the planted tag mismatch).
            tape.call("recognize", {**q, "update_embedding": False}, ("q", photo("people/biden/biden2.jpg")))
            tape.call(
                "recognize", {**q, "update_embedding": False}, ("q", photo("people/tom_hanks/Tom_Hanks_54745.png"))
            )
            tape.call("recognize", q, ("q", photo("no-face/no-faces.jpg")))
            tape.call("recognize", {**q, "create_new": True}, ("q", photo("people/obama/obama.jpg")))
            tape.call("set", {"space": "0", "images": [{"name": "a", "person_id": 0}]}, ("a", photo(BIDEN)))
            tape.call("delete", {"space": "0", "images": [{"name": "x", "person_id": 2}]})
            tape.call("truncate", {"space": "0"})
            tape.cassette("fault")
            u.post("/emulator/faults", json={"kind": "envelope_500", "method": "recognize", "times": 1})
            group = ("q", photo("groups/t1.jpg"))
            tape.call("recognize", {"space": "3", "images": [{"name": "q"}]}, group)
            tape.call("recognize", {"space": "3", "images": [{"name": "q"}]}, group)
    finally:
        front.stop()
        upstream.stop()
    yield directory


def compare(directory: Path, *args: str) -> tuple[int, str, str]:
    done = run_cli("compare", "--cassettes", str(directory), *args, timeout=600)
    return done.returncode, done.stdout, done.stderr


def test_finds_exactly_the_planted_differences(cassettes: Path) -> None:
    code, out, err = compare(cassettes, "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    threshold, fault = report["cassettes"]["threshold"], report["cassettes"]["fault"]
    assert [e["identical"] for e in threshold["entries"]] == [True, False, True, True, True, True, True, True]
    [tag] = threshold["entries"][1]["differences"]
    assert (tag["kind"], tag["upstream"], tag["emulator"]) == ("tag", "undefined", "person1")
    [pair] = threshold["entries"][1]["faces"]
    assert pair["iou"] == 1.0 and pair["similarity_delta"] == 0.0 and not pair["tags_agree"]
    assert [e["identical"] for e in fault["entries"]] == [False, True]
    assert sorted(d["kind"] for d in fault["entries"][0]["differences"]) == ["body", "status"]
    summary = report["summary"]
    assert summary["requests"] == 10 and summary["with_diffs"] == 2 and summary["status_mismatches"] == 1
    assert summary["faces_only_upstream"] == summary["faces_only_emulator"] == 0 and summary["mean_iou"] == 1.0
    assert report["bounds"] == {"passed": False, "failures": [report["bounds"]["failures"][0]]}
    assert "--max-diffs 0" in err


def test_none_where_both_sides_agree(cassettes: Path) -> None:
    """At the upstream's own threshold only the fault remains, and one difference is within --max-diffs 1."""
    code, out, err = compare(cassettes, "--match-threshold", str(STRICT), "--max-diffs", "1")
    assert code == 0, err
    assert "threshold: 8 requests, 8 identical" in out and "fault: 2 requests, 1 identical" in out
    assert "fault#1 recognize: status at envelope: upstream 500, emulator 200" in out
    assert out.rstrip().endswith("bounds: within the bounds")


def test_junit_and_similarity_bound(cassettes: Path, tmp_path: Path) -> None:
    target = tmp_path / "compare.xml"
    code, _, _ = compare(cassettes, "--format", "junit", "--output", str(target), "--max-diffs", "5")
    assert code == 0
    root = ET.parse(target).getroot()
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert {name: (s.get("tests"), s.get("failures")) for name, s in suites.items()} == {
        "threshold": ("8", "1"),
        "fault": ("2", "1"),
        "bounds": ("1", "0"),
    }
    failed = [case.get("name") for case in root.iter("testcase") if case.find("failure") is not None]
    assert failed == ["fault#1 recognize", "threshold#2 recognize"]  # cassettes in name order
    code, _, err = compare(cassettes, "--max-diffs", "5", "--max-similarity-delta", "-1")
    assert code == 1 and "--max-similarity-delta" in err


def test_a_cassette_without_its_images_cannot_be_compared(cassettes: Path, tmp_path: Path) -> None:
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    shutil.copy(cassettes / "threshold.json", hashed / "threshold.json")  # no blobs/: SMARTY_RECORD_IMAGES=hash
    code, out, err = compare(hashed)
    assert code == 2 and out == ""
    assert "SMARTY_RECORD_IMAGES=hash" in err and "threshold.json" in err
    code, _, err = compare(tmp_path / "nowhere")
    assert code == 2 and "no cassette" in err
