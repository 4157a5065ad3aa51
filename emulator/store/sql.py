"""What the SQL backends share: the operations of a write transaction (:class:`SqlSpaceWriter`, with the bump of
the generation and the change log), the generation read, the catch-up read and the inventory reads of the
:class:`~emulator.store.records.Store` protocol (the admin API, snapshots, seeding and metrics use them) and the
reading of face rows.

Both backends keep the same tables (``faces``, ``spaces``, ``alias_pairs``, ``space_changes``) with the same
columns, so these are the same SQL; the statements here are written with ``?`` markers, which a backend turns into
its own (``%s`` for psycopg). ``INSERT ... ON CONFLICT DO NOTHING`` needs SQLite 3.24 or later. What differs stays
in the backend: the transaction and its lock, reading a space for the index (``load_space``), a consistent snapshot
of a whole space, inserting and deleting faces (``RETURNING``), secrets and locks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from emulator.store.records import (
    EMBEDDING_DIM,
    ClientId,
    FaceRow,
    SpaceChanges,
    SpaceCounts,
    SpaceData,
    SpaceKey,
    StoredFace,
    WriteDelta,
    blob_to_embeddings,
    embedding_to_blob,
)

FACE_COLUMNS = "id, person_id, kind, created_at, meta, embedding, thumbnail"

# The change log (table ``space_changes``): one row per face removed and per alias pair recorded, with the generation
# of the write that made it. Faces added need no row: face ids grow within a space (its writes are serialized), so
# the faces above the largest id an index holds are those added since. ``spaces.log_floor`` says how far back the
# log reaches: it holds every change of the generations above it. Each write prunes the rows at or below
# ``generation - change_log_size``; a truncate (and so a snapshot restore) moves the floor to its own generation.
# The kinds are also the tags of :data:`CHANGES_SINCE`'s rows.
ROW_GENERATION, ROW_ADDED, CHANGE_REMOVED, CHANGE_ALIAS = 0, 1, 2, 3

CHANGES_SINCE = (
    # One statement, so one consistent read: the space's generation and floor, the faces above the index's largest
    # id, the logged changes after its generation.
    "SELECT 0, COALESCE(MAX(generation), 0), COALESCE(MAX(log_floor), 0), NULL FROM spaces"
    " WHERE client = ? AND space = ?"
    " UNION ALL SELECT 1, id, person_id, embedding FROM faces WHERE client = ? AND space = ? AND id > ?"
    " UNION ALL SELECT kind, a, b, NULL FROM space_changes WHERE client = ? AND space = ? AND generation > ?"
)


def changes_args(key: SpaceKey, generation: int, after_face_id: int) -> tuple[Any, ...]:
    """The arguments of :data:`CHANGES_SINCE`."""
    space = (key.client, key.space)
    return (*space, *space, after_face_id, *space, generation)


def changes_of(rows: Sequence[tuple[Any, ...]], since: int) -> SpaceChanges | None:
    """:data:`CHANGES_SINCE`'s rows as changes, or None if the log does not reach back to ``since``."""
    current = floor = 0
    added: list[tuple[int, int, bytes]] = []
    removed: list[int] = []
    pairs: list[tuple[int, int]] = []
    for tag, a, b, blob in rows:
        if tag == ROW_GENERATION:
            current, floor = int(a), int(b)
        elif tag == ROW_ADDED:
            added.append((int(a), int(b), bytes(blob)))
        elif tag == CHANGE_REMOVED:
            removed.append(int(a))
        elif tag == CHANGE_ALIAS:
            pairs.append((int(a), int(b)))
    if since < floor or since > current:  # pruned, truncated or restored since; or another record altogether
        return None
    added.sort()
    return SpaceChanges(
        generation=current,
        added=SpaceData(
            generation=current,
            face_ids=np.array([r[0] for r in added], dtype=np.int64),
            person_ids=np.array([r[1] for r in added], dtype=np.int64),
            embeddings=blob_to_embeddings([r[2] for r in added]).reshape(-1, EMBEDDING_DIM),
        ),
        removed_face_ids=np.array(sorted(set(removed)), dtype=np.int64),
        alias_pairs=tuple(sorted(set(pairs))),
    )


def meta_of(text: str | None) -> dict[str, Any]:
    """A face's ``meta`` column as a dict (anything unreadable is an empty one)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def stored_faces(rows: Sequence[tuple[Any, ...]]) -> list[StoredFace]:
    """Rows of :data:`FACE_COLUMNS` as faces."""
    embeddings = blob_to_embeddings([bytes(r[5]) for r in rows])
    return [
        StoredFace(
            face_id=int(r[0]),
            person_id=int(r[1]),
            kind=str(r[2]),
            created_at=float(r[3]),
            meta=meta_of(r[4]),
            embedding=embeddings[i],
            thumbnail=bytes(r[6]) if r[6] is not None else None,
        )
        for i, r in enumerate(rows)
    ]


class SqlInventory:
    """The generation and the inventory reads, for a backend that provides :meth:`_select`."""

    def _select(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query written with ``?`` markers (inside a write transaction of this thread, on its
        connection); its rows."""
        raise NotImplementedError

    def generation(self, key: SpaceKey) -> int:
        rows = self._select("SELECT generation FROM spaces WHERE client = ? AND space = ?", (key.client, key.space))
        return int(rows[0][0]) if rows else 0

    def changes_since(self, key: SpaceKey, generation: int, after_face_id: int) -> SpaceChanges | None:
        return changes_of(self._select(CHANGES_SINCE, changes_args(key, generation, after_face_id)), generation)

    def space_counts(self, client: ClientId | None = None) -> list[SpaceCounts]:
        sql = "SELECT client, space, COUNT(DISTINCT person_id), COUNT(*) FROM faces"
        args: tuple[Any, ...] = ()
        if client is not None:
            sql += " WHERE client = ?"
            args = (client,)
        rows = self._select(sql + " GROUP BY client, space ORDER BY client, space", args)
        return [SpaceCounts(SpaceKey(ClientId(r[0]), int(r[1])), int(r[2]), int(r[3])) for r in rows]

    def space_keys(self, client: ClientId | None = None, space: int | None = None) -> list[SpaceKey]:
        written = "SELECT client, space FROM spaces UNION SELECT client, space FROM faces"
        rows = self._select(f"SELECT client, space FROM ({written}) AS written ORDER BY client, space")
        keys = [SpaceKey(ClientId(r[0]), int(r[1])) for r in rows]
        return [k for k in keys if (client is None or k.client == client) and (space is None or k.space == space)]

    def person_photo_counts(self, key: SpaceKey) -> list[tuple[int, int]]:
        rows = self._select(
            "SELECT person_id, COUNT(*) FROM faces WHERE client = ? AND space = ?"
            " GROUP BY person_id ORDER BY person_id",
            (key.client, key.space),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def person_faces(self, key: SpaceKey, person_id: int) -> list[StoredFace]:
        rows = self._select(
            f"SELECT {FACE_COLUMNS} FROM faces WHERE client = ? AND space = ? AND person_id = ? ORDER BY id",
            (key.client, key.space, person_id),
        )
        return stored_faces(rows)

    def person_sha256s(self, key: SpaceKey) -> dict[int, set[str]]:
        rows = self._select("SELECT person_id, meta FROM faces WHERE client = ? AND space = ?", (key.client, key.space))
        found: dict[int, set[str]] = {}
        for person_id, meta in rows:
            digest = meta_of(meta).get("sha256")
            if isinstance(digest, str):
                found.setdefault(int(person_id), set()).add(digest)
        return found

    def read_thumbnail(self, face_id: int, client: ClientId | None = None) -> bytes | None:
        """Face ids are unique across clients; with ``client``, a face of another client is not found."""
        if client is None:
            rows = self._select("SELECT thumbnail FROM faces WHERE id = ?", (face_id,))
        else:
            rows = self._select("SELECT thumbnail FROM faces WHERE id = ? AND client = ?", (face_id, client))
        if not rows or rows[0][0] is None:
            return None
        return bytes(rows[0][0])


FACE_INSERT = (
    "INSERT INTO faces (client, space, person_id, kind, embedding, created_at, meta, thumbnail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqlSpaceWriter:
    """Operations inside one write transaction on one space (see :class:`~emulator.store.records.SpaceWriter`), in
    SQL both backends speak. A backend gives :meth:`_run` (one statement with ``?`` markers, on the transaction's
    connection), :meth:`_insert_face` and :meth:`_delete_faces`."""

    def __init__(self, key: SpaceKey, generation: int, change_log_size: int) -> None:
        self.key = key
        self.generation = generation
        self.change_log_size = change_log_size
        self.delta = WriteDelta(key, generation, generation)
        self.aliases_changed = False

    def _run(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Execute one statement; the driver's cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        raise NotImplementedError

    def _insert_face(self, values: Sequence[Any]) -> int:
        """Run :data:`FACE_INSERT` with ``values``; the new face's id."""
        raise NotImplementedError

    def _delete_faces(self, clause: str, args: Sequence[Any]) -> list[int]:
        """Delete the faces of this space that match ``clause``; their ids."""
        raise NotImplementedError

    @property
    def _space(self) -> tuple[Any, ...]:
        return (self.key.client, self.key.space)

    def _bump_generation(self) -> None:
        """Before the commit: if this transaction changed something, store the space's next generation and give it
        to the delta (``delta.new_generation != delta.old_generation`` then says that the write changed something)."""
        if not (self.delta.changed or self.aliases_changed):
            return
        new_generation = self.generation + 1
        # After a truncate the log cannot take an index across it: whoever holds an older index reloads the space.
        floor = new_generation if self.delta.cleared else new_generation - self.change_log_size
        self._run(
            "INSERT INTO spaces (client, space, generation, log_floor) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (client, space) DO UPDATE SET generation = excluded.generation,"
            " log_floor = CASE WHEN spaces.log_floor > excluded.log_floor THEN spaces.log_floor"
            " ELSE excluded.log_floor END",
            (*self._space, new_generation, floor),
        )
        self._run("DELETE FROM space_changes WHERE client = ? AND space = ? AND generation <= ?", (*self._space, floor))
        self.delta.new_generation = new_generation

    def _log_removals(self, clause: str, args: Sequence[Any]) -> None:
        """Log the faces of this space that match ``clause`` as removed (before they are deleted)."""
        self._run(
            "INSERT INTO space_changes (client, space, generation, kind, a, b)"
            f" SELECT client, space, ?, {CHANGE_REMOVED}, id, person_id FROM faces"
            f" WHERE client = ? AND space = ? AND {clause}",
            (self.generation + 1, *self._space, *args),
        )

    def count_faces(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM faces WHERE client = ? AND space = ?", self._space).fetchone()[0])

    def add_face(
        self,
        person_id: int,
        embedding: np.ndarray,
        kind: str,
        meta: dict[str, Any] | None = None,
        thumbnail: bytes | None = None,
        created_at: float | None = None,
    ) -> int:
        face_id = self._insert_face(
            (
                *self._space,
                person_id,
                kind,
                embedding_to_blob(embedding),
                time.time() if created_at is None else created_at,
                json.dumps(meta or {}, ensure_ascii=False),
                thumbnail,
            )
        )
        self.delta.added.append(FaceRow(face_id, person_id, np.asarray(embedding, dtype=np.float32)))
        return face_id

    def _delete_where(self, clause: str, args: Sequence[Any]) -> int:
        self._log_removals(clause, args)
        ids = self._delete_faces(clause, args)
        self.delta.removed_face_ids.update(ids)
        return len(ids)

    def delete_person(self, person_id: int) -> int:
        removed = self._delete_where("person_id = ?", (person_id,))
        self._run(
            "DELETE FROM alias_pairs WHERE client = ? AND space = ? AND (low = ? OR high = ?)",
            (*self._space, person_id, person_id),
        )
        return removed

    def trim_learned(self, person_id: int, keep: int) -> int:
        """Keep only the newest ``keep`` learned embeddings of a person."""
        return self._delete_where(
            "person_id = ? AND kind = 'learned' AND id NOT IN ("
            " SELECT id FROM faces WHERE client = ? AND space = ? AND person_id = ? AND kind = 'learned'"
            " ORDER BY id DESC LIMIT ?)",
            (person_id, *self._space, person_id, keep),
        )

    def truncate(self) -> int:
        removed = self._run("DELETE FROM faces WHERE client = ? AND space = ?", self._space).rowcount
        self._run("DELETE FROM alias_pairs WHERE client = ? AND space = ?", self._space)
        self.delta.cleared = True
        return int(removed)

    def person_sha256s(self, person_id: int) -> set[str]:
        """The ``sha256`` of every stored photo of a person (from each face's meta)."""
        rows = self._run(
            "SELECT meta FROM faces WHERE client = ? AND space = ? AND person_id = ?", (*self._space, person_id)
        ).fetchall()
        return {digest for (meta,) in rows if isinstance(digest := meta_of(meta).get("sha256"), str)}

    def has_embedding(self, person_id: int, embedding: np.ndarray) -> bool:
        """True if the person already holds exactly this embedding (bit for bit)."""
        row = self._run(
            "SELECT 1 FROM faces WHERE client = ? AND space = ? AND person_id = ? AND embedding = ? LIMIT 1",
            (*self._space, person_id, embedding_to_blob(embedding)),
        ).fetchone()
        return row is not None

    def record_alias_pairs(self, person_id: int, aliases: Sequence[int]) -> bool:
        """Remember that ``person_id`` was reported with ``aliases``; True if any pair is new."""
        new = False
        for other in aliases:
            low, high = sorted((person_id, other))
            cursor = self._run(
                "INSERT INTO alias_pairs (client, space, low, high) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (*self._space, low, high),
            )
            if cursor.rowcount > 0:
                new = True
                self._run(
                    "INSERT INTO space_changes (client, space, generation, kind, a, b) VALUES (?, ?, ?, ?, ?, ?)",
                    (*self._space, self.generation + 1, CHANGE_ALIAS, low, high),
                )
        if new:
            self.aliases_changed = True
        return new
