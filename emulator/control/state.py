"""The testing aids' state, shared by every worker process of one data dir: live-settings overrides, fault rules
(with their counters) and the request journal.

It lives in its own SQLite file (:data:`DB_FILENAME`) beside the persons database, so that the journal's row per
persons request never waits for the persons database's write lock or its fsyncs. The file holds state of one
server run only, so it runs WAL with ``synchronous=OFF``: a commit costs no fsync; a power loss may lose or even
spoil it, which is harmless because the next start clears it anyway (and recreates a spoiled file).

A run is identified by a *boot id*: ``smarty-emulator serve`` makes one and hands it to its workers in
:data:`BOOT_ID_ENV`; a process started otherwise makes its own. Opening the file under a boot id other than the
stored one empties everything (in one write transaction, so of several workers starting at once exactly the
first clears and the others find their boot id in place). So overrides, rules and journal never survive a restart.

One row, ``state``, carries a version that every settings change bumps and the number of fault rules: a worker
reads it once per request (one primary-key read) and re-reads overrides only when the version moved.

With ``SMARTY_DATABASE_URL`` the same state lives in PostgreSQL instead, shared by every replica, and is not
emptied when a replica starts (:mod:`emulator.control.state_postgres`); both implement :class:`SharedState`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from emulator.store.sqlite import ThreadConnections, immediate, read_snapshot, sqlite_failures

DB_FILENAME = "testing-aids.sqlite3"
BOOT_ID_ENV = "SMARTY_EMULATOR_BOOT_ID"  # set by `serve` for its workers; not a setting

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        boot_id TEXT NOT NULL,
        settings_version INTEGER NOT NULL DEFAULT 0,
        fault_rules INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE TABLE IF NOT EXISTS setting_overrides (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS fault_rules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        spec TEXT NOT NULL,                 -- the rule as given (JSON), never changed
        matched INTEGER NOT NULL DEFAULT 0,
        fired INTEGER NOT NULL DEFAULT 0,
        draws INTEGER NOT NULL DEFAULT 0    -- values taken so far from the rule's random.Random(seed)
    )""",
    """CREATE TABLE IF NOT EXISTS journal (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        method TEXT NOT NULL,
        space INTEGER,
        entry TEXT NOT NULL                 -- the entry as JSON, without its id
    )""",
)

T = TypeVar("T")
TRIM_EVERY = 64  # journal entries between two deletions of the ones past the ring's size


@dataclass
class StoredRule:
    """A fault rule's row: its spec and its shared counters (a caller may change the counters in
    :meth:`SharedState.update_rules`; they are written back when it returns)."""

    id: int
    spec: dict[str, Any]
    matched: int
    fired: int
    draws: int


RULE_COLUMNS = "id, spec, matched, fired, draws"


def stored_rules(rows: Sequence[Sequence[Any]], parse: Callable[[str], dict[str, Any]]) -> list[StoredRule]:
    """Rows of :data:`RULE_COLUMNS` as rules."""
    return [StoredRule(int(r[0]), parse(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def decide_counters(
    rules: list[StoredRule], decide: Callable[[list[StoredRule]], T]
) -> tuple[T, list[tuple[int, int, int, int]]]:
    """Run ``decide`` on the rules; its result, and ``(matched, fired, draws, id)`` of each rule whose counters it
    changed (to be written back in the same transaction)."""
    before = [(r.matched, r.fired, r.draws) for r in rules]
    result = decide(rules)
    changed = [
        (r.matched, r.fired, r.draws, r.id)
        for r, old in zip(rules, before, strict=True)
        if (r.matched, r.fired, r.draws) != old
    ]
    return result, changed


class SharedState(Protocol):
    """The testing aids' state shared by every process of a server: live-setting overrides, fault rules with their
    counters, and the journal. A failed read or write of the storage raises
    :class:`~emulator.store.records.StoreError` naming it; callers decide what a failure means."""

    @property
    def is_open(self) -> bool: ...

    @property
    def location(self) -> str:
        """Where the state lives, for messages (a file, or the database without its password)."""
        ...

    def open(self) -> None:
        """Create the tables if needed (idempotent)."""
        ...

    def close(self) -> None: ...

    def status(self) -> tuple[int, int]:
        """``(settings version, number of fault rules)``: the one read per request."""
        ...

    def overrides(self) -> tuple[int, dict[str, Any]]: ...

    def update_overrides(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[int, dict[str, Any]]: ...

    def add_rule(self, spec: dict[str, Any]) -> StoredRule: ...

    def rules(self, parse: Callable[[str], dict[str, Any]] = json.loads) -> list[StoredRule]: ...

    def clear_rules(self) -> int: ...

    def update_rules(self, decide: Callable[[list[StoredRule]], T], parse: Callable[[str], dict[str, Any]]) -> T: ...

    def journal_append(self, started_at: float, method: str, space: int | None, entry: str, keep: int) -> int: ...

    def journal_entries(
        self, keep: int, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[tuple[int, str]]: ...

    def journal_total(self) -> int: ...

    def journal_clear(self, keep: int) -> int: ...


class SqliteSharedState:
    """Owns the testing-aids database of a data dir: one connection per thread, short write transactions."""

    def __init__(self, data_dir: Path, boot_id: str) -> None:
        self.path = Path(data_dir) / DB_FILENAME
        self.boot_id = boot_id
        # A state of one run: no fsync per commit (see the module docstring).
        pragmas = ("journal_mode = WAL", "synchronous = OFF", "busy_timeout = 30000")
        self._connections = ThreadConnections(self.path, pragmas)
        self._lock = threading.Lock()
        self._opened = False

    @property
    def is_open(self) -> bool:
        return self._opened

    @property
    def location(self) -> str:
        return str(self.path)

    def open(self) -> None:
        """Create the file and tables; empty everything if the stored boot id is not ours. Idempotent."""
        with self._lock:
            if self._opened:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite_failures(self.path, "open"):
                try:
                    self._prepare()
                except sqlite3.DatabaseError as exc:  # spoiled (a power loss under synchronous=OFF): start afresh
                    if isinstance(exc, sqlite3.OperationalError):  # locked, unwritable...: not a spoiled file
                        raise
                    self.close()
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                    self._prepare()
            self._opened = True

    def _prepare(self) -> None:
        with immediate(self._raw_conn()) as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT boot_id FROM state WHERE id = 1").fetchone()
            if row is None or row[0] != self.boot_id:
                for table in ("setting_overrides", "fault_rules", "journal"):
                    conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
                conn.execute("DELETE FROM sqlite_sequence")  # ids start from 1 again
                conn.execute(
                    "INSERT INTO state (id, boot_id) VALUES (1, ?) ON CONFLICT (id) DO UPDATE"
                    " SET boot_id = excluded.boot_id, settings_version = settings_version + 1, fault_rules = 0",
                    (self.boot_id,),
                )

    def close(self) -> None:
        self._connections.close()
        self._opened = False

    def _conn(self) -> sqlite3.Connection:
        if not self._opened:  # first use before the startup opened it (e.g. a request refused early)
            self.open()
        return self._raw_conn()

    def _raw_conn(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: one writer at a time across processes); SQLite's errors
        become ``StoreError``."""
        with sqlite_failures(self.path, "write"), immediate(self._conn()) as conn:
            yield conn

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query; SQLite's errors become ``StoreError``."""
        with sqlite_failures(self.path, "read"):
            return self._conn().execute(sql, tuple(args)).fetchall()

    # --- the per-request check -----------------------------------------------------------

    def status(self) -> tuple[int, int]:
        """``(settings version, number of fault rules)``: one primary-key read."""
        rows = self._read("SELECT settings_version, fault_rules FROM state WHERE id = 1")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    # --- live settings ---------------------------------------------------------------------

    def overrides(self) -> tuple[int, dict[str, Any]]:
        """The settings version and the overrides (name → value), read in one snapshot."""
        with sqlite_failures(self.path, "read"), read_snapshot(self._conn()):
            version = self.status()[0]
            rows = self._read("SELECT name, value FROM setting_overrides")
        return version, {str(name): json.loads(value) for name, value in rows}

    def update_overrides(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Replace the overrides by ``change(current)`` (which may raise: nothing changes) and bump the version."""
        with self._write() as conn:
            current = {str(n): json.loads(v) for n, v in conn.execute("SELECT name, value FROM setting_overrides")}
            new = change(dict(current))
            conn.execute("DELETE FROM setting_overrides")
            conn.executemany(
                "INSERT INTO setting_overrides (name, value) VALUES (?, ?)",
                [(name, json.dumps(value, default=str)) for name, value in new.items()],
            )
            conn.execute("UPDATE state SET settings_version = settings_version + 1 WHERE id = 1")
            version = int(conn.execute("SELECT settings_version FROM state WHERE id = 1").fetchone()[0])
        return version, new

    # --- fault rules -----------------------------------------------------------------------

    def add_rule(self, spec: dict[str, Any]) -> StoredRule:
        with self._write() as conn:
            cursor = conn.execute("INSERT INTO fault_rules (spec) VALUES (?)", (json.dumps(spec),))
            conn.execute("UPDATE state SET fault_rules = (SELECT COUNT(*) FROM fault_rules) WHERE id = 1")
        return StoredRule(int(cursor.lastrowid or 0), spec, 0, 0, 0)

    def rules(self, parse: Callable[[str], dict[str, Any]] = json.loads) -> list[StoredRule]:
        return stored_rules(self._read(f"SELECT {RULE_COLUMNS} FROM fault_rules ORDER BY id"), parse)

    def clear_rules(self) -> int:
        with self._write() as conn:
            removed = conn.execute("DELETE FROM fault_rules").rowcount
            conn.execute("UPDATE state SET fault_rules = 0 WHERE id = 1")
        return int(removed)

    def update_rules(self, decide: Callable[[list[StoredRule]], T], parse: Callable[[str], dict[str, Any]]) -> T:
        """Read every rule in a write transaction, let ``decide`` change their counters, write the changed
        counters back: rules consumed by one request are never consumed by another, in any process.

        ``parse`` turns a rule's spec text into its dict (the caller may cache by text)."""
        with self._write() as conn:
            rows = conn.execute(f"SELECT {RULE_COLUMNS} FROM fault_rules ORDER BY id").fetchall()
            result, changed = decide_counters(stored_rules(rows, parse), decide)
            if changed:
                conn.executemany("UPDATE fault_rules SET matched = ?, fired = ?, draws = ? WHERE id = ?", changed)
        return result

    # --- the journal -----------------------------------------------------------------------

    def journal_append(self, started_at: float, method: str, space: int | None, entry: str, keep: int) -> int:
        """Add an entry (JSON text, without its id); the new entry's id. One autocommit INSERT; every
        :data:`TRIM_EVERY` entries the ones older than the newest ``keep`` are deleted (reads skip them
        before that)."""
        with sqlite_failures(self.path, "write"):
            conn = self._conn()
            cursor = conn.execute(
                "INSERT INTO journal (started_at, method, space, entry) VALUES (?, ?, ?, ?)",
                (started_at, method, space, entry),
            )
            number = int(cursor.lastrowid or 0)
            if number % TRIM_EVERY == 0:
                conn.execute("DELETE FROM journal WHERE id <= ?", (number - keep,))
        return number

    def journal_entries(
        self, keep: int, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[tuple[int, str]]:
        """``(id, entry JSON)`` of the newest ``keep`` entries, oldest first, filtered."""
        clauses = ["id > (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'journal') - ?"]
        args: list[Any] = [keep]
        for clause, value in (("method = ?", method), ("space = ?", space), ("started_at >= ?", since)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        sql = f"SELECT id, entry FROM journal WHERE {' AND '.join(clauses)} ORDER BY id"  # noqa: S608 - fixed
        return [(int(r[0]), str(r[1])) for r in self._read(sql, args)]

    def journal_total(self) -> int:
        """Entries ever added in this run (the ids handed out), cleared or dropped ones included."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'journal'")
        return int(rows[0][0]) if rows else 0

    def journal_clear(self, keep: int) -> int:
        """Delete every entry; how many of them were in the ring (the newest ``keep``)."""
        with self._write() as conn:
            total = int(
                conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'journal'").fetchone()[0]
            )
            in_ring = int(conn.execute("SELECT COUNT(*) FROM journal WHERE id > ?", (total - keep,)).fetchone()[0])
            conn.execute("DELETE FROM journal")
        return in_ring
