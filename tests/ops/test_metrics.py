"""``GET /metrics`` after real set and recognize calls: counters and histograms move by the right amounts."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.emulator_server import EmulatorServer, fixture

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_set_and_recognize_move_the_counters_and_histograms(server: EmulatorServer, space: int) -> None:
    before = scrape(server.http)
    # set: one good photo, one without a face (object status 1), in one request.
    body = server.ok(
        "set",
        {"space": str(space), "images": [{"name": "a", "person_id": 1}, {"name": "b", "person_id": 2}]},
        [("a", fixture("people/obama/obama.jpg")), ("b", fixture("no-face/no-faces.jpg"))],
    )
    assert [o["status"] for o in body["objects"]] == [0, 1]
    server.set(space, 2, "people/biden/biden2.jpg")
    # recognize: two faces on one photo; nothing stored.
    persons = server.recognize(space, "groups/two_people.jpg", update_embedding=False)["persons"]
    assert [p["tag"] for p in persons] == ["person1", "person2"]
    # A request that fails as a whole (bad meta).
    assert server.call("recognize", '{"space": "0"').json()["status"] == 400
    after = scrape(server.http)

    assert moved(before, after, "smarty_requests_total", method="set", status="200") == 2
    assert moved(before, after, "smarty_requests_total", method="recognize", status="200") == 1
    assert moved(before, after, "smarty_requests_total", method="recognize", status="400") == 1
    assert moved(before, after, "smarty_images_total", method="set") == 3
    assert moved(before, after, "smarty_faces_detected_total", method="set") == 2
    assert moved(before, after, "smarty_faces_detected_total", method="recognize") == 2
    assert moved(before, after, "smarty_object_errors_total", method="set", status="1") == 1
    assert moved(before, after, "smarty_object_errors_total", method="recognize", status="1") == 0

    # Latency: one observation per request, of every method.
    assert moved(before, after, "smarty_request_duration_seconds_count", method="set") == 2
    assert moved(before, after, "smarty_request_duration_seconds_count", method="recognize") == 2
    assert moved(before, after, "smarty_request_duration_seconds_bucket", method="set", le="+Inf") == 2
    assert moved(before, after, "smarty_request_duration_seconds_sum", method="set") > 0
    # Phases: set decodes, detects and embeds (no match); recognize also matches. The bad-meta request has none.
    for phase in ("decode", "detect", "embed"):
        assert moved(before, after, "smarty_request_phase_seconds_count", method="set", phase=phase) == 2
        assert moved(before, after, "smarty_request_phase_seconds_sum", method="set", phase=phase) > 0
    assert moved(before, after, "smarty_request_phase_seconds_count", method="set", phase="match") == 0
    for phase in ("decode", "detect", "embed", "match"):
        assert moved(before, after, "smarty_request_phase_seconds_count", method="recognize", phase=phase) == 1

    # Space sizes come from the store.
    assert value(after, "smarty_space_persons", client="default", space=str(space)) == 2
    assert value(after, "smarty_space_embeddings", client="default", space=str(space)) == 2


def test_phases_add_up_within_the_request(server: EmulatorServer, space: int) -> None:
    """A request's phases are measured inside it: decode+detect+embed+match never exceed its duration."""
    before = scrape(server.http)
    server.recognize(space, "people/kit_harington/john1.jpeg", update_embedding=False)  # not seen before: no cache
    after = scrape(server.http)
    total = moved(before, after, "smarty_request_duration_seconds_sum", method="recognize")
    phases = sum(
        moved(before, after, "smarty_request_phase_seconds_sum", method="recognize", phase=phase)
        for phase in ("decode", "detect", "embed", "match")
    )
    assert 0 < phases <= total


def test_space_gauges_follow_delete_and_truncate(server: EmulatorServer, space: int) -> None:
    server.set(space, 1, "people/obama/obama.jpg")
    server.set(space, 1, "people/obama/obama2.jpg")
    server.set(space, 2, "people/biden/biden2.jpg")
    samples = scrape(server.http)
    assert value(samples, "smarty_space_persons", client="default", space=str(space)) == 2
    assert value(samples, "smarty_space_embeddings", client="default", space=str(space)) == 3
    server.ok("delete", {"space": str(space), "images": [{"name": "x", "person_id": 1}]})
    samples = scrape(server.http)
    assert value(samples, "smarty_space_persons", client="default", space=str(space)) == 1
    assert value(samples, "smarty_space_embeddings", client="default", space=str(space)) == 1
    server.ok("truncate", {"space": str(space)})
    samples = scrape(server.http)
    assert ("smarty_space_persons", frozenset({("client", "default"), ("space", str(space))})) not in samples
