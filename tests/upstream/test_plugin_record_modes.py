"""The pytest plugin's cassettes: ``--smarty-record-mode=none|once|new|all`` and the ``smarty_cassette`` marker, run
with pytester in a pytest of its own (a subprocess, as a user's suite runs), against an upstream that is a second
real emulator on loopback. What reached the upstream is read from its journal; what was stored, from the cassette."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.upstream.cassette import Cassette
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import FIXTURES

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

USER_TEST = """
import json
import os

import httpx
import pytest

PHOTO = open({photo!r}, "rb").read()


def call(emulator, method, meta, **images):
    files = [(name, (name + ".jpg", data, "image/jpeg")) for name, data in images.items()]
    files.append(("meta", (None, json.dumps(meta), "application/json")))
    query = {{"oauth_token": emulator.token, "oauth_provider": emulator.provider}}
    response = httpx.post(emulator.base_url + "/v1/persons/" + method, params=query, files=files, timeout=60)
    return [response.json()["status"], response.headers.get("X-Smarty-Replay")]


@pytest.mark.smarty_cassette("enrol")
def test_enrol_and_find(smarty_emulator):
    smarty_emulator.reset()  # keeps the cassette's mode
    seen = [call(smarty_emulator, "set", {{"space": "4", "images": [{{"name": "a", "person_id": 9}}]}}, a=PHOTO)]
    seen.append(call(smarty_emulator, "recognize", {{"space": "4", "images": [{{"name": "q"}}]}}, q=PHOTO))
    if os.environ.get("EXTRA"):
        seen.append(call(smarty_emulator, "truncate", {{"space": "4"}}))
    with open(os.environ["SEEN"], "w") as out:
        json.dump(seen, out)


def test_without_the_marker_the_emulator_answers(smarty_emulator):
    meta = {{"space": "5", "images": [{{"name": "q"}}]}}
    assert call(smarty_emulator, "recognize", meta, q=PHOTO) == [200, None]
    assert smarty_emulator.settings()["upstream_mode"] == "off"
"""


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    server = EmulatorProcess(tmp_path_factory.mktemp("plugin-upstream") / "data").start()
    yield server
    server.stop()


def forwarded(upstream: EmulatorProcess) -> int:
    """Persons requests that reached the upstream so far."""
    return len(httpx.get(f"{upstream.url}/emulator/requests").json()["requests"])


def run(pytester: pytest.Pytester, upstream: EmulatorProcess, mode: str | None, extra: bool = False) -> Any:
    """The user's suite in a pytest of its own; what the marked test saw: ``[[envelope status, X-Smarty-Replay]]``."""
    seen = pytester.path / "seen.json"
    seen.unlink(missing_ok=True)
    pytester.makeini(f"[pytest]\nsmarty_upstream_url = {upstream.url}\nsmarty_cassette_dir = tapes\n")
    pytester.makepyfile(test_user=USER_TEST.format(photo=str(FIXTURES / "people" / "biden" / "biden.jpg")))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SEEN", str(seen))
        env.setenv("EXTRA", "1" if extra else "")
        result = pytester.runpytest_subprocess(*([f"--smarty-record-mode={mode}"] if mode else []), timeout=600)
    result.assert_outcomes(passed=2)
    return json.loads(seen.read_text())


def test_record_modes(pytester: pytest.Pytester, upstream: EmulatorProcess) -> None:
    tape = pytester.path / "tapes" / "enrol.json"

    # none (the default): replay only, no network; nothing is recorded yet, so both requests miss.
    assert run(pytester, upstream, None) == [[500, "miss"], [500, "miss"]]
    assert forwarded(upstream) == 0 and not tape.exists()

    # once, no cassette yet: recorded (the upstream's answers, forwarded).
    assert run(pytester, upstream, "once") == [[200, None], [200, None]]
    assert forwarded(upstream) == 2
    assert [i.method for i in Cassette.load(tape).interactions] == ["set", "recognize"]

    # once, the cassette exists: replayed; none: replayed too. The upstream sees nothing more.
    assert run(pytester, upstream, "once") == [[200, "hit"], [200, "hit"]]
    assert run(pytester, upstream, "none") == [[200, "hit"], [200, "hit"]]
    assert forwarded(upstream) == 2

    # new: what is recorded replays, what is not is forwarded and recorded.
    assert run(pytester, upstream, "new", extra=True) == [[200, "hit"], [200, "hit"], [200, None]]
    assert forwarded(upstream) == 3
    assert [i.method for i in Cassette.load(tape).interactions] == ["set", "recognize", "truncate"]

    # all: everything recorded again, the cassette started afresh.
    assert run(pytester, upstream, "all") == [[200, None], [200, None]]
    assert forwarded(upstream) == 5
    assert [i.method for i in Cassette.load(tape).interactions] == ["set", "recognize"]
