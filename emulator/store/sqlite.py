"""The SQLite store (the embedded default): the one owner of the database file.

It implements :class:`emulator.store.records.Store`: one row per face, a generation per (client, space) bumped in
every write transaction, the alias pairs recognize reported, and a bounded log of each space's changes that the
other worker processes catch up from (:mod:`emulator.store.sql`).

Durability: WAL journal with ``synchronous=FULL``, so a transaction that committed
survives ``kill -9`` and power loss, and one that did not commit leaves no trace.
Writes take ``BEGIN IMMEDIATE``: one writer at a time across all processes. The WAL file is checkpointed by
SQLite every 1000 pages and cut back to :data:`WAL_SIZE_LIMIT` after each checkpoint, so it stays bounded.

Storage failures (disk full, read-only file, I/O errors) become :class:`StoreError`: the transaction is rolled
back, nothing of it is kept, and the next write tries again, so service comes back by itself once space is freed.

An existing database file is looked at read-only before it is opened for writing (:func:`inspect_database`): a
file that is not a SQLite database, a truncated copy, a database of another application or of a newer schema is
refused with a message that names it and says what to do, and is never modified, deleted or "repaired".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from emulator.store.records import (
    SpaceContents,
    SpaceData,
    SpaceKey,
    StoreError,
    blob_to_embeddings,
)
from emulator.store.sql import FACE_COLUMNS, FACE_INSERT, SqlInventory, SqlSpaceWriter, stored_faces

DB_FILENAME = "emulator.sqlite3"
SQLITE_HEADER = b"SQLite format 3\x00"
WAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint (PRAGMA journal_size_limit)
TABLES = frozenset({"faces", "spaces", "alias_pairs"})  # what every schema version so far has
DEFAULT_CHANGE_LOG_SIZE = 1000  # the setting change_log_size's default

_MIGRATIONS: tuple[str, ...] = (
    # 1: faces, spaces with their generation, alias pairs reported by recognize.
    """
    CREATE TABLE faces (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client TEXT NOT NULL,
        space INTEGER NOT NULL,
        person_id INTEGER NOT NULL,
        kind TEXT NOT NULL,              -- set | created | learned | imported
        embedding BLOB NOT NULL,         -- 128 little-endian float32, unit length
        created_at REAL NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}', -- JSON: image name, sha256, coord
        thumbnail BLOB                   -- small JPEG crop of the face, optional
    );
    CREATE INDEX faces_by_person ON faces (client, space, person_id);
    CREATE TABLE spaces (
        client TEXT NOT NULL,
        space INTEGER NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (client, space)
    );
    CREATE TABLE alias_pairs (
        client TEXT NOT NULL,
        space INTEGER NOT NULL,
        low INTEGER NOT NULL,
        high INTEGER NOT NULL,
        PRIMARY KEY (client, space, low, high)
    );
    """,
    # 2: the change log that other processes catch up from (emulator.store.sql); existing spaces start it empty.
    """
    ALTER TABLE spaces ADD COLUMN log_floor INTEGER NOT NULL DEFAULT 0;
    UPDATE spaces SET log_floor = generation;
    CREATE TABLE space_changes (
        client TEXT NOT NULL,
        space INTEGER NOT NULL,
        generation INTEGER NOT NULL,     -- of the write that made the change
        kind INTEGER NOT NULL,           -- 2: face a (of person b) removed, 3: alias pair (a, b) recorded
        a INTEGER NOT NULL,
        b INTEGER NOT NULL
    );
    CREATE INDEX space_changes_by_generation ON space_changes (client, space, generation);
    CREATE INDEX faces_by_id ON faces (client, space, id);
    """,
)


class UnusableDatabase(StoreError):
    """The database file exists but must not be opened for writing (see :func:`inspect_database`)."""


def _unusable(path: Path, problem: str, remedy: str) -> UnusableDatabase:
    return UnusableDatabase(f"{path} {problem}. The emulator leaves the file as it is: {remedy}")


_MOVE_AWAY = (
    "move it (and any {name}-wal and {name}-shm beside it) out of the data directory to start with an empty "
    "database, or put back a good copy (or start empty and import a snapshot); then restart"
)


def inspect_database(path: Path) -> None:
    """Refuse an existing database file that is not the emulator's, looking at it read-only.

    Raises :class:`UnusableDatabase` for a file that is not SQLite, is shorter than its header says, cannot be read,
    holds another application's tables, or has a schema version newer than this emulator knows. A missing or empty
    file passes (SQLite treats an empty file as an empty database; it is created as new).
    """
    path = Path(path).absolute()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"could not open {path}: {exc.strerror}") from exc
    if size == 0:
        return
    move_away = _MOVE_AWAY.format(name=path.name)
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StoreError(f"could not read {path}: {exc.strerror}") from exc
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise _unusable(path, "is not a SQLite database (it does not start with SQLite's header)", move_away)
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_size_valid = header[24:28] == header[92:96]  # the in-header size is kept by every SQLite since 3.7.0
    wal = Path(f"{path}-wal")
    wal_pending = wal.exists() and wal.stat().st_size > 0  # a crash mid-checkpoint: the WAL still holds it all
    if header_size_valid and not wal_pending and size < pages * page_size:
        problem = f"is truncated: its header counts {pages * page_size} bytes, the file has {size}"
        raise _unusable(path, problem, move_away)
    try:
        # Without a WAL to replay, read the file as immutable: no lock, no -wal or -shm file is created beside it.
        options = "mode=ro" if wal_pending else "mode=ro&immutable=1"
        conn = sqlite3.connect(f"{path.as_uri()}?{options}", uri=True, timeout=30.0)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:  # locked past the timeout, unreadable...: not the file's fault
        raise StoreError(f"could not open {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, f"is damaged ({exc})", move_away) from exc
    tables.discard("sqlite_sequence")
    if version > len(_MIGRATIONS):
        problem = (
            f"was written by a newer smarty-emulator (schema version {version}; this one knows up to"
            f" {len(_MIGRATIONS)})"
        )
        raise _unusable(path, problem, "run that newer version, or choose another SMARTY_DATA_DIR; then restart")
    foreign = sorted(tables - TABLES) if version == 0 else sorted(TABLES - tables)
    if version == 0 and foreign:
        problem = f"is another application's database (tables {', '.join(foreign[:5])})"
        raise _unusable(path, problem, "choose another SMARTY_DATA_DIR, or move the file away; then restart")
    if version > 0 and foreign:
        problem = f"says schema version {version} but lacks the tables {', '.join(foreign)}"
        raise _unusable(path, problem, move_away)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``: one writer at a time across processes): committed if the block
    returns, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # e.g. no transaction left after a failed COMMIT
            conn.execute("ROLLBACK")
        raise


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Several reads against one consistent view of the database: a read transaction of their own, or the
    transaction already open on ``conn`` (inside a write, that transaction is the snapshot)."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


@contextmanager
def sqlite_failures(path: Path, doing: str) -> Iterator[None]:
    """SQLite's errors (disk full, read-only file, I/O error, locked past the busy timeout) as ``StoreError``
    naming ``path``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"could not {doing} {path}: {exc}") from exc


class ThreadConnections:
    """One connection per thread to one SQLite file (autocommit; ``pragmas`` run on each new one), closed together.
    Connections are shared with no other thread while open, but may be closed from any (``check_same_thread``)."""

    def __init__(self, path: Path, pragmas: Sequence[str]) -> None:
        self.path = path
        self._pragmas = tuple(pragmas)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            try:
                for pragma in self._pragmas:
                    conn.execute(f"PRAGMA {pragma}")
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()


class SqliteSpaceWriter(SqlSpaceWriter):
    """Operations inside one write transaction on one space (see :meth:`SqliteStore.write`)."""

    def __init__(self, conn: sqlite3.Connection, key: SpaceKey, generation: int, change_log_size: int) -> None:
        super().__init__(key, generation, change_log_size)
        self._conn = conn

    def _run(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, tuple(args))

    def _insert_face(self, values: Sequence[Any]) -> int:
        return int(self._conn.execute(FACE_INSERT, tuple(values)).lastrowid or 0)

    def _delete_faces(self, clause: str, args: Sequence[Any]) -> list[int]:
        # A SELECT, then the DELETE: DELETE ... RETURNING needs SQLite 3.35.
        where = f"client = ? AND space = ? AND {clause}"
        ids = [int(r[0]) for r in self._conn.execute(f"SELECT id FROM faces WHERE {where}", (*self._space, *args))]
        if ids:
            self._conn.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
        return ids


class SqliteStore(SqlInventory):
    """Owns the SQLite database: one connection per thread, one writer at a time (see
    :class:`emulator.store.records.Store` for what each method promises)."""

    def __init__(self, data_dir: Path, change_log_size: int = DEFAULT_CHANGE_LOG_SIZE) -> None:
        self.data_dir = Path(data_dir)
        self.change_log_size = change_log_size
        self.path = self.data_dir / DB_FILENAME
        self._write_lock = threading.Lock()  # fewer busy waits between this process's threads
        pragmas = ("journal_mode = WAL", "synchronous = FULL", "busy_timeout = 30000")
        self._connections = ThreadConnections(self.path, (*pragmas, f"journal_size_limit = {WAL_SIZE_LIMIT}"))

    @property
    def location(self) -> str:
        return str(self.path)

    def open(self) -> None:
        """Create the data dir and the database, and migrate it to the current schema.

        An existing file is inspected read-only first (:func:`inspect_database`); one that is not the emulator's
        raises :class:`UnusableDatabase` and is left untouched."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        inspect_database(self.path)
        with sqlite_failures(self.path, "open"), immediate(self._conn()) as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(None, (s.strip() for s in script.split(";"))):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        self._connections.close()

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    # --- reads -------------------------------------------------------------------------

    def _select(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with sqlite_failures(self.path, "read"):
            return self._conn().execute(sql, tuple(args)).fetchall()

    def load_space(self, key: SpaceKey) -> SpaceData:
        with sqlite_failures(self.path, "read"), read_snapshot(self._conn()) as conn:  # generation and rows agree
            generation = self.generation(key)
            rows = conn.execute(
                "SELECT id, person_id, embedding FROM faces WHERE client = ? AND space = ? ORDER BY id",
                (key.client, key.space),
            ).fetchall()
        return SpaceData(
            generation=generation,
            face_ids=np.array([r[0] for r in rows], dtype=np.int64),
            person_ids=np.array([r[1] for r in rows], dtype=np.int64),
            embeddings=blob_to_embeddings([r[2] for r in rows]),
        )

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        return "\n".join(str(r[0]) for r in self._select("PRAGMA integrity_check"))

    # --- writes ------------------------------------------------------------------------

    @contextmanager
    def write(self, key: SpaceKey) -> Iterator[SqliteSpaceWriter]:
        """A write transaction on one space (``BEGIN IMMEDIATE``). Commits if the block returns, bumping the
        generation if something changed; rolls back if it raises."""
        with self._write_lock, sqlite_failures(self.path, "write"), immediate(self._conn()) as conn:
            writer = SqliteSpaceWriter(conn, key, self.generation(key), self.change_log_size)
            yield writer
            writer._bump_generation()

    # --- inventory (the rest is emulator.store.sql's) --------------------------------------

    def space_contents(self, key: SpaceKey) -> SpaceContents:
        with sqlite_failures(self.path, "read"), read_snapshot(self._conn()):
            generation = self.generation(key)
            rows = self._select(
                f"SELECT {FACE_COLUMNS} FROM faces WHERE client = ? AND space = ? ORDER BY id",
                (key.client, key.space),
            )
            pairs = self._select(
                "SELECT low, high FROM alias_pairs WHERE client = ? AND space = ? ORDER BY low, high",
                (key.client, key.space),
            )
        return SpaceContents(key, generation, tuple(stored_faces(rows)), tuple((int(a), int(b)) for a, b in pairs))

    # --- shared by every process of the data dir ----------------------------------------

    def secret(self, name: str) -> bytes:
        """The data dir's secret file ``<name>-secret`` (``oauth-secret``), created once."""
        return file_secret(self.data_dir / f"{name}-secret")

    def shared_value(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The data dir's file ``<name>`` (mode 0600), created once: the first process to link it wins."""
        return file_value(self.data_dir / name, make)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """An exclusive ``flock`` on ``<name>.lock`` in the data dir (every worker process of it)."""
        try:
            import fcntl
        except ImportError:  # not on POSIX: the in-transaction checks still keep seeding idempotent
            yield
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / f"{name}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def file_value(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes in ``path``, created on first use atomically with what ``make()`` returns (mode 0600, written in
    full under a temporary name, then linked): the first writer wins, nobody ever reads a partial file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a directory in its place, not readable by this user...
        raise StoreError(f"could not read {path}: {exc.strerror or exc}") from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(make())
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another process got there first: theirs wins
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"could not keep {path}: {exc.strerror or exc}") from exc


def file_secret(path: Path) -> bytes:
    """The random secret in ``path`` (hex), created on first use atomically: the first writer wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)  # fails if another process got there first; theirs wins
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return bytes.fromhex(path.read_text().strip())
