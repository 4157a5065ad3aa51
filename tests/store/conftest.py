"""The PostgreSQL server of a module that stops, starts or breaks it: each module gets its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresCluster, require_postgres


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A server of this module's own (not the session's ``postgres``): its tests may stop and start it."""
    require_postgres()
    running = PostgresCluster().start()
    yield running
    running.stop()
