"""Logs: one line per request (human or JSON), and a known token appears in no line of a real server's output.

The subprocess server runs with two workers, the access log on and debug level, so it also shows that
``/metrics`` adds up the counters of every worker (prometheus-client's multiprocess mode) and that the
CLI removes its metrics directory on exit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emulator.ops.logs import LineFormatter, RequestLog, redact
from emulator.ops.observe import ImageInfo, RequestRecord
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture

TOKEN = "tok-5be1d0c7-9a4f-known-secret"
OTHER_TOKEN = "tok-unknown-4412-also-secret"


def record(**changes: Any) -> RequestRecord:
    base = RequestRecord(
        method="recognize",
        client="shop",
        started_at=0.0,
        space=3,
        images=[ImageInfo("a", 10, None), ImageInfo("b", 20, None)],
        body={"objects": [{"status": 0, "name": "a"}, {"status": 1, "name": "b", "error": "x"}]},
        duration_ms=123.456,
        timings_ms={"decode": 1.25, "detect": 50.0, "embed": 60.0, "match": 0.5},
        faces=2,
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def format_line(fmt: str, rec: RequestRecord) -> str:
    captured: list[logging.LogRecord] = []
    logger = logging.getLogger("test.requests")
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        RequestLog(logger)(rec)
    finally:
        logger.removeHandler(handler)
    [entry] = captured
    return LineFormatter(fmt).format(entry)


def test_human_request_line() -> None:
    line = format_line("human", record())
    assert line.endswith(
        "test.requests: recognize client=shop space=3 images=2 objects=0,1 faces=2 status=200 duration_ms=123.5"
        " decode_ms=1.2 detect_ms=50.0 embed_ms=60.0 match_ms=0.5"
    )
    assert " INFO " in line and "\n" not in line


def test_json_request_line() -> None:
    line = json.loads(format_line("json", record()))
    assert {k: line[k] for k in ("level", "logger", "method", "client", "space", "images", "statuses")} == {
        "level": "info",
        "logger": "test.requests",
        "method": "recognize",
        "client": "shop",
        "space": 3,
        "images": 2,
        "statuses": [0, 1],
    }
    assert (line["faces"], line["status"], line["duration_ms"]) == (2, 200, 123.5)
    assert line["timings_ms"] == {"decode": 1.2, "detect": 50.0, "embed": 60.0, "match": 0.5}


def test_a_failed_request_line_carries_its_error() -> None:
    rec = record(envelope_status=403, body="unknown oauth_token", client=None, space=None, images=[])
    line = format_line("human", rec)
    assert "recognize client=- space=- images=0 objects=- faces=2 status=403" in line
    assert line.endswith('error="unknown oauth_token"')


@pytest.mark.parametrize(
    "text",
    [
        f'127.0.0.1:5 - "POST /api/v1/persons/set?oauth_token={TOKEN}&oauth_provider=mcs HTTP/1.1" 200',
        f"/x?oauth_provider=mcs&oauth_token={TOKEN}",
        f"Authorization: Bearer {TOKEN}",
        f'{{"access_token": "{TOKEN}", "token_type": "bearer"}}',
        f"refresh_token={TOKEN}&client_secret={TOKEN}",
    ],
)
def test_redact_removes_credentials(text: str) -> None:
    assert TOKEN not in redact(text)
    assert "<redacted>" in redact(text)


def test_redact_removes_configured_secrets_anywhere() -> None:
    assert redact(f"token was {TOKEN}.", [TOKEN]) == "token was <redacted>."


# --- a real server in a subprocess ------------------------------------------------------------


class Server(EmulatorProcess):
    """Two workers, JSON logs at debug level with the access log on, and its own TMPDIR."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        super().__init__(
            tmp_path / "data",
            workers=2,
            env={"TMPDIR": str(self.tmp)},
            clients=f"shop={TOKEN}",
            analyze_workers=1,
            log_format="json",
            log_level="debug",
            access_log="true",
        )
        self.http = httpx.Client(base_url=self.base_url, timeout=60)

    def persons(self, method: str, meta: str, token: str, files: list[tuple[str, bytes]] = ()) -> dict[str, Any]:
        parts: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
            (name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files
        ]
        parts.append(("meta", (None, meta, "text/plain")))
        response = self.http.post(
            f"/api/v1/persons/{method}", params={"oauth_token": token, "oauth_provider": "mcs"}, files=parts
        )
        assert response.status_code == 200
        payload: dict[str, Any] = response.json()
        return payload

    def stop(self) -> int | None:
        self.http.close()
        return super().stop()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start the server, make requests with the known token, stop it; hand over what it wrote and answered."""
    server = Server(tmp_path_factory.mktemp("logs"))
    try:
        server.start()
        answers = [
            server.persons(
                "set",
                '{"space":"1","images":[{"name":"f","person_id":7}]}',
                TOKEN,
                [("f", fixture("people/obama/obama.jpg"))],
            ),
            server.persons(
                "recognize",
                '{"space":"1","images":[{"name":"f"},{"name":"g"}]}',
                TOKEN,
                [("f", fixture("people/obama/obama2.jpg")), ("g", b"not an image")],
            ),
            server.persons("recognize", '{"space":"1","images":[{"name":"f"}]}', OTHER_TOKEN),  # 403
            server.persons("truncate", '{"space":"1"', TOKEN),  # bad meta: 400
        ]
        server.http.get("/emulator/ready", params={"oauth_token": TOKEN})
        server.http.get("/no/such/path", params={"oauth_token": TOKEN}, headers={"Authorization": f"Bearer {TOKEN}"})
        scrapes = [server.http.get("/metrics").text for _ in range(4)]  # served by either worker
    finally:
        code = server.stop()
    yield {
        "answers": answers,
        "scrapes": scrapes,
        "code": code,
        "output": server.log(),
        "tmp": server.tmp,
    }


def test_the_requests_went_through(run: dict[str, Any]) -> None:
    statuses = [answer["status"] for answer in run["answers"]]
    assert statuses == [200, 200, 403, 400]
    recognized = run["answers"][1]["body"]["objects"]
    assert [o["status"] for o in recognized] == [0, 1]
    assert recognized[0]["persons"][0]["tag"] == "person7"


def test_the_token_appears_in_no_log_line(run: dict[str, Any]) -> None:
    output = run["output"]
    assert output.strip(), "the server wrote no log"
    for secret in (TOKEN, OTHER_TOKEN, TOKEN[4:20], OTHER_TOKEN[4:20]):
        assert secret not in output


def test_one_json_line_per_persons_request(run: dict[str, Any]) -> None:
    lines = [json.loads(line) for line in run["output"].splitlines() if line.strip()]  # every line is JSON
    requests = [line for line in lines if line["logger"] == "emulator.requests"]
    summary = [(r["method"], r["client"], r["space"], r["images"], r["statuses"], r["status"]) for r in requests]
    assert summary == [
        ("set", "shop", 1, 1, [0], 200),
        ("recognize", "shop", 1, 2, [0, 1], 200),
        ("recognize", None, None, 0, [], 403),  # refused before its form is read
        ("truncate", "shop", None, 0, [], 400),
    ]
    assert requests[1]["faces"] == 1 and set(requests[1]["timings_ms"]) >= {"decode", "detect", "embed", "match"}
    assert all(r["duration_ms"] > 0 for r in requests)


def test_the_access_log_is_there_with_the_query_redacted(run: dict[str, Any]) -> None:
    access = [json.loads(line)["message"] for line in run["output"].splitlines() if '"uvicorn.access"' in line]
    persons = [line for line in access if "/api/v1/persons/" in line]
    assert len(persons) == 4
    assert all("oauth_token=<redacted>&oauth_provider=mcs" in line for line in persons)
    assert any("/emulator/ready?oauth_token=<redacted>" in line for line in access)


def test_metrics_add_up_over_both_workers(run: dict[str, Any]) -> None:
    for text in run["scrapes"]:
        totals: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "smarty_requests_total":
                    totals[(sample.labels["method"], sample.labels["status"])] = sample.value
        assert totals == {("set", "200"): 1, ("recognize", "200"): 1, ("recognize", "403"): 1, ("truncate", "400"): 1}


def test_the_metrics_directory_is_removed_on_exit(run: dict[str, Any]) -> None:
    assert run["code"] == 0
    assert not list(run["tmp"].glob("smarty-metrics-*"))
