"""A data dir the emulator cannot use at start: read-only, or holding a database file that is not the emulator's.

In each case the process stays up (alive), is not ready, and ``/emulator/ready`` says which directory or file and
what to do; persons requests get the internal-error envelope. A database file that is refused is never modified,
deleted or "repaired": its bytes and modification time are the same after the server ran, and nothing is created
beside it.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from emulator.control.state import DB_FILENAME as STATE_FILENAME
from emulator.persons.types import ClientId, SpaceKey
from emulator.store.sqlite import DB_FILENAME, SqliteStore
from tests.support.emulator_process import EmulatorProcess, run_cli
from tests.support.emulator_server import fixture
from tests.support.mounts import read_only_view

pytestmark = pytest.mark.slow  # real server processes

AUTH = {"oauth_token": "t", "oauth_provider": "mcs"}


def _real_database(directory: Path, faces: int = 400) -> Path:
    """A database of the emulator with ``faces`` faces (checkpointed: no WAL left beside it)."""
    store = SqliteStore(directory)
    store.open()
    rng = np.random.default_rng(7)
    with store.write(SpaceKey(ClientId("default"), 0)) as writer:
        for i in range(faces):
            vector = rng.normal(size=128).astype(np.float32)
            writer.add_face(i + 1, vector / np.linalg.norm(vector), "set", {"name": f"f{i}"}, b"\xff" * 2000)
    store.close()
    return directory / DB_FILENAME


def _random_bytes(directory: Path) -> Path:
    path = directory / DB_FILENAME
    path.write_bytes(np.random.default_rng(1).bytes(64 * 1024))
    return path


def _truncated_copy(directory: Path) -> Path:
    source = _real_database(directory / "original")
    path = directory / DB_FILENAME
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    shutil.rmtree(directory / "original")
    return path


def _other_schema(directory: Path) -> Path:
    path = directory / DB_FILENAME
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO users (email) VALUES ('someone@example.com')")
    conn.close()
    return path


def _newer_version(directory: Path) -> Path:
    path = _real_database(directory, faces=3)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "random bytes": (_random_bytes, "is not a SQLite database"),
    "truncated copy": (_truncated_copy, "is truncated"),
    "another schema": (_other_schema, "is another application's database (tables users)"),
    "newer schema version": (_newer_version, "was written by a newer smarty-emulator (schema version 7"),
}


def _fingerprint(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns


def _envelope_of_a_set(server: EmulatorProcess) -> dict[str, object]:
    meta = '{"space":"0","images":[{"name":"f","person_id":1}]}'
    files = [("f", ("f.jpg", fixture("people/obama/obama.jpg"), "image/jpeg")), ("meta", (None, meta))]
    response = httpx.post(f"{server.base_url}/api/v1/persons/set", params=AUTH, files=files, timeout=60)
    assert response.status_code == 200
    payload: dict[str, object] = response.json()
    return payload


@pytest.mark.parametrize("case", list(CASES))
def test_a_database_file_that_is_not_the_emulators_is_refused_untouched(tmp_path: Path, case: str) -> None:
    make, problem = CASES[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = make(data_dir)
    before = _fingerprint(path)
    beside_before = sorted(p.name for p in data_dir.iterdir() if p.name.startswith(DB_FILENAME))

    server = EmulatorProcess(data_dir).start(wait="alive")
    try:
        ready = httpx.get(f"{server.base_url}/emulator/ready", timeout=30)
        assert ready.status_code == 503
        error = ready.json()["error"]
        assert str(path) in error and problem in error, error
        assert "leaves the file as it is" in error and "restart" in error, error
        payload = _envelope_of_a_set(server)
        not_ready = "the emulator is not ready: waiting for store, models, warm-up"
        assert (payload["status"], payload["body"]) == (500, not_ready)
        assert httpx.get(f"{server.base_url}/emulator/health", timeout=30).json()["alive"] is True
        assert server.process is not None and server.process.poll() is None  # still up
        assert problem in server.log()  # the log says it too
    finally:
        server.stop()

    assert _fingerprint(path) == before  # not a byte changed, not even its modification time
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith(DB_FILENAME)) == beside_before


def test_the_cli_refuses_the_same_files(tmp_path: Path) -> None:
    """``smarty-emulator export`` (any command that opens the database) refuses a foreign file the same way."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = _other_schema(data_dir)
    before = _fingerprint(path)
    done = run_cli("export", str(tmp_path / "out.json"), "--data-dir", str(data_dir))
    assert done.returncode == 1
    assert "another application's database" in done.stderr and str(path) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert _fingerprint(path) == before


def test_a_read_only_data_dir_keeps_the_process_up_and_not_ready(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _real_database(source, faces=3)
    with read_only_view(source, tmp_path / "data") as data_dir:
        server = EmulatorProcess(data_dir).start(wait="alive")
        try:
            ready = httpx.get(f"{server.base_url}/emulator/ready", timeout=30)
            assert ready.status_code == 503
            error = ready.json()["error"]
            assert f"data directory {data_dir} is read-only (Read-only file system)" in error, error
            assert "SMARTY_DATA_DIR" in error
            payload = _envelope_of_a_set(server)
            assert payload["status"] == 500
            assert httpx.get(f"{server.base_url}/emulator/health", timeout=30).status_code == 200
            assert server.process is not None and server.process.poll() is None
        finally:
            assert server.stop() in (0, -15)
    assert "Traceback" not in server.log()


def test_a_spoiled_testing_aids_file_is_recreated(tmp_path: Path) -> None:
    """The testing aids' file holds one run's journal, fault rules and live settings, emptied at every start by
    design (emulator/control/state.py): a spoiled one is replaced, unlike the persons database."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / STATE_FILENAME).write_bytes(np.random.default_rng(2).bytes(8192))
    server = EmulatorProcess(data_dir).start()
    try:
        payload = _envelope_of_a_set(server)
        assert payload["status"] == 200, payload
        journal = httpx.get(f"{server.base_url}/emulator/requests", timeout=30).json()
        assert [entry["method"] for entry in journal["requests"]] == ["set"]
    finally:
        server.stop()
