"""Cosine matching over one unit-length float32 matrix per (client, space).

A person with several stored embeddings (photos from ``set``, and faces it learned
through ``recognize``) scores the *best* cosine similarity among them: one good photo is
enough to be recognized, and a poor extra photo never hurts. Rows are kept sorted by
person id, so the per-person maximum is one ``np.maximum.reduceat`` with no Python loop.
Writes (this process's, and other processes' read back from the store's change log) are
applied on top of that matrix, at the cost of what they changed (see :class:`SpaceIndex`).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np

from emulator.store.records import EMBEDDING_DIM, SpaceChanges, SpaceData, SpaceKey, Store, WriteDelta


@dataclass(frozen=True)
class Candidates:
    """Persons of a space scored against one face, best first."""

    person_ids: np.ndarray  # int64
    scores: np.ndarray  # float32, descending

    @property
    def best(self) -> tuple[int, float] | None:
        if len(self.person_ids) == 0:
            return None
        return int(self.person_ids[0]), float(self.scores[0])


TAIL_LIMIT = 2048
"""Rows removed from an index's base plus rows added after it, at most, before the index is rebuilt whole: applying
a change copies the tail, so this bounds what one change costs, whatever the size of the space."""

_NO_IDS = np.zeros(0, dtype=np.int64)
_NO_ROWS = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)


class _Base:
    """Rows sorted by person id (shared, never changed, by the snapshots that apply changes on top of it)."""

    def __init__(self, face_ids: np.ndarray, person_ids: np.ndarray, matrix: np.ndarray) -> None:
        order = np.argsort(person_ids, kind="stable")
        self.face_ids = np.ascontiguousarray(face_ids[order], dtype=np.int64)
        self.person_ids = np.ascontiguousarray(person_ids[order], dtype=np.int64)
        self.matrix = np.ascontiguousarray(matrix[order], dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if len(self.person_ids):
            starts = np.flatnonzero(np.r_[True, self.person_ids[1:] != self.person_ids[:-1]])
        else:
            starts = np.zeros(0, dtype=np.int64)
        self.starts = starts
        self.unique_person_ids = self.person_ids[starts] if len(starts) else _NO_IDS
        self.max_face_id = int(self.face_ids.max()) if len(self.face_ids) else 0
        self._by_face: tuple[np.ndarray, np.ndarray] | None = None

    def rows_of(self, face_ids: np.ndarray) -> np.ndarray:
        """The rows holding ``face_ids`` (those it has), sorted."""
        if self._by_face is None:  # built on the first removal; a race builds it twice, the same
            order = np.argsort(self.face_ids, kind="stable")
            self._by_face = (self.face_ids[order], order)
        sorted_ids, order = self._by_face
        if not len(sorted_ids) or not len(face_ids):
            return _NO_IDS
        at = np.minimum(np.searchsorted(sorted_ids, face_ids), len(sorted_ids) - 1)
        found = sorted_ids[at] == face_ids
        return np.sort(order[at[found]])

    def person_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The position in ``unique_person_ids`` of each row's person."""
        return np.searchsorted(self.starts, rows, side="right") - 1


class SpaceIndex:
    """An immutable snapshot of a space's embeddings.

    Built whole, it is one matrix sorted by person id. A change applied to it (a write of this process, or another
    process's changes read from the store) makes a new snapshot that shares that base and holds on top of it the
    base rows removed since and a small tail of rows added since (in face id order), so that a change costs what
    it changed, not the size of the space; past :data:`TAIL_LIMIT` such rows the new snapshot is rebuilt whole.
    Either way a snapshot holds the rows a fresh load would and ranks persons exactly as it would.
    """

    def __init__(self, generation: int, face_ids: np.ndarray, person_ids: np.ndarray, matrix: np.ndarray) -> None:
        self.generation = generation
        self._base = _Base(face_ids, person_ids, matrix)
        self._removed = _NO_IDS  # base rows removed since, sorted
        self._tail_face_ids = _NO_IDS
        self._tail_person_ids = _NO_IDS
        self._tail_matrix = _NO_ROWS
        self._finish()

    @classmethod
    def from_data(cls, data: SpaceData) -> SpaceIndex:
        return cls(data.generation, data.face_ids, data.person_ids, data.embeddings)

    @classmethod
    def _layered(
        cls,
        generation: int,
        base: _Base,
        removed: np.ndarray,
        tail_face_ids: np.ndarray,
        tail_person_ids: np.ndarray,
        tail_matrix: np.ndarray,
    ) -> SpaceIndex:
        index = cls.__new__(cls)
        index.generation = generation
        index._base = base
        index._removed = removed
        index._tail_face_ids = tail_face_ids
        index._tail_person_ids = tail_person_ids
        index._tail_matrix = tail_matrix
        index._finish()
        return index

    def _finish(self) -> None:
        """The persons of the snapshot, in id order, and where the base's and the tail's scores go among them."""
        base = self._base
        self._starts = base.starts
        self._layered_rows = bool(len(self._removed) or len(self._tail_face_ids))
        self._alive: np.ndarray | None = None  # which base persons keep a row (None: all)
        if len(self._removed):
            persons, removed_rows = np.unique(base.person_of_rows(self._removed), return_counts=True)
            rows = np.diff(np.r_[base.starts, len(base.face_ids)])
            dead = persons[removed_rows == rows[persons]]
            if len(dead):
                self._alive = np.ones(len(base.unique_person_ids), dtype=bool)
                self._alive[dead] = False
        alive = base.unique_person_ids if self._alive is None else base.unique_person_ids[self._alive]
        self._tail_persons, self._tail_inverse = np.unique(self._tail_person_ids, return_inverse=True)
        if len(self._tail_persons):
            at = np.searchsorted(alive, self._tail_persons)
            known = np.zeros(len(at), dtype=bool)
            if len(alive):
                known = (at < len(alive)) & (alive[np.minimum(at, len(alive) - 1)] == self._tail_persons)
            merged = np.insert(alive, at[~known], self._tail_persons[~known])
            self._base_at = np.searchsorted(merged, alive)
            self._tail_at = np.searchsorted(merged, self._tail_persons)
        else:
            merged = alive
        self.unique_person_ids = merged
        self.max_face_id = max(base.max_face_id, int(self._tail_face_ids[-1]) if len(self._tail_face_ids) else 0)

    def __len__(self) -> int:
        return len(self._base.face_ids) - len(self._removed) + len(self._tail_face_ids)

    @property
    def max_person_id(self) -> int:
        return int(self.unique_person_ids[-1]) if len(self.unique_person_ids) else 0

    # --- the rows, as a fresh load orders them: by person, then by face id ------------------------------------------

    def _compact(self) -> SpaceIndex:
        """This snapshot rebuilt whole (itself, if it is). Not kept: the row properties below and the digest are for
        tests and the admin API, and a kept copy would double the memory of a big space."""
        if not self._layered_rows:
            return self
        keep = np.ones(len(self._base.face_ids), dtype=bool)
        keep[self._removed] = False
        return SpaceIndex(
            self.generation,
            np.concatenate([self._base.face_ids[keep], self._tail_face_ids]),
            np.concatenate([self._base.person_ids[keep], self._tail_person_ids]),
            np.concatenate([self._base.matrix[keep], self._tail_matrix]),
        )

    @property
    def face_ids(self) -> np.ndarray:
        return self._compact()._base.face_ids

    @property
    def person_ids(self) -> np.ndarray:
        return self._compact()._base.person_ids

    @property
    def matrix(self) -> np.ndarray:
        return self._compact()._base.matrix

    # --- search -----------------------------------------------------------------------------------------------------

    def search(self, embedding: np.ndarray, min_score: float | None = None) -> Candidates:
        """Score every person by its best cosine similarity to ``embedding`` (unit length).

        With ``min_score``, only the best person and the persons scoring at least ``min_score`` are returned
        (still best first): sorting a 75,000-face space costs more than scoring it.
        """
        if not len(self):
            return Candidates(_NO_IDS, np.zeros(0, dtype=np.float32))
        query = np.asarray(embedding, dtype=np.float32)
        base = self._base
        if len(base.face_ids):
            # einsum runs numpy's own single-threaded SIMD loop: BLAS (``@``) spreads a 75,000-row mat-vec over
            # threads that, on a busy machine, wait for each other (p50 ~18 ms vs ~2 ms, measured in bench/).
            sims = np.einsum("ij,j->i", base.matrix, query)
            if len(self._removed):
                sims[self._removed] = -np.inf  # a person whose rows are all removed is dropped below
            per_person = np.maximum.reduceat(sims, base.starts)
            if self._alive is not None:
                per_person = per_person[self._alive]
        else:
            per_person = np.zeros(0, dtype=np.float32)
        if len(self._tail_persons):
            tail_sims = np.einsum("ij,j->i", self._tail_matrix, query)
            tail_best = np.full(len(self._tail_persons), -np.inf, dtype=np.float32)
            np.maximum.at(tail_best, self._tail_inverse, tail_sims)
            scores = np.full(len(self.unique_person_ids), -np.inf, dtype=np.float32)
            scores[self._base_at] = per_person
            scores[self._tail_at] = np.maximum(scores[self._tail_at], tail_best)
            per_person = scores
        if min_score is None:
            order = np.argsort(-per_person, kind="stable")
        else:
            keep = np.flatnonzero(per_person >= min_score)
            if not len(keep):
                keep = np.array([int(np.argmax(per_person))])  # the first best, as the stable sort would give
            order = keep[np.argsort(-per_person[keep], kind="stable")]
        return Candidates(self.unique_person_ids[order], per_person[order])

    # --- changes ----------------------------------------------------------------------------------------------------

    def apply(self, delta: WriteDelta) -> SpaceIndex:
        """A new snapshot with ``delta`` applied (the caller checked the generations line up)."""
        added = [r for r in delta.added if r.face_id not in delta.removed_face_ids]  # not those removed since
        added_ids = np.array([r.face_id for r in added], dtype=np.int64)
        added_persons = np.array([r.person_id for r in added], dtype=np.int64)
        added_matrix = np.stack([r.embedding for r in added]).astype(np.float32) if added else _NO_ROWS
        if delta.cleared:
            return SpaceIndex(delta.new_generation, added_ids, added_persons, added_matrix)
        removed = np.array(sorted(delta.removed_face_ids), dtype=np.int64)
        return self._changed(delta.new_generation, removed, added_ids, added_persons, added_matrix)

    def catch_up(self, changes: SpaceChanges) -> SpaceIndex:
        """A new snapshot with another process's ``changes`` applied (read since this index's generation, with the
        faces above its largest face id): equal, row for row, to a fresh load at ``changes.generation``."""
        added = changes.added
        return self._changed(
            changes.generation, changes.removed_face_ids, added.face_ids, added.person_ids, added.embeddings
        )

    def _changed(
        self,
        generation: int,
        removed_ids: np.ndarray,
        added_ids: np.ndarray,
        added_persons: np.ndarray,
        added_matrix: np.ndarray,
    ) -> SpaceIndex:
        """Remove the faces ``removed_ids`` (those it holds), then add rows whose face ids are above every one it
        holds, in face id order (the order a fresh load gives within each person)."""
        removed = self._removed
        tail_face_ids, tail_person_ids, tail_matrix = self._tail_face_ids, self._tail_person_ids, self._tail_matrix
        if len(removed_ids):
            removed = np.union1d(removed, self._base.rows_of(removed_ids))
            if len(tail_face_ids):
                keep = ~np.isin(tail_face_ids, removed_ids)
                tail_face_ids, tail_person_ids, tail_matrix = (
                    tail_face_ids[keep],
                    tail_person_ids[keep],
                    tail_matrix[keep],
                )
        if len(added_ids):
            tail_face_ids = np.concatenate([tail_face_ids, added_ids])
            tail_person_ids = np.concatenate([tail_person_ids, added_persons])
            tail_matrix = np.concatenate([tail_matrix, np.asarray(added_matrix, dtype=np.float32)])
        layered = SpaceIndex._layered(generation, self._base, removed, tail_face_ids, tail_person_ids, tail_matrix)
        if len(removed) + len(tail_face_ids) > TAIL_LIMIT:
            return layered._compact()
        return layered

    def digest(self) -> str:
        """sha256 of the rows (face id, person id, embedding bit for bit) in face id order: two indexes of a space
        have the same digest exactly when they hold the same faces."""
        whole = self._compact()._base
        face_ids, person_ids, matrix = whole.face_ids, whole.person_ids, whole.matrix
        order = np.argsort(face_ids, kind="stable")
        digest = hashlib.sha256()
        digest.update(face_ids[order].astype("<i8").tobytes())
        digest.update(person_ids[order].astype("<i8").tobytes())
        digest.update(np.ascontiguousarray(matrix[order], dtype="<f4").tobytes())
        return digest.hexdigest()


@dataclass
class FollowCounts:
    """How a process's index of one space followed other processes' writes."""

    loads: int = 0  # whole-space reads: the first, and those the change log could not spare
    catch_ups: int = 0  # changes read since the held generation and applied in place


class IndexCache:
    """Per-process cache of :class:`SpaceIndex`, kept current with the store's generations.

    ``get`` costs one indexed read of the store when nothing changed (none inside a write transaction, which
    knows the generation); after this process's own writes the delta is applied in memory; after other processes'
    writes only what changed since the held generation is read (one statement, :meth:`Store.changes_since`) and
    applied in place. The space is loaded whole the first time, and when the store's change log no longer reaches
    back to the held generation (pruned, or the space was truncated or restored since).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._indexes: dict[SpaceKey, SpaceIndex] = {}
        self._counts: dict[SpaceKey, FollowCounts] = {}
        self._lock = threading.Lock()

    def get(self, key: SpaceKey, generation: int | None = None) -> SpaceIndex:
        """The space's current index. ``generation``: the space's generation if the caller has just read it (inside
        a write transaction, the writer's), which spares reading it again."""
        if generation is None:
            generation = self._store.generation(key)
        with self._lock:
            index = self._indexes.get(key)
        if index is not None and index.generation == generation:
            return index
        if index is not None and index.generation < generation:
            changes = self._store.changes_since(key, index.generation, index.max_face_id)
            if changes is not None:
                return self._keep(key, index.catch_up(changes), catch_up=True)
        return self.reload(key)

    def reload(self, key: SpaceKey) -> SpaceIndex:
        return self._keep(key, SpaceIndex.from_data(self._store.load_space(key)), catch_up=False)

    def _keep(self, key: SpaceKey, index: SpaceIndex, *, catch_up: bool) -> SpaceIndex:
        """Hold ``index`` unless a newer one is held already (another thread got further meanwhile)."""
        with self._lock:
            counts = self._counts.setdefault(key, FollowCounts())
            if catch_up:
                counts.catch_ups += 1
            else:
                counts.loads += 1
            current = self._indexes.get(key)
            if current is None or current.generation <= index.generation:
                self._indexes[key] = index
        return index

    def counts(self, key: SpaceKey) -> FollowCounts:
        """How this process's index of ``key`` followed the store so far (a copy)."""
        with self._lock:
            counts = self._counts.get(key, FollowCounts())
            return FollowCounts(counts.loads, counts.catch_ups)

    def apply(self, delta: WriteDelta) -> None:
        """Follow a write this process committed. An index that was not at the write's starting generation is left
        as it is: the next ``get`` catches it up from the store."""
        if delta.new_generation == delta.old_generation:
            return
        with self._lock:
            index = self._indexes.get(delta.key)
            if index is not None and index.generation == delta.old_generation:
                self._indexes[delta.key] = index.apply(delta)
