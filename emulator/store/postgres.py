"""The PostgreSQL store: the persons record in one database that any number of replicas share.

It implements :class:`emulator.store.records.Store` as the SQLite store does, with the database's own means:

* **One writer per space, across machines.** A write transaction takes its space's lock (a transaction-level
  advisory lock on (client, space)) and holds it until it commits, as ``BEGIN IMMEDIATE`` does for SQLite: a new
  person id (the index's largest + 1) is never given twice, whichever replica the racing requests reach. Writes to
  other spaces do not wait. A transaction that changed nothing wrote nothing, so it commits without a disk wait.
* **Generations.** Every committed change bumps the space's generation in the same transaction; a replica compares
  it with its in-memory index once per request (one primary-key read) and catches up only when it moved.
  Inside a write, ``generation`` and ``load_space`` read through the write's own connection (kept per thread), so
  they see the locked state.
* **Catch-up.** A replica whose index is behind reads only what changed since its generation (the change log of
  :mod:`emulator.store.sql`, one statement) and applies it in place; it reloads a space only when the log no longer
  reaches back (pruned, or the space was truncated or restored since).
* **Durability.** Writes commit with the server's ``synchronous_commit`` (on by default): a write answered with
  status 0 is on the database server's disk, so killing a replica loses nothing acknowledged.
* **Failures.** Every failure of the database (unreachable, restarted, timed out) is a
  :class:`~emulator.store.records.StoreError` naming the database without its password; waits are bounded by
  ``database_timeout``. The pool replaces broken connections by itself: a restarted server is used again without
  restarting the emulator.

The schema is versioned per component in ``schema_version`` (this store's tables are ``store``; the testing aids'
state has its own, see :mod:`emulator.control.state_postgres`). Migrations run at start in one transaction under an
advisory lock, so replicas starting at once are safe; a database whose schema is newer than this code is refused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from emulator.settings import Settings
from emulator.store.records import (
    EMBEDDING_DIM,
    SpaceContents,
    SpaceData,
    SpaceKey,
    StoreError,
)
from emulator.store.sql import FACE_COLUMNS, FACE_INSERT, SqlInventory, SqlSpaceWriter, stored_faces
from emulator.store.urls import database_location, database_password

log = logging.getLogger("emulator.store")

MIGRATION_LOCK = 0x736D61727479  # pg_advisory_xact_lock key of every migration ("smarty")
UNREACHABLE_WAIT_SECONDS = 0.25  # how long an operation waits for a connection once one wait timed out
LONG_READ_FACTOR = 10  # whole-space reads (export) may take this many times database_timeout

COMPONENT = "store"
_MIGRATIONS: tuple[str, ...] = (
    # 1: faces, spaces with their generation, alias pairs reported by recognize, secrets (the OAuth signing key).
    """
    CREATE TABLE spaces (
        client text NOT NULL,
        space integer NOT NULL,
        generation bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (client, space)
    );
    CREATE TABLE faces (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        client text NOT NULL,
        space integer NOT NULL,
        person_id bigint NOT NULL,
        kind text NOT NULL,               -- set | created | learned | imported
        embedding bytea NOT NULL,         -- 128 little-endian float32, unit length
        created_at double precision NOT NULL,
        meta text NOT NULL DEFAULT '{}',  -- JSON: image name, sha256, coord
        thumbnail bytea                   -- small JPEG crop of the face, optional
    );
    CREATE INDEX faces_by_person ON faces (client, space, person_id);
    CREATE TABLE alias_pairs (
        client text NOT NULL,
        space integer NOT NULL,
        low bigint NOT NULL,
        high bigint NOT NULL,
        PRIMARY KEY (client, space, low, high)
    );
    CREATE TABLE secrets (
        name text PRIMARY KEY,
        value bytea NOT NULL
    );
    """,
    # 2: the change log that other replicas catch up from (emulator.store.sql); existing spaces start it empty.
    """
    ALTER TABLE spaces ADD COLUMN log_floor bigint NOT NULL DEFAULT 0;
    UPDATE spaces SET log_floor = generation;
    CREATE TABLE space_changes (
        client text NOT NULL,
        space integer NOT NULL,
        generation bigint NOT NULL,       -- of the write that made the change
        kind integer NOT NULL,            -- 2: face a (of person b) removed, 3: alias pair (a, b) recorded
        a bigint NOT NULL,
        b bigint NOT NULL
    );
    CREATE INDEX space_changes_by_generation ON space_changes (client, space, generation);
    CREATE INDEX faces_by_id ON faces (client, space, id);
    """,
)
DEFAULT_CHANGE_LOG_SIZE = 1000  # the setting change_log_size's default


class Database:
    """A pool of connections to one PostgreSQL database, for one process: the store and the testing-aid state
    share it. Connections are in autocommit mode; a transaction is ``with conn.transaction()``.

    ``timeout`` (``database_timeout``) bounds the wait for a pooled connection, connecting, every statement and
    every lock. Once a wait for a connection timed out (the server is unreachable), later operations wait only
    :data:`UNREACHABLE_WAIT_SECONDS` until a connection is had again, so that a request needing several operations
    still fails within about ``timeout``; the pool keeps reconnecting in the background.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, pool_size: int = 4) -> None:
        self.url = url
        self.timeout = timeout
        self.pool_size = pool_size
        self.location = database_location(url)
        self._password = database_password(url)
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()
        self._reachable = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.database_url, timeout=float(settings.database_timeout), pool_size=int(settings.database_pool_size)
        )

    def describe(self, exc: BaseException) -> str:
        """An error's text without the password."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(self._password, "<redacted>") if self._password else text

    def _connect_kwargs(self) -> dict[str, Any]:
        seconds = max(1, math.ceil(self.timeout))
        return {
            "autocommit": True,
            "connect_timeout": max(2, seconds),  # libpq's smallest
            "application_name": "smarty-emulator",
            # A dead server or network is noticed within about the timeout, not after TCP's minutes (TCP only).
            "keepalives": 1,
            "keepalives_idle": seconds,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": seconds * 1000,
        }

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Every new connection: statements and lock waits bounded by the timeout."""
        millis = int(self.timeout * 1000)
        conn.execute(f"SET statement_timeout = {millis}")
        conn.execute(f"SET lock_timeout = {millis}")

    def open(self) -> None:
        """Connect (one probe connection first, so that a failure says why) and start the pool. Idempotent."""
        with self._lock:
            if self._pool is not None:
                return
            try:
                with psycopg.connect(self.url, **self._connect_kwargs()):
                    pass
            except psycopg.Error as exc:
                raise StoreError(f"could not connect to {self.location}: {self.describe(exc)}") from exc
            pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                self.url,
                kwargs=self._connect_kwargs(),
                min_size=1,
                max_size=self.pool_size,
                timeout=self.timeout,
                # A broken connection is found (and replaced) when taken from the pool, not by a failed request.
                check=ConnectionPool.check_connection,
                configure=self._configure,
                # Give up one reconnection series after this long; the next request starts a new one at once, so
                # a server that was down for long is used again soon after it is back.
                reconnect_timeout=max(self.timeout, 5.0),
                name="smarty-emulator",
                open=False,
            )
            try:
                pool.open(wait=True, timeout=self.timeout)
            except (PoolTimeout, psycopg.Error) as exc:
                pool.close()
                raise StoreError(f"could not connect to {self.location}: {self.describe(exc)}") from exc
            self._pool = pool
            self._reachable = True

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=self.timeout)

    @contextmanager
    def failures(self, doing: str) -> Iterator[None]:
        """The database's errors as ``StoreError`` (named, without the password)."""
        try:
            yield
        except psycopg.Error as exc:
            if isinstance(exc, PoolTimeout):
                self._reachable = False
            raise StoreError(f"could not {doing} {self.location}: {self.describe(exc)}") from exc

    @contextmanager
    def connection(self, doing: str = "use") -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit) for one operation; failures become ``StoreError``."""
        pool = self._pool
        if pool is None:
            raise StoreError(f"could not {doing} {self.location}: the database is not open")
        wait = self.timeout if self._reachable else min(self.timeout, UNREACHABLE_WAIT_SECONDS)
        with self.failures(doing), pool.connection(timeout=wait) as conn:
            self._reachable = True
            yield conn

    @contextmanager
    def dedicated(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own, outside the pool, without statement or lock timeouts (for a long lock)."""
        with self.failures(doing), psycopg.connect(self.url, **self._connect_kwargs()) as conn:
            yield conn

    def migrate(self, component: str, migrations: Sequence[str]) -> None:
        """Bring ``component``'s tables to the newest of ``migrations`` (each a script), in one transaction under
        an advisory lock: replicas starting at once migrate one after the other, the later ones find it done."""
        with self.connection("migrate") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (component text PRIMARY KEY, version integer NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_version WHERE component = %s", (component,)).fetchone()
            version = int(row[0]) if row else 0
            if version > len(migrations):
                raise StoreError(
                    f"{self.location} holds the {component} schema version {version}, newer than this emulator "
                    f"knows ({len(migrations)}): run a newer emulator, or give this one a database of its own"
                )
            for script in migrations[version:]:
                conn.execute(script.encode())  # several statements: no parameters
            if version < len(migrations):
                conn.execute(
                    "INSERT INTO schema_version (component, version) VALUES (%s, %s)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, len(migrations)),
                )
                log.info(
                    "%s: %s schema migrated from version %d to %d", self.location, component, version, len(migrations)
                )


class PgSpaceWriter(SqlSpaceWriter):
    """Operations inside one write transaction on one space (see :meth:`PostgresStore.write`)."""

    def __init__(self, conn: psycopg.Connection[Any], key: SpaceKey, generation: int, change_log_size: int) -> None:
        super().__init__(key, generation, change_log_size)
        self._conn = conn

    def _run(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._conn.execute(sql.replace("?", "%s"), tuple(args))

    def _insert_face(self, values: Sequence[Any]) -> int:
        row = self._run(FACE_INSERT + " RETURNING id", values).fetchone()
        assert row is not None
        return int(row[0])

    def _delete_faces(self, clause: str, args: Sequence[Any]) -> list[int]:
        where = f"client = ? AND space = ? AND {clause}"
        return [int(r[0]) for r in self._run(f"DELETE FROM faces WHERE {where} RETURNING id", (*self._space, *args))]


class PostgresStore(SqlInventory):
    """The record in PostgreSQL (see :class:`emulator.store.records.Store` for what each method promises)."""

    def __init__(self, database: Database, change_log_size: int = DEFAULT_CHANGE_LOG_SIZE) -> None:
        self.database = database
        self.change_log_size = change_log_size
        self._local = threading.local()  # .conn: the connection of the write transaction open in this thread

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        return cls(Database.from_settings(settings), int(settings.change_log_size))

    @property
    def location(self) -> str:
        return self.database.location

    def open(self) -> None:
        self.database.open()
        self.database.migrate(COMPONENT, _MIGRATIONS)

    def close(self) -> None:
        self.database.close()

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        """The write transaction's connection if this thread has one open, else a pooled one."""
        own: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if own is not None:
            with self.database.failures("read"):
                yield own
            return
        with self.database.connection("read") as conn:
            yield conn

    def _select(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reading() as conn:
            return conn.execute(sql.replace("?", "%s"), tuple(args)).fetchall()

    # --- the hot path (the generation is emulator.store.sql's) ------------------------

    def load_space(self, key: SpaceKey) -> SpaceData:
        """One statement (one snapshot), one row: the generation and the faces packed as three byte strings, sent in
        binary (a 75,000-face space is ~38 MB of embeddings, read without a row per face)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT COALESCE((SELECT generation FROM spaces WHERE client = %(c)s AND space = %(s)s), 0),"
                " string_agg(int8send(id), ''::bytea ORDER BY id),"
                " string_agg(int8send(person_id), ''::bytea ORDER BY id),"
                " string_agg(embedding, ''::bytea ORDER BY id)"
                " FROM faces WHERE client = %(c)s AND space = %(s)s",
                {"c": key.client, "s": key.space},
                binary=True,
            ).fetchone()
        assert row is not None
        generation, ids, persons, embeddings = row
        return SpaceData(
            generation=int(generation),
            face_ids=np.frombuffer(ids or b"", dtype=">i8").astype(np.int64),
            person_ids=np.frombuffer(persons or b"", dtype=">i8").astype(np.int64),
            embeddings=np.frombuffer(embeddings or b"", dtype="<f4").reshape(-1, EMBEDDING_DIM).astype(np.float32),
        )

    @contextmanager
    def write(self, key: SpaceKey) -> Iterator[PgSpaceWriter]:
        """A write transaction on one space, holding the space's lock until it commits or rolls back."""
        with self.database.connection("write") as conn, conn.transaction():
            # A transaction-level advisory lock on (client, space), not a row lock: a recognize that may write
            # (update_embedding is on by default) but changes nothing then writes nothing at all — no WAL, no
            # transaction id, no fsync at commit. Taken before the generation is read: in READ COMMITTED each
            # statement sees what was committed when it began, so the read must come after the wait.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (key.client, key.space))
            self._local.conn = conn
            try:
                writer = PgSpaceWriter(conn, key, self.generation(key), self.change_log_size)
                yield writer
            finally:
                self._local.conn = None
            writer._bump_generation()

    # --- inventory (the rest is emulator.store.sql's) --------------------------------------

    def space_contents(self, key: SpaceKey) -> SpaceContents:
        """One repeatable-read snapshot; it may take longer than one statement's bound (an export of a full space
        with its thumbnails)."""
        args = (key.client, key.space)
        with self.database.connection("read") as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {int(self.database.timeout * 1000 * LONG_READ_FACTOR)}")
            row = conn.execute("SELECT generation FROM spaces WHERE client = %s AND space = %s", args).fetchone()
            rows = conn.execute(
                f"SELECT {FACE_COLUMNS} FROM faces WHERE client = %s AND space = %s ORDER BY id", args, binary=True
            ).fetchall()
            pairs = conn.execute(
                "SELECT low, high FROM alias_pairs WHERE client = %s AND space = %s ORDER BY low, high", args
            ).fetchall()
        generation = int(row[0]) if row else 0
        return SpaceContents(key, generation, tuple(stored_faces(rows)), tuple((int(a), int(b)) for a, b in pairs))

    # --- shared by all replicas ----------------------------------------------------------

    def secret(self, name: str) -> bytes:
        """A random secret of the record (e.g. the OAuth signing key): the first replica to ask creates it."""
        with self.database.connection("read the secret from") as conn:
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, secrets.token_bytes(32)),
            )
            row = conn.execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return bytes(row[0])

    def shared_value(self, name: str, make: Callable[[], bytes]) -> bytes:
        """A value of the record (the TLS certificate authority) in the ``secrets`` table: the first replica to ask
        inserts ``make()``'s; replicas racing to insert it all read the one row that won."""
        with self.database.connection("read a shared value from") as conn:
            row = conn.execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()
            if row is None:
                value = make()
                conn.execute("INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, value))
                row = conn.execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return bytes(row[0])

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a lock named ``name`` against every process on every machine sharing the database (a session
        advisory lock on a connection of its own, released when the block ends or the process dies)."""
        with self.database.dedicated("lock") as conn:
            key = conn.execute("SELECT hashtextextended(%s, 0)", (f"smarty-emulator:{name}",)).fetchone()
            assert key is not None
            conn.execute("SELECT pg_advisory_lock(%s)", (key[0],))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key[0],))
