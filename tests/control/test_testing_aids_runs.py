"""The testing aids' shared state lasts one run: workers of a run share it, a restart starts afresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.control.state import SqliteSharedState as SharedState
from emulator.face.engine import DlibEngine
from tests.support.emulator_server import EmulatorServer

pytestmark = pytest.mark.slow  # real server processes


def test_workers_of_one_run_keep_the_state_and_another_run_empties_it(tmp_path: Path) -> None:
    first = SharedState(tmp_path, "run-1")
    first.open()
    first.add_rule({"kind": "drop"})
    first.update_overrides(lambda overrides: {"match_threshold": 0.5})
    first.journal_append(1.0, "set", 0, "{}", keep=10)

    second_worker = SharedState(tmp_path, "run-1")  # a worker of the same run, starting later
    second_worker.open()
    assert [rule.spec for rule in second_worker.rules()] == [{"kind": "drop"}]
    assert second_worker.overrides()[1] == {"match_threshold": 0.5}
    assert second_worker.journal_entries(keep=10) == [(1, "{}")]

    restarted = SharedState(tmp_path, "run-2")
    restarted.open()
    assert restarted.rules() == [] and restarted.overrides()[1] == {} and restarted.journal_entries(keep=10) == []
    assert restarted.status()[1] == 0 and restarted.journal_total() == 0
    for state in (first, second_worker, restarted):
        state.close()


def test_a_restart_starts_from_the_environment_with_no_rules_and_an_empty_journal(
    engine: DlibEngine, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = EmulatorServer(data_dir, engine=engine).start()
    try:
        base = server.http.get("/emulator/settings").json()["settings"]
        assert server.http.patch("/emulator/settings", json={"match_threshold": 0.5}).status_code == 200
        assert server.http.post("/emulator/faults", json={"kind": "http_503", "method": "set"}).status_code == 201
        assert server.call("truncate", {"space": "0"}).status_code == 200
        assert len(server.http.get("/emulator/requests").json()["requests"]) == 1
    finally:
        server.stop()
    again = EmulatorServer(data_dir, engine=engine).start()
    try:
        assert again.http.get("/emulator/settings").json()["settings"] == base
        assert again.http.get("/emulator/faults").json()["faults"] == []
        assert again.http.get("/emulator/requests").json() == {"requests": [], "size": 1000, "total": 0}
        assert again.call("truncate", {"space": "0"}).status_code == 200  # the old rule is gone
    finally:
        again.stop()


def test_a_failed_shared_state_read_fails_no_request(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Health checks and the persons API keep answering, with the last settings and rules read."""

    def broken() -> tuple[int, int]:
        raise OSError("disk I/O error")

    monkeypatch.setattr(server.runtime.shared, "status", broken)
    assert server.http.get("/emulator/health").status_code == 200
    assert server.ok("truncate", {"space": "0"}) == {}
