"""Read-only queries over the whole store: what clients, spaces, persons and photos it holds.

Used by the admin API, snapshots and seeding. Writes still go through
:meth:`SqliteStore.write`, so every change bumps its space's generation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator.store.sqlite import SqliteStore, blob_to_embeddings
from emulator.types import ClientId, SpaceKey


@dataclass(frozen=True)
class SpaceCounts:
    key: SpaceKey
    persons: int
    faces: int


@dataclass(frozen=True)
class StoredFace:
    """One stored embedding with everything kept about it."""

    face_id: int
    person_id: int
    kind: str
    created_at: float
    meta: dict[str, Any]
    embedding: np.ndarray  # float32 (128,)
    thumbnail: bytes | None


@dataclass(frozen=True)
class SpaceContents:
    """Everything stored for one space, read in one snapshot."""

    key: SpaceKey
    generation: int
    faces: tuple[StoredFace, ...]
    alias_pairs: tuple[tuple[int, int], ...]


def _meta(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@contextmanager
def _read_snapshot(store: SqliteStore) -> Iterator[None]:
    """Run several reads against one consistent view of the database."""
    store.query("BEGIN")
    try:
        yield
    finally:
        store.query("COMMIT")


def space_counts(store: SqliteStore, client: ClientId | None = None) -> list[SpaceCounts]:
    """Every space that holds faces (of ``client``, or of all clients), ordered by client and space."""
    sql = "SELECT client, space, COUNT(DISTINCT person_id), COUNT(*) FROM faces"
    args: tuple[Any, ...] = ()
    if client is not None:
        sql += " WHERE client = ?"
        args = (client,)
    rows = store.query(sql + " GROUP BY client, space ORDER BY client, space", args)
    return [SpaceCounts(SpaceKey(ClientId(r[0]), int(r[1])), int(r[2]), int(r[3])) for r in rows]


def space_keys(store: SqliteStore, client: ClientId | None = None, space: int | None = None) -> list[SpaceKey]:
    """Every space ever written (it has a generation), optionally limited to a client and a space."""
    sql = "SELECT client, space FROM spaces UNION SELECT client, space FROM faces"
    rows = store.query(f"SELECT client, space FROM ({sql}) ORDER BY client, space")
    keys = [SpaceKey(ClientId(r[0]), int(r[1])) for r in rows]
    return [k for k in keys if (client is None or k.client == client) and (space is None or k.space == space)]


def person_photo_counts(store: SqliteStore, key: SpaceKey) -> list[tuple[int, int]]:
    """``(person_id, stored embeddings)`` for every person of a space, by person id."""
    rows = store.query(
        "SELECT person_id, COUNT(*) FROM faces WHERE client = ? AND space = ? GROUP BY person_id ORDER BY person_id",
        (key.client, key.space),
    )
    return [(int(r[0]), int(r[1])) for r in rows]


def person_faces(store: SqliteStore, key: SpaceKey, person_id: int) -> list[StoredFace]:
    """The stored faces of one person, oldest first (thumbnails and embeddings included)."""
    rows = store.query(
        "SELECT id, person_id, kind, created_at, meta, embedding, thumbnail FROM faces"
        " WHERE client = ? AND space = ? AND person_id = ? ORDER BY id",
        (key.client, key.space, person_id),
    )
    return _faces(rows)


def _faces(rows: list[tuple[Any, ...]]) -> list[StoredFace]:
    embeddings = blob_to_embeddings([r[5] for r in rows])
    return [
        StoredFace(
            face_id=int(r[0]),
            person_id=int(r[1]),
            kind=str(r[2]),
            created_at=float(r[3]),
            meta=_meta(r[4]),
            embedding=embeddings[i],
            thumbnail=bytes(r[6]) if r[6] is not None else None,
        )
        for i, r in enumerate(rows)
    ]


def space_contents(store: SqliteStore, key: SpaceKey) -> SpaceContents:
    """All faces and alias pairs of a space, with its generation, from one consistent read."""
    with _read_snapshot(store):
        generation = store.generation(key)
        rows = store.query(
            "SELECT id, person_id, kind, created_at, meta, embedding, thumbnail FROM faces"
            " WHERE client = ? AND space = ? ORDER BY id",
            (key.client, key.space),
        )
        pairs = store.query(
            "SELECT low, high FROM alias_pairs WHERE client = ? AND space = ? ORDER BY low, high",
            (key.client, key.space),
        )
    return SpaceContents(key, generation, tuple(_faces(rows)), tuple((int(a), int(b)) for a, b in pairs))


def person_sha256s(store: SqliteStore, key: SpaceKey) -> dict[int, set[str]]:
    """``{person_id: sha256 of every stored photo}`` for a space (seeding skips what is there)."""
    rows = store.query(
        "SELECT person_id, json_extract(meta, '$.sha256') FROM faces WHERE client = ? AND space = ?",
        (key.client, key.space),
    )
    found: dict[int, set[str]] = {}
    for person_id, digest in rows:
        if isinstance(digest, str):
            found.setdefault(int(person_id), set()).add(digest)
    return found


def integrity_check(store: SqliteStore) -> str:
    """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
    return "\n".join(str(r[0]) for r in store.query("PRAGMA integrity_check"))
