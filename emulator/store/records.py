"""What the persons record holds, and the :class:`Store` protocol every backend implements.

The service (:mod:`emulator.persons.service`), the admin API, snapshots and seeding depend on this protocol only,
never on a backend: SQLite (:mod:`emulator.store.sqlite`) is the embedded default.

Every face is one record holding its unit-length float32 embedding. Each (client, space) has a *generation* that
every committed write bumps in the same transaction; a reader compares it to the generation its in-memory index
was built from, so noticing another process's write costs one indexed read; what changed since is then read from
the space's bounded change log (:meth:`Store.changes_since`), so following it costs what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol

import numpy as np

EMBEDDING_DIM = 128


class StoreError(Exception):
    """The record could not be read or written (disk full, read-only, database unreachable...). Backends raise it
    for every failure of their storage, never for bad input; the message names the store and the cause. Clients get
    the real service's internal-error envelope; nothing of the failed write is kept."""


ClientId = NewType("ClientId", str)

DEFAULT_CLIENT = ClientId("default")


@dataclass(frozen=True)
class SpaceKey:
    """A space of a client: the unit of matching, locking and generations."""

    client: ClientId
    space: int


def embedding_to_blob(embedding: np.ndarray) -> bytes:
    """128 little-endian float32: how an embedding is stored, bit for bit."""
    return np.ascontiguousarray(embedding, dtype="<f4").tobytes()


def blob_to_embeddings(blobs: Sequence[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), EMBEDDING_DIM).astype(np.float32)


@dataclass(frozen=True)
class FaceRow:
    face_id: int
    person_id: int
    embedding: np.ndarray


@dataclass(frozen=True)
class SpaceData:
    """A space's faces as arrays, with the generation they were read at."""

    generation: int
    face_ids: np.ndarray  # int64 (n,)
    person_ids: np.ndarray  # int64 (n,)
    embeddings: np.ndarray  # float32 (n, 128)


@dataclass
class WriteDelta:
    """What a committed write changed in one space, so an index can follow without reloading."""

    key: SpaceKey
    old_generation: int
    new_generation: int  # old_generation unless the write changed something
    added: list[FaceRow] = field(default_factory=list)
    removed_face_ids: set[int] = field(default_factory=set)
    cleared: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed_face_ids or self.cleared)


@dataclass(frozen=True)
class SpaceChanges:
    """What changed in a space since a generation an index holds (:meth:`Store.changes_since`), read in one
    statement: what the index needs to follow the space in place instead of reloading it.

    ``added`` holds the faces stored now whose ids are above the largest the index has (face ids grow within a
    space: its writes are serialized), as they are now: a face added and removed since is in neither list.
    ``removed_face_ids`` are the faces removed since (some may never have been in the index: added and removed
    since). ``alias_pairs`` are the pairs recognize recorded since; the index does not hold them.
    """

    generation: int  # the space's generation these changes bring an index to
    added: SpaceData  # its generation is ``generation``
    removed_face_ids: np.ndarray  # int64
    alias_pairs: tuple[tuple[int, int], ...] = ()


OnWrite = Callable[[WriteDelta], None]
"""Told of every committed write, so this process's index follows at once (``IndexCache.apply``)."""


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
    kind: str  # set | created | learned | imported
    created_at: float
    meta: dict[str, Any]  # image name, sha256, coord
    embedding: np.ndarray  # float32 (128,)
    thumbnail: bytes | None


@dataclass(frozen=True)
class SpaceContents:
    """Everything stored for one space, read in one snapshot."""

    key: SpaceKey
    generation: int
    faces: tuple[StoredFace, ...]
    alias_pairs: tuple[tuple[int, int], ...]


class SpaceWriter(Protocol):
    """Operations inside one write transaction on one space (see :meth:`Store.write`)."""

    key: SpaceKey
    generation: int  # the space's generation when the transaction began
    delta: WriteDelta
    aliases_changed: bool  # a new alias pair was recorded

    def count_faces(self) -> int: ...

    def add_face(
        self,
        person_id: int,
        embedding: np.ndarray,
        kind: str,
        meta: dict[str, Any] | None = None,
        thumbnail: bytes | None = None,
        created_at: float | None = None,
    ) -> int:
        """Store one face; its new face id."""
        ...

    def delete_person(self, person_id: int) -> int:
        """Delete a person's faces and alias pairs; how many faces went."""
        ...

    def trim_learned(self, person_id: int, keep: int) -> int:
        """Keep only the newest ``keep`` learned embeddings of a person; how many went."""
        ...

    def truncate(self) -> int: ...

    def person_sha256s(self, person_id: int) -> set[str]:
        """The ``sha256`` of every stored photo of a person (from each face's meta)."""
        ...

    def has_embedding(self, person_id: int, embedding: np.ndarray) -> bool:
        """True if the person already holds exactly this embedding (bit for bit)."""
        ...

    def record_alias_pairs(self, person_id: int, aliases: Sequence[int]) -> bool:
        """Remember that ``person_id`` was reported with ``aliases``; True if any pair is new."""
        ...


class Store(Protocol):
    """The record of persons: one per process, shared by its threads."""

    @property
    def location(self) -> str:
        """Where the record lives, for messages (a file path, or a database URL without its password)."""
        ...

    def open(self) -> None:
        """Create or migrate the record to the current schema (idempotent)."""
        ...

    def close(self) -> None: ...

    # --- the hot path -----------------------------------------------------------------

    def generation(self, key: SpaceKey) -> int:
        """The space's generation (0 if never written): one indexed read."""
        ...

    def load_space(self, key: SpaceKey) -> SpaceData:
        """A space's faces and generation, from one consistent read."""
        ...

    def changes_since(self, key: SpaceKey, generation: int, after_face_id: int) -> SpaceChanges | None:
        """What changed in the space after ``generation`` (an index that holds faces up to ``after_face_id``), in one
        statement; None when the space's change log no longer reaches back to ``generation`` (pruned, or the space
        was truncated or restored since): the index must be loaded whole."""
        ...

    def write(self, key: SpaceKey) -> AbstractContextManager[SpaceWriter]:
        """A write transaction on one space, exclusive against every other writer of that space (in any process
        or on any machine sharing the record). Commits, bumping the generation, if the block returns and something
        changed; rolls back if it raises."""
        ...

    # --- inventory (admin API, snapshots, seeding, metrics) ---------------------------

    def space_counts(self, client: ClientId | None = None) -> list[SpaceCounts]:
        """Every space that holds faces (of ``client``, or of all clients), ordered by client and space."""
        ...

    def space_keys(self, client: ClientId | None = None, space: int | None = None) -> list[SpaceKey]:
        """Every space ever written, optionally limited to a client and a space."""
        ...

    def person_photo_counts(self, key: SpaceKey) -> list[tuple[int, int]]:
        """``(person_id, stored embeddings)`` for every person of a space, by person id."""
        ...

    def person_faces(self, key: SpaceKey, person_id: int) -> list[StoredFace]:
        """The stored faces of one person, oldest first."""
        ...

    def space_contents(self, key: SpaceKey) -> SpaceContents:
        """All faces and alias pairs of a space, with its generation, from one consistent read."""
        ...

    def person_sha256s(self, key: SpaceKey) -> dict[int, set[str]]:
        """``{person_id: sha256 of every stored photo}`` for a space."""
        ...

    def read_thumbnail(self, face_id: int, client: ClientId | None = None) -> bytes | None:
        """The JPEG thumbnail of a face (of ``client`` only, if given), or None."""
        ...

    # --- shared by every process sharing the record ------------------------------------

    def secret(self, name: str) -> bytes:
        """A random secret kept with the record (the OAuth signing key), created by the first process to ask
        and the same for every process sharing the record."""
        ...

    def shared_value(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The value named ``name`` kept with the record (the TLS certificate authority), the same for every process
        sharing the record: the first to ask stores what ``make()`` returns; when several ask at once, one value
        wins and all of them get it. It stays as private as the record itself (SQLite: a file of mode 0600)."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """Hold the lock named ``name`` against every process sharing the record (seeding at startup)."""
        ...
