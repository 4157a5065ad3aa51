"""searcher: 1 over HTTP with the attribute models: sex and age on labelled portraits, expression on clearly happy
and clearly neutral faces, the same answer every time, and the synthetic values still there when asked for."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import FIXTURES, EmulatorServer, fixture

LABELLED = FIXTURES / "labelled"
FIELDS = ["sex", "emotion", "age", "valence", "arousal", "frontality", "visibility"]

# FairFace's labels (fixtures/labelled/labels.csv): sex, and the apparent age as a range (decades; "70+").
# Measured on these 54 portraits (3 per sex and range): sex right on 41 (0.76; 32 of the 36 from 20 up, 0.89:
# dlib's gender model was trained on adults, children are near chance), mean distance of the age from the
# range's middle 8.7 years (10.0 from 20 up: older faces are read younger). The bounds leave a margin.
MIN_SEX_ACCURACY = 0.70
MIN_ADULT_SEX_ACCURACY = 0.83
MAX_AGE_ERROR = 10.0
MAX_ADULT_AGE_ERROR = 11.5

HAPPY = ["people/obama/obama.jpg", "people/alex_lacamoire/img1.jpg", "people/kate_siegel/aligned-160.png"]
NEUTRAL = [
    "people/anthony_hopkins/Anthony_Hopkins_0001.jpg",
    "people/anthony_hopkins/Anthony_Hopkins_0002.jpg",
    "people/rose_leslie/img1.jpg",
    "people/kit_harington/john2.jpeg",
]


def _range(label: str) -> tuple[int, int]:
    """A FairFace age range as (first year, one past the last): "20-29" is (20, 30), "70+" is taken as (70, 81)."""
    if label.endswith("+"):
        return int(label[:-1]), 81
    low, high = label.split("-")
    return int(low), int(high) + 1


def _labels() -> list[dict[str, str]]:
    with (LABELLED / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _attributes(server: EmulatorServer | EmulatorProcess, photos: list[str], **meta: Any) -> list[dict[str, Any]]:
    """The searcher=1 person of each photo (one face each), all in one recognize request."""
    names = [f"p{i}" for i in range(len(photos))]
    files = [(name, fixture(photo)) for name, photo in zip(names, photos, strict=True)]
    request = {"space": "7", "images": [{"name": n} for n in names], "searcher": 1, **meta}
    if isinstance(server, EmulatorServer):
        body = server.ok("recognize", request, files)
    else:
        body = _post(server, request, files)
    persons = []
    for obj in body["objects"]:
        [person] = obj["persons"]
        assert list(person)[-7:] == FIELDS
        persons.append({key: person[key] for key in FIELDS})
    return persons


def _post(server: EmulatorProcess, meta: dict[str, Any], files: list[tuple[str, bytes]]) -> Any:
    import json

    parts = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files]
    parts.append(("meta", (None, json.dumps(meta).encode(), "text/plain")))  # type: ignore[arg-type]
    response = httpx.post(
        f"{server.base_url}/api/v1/persons/recognize",
        params={"oauth_token": "t", "oauth_provider": "mcs"},
        files=parts,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["status"] == 200, payload
    return payload["body"]


def test_sex_and_age_of_the_labelled_portraits(hog_server: EmulatorServer) -> None:
    """On HOG's faces, as measured (YuNet also finds the partial neighbours' faces some of these tight crops hold)."""
    server = hog_server
    labels = _labels()
    assert len(labels) == 54 and {row["sex"] for row in labels} == {"female", "male"}
    answers = _attributes(server, [f"labelled/{row['file']}" for row in labels])
    right, errors, adult_right, adult_errors = [], [], [], []
    for row, answer in zip(labels, answers, strict=True):
        low, past = _range(row["age"])
        assert answer["age"] == int(answer["age"]) and 0 <= answer["age"] <= 80
        right.append(answer["sex"] == row["sex"])
        errors.append(abs(answer["age"] - (low + past) / 2))
        if low >= 20:
            adult_right.append(right[-1])
            adult_errors.append(errors[-1])
    assert statistics.mean(right) >= MIN_SEX_ACCURACY
    assert statistics.mean(adult_right) >= MIN_ADULT_SEX_ACCURACY
    assert statistics.mean(errors) <= MAX_AGE_ERROR
    assert statistics.mean(adult_errors) <= MAX_ADULT_AGE_ERROR
    # The ages order the groups: children are read younger than young adults, and they younger than the old.
    by_range: dict[str, list[float]] = {}
    for row, answer in zip(labels, answers, strict=True):
        by_range.setdefault(row["age"], []).append(answer["age"])
    young, adult, old = (
        statistics.mean(by_range["0-2"] + by_range["3-9"]),
        statistics.mean(by_range["20-29"] + by_range["30-39"]),
        statistics.mean(by_range["60-69"] + by_range["70+"]),
    )
    assert young < adult < old


def test_a_clearly_happy_face_is_happiness_and_a_clearly_neutral_one_neutral(hog_server: EmulatorServer) -> None:
    server = hog_server
    for answer in _attributes(server, HAPPY):
        assert answer["emotion"] == "Happiness"
        assert answer["valence"] > 0.5  # pleasant
    for answer in _attributes(server, NEUTRAL):
        assert answer["emotion"] == "Neutral"
        assert abs(answer["valence"]) < 0.3 and abs(answer["arousal"]) < 0.3


def test_the_real_persons_are_read_as_who_they_are(server: EmulatorServer) -> None:
    """Photos of known people: the men are male, the women female (the first thing a demo user tries)."""
    men = ["people/obama/obama.jpg", "people/biden/biden.jpg", "people/anthony_hopkins/Anthony_Hopkins_0001.jpg"]
    women = ["people/rose_leslie/img1.jpg", "people/angelina_jolie/full.jpg", "people/kate_siegel/aligned-160.png"]
    assert [a["sex"] for a in _attributes(server, men + women)] == ["male"] * 3 + ["female"] * 3


def test_synthetic_keeps_the_values_of_earlier_versions(tmp_path: Path, hog_engine: Any) -> None:
    """Earlier versions detected with HOG: the same detector gives the same embedding, so the same values."""
    synthetic = EmulatorServer(tmp_path / "data", engine=hog_engine, attributes="synthetic").start()
    try:
        [rose, obama] = _attributes(synthetic, ["people/rose_leslie/img2.jpg", "people/obama/obama.jpg"])
    finally:
        synthetic.stop()
    # As every earlier version answered (the embedding's hash: they say nothing true about the person).
    assert rose == {
        "sex": "male",
        "emotion": "Anger",
        "age": 23,
        "valence": 0.5004,
        "arousal": 0.0814,
        "frontality": 0.7925,
        "visibility": 0.996,
    }
    assert obama == {
        "sex": "male",
        "emotion": "Contempt",
        "age": 58,
        "valence": -0.176,
        "arousal": -0.6334,
        "frontality": 0.9716,
        "visibility": 1,
    }


@pytest.fixture(scope="module")
def hog_server(hog_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """A server detecting with HOG (``SMARTY_DETECTOR=hog``): the faces the accuracy figures were measured on."""
    running = EmulatorServer(tmp_path_factory.mktemp("hog"), engine=hog_engine).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def uncached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A server process without the face cache: every request analyses its images again."""
    process = EmulatorProcess(tmp_path_factory.mktemp("uncached") / "data", cache_size=0).start()
    yield process
    process.stop()


@pytest.mark.slow
def test_attributes_are_identical_across_requests_and_analysis_paths(uncached: EmulatorProcess) -> None:
    photo = "people/rose_leslie/img2.jpg"
    alone = [_attributes(uncached, [photo])[0] for _ in range(3)]  # one image: analysed in the request's thread
    # Several images: analysed in the worker processes (one per core), where the models load on their own.
    together = _attributes(uncached, [photo, "people/obama/obama.jpg", photo, "people/biden/biden.jpg"])
    assert alone[0] == alone[1] == alone[2] == together[0] == together[2]
    assert alone[0]["sex"] == "female" and alone[0]["emotion"] == "Happiness"


def test_the_attributes_phase_is_timed_in_the_metrics(server: EmulatorServer) -> None:
    """Their time is a phase of its own (smarty_request_phase_seconds), apart from the descriptor's ``embed``."""
    _attributes(server, ["people/biden/biden2.jpg"], update_embedding=False)
    metrics = server.http.get("/metrics").text
    assert 'smarty_request_phase_seconds_count{method="recognize",phase="attributes"}' in metrics
