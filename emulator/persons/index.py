"""Cosine matching over one unit-length float32 matrix per (client, space).

A person with several stored embeddings (photos from ``set``, and faces it learned
through ``recognize``) scores the *best* cosine similarity among them: one good photo is
enough to be recognized, and a poor extra photo never hurts. Rows are kept sorted by
person id, so the per-person maximum is one ``np.maximum.reduceat`` with no Python loop.
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


class SpaceIndex:
    """An immutable snapshot of a space's embeddings."""

    def __init__(
        self,
        generation: int,
        face_ids: np.ndarray,
        person_ids: np.ndarray,
        matrix: np.ndarray,
        *,
        presorted: bool = False,
    ) -> None:
        """``presorted``: the rows are in person order already (as :meth:`_changed` builds them), so they are kept
        as they are instead of sorted and copied again."""
        if not presorted:
            order = np.argsort(person_ids, kind="stable")
            face_ids, person_ids, matrix = face_ids[order], person_ids[order], matrix[order]
        self.generation = generation
        self.face_ids = np.ascontiguousarray(face_ids, dtype=np.int64)
        self.person_ids = np.ascontiguousarray(person_ids, dtype=np.int64)
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if len(self.person_ids):
            starts = np.flatnonzero(np.r_[True, self.person_ids[1:] != self.person_ids[:-1]])
        else:
            starts = np.zeros(0, dtype=np.int64)
        self._starts = starts
        self.unique_person_ids = self.person_ids[starts] if len(starts) else np.zeros(0, dtype=np.int64)
        self.max_face_id = int(self.face_ids.max()) if len(self.face_ids) else 0

    @classmethod
    def from_data(cls, data: SpaceData) -> SpaceIndex:
        return cls(data.generation, data.face_ids, data.person_ids, data.embeddings)

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def max_person_id(self) -> int:
        return int(self.person_ids[-1]) if len(self.person_ids) else 0

    def search(self, embedding: np.ndarray, min_score: float | None = None) -> Candidates:
        """Score every person by its best cosine similarity to ``embedding`` (unit length).

        With ``min_score``, only the best person and the persons scoring at least ``min_score`` are returned
        (still best first): sorting a 75,000-face space costs more than scoring it.
        """
        if not len(self.face_ids):
            empty = np.zeros(0, dtype=np.int64)
            return Candidates(empty, np.zeros(0, dtype=np.float32))
        # einsum runs numpy's own single-threaded SIMD loop: BLAS (``@``) spreads a 75,000-row mat-vec over
        # threads that, on a busy machine, wait for each other (p50 ~18 ms vs ~2 ms, measured in bench/).
        sims = np.einsum("ij,j->i", self.matrix, np.asarray(embedding, dtype=np.float32))
        per_person = np.maximum.reduceat(sims, self._starts)
        if min_score is None:
            order = np.argsort(-per_person, kind="stable")
        else:
            keep = np.flatnonzero(per_person >= min_score)
            if not len(keep):
                keep = np.array([int(np.argmax(per_person))])  # the first best, as the stable sort would give
            order = keep[np.argsort(-per_person[keep], kind="stable")]
        return Candidates(self.unique_person_ids[order], per_person[order])

    def apply(self, delta: WriteDelta) -> SpaceIndex:
        """A new snapshot with ``delta`` applied (the caller checked the generations line up)."""
        if delta.cleared:
            keep = np.zeros(len(self.face_ids), dtype=bool)
        elif delta.removed_face_ids:
            keep = ~np.isin(self.face_ids, np.fromiter(delta.removed_face_ids, dtype=np.int64))
        else:
            keep = np.ones(len(self.face_ids), dtype=bool)
        added = [r for r in delta.added if r.face_id not in delta.removed_face_ids]  # not those removed since
        added_matrix = (
            np.stack([r.embedding for r in added]).astype(np.float32)
            if added
            else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        )
        return self._changed(
            delta.new_generation,
            keep,
            np.array([r.face_id for r in added], dtype=np.int64),
            np.array([r.person_id for r in added], dtype=np.int64),
            added_matrix,
        )

    def catch_up(self, changes: SpaceChanges) -> SpaceIndex:
        """A new snapshot with another process's ``changes`` applied (read since this index's generation, with the
        faces above its largest face id): equal, row for row, to a fresh load at ``changes.generation``."""
        if len(changes.removed_face_ids):
            keep = ~np.isin(self.face_ids, changes.removed_face_ids)
        else:
            keep = np.ones(len(self.face_ids), dtype=bool)
        added = changes.added
        return self._changed(changes.generation, keep, added.face_ids, added.person_ids, added.embeddings)

    def _changed(
        self,
        generation: int,
        keep: np.ndarray,
        added_ids: np.ndarray,
        added_persons: np.ndarray,
        added_matrix: np.ndarray,
    ) -> SpaceIndex:
        """The rows ``keep`` of this index with the added ones (ids above every kept one, in id order) inserted
        after the rows of their person: the order a fresh load gives (by person, then by id), built in one copy of
        the matrix, not sorted again: a catch-up at 75,000 faces costs a few ms rather than a whole re-sort."""
        if keep.all():
            face_ids, person_ids, matrix = self.face_ids, self.person_ids, self.matrix
        else:
            face_ids, person_ids, matrix = self.face_ids[keep], self.person_ids[keep], self.matrix[keep]
        if len(added_ids):
            order = np.argsort(added_persons, kind="stable")  # by person; in id order within one
            persons = np.asarray(added_persons, dtype=np.int64)[order]
            at = np.searchsorted(person_ids, persons, side="right")
            face_ids = np.insert(face_ids, at, np.asarray(added_ids, dtype=np.int64)[order])
            person_ids = np.insert(person_ids, at, persons)
            matrix = np.insert(matrix, at, np.asarray(added_matrix, dtype=np.float32)[order], axis=0)
        return SpaceIndex(generation, face_ids, person_ids, matrix, presorted=True)

    def digest(self) -> str:
        """sha256 of the rows (face id, person id, embedding bit for bit) in face id order: two indexes of a space
        have the same digest exactly when they hold the same faces."""
        order = np.argsort(self.face_ids, kind="stable")
        digest = hashlib.sha256()
        digest.update(self.face_ids[order].astype("<i8").tobytes())
        digest.update(self.person_ids[order].astype("<i8").tobytes())
        digest.update(np.ascontiguousarray(self.matrix[order], dtype="<f4").tobytes())
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
