"""On PostgreSQL, a request's read of the shared testing-aid state and its journal write have threads of their own.

Every thread of the server's pool (anyio's 40) is held by a persons request waiting for its space's lock, which
the test holds from a connection of its own. A request that needs no analysis thread (a wrong token) is still
answered at once: its state read ran (it obeys a live setting changed in the database while the pool was full)
and its journal row is written. Then the lock goes and every waiting request is answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import persons_client as api
from tests.support.emulator_process import EmulatorProcess
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.slow  # a real server process

POOL_THREADS = 40  # anyio's default thread limiter, which persons requests run their service calls in
WAITING = POOL_THREADS + 4
SPACE = 7


@pytest.fixture
def replica(postgres: PostgresCluster, tmp_path: Path) -> Iterator[tuple[EmulatorProcess, str]]:
    database = postgres.create_database()
    server = EmulatorProcess(
        tmp_path / "data",
        database_url=database,
        clients=f"default={api.TOKEN}",
        database_pool_size=WAITING + 8,  # a connection for each waiting request, and some for the state
        database_timeout=60,  # the waiting requests wait for the lock as long as the test holds it
        max_inflight=WAITING + 8,
    )
    server.start()
    try:
        yield server, database
    finally:
        server.stop()


def _waiting_for_lock(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    assert row is not None
    return int(row[0])


def _delete(url: str, number: int) -> dict[str, object]:
    meta = {"space": str(SPACE), "images": [{"name": f"d{number}", "person_id": number}]}
    with httpx.Client(base_url=url, timeout=120) as http:
        return api.call(http, "delete", meta)


def test_state_read_and_journal_write_pass_a_full_thread_pool(replica: tuple[EmulatorProcess, str]) -> None:
    server, database = replica
    with psycopg.connect(database, autocommit=True) as watch, psycopg.connect(database) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtext('default'), %s)", (SPACE,))  # held until rollback
        with ThreadPoolExecutor(WAITING) as clients:
            deletes: list[Future[dict[str, object]]] = [
                clients.submit(_delete, server.url, n) for n in range(1, WAITING + 1)
            ]
            deadline = time.monotonic() + 60
            while _waiting_for_lock(watch) < POOL_THREADS:  # every pool thread holds a request waiting for the lock
                assert time.monotonic() < deadline, f"only {_waiting_for_lock(watch)} requests reached the lock"
                assert not any(f.done() for f in deletes), [f.result() for f in deletes if f.done()]
                time.sleep(0.05)
            # A live setting changed behind the server's back: only a state read made from now on can see it.
            watch.execute("""INSERT INTO setting_overrides (name, value) VALUES ('http_status', '"mirror"')""")
            watch.execute("UPDATE testing_state SET settings_version = settings_version + 1")

            refused = httpx.post(
                f"{server.url}/api/v1/persons/recognize",
                params={"oauth_token": "not-a-token", "oauth_provider": "mcs"},
                files={"meta": (None, json.dumps({"space": str(SPACE), "images": [{"name": "x"}]}))},
                timeout=20,
            )
            assert refused.json()["status"] == 403
            assert refused.status_code == 403  # mirror mode: the state read ran while the pool was full

            deadline = time.monotonic() + 20
            while True:  # the journal row of the refused request, written without a pool thread
                row = watch.execute(
                    "SELECT count(*) FROM journal WHERE method = 'recognize' AND entry LIKE %s",
                    ('%"envelope_status": 403%',),
                ).fetchone()
                if row is not None and row[0] == 1:
                    break
                assert time.monotonic() < deadline, "the refused request was not journaled"
                time.sleep(0.05)
            assert not any(f.done() for f in deletes)  # the pool was full all along
            holder.rollback()  # the lock goes
            answers = [f.result(timeout=120) for f in deletes]
    assert all(answer["status"] == 200 for answer in answers)
    assert httpx.get(f"{server.url}/emulator/ready", timeout=10).status_code == 200
