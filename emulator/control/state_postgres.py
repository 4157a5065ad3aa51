"""The testing aids' state in PostgreSQL (``SMARTY_DATABASE_URL``): live-setting overrides, fault rules with their
counters and the request journal, shared by every worker of every replica on the database.

It is :class:`emulator.control.state.SharedState` as the SQLite twin is, with one difference on purpose: the state
belongs to the database, not to a run, so a replica that starts (or restarts) **does not empty it** — a replica
joining must not wipe the rules a test set through another. Empty it through the admin API
(``DELETE /emulator/faults``, ``DELETE /emulator/requests``, ``PATCH /emulator/settings`` back to the start values)
or the pytest plugin's ``reset()``.

It is state for tests, not records: its writes commit without waiting for the server's disk
(``synchronous_commit`` off for these transactions only), so a crash of the database server may lose the last
few milliseconds of it, never a persons write. One row, ``testing_state``, carries a version that every settings
change bumps and the number of fault rules: each request reads it once (one primary-key read).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from emulator.control.state import RULE_COLUMNS, TRIM_EVERY, StoredRule, decide_counters, stored_rules
from emulator.store.postgres import Database

T = TypeVar("T")

COMPONENT = "testing_aids"
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE testing_state (
        id integer PRIMARY KEY CHECK (id = 1),
        settings_version bigint NOT NULL DEFAULT 0,
        fault_rules integer NOT NULL DEFAULT 0
    );
    INSERT INTO testing_state (id) VALUES (1);
    CREATE TABLE setting_overrides (name text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE fault_rules (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        spec text NOT NULL,                 -- the rule as given (JSON), never changed
        matched bigint NOT NULL DEFAULT 0,
        fired bigint NOT NULL DEFAULT 0,
        draws bigint NOT NULL DEFAULT 0     -- values taken so far from the rule's random.Random(seed)
    );
    CREATE TABLE journal (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        started_at double precision NOT NULL,
        method text NOT NULL,
        space integer,
        entry text NOT NULL                 -- the entry as JSON, without its id
    );
    """,
)

_NO_DISK_WAIT = "SET LOCAL synchronous_commit = off"
# The journal's row per request, in one statement: set_config(..., true) is SET LOCAL, for this statement's own
# transaction (autocommit), so its commit does not wait for the disk either.
_JOURNAL_INSERT = (
    "WITH nowait AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))"
    " INSERT INTO journal (started_at, method, space, entry) SELECT %s, %s, %s, %s FROM nowait RETURNING id"
)
_JOURNAL_LAST_ID = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM journal_id_seq"


class PostgresSharedState:
    """The testing aids' state in the database of ``database`` (the store's pool, shared)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._opened = False

    @property
    def is_open(self) -> bool:
        return self._opened

    @property
    def location(self) -> str:
        return self.database.location

    def open(self) -> None:
        if self._opened:
            return
        self.database.open()
        self.database.migrate(COMPONENT, _MIGRATIONS)
        self._opened = True

    def close(self) -> None:
        self._opened = False
        self.database.close()

    def _rows(self, doing: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.database.connection(doing) as conn:
            return conn.execute(sql, args).fetchall()

    # --- the per-request check -----------------------------------------------------------

    def status(self) -> tuple[int, int]:
        rows = self._rows("read the testing-aid state from", "SELECT settings_version, fault_rules FROM testing_state")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    # --- live settings ---------------------------------------------------------------------

    def overrides(self) -> tuple[int, dict[str, Any]]:
        rows = self._rows(
            "read the live settings from",
            "SELECT s.settings_version, o.name, o.value FROM testing_state s LEFT JOIN setting_overrides o ON true",
        )
        version = int(rows[0][0]) if rows else 0
        return version, {str(name): json.loads(value) for _, name, value in rows if name is not None}

    def update_overrides(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        with self.database.connection("change the live settings in") as conn, conn.transaction():
            conn.execute(_NO_DISK_WAIT)
            row = _one(conn.execute("SELECT settings_version FROM testing_state WHERE id = 1 FOR UPDATE"))
            rows = conn.execute("SELECT name, value FROM setting_overrides").fetchall()
            new = change({str(n): json.loads(v) for n, v in rows})  # may raise: the transaction rolls back
            conn.execute("DELETE FROM setting_overrides")
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO setting_overrides (name, value) VALUES (%s, %s)",
                    [(name, json.dumps(value, default=str)) for name, value in new.items()],
                )
            version = int(row[0]) + 1
            conn.execute("UPDATE testing_state SET settings_version = %s WHERE id = 1", (version,))
        return version, new

    # --- fault rules -----------------------------------------------------------------------

    def add_rule(self, spec: dict[str, Any]) -> StoredRule:
        with self.database.connection("add a fault rule to") as conn, conn.transaction():
            conn.execute(_NO_DISK_WAIT)
            insert = conn.execute("INSERT INTO fault_rules (spec) VALUES (%s) RETURNING id", (json.dumps(spec),))
            rule_id = int(_one(insert)[0])
            conn.execute("UPDATE testing_state SET fault_rules = (SELECT COUNT(*) FROM fault_rules) WHERE id = 1")
        return StoredRule(rule_id, spec, 0, 0, 0)

    def rules(self, parse: Callable[[str], dict[str, Any]] = json.loads) -> list[StoredRule]:
        rows = self._rows("read the fault rules from", f"SELECT {RULE_COLUMNS} FROM fault_rules ORDER BY id")
        return stored_rules(rows, parse)

    def clear_rules(self) -> int:
        with self.database.connection("clear the fault rules in") as conn, conn.transaction():
            conn.execute(_NO_DISK_WAIT)
            removed = conn.execute("DELETE FROM fault_rules").rowcount
            conn.execute("UPDATE testing_state SET fault_rules = 0 WHERE id = 1")
        return int(removed)

    def update_rules(self, decide: Callable[[list[StoredRule]], T], parse: Callable[[str], dict[str, Any]]) -> T:
        """The rules locked (``FOR UPDATE``) while ``decide`` changes their counters: a rule consumed by one request
        is never consumed by another, on any replica."""
        with self.database.connection("apply the fault rules in") as conn, conn.transaction():
            conn.execute(_NO_DISK_WAIT)
            rows = conn.execute(f"SELECT {RULE_COLUMNS} FROM fault_rules ORDER BY id FOR UPDATE").fetchall()
            result, changed = decide_counters(stored_rules(rows, parse), decide)
            if changed:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "UPDATE fault_rules SET matched = %s, fired = %s, draws = %s WHERE id = %s", changed
                    )
        return result

    # --- the journal -----------------------------------------------------------------------

    def journal_append(self, started_at: float, method: str, space: int | None, entry: str, keep: int) -> int:
        """One autocommit INSERT; every :data:`TRIM_EVERY` ids the entries older than the newest ``keep`` go."""
        with self.database.connection("write the journal to") as conn:
            number = int(_one(conn.execute(_JOURNAL_INSERT, (started_at, method, space, entry)))[0])
            if number % TRIM_EVERY == 0:
                conn.execute("DELETE FROM journal WHERE id <= %s", (number - keep,))
        return number

    def journal_entries(
        self, keep: int, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[tuple[int, str]]:
        clauses = [f"id > ({_JOURNAL_LAST_ID}) - %s"]
        args: list[Any] = [keep]
        for clause, value in (("method = %s", method), ("space = %s", space), ("started_at >= %s", since)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        sql = f"SELECT id, entry FROM journal WHERE {' AND '.join(clauses)} ORDER BY id"  # noqa: S608 - fixed
        return [(int(r[0]), str(r[1])) for r in self._rows("read the journal from", sql, tuple(args))]

    def journal_total(self) -> int:
        """Entries ever added to this database's journal (cleared or dropped ones included)."""
        return int(self._rows("read the journal from", _JOURNAL_LAST_ID)[0][0])

    def journal_clear(self, keep: int) -> int:
        with self.database.connection("clear the journal in") as conn, conn.transaction():
            conn.execute(_NO_DISK_WAIT)
            conn.execute("LOCK TABLE journal IN EXCLUSIVE MODE")  # a consistent count against appends
            total = int(_one(conn.execute(_JOURNAL_LAST_ID))[0])
            in_ring = int(_one(conn.execute("SELECT COUNT(*) FROM journal WHERE id > %s", (total - keep,)))[0])
            conn.execute("DELETE FROM journal")
        return in_ring


def _one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row a statement returns."""
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)
