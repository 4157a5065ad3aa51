"""Cosine matching over a space's embeddings (``SpaceIndex``) and the per-process cache that follows the store
(``IndexCache``), with embeddings made by hand: ``toward(c)`` has cosine similarity ``c`` to the query ``AXIS``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from emulator.persons import index as index_module
from emulator.persons.index import FollowCounts, IndexCache, SpaceIndex
from emulator.store import Store
from emulator.store import sqlite as sqlite_store
from emulator.store.records import EMBEDDING_DIM, ClientId, FaceRow, SpaceData, SpaceKey, WriteDelta
from emulator.store.sql import SqlInventory
from emulator.store.sqlite import DB_FILENAME, SqliteStore
from tests.support.backends import BOTH_BACKENDS, Backend
from tests.support.domain import assert_same_index

SQLITE = Backend("sqlite")  # the store as the server opens it (tests/support/backends.py)

AXIS = np.eye(EMBEDDING_DIM, dtype=np.float32)[0]


def toward(similarity: float, side: int = 1) -> np.ndarray:
    """A unit vector whose cosine similarity to ``AXIS`` is ``similarity``, leaning towards axis ``side``."""
    vector = np.zeros(EMBEDDING_DIM, dtype=np.float64)
    vector[0] = similarity
    vector[side] = np.sqrt(1.0 - similarity**2)
    return vector.astype(np.float32)


def index_of(rows: list[tuple[int, int, np.ndarray]], generation: int = 1) -> SpaceIndex:
    """An index of ``(face_id, person_id, embedding)`` rows."""
    if not rows:
        return SpaceIndex(generation, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, EMBEDDING_DIM)))
    face_ids, person_ids, embeddings = zip(*rows, strict=True)
    return SpaceIndex(generation, np.array(face_ids), np.array(person_ids), np.stack(embeddings))


def ranking(index: SpaceIndex, min_score: float | None = None) -> list[tuple[int, float]]:
    found = index.search(AXIS, min_score=min_score)
    return [(int(p), round(float(s), 5)) for p, s in zip(found.person_ids, found.scores, strict=True)]


# --- SpaceIndex -------------------------------------------------------------------------------------------------------


def test_an_empty_index_finds_no_one() -> None:
    empty = index_of([])
    assert len(empty) == 0 and empty.max_person_id == 0
    assert empty.unique_person_ids.tolist() == []
    for min_score in (None, 0.5):
        found = empty.search(AXIS, min_score=min_score)
        assert found.best is None and len(found.person_ids) == 0 and len(found.scores) == 0


def test_persons_are_ranked_by_cosine_similarity_best_first() -> None:
    index = index_of([(1, 5, toward(0.2)), (2, 2, toward(0.9, 2)), (3, 9, toward(-0.5)), (4, 7, toward(0.6, 3))])
    assert ranking(index) == [(2, 0.9), (7, 0.6), (5, 0.2), (9, -0.5)]
    assert index.search(AXIS).best == (2, pytest.approx(0.9, abs=1e-6))


def test_a_person_scores_its_best_embedding() -> None:
    index = index_of([(1, 4, toward(0.3)), (2, 8, toward(0.9)), (3, 4, toward(0.95, 2)), (4, 4, toward(0.1, 3))])
    assert ranking(index) == [(4, 0.95), (8, 0.9)]


def test_min_score_keeps_the_persons_at_or_above_it() -> None:
    index = index_of([(1, 5, toward(0.2)), (2, 2, toward(0.9)), (3, 9, toward(-0.5)), (4, 7, toward(0.6))])
    assert ranking(index, min_score=0.5) == [(2, 0.9), (7, 0.6)]
    exact = float(index.search(AXIS).scores[1])  # person 7's score as the index computes it
    assert [p for p, _ in ranking(index, min_score=exact)] == [2, 7]


def test_min_score_above_everyone_still_gives_the_best_person() -> None:
    index = index_of([(1, 5, toward(0.2)), (2, 2, toward(0.9)), (3, 7, toward(0.6))])
    assert ranking(index, min_score=0.95) == [(2, 0.9)]


def test_equal_scores_rank_the_lower_person_id_first() -> None:
    same = toward(0.8)
    for rows in ([(1, 6, same), (2, 3, same)], [(1, 3, same), (2, 6, same)]):
        assert [p for p, _ in ranking(index_of(rows))] == [3, 6]
        assert [p for p, _ in ranking(index_of(rows), min_score=0.5)] == [3, 6]


def test_rows_are_kept_sorted_by_person_with_their_face_ids_and_embeddings() -> None:
    rows = [(10, 5, toward(0.1)), (11, 2, toward(0.2)), (12, 5, toward(0.3)), (13, 1, toward(0.4))]
    index = index_of(rows)
    assert index.person_ids.tolist() == [1, 2, 5, 5]
    assert index.face_ids.tolist() == [13, 11, 10, 12]
    for face_id, row in zip(index.face_ids, index.matrix, strict=True):
        assert np.array_equal(row, next(e for f, _, e in rows if f == face_id))
    assert index.unique_person_ids.tolist() == [1, 2, 5]
    assert index.max_person_id == 5 and len(index) == 4


def test_the_ranking_does_not_depend_on_the_order_rows_came_in() -> None:
    rows = [(i, p, toward(s, 1 + i)) for i, (p, s) in enumerate([(3, 0.7), (1, 0.4), (3, 0.1), (8, 0.9), (1, 0.5)])]
    expected = ranking(index_of(rows))
    assert expected == [(8, 0.9), (3, 0.7), (1, 0.5)]
    assert ranking(index_of(rows[::-1])) == expected
    assert ranking(index_of(rows[2:] + rows[:2])) == expected


def delta(
    generation: int,
    added: Iterable[tuple[int, int, np.ndarray]] = (),
    removed: Iterable[int] = (),
    cleared: bool = False,
) -> WriteDelta:
    """A write that moved a space from ``generation`` to the next."""
    step = WriteDelta(SpaceKey(ClientId("c"), 0), generation, generation + 1, cleared=cleared)
    step.added.extend(FaceRow(f, p, e) for f, p, e in added)
    step.removed_face_ids.update(removed)
    return step


BASE = [(1, 4, toward(0.1)), (2, 2, toward(0.2)), (3, 4, toward(0.3))]


def test_apply_gives_the_index_a_fresh_load_would() -> None:
    before = index_of(BASE, generation=1)
    added = [(4, 3, toward(0.4)), (5, 4, toward(0.5))]
    after = before.apply(delta(1, added, removed={1, 2}))
    assert_same_index(after, index_of([BASE[2], *added], generation=2))
    assert_same_index(before, index_of(BASE, generation=1))  # an index never changes


def test_apply_of_a_truncate_keeps_only_what_came_after_it() -> None:
    after = index_of(BASE).apply(delta(1, [(9, 1, toward(0.9))], cleared=True))
    assert_same_index(after, index_of([(9, 1, toward(0.9))], generation=2))
    assert after.max_person_id == 1


def test_a_face_added_and_removed_in_one_write_is_not_kept() -> None:
    after = index_of(BASE).apply(delta(1, [(4, 4, toward(0.4)), (5, 4, toward(0.5))], removed={4}))
    assert_same_index(after, index_of([*BASE, (5, 4, toward(0.5))], generation=2))


# --- IndexCache -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    opened = SQLITE.store(tmp_path_factory.mktemp("index"))
    yield opened
    opened.close()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> SpaceKey:
    """A space of the test's own client in the module's store."""
    return SpaceKey(ClientId(request.node.name), 0)


@pytest.fixture
def loads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[SpaceKey]:
    """Every space loaded from the store while the test runs."""
    seen: list[SpaceKey] = []
    original = store.load_space

    def counting(key: SpaceKey) -> SpaceData:
        seen.append(key)
        return original(key)

    monkeypatch.setattr(store, "load_space", counting)
    return seen


def write(store: Store, key: SpaceKey, *faces: tuple[int, np.ndarray], delete: int | None = None) -> WriteDelta:
    with store.write(key) as writer:
        if delete is not None:
            writer.delete_person(delete)
        for person_id, embedding in faces:
            writer.add_face(person_id, embedding, "set")
    return writer.delta


def fresh(store: Store, key: SpaceKey) -> SpaceIndex:
    return SpaceIndex.from_data(store.load_space(key))


def test_the_cache_loads_a_space_once_while_its_generation_holds(
    store: Store, key: SpaceKey, loads: list[SpaceKey]
) -> None:
    write(store, key, (1, toward(0.5)))
    cache = IndexCache(store)
    first = cache.get(key)
    assert cache.get(key) is first
    assert loads == [key]
    assert ranking(first) == [(1, 0.5)]


def test_an_unwritten_space_is_an_empty_index(store: Store, key: SpaceKey) -> None:
    index = IndexCache(store).get(key)
    assert (len(index), index.generation, index.max_person_id) == (0, 0, 0)


def test_the_cache_follows_its_own_writes_in_memory(store: Store, key: SpaceKey, loads: list[SpaceKey]) -> None:
    cache = IndexCache(store)
    cache.get(key)
    cache.apply(write(store, key, (1, toward(0.5)), (2, toward(0.7))))
    cache.apply(write(store, key, (3, toward(0.9)), delete=1))
    cached = cache.get(key)
    assert loads == [key]
    assert_same_index(cached, fresh(store, key))
    assert ranking(cached) == [(3, 0.9), (2, 0.7)]


def test_the_cache_catches_up_with_a_write_it_was_not_told_of(
    store: Store, key: SpaceKey, loads: list[SpaceKey]
) -> None:
    cache = IndexCache(store)
    cache.get(key)
    write(store, key, (1, toward(0.5)))  # another process's write
    assert ranking(cache.get(key)) == [(1, 0.5)]
    assert loads == [key]
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=1)


def test_a_write_that_does_not_follow_the_cached_generation_is_caught_up_from_the_store(
    store: Store, key: SpaceKey, loads: list[SpaceKey]
) -> None:
    cache = IndexCache(store)
    cache.get(key)
    write(store, key, (1, toward(0.5)))  # not told
    cache.apply(write(store, key, (2, toward(0.7))))  # told, but its old generation is not the cached one
    assert_same_index(cache.get(key), fresh(store, key))
    assert len(loads) == 2  # the first get and this test's fresh load
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=1)


def test_a_write_that_changed_nothing_leaves_the_cache(store: Store, key: SpaceKey, loads: list[SpaceKey]) -> None:
    write(store, key, (1, toward(0.5)))
    cache = IndexCache(store)
    first = cache.get(key)
    unchanged = write(store, key, delete=99)
    assert unchanged.new_generation == unchanged.old_generation
    cache.apply(unchanged)
    assert cache.get(key) is first
    assert loads == [key]


def test_spaces_are_cached_apart(store: Store, key: SpaceKey) -> None:
    other = SpaceKey(key.client, 1)
    write(store, key, (1, toward(0.5)))
    write(store, other, (2, toward(0.7)))
    cache = IndexCache(store)
    assert ranking(cache.get(key)) == [(1, 0.5)]
    assert ranking(cache.get(other)) == [(2, 0.7)]
    cache.apply(write(store, key, delete=1))
    assert len(cache.get(key)) == 0 and ranking(cache.get(other)) == [(2, 0.7)]


def test_a_fresh_index_of_the_store_matches_what_was_written(store: Store, key: SpaceKey) -> None:
    write(store, key, (5, toward(0.5)), (2, toward(0.2)), (5, toward(0.8, 2)))
    index = fresh(store, key)
    assert index.person_ids.tolist() == [2, 5, 5]
    assert ranking(index) == [(5, 0.8), (2, 0.2)]
    assert index.generation == store.generation(key) == 1


# --- catch-up: another process's writes, read from the store's change log ---------------------------------------------


@pytest.fixture
def stores(backend: Backend, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one record, as two processes hold them: the first keeps 1,000 generations of changes, the second
    (the writer of the "too old" tests) 2."""
    shared = backend.settings()
    first = backend.store(tmp_path, shared)
    second = backend.store(tmp_path, {**shared, "change_log_size": 2})
    yield first, second
    second.close()
    first.close()


def followed(cache: IndexCache, store: Store, key: SpaceKey) -> SpaceIndex:
    """The cache's index of ``key``, checked against a fresh load of the store."""
    index = cache.get(key)
    assert_same_index(index, fresh(store, key))
    assert index.digest() == fresh(store, key).digest()
    return index


@BOTH_BACKENDS
def test_faces_added_elsewhere_are_caught_up_without_a_load(stores: tuple[Store, Store], key: SpaceKey) -> None:
    store, _ = stores
    write(store, key, (1, toward(0.5)))
    cache = IndexCache(store)
    cache.get(key)
    write(store, key, (2, toward(0.7)), (1, toward(0.6, 2)))
    write(store, key, (3, toward(0.9)))
    assert ranking(followed(cache, store, key)) == [(3, 0.9), (2, 0.7), (1, 0.6)]
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=1)


@BOTH_BACKENDS
def test_persons_deleted_elsewhere_are_caught_up(stores: tuple[Store, Store], key: SpaceKey) -> None:
    store, _ = stores
    write(store, key, (1, toward(0.5)), (2, toward(0.7)), (1, toward(0.8, 2)))
    cache = IndexCache(store)
    cache.get(key)
    write(store, key, delete=1)
    assert ranking(followed(cache, store, key)) == [(2, 0.7)]
    write(store, key, (1, toward(0.3)))  # the id comes back with a new face: only that one
    assert ranking(followed(cache, store, key)) == [(2, 0.7), (1, 0.3)]
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=2)


@BOTH_BACKENDS
def test_learned_embeddings_replaced_elsewhere_are_caught_up(stores: tuple[Store, Store], key: SpaceKey) -> None:
    store, _ = stores
    with store.write(key) as writer:
        writer.add_face(1, toward(0.2), "set")
        writer.add_face(1, toward(0.4), "learned")
    cache = IndexCache(store)
    cache.get(key)
    with store.write(key) as writer:  # a recognize that learns, with one learned embedding per person
        writer.add_face(1, toward(0.6), "learned")
        assert writer.trim_learned(1, 1) == 1
    index = followed(cache, store, key)
    assert ranking(index) == [(1, 0.6)] and len(index) == 2
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=1)


@BOTH_BACKENDS
def test_a_face_added_and_removed_elsewhere_since_is_in_neither_list(
    stores: tuple[Store, Store], key: SpaceKey
) -> None:
    store, _ = stores
    write(store, key, (1, toward(0.5)))
    cache = IndexCache(store)
    held = cache.get(key)
    write(store, key, (2, toward(0.7)))
    write(store, key, (3, toward(0.9)), delete=2)
    changes = store.changes_since(key, held.generation, held.max_face_id)
    assert changes is not None and changes.generation == 3
    assert changes.added.person_ids.tolist() == [3]
    assert len(changes.removed_face_ids) == 1 and changes.removed_face_ids[0] > held.max_face_id
    assert ranking(followed(cache, store, key)) == [(3, 0.9), (1, 0.5)]


@BOTH_BACKENDS
def test_alias_pairs_recorded_elsewhere_move_the_generation_only(stores: tuple[Store, Store], key: SpaceKey) -> None:
    store, _ = stores
    write(store, key, (1, toward(0.5)), (2, toward(0.7)))
    cache = IndexCache(store)
    held = cache.get(key)
    with store.write(key) as writer:
        assert writer.record_alias_pairs(2, [1])
    changes = store.changes_since(key, held.generation, held.max_face_id)
    assert changes is not None
    assert (changes.generation, changes.alias_pairs, len(changes.added.face_ids)) == (2, ((1, 2),), 0)
    index = followed(cache, store, key)
    assert index.generation == 2 and index.digest() == held.digest()
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=1)


@BOTH_BACKENDS
def test_a_truncate_elsewhere_makes_the_space_load_whole(stores: tuple[Store, Store], key: SpaceKey) -> None:
    store, _ = stores
    write(store, key, (1, toward(0.5)))
    cache = IndexCache(store)
    held = cache.get(key)
    with store.write(key) as writer:  # as a snapshot restore does: empty, then fill
        writer.truncate()
        writer.add_face(2, toward(0.7), "imported")
    assert store.changes_since(key, held.generation, held.max_face_id) is None
    assert ranking(followed(cache, store, key)) == [(2, 0.7)]
    assert cache.counts(key) == FollowCounts(loads=2, catch_ups=0)
    write(store, key, (3, toward(0.9)))  # after the truncate, the log serves again
    assert ranking(followed(cache, store, key)) == [(3, 0.9), (2, 0.7)]
    assert cache.counts(key) == FollowCounts(loads=2, catch_ups=1)


@BOTH_BACKENDS
def test_an_index_further_behind_than_the_log_reaches_loads_the_space_whole(
    stores: tuple[Store, Store], key: SpaceKey
) -> None:
    store, short_log = stores  # short_log keeps the changes of the last 2 generations
    write(short_log, key, (1, toward(0.5)), (2, toward(0.6)))
    cache = IndexCache(store)
    cache.get(key)
    write(short_log, key, delete=1)
    write(short_log, key, (3, toward(0.7)))
    held = followed(cache, store, key)
    assert ranking(held) == [(3, 0.7), (2, 0.6)]  # 2 behind: caught up
    assert cache.counts(key) == FollowCounts(loads=1, catch_ups=1)
    for person_id in (4, 5, 6):
        write(short_log, key, (person_id, toward(0.1 * person_id)))
    assert store.changes_since(key, held.generation, held.max_face_id) is None
    assert ranking(followed(cache, store, key)) == [(3, 0.7), (2, 0.6), (6, 0.6), (5, 0.5), (4, 0.4)]
    assert cache.counts(key) == FollowCounts(loads=2, catch_ups=1)


@BOTH_BACKENDS
def test_the_change_log_stays_bounded(stores: tuple[Store, Store], key: SpaceKey) -> None:
    _, short_log = stores
    for person_id in range(1, 8):
        write(short_log, key, (person_id, toward(0.5)))
        write(short_log, key, delete=person_id)
    generation = short_log.generation(key)
    assert short_log.changes_since(key, generation - 3, 0) is None
    kept = short_log.changes_since(key, generation - 2, 0)
    assert kept is not None and len(kept.removed_face_ids) == 1  # the last delete; the add before it is pruned
    assert count_log_rows(short_log, key) == 1


def count_log_rows(store: Store, key: SpaceKey) -> int:
    """Rows of the space in the store's change log (both SQL stores read through ``_select``)."""
    assert isinstance(store, SqlInventory)
    rows = store._select("SELECT COUNT(*) FROM space_changes WHERE client = ? AND space = ?", (key.client, key.space))
    return int(rows[0][0])


# --- changes applied on top of a base: the same rows and the same ranking as an index built whole ---------------------


@pytest.mark.parametrize("tail_limit", [3, 2048])
def test_changes_applied_in_place_rank_exactly_as_an_index_built_whole(
    tail_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seeded random run of adds (new and known persons), removals of faces and of whole persons and truncates;
    with a tail limit of 3 the index is also rebuilt whole now and then."""
    monkeypatch.setattr(index_module, "TAIL_LIMIT", tail_limit)
    rng = np.random.default_rng(7)
    rows: dict[int, tuple[int, np.ndarray]] = {}  # face id -> (person id, embedding): what a fresh load would hold
    next_face = 1

    def embedding() -> np.ndarray:
        vector = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
        return vector / np.linalg.norm(vector)

    for _ in range(40):
        rows[next_face] = (int(rng.integers(1, 15)), embedding())
        next_face += 1
    index = index_of([(f, p, e) for f, (p, e) in rows.items()])
    queries = [embedding() for _ in range(4)] + [rows[3][1]]
    for generation in range(1, 120):
        step = WriteDelta(SpaceKey(ClientId("c"), 0), generation, generation + 1)
        roll = rng.random()
        if roll < 0.03:
            step.cleared = True
            rows.clear()
        elif roll < 0.2 and rows:  # a whole person goes
            person = int(rng.choice([p for p, _ in rows.values()]))
            step.removed_face_ids.update(f for f, (p, _) in rows.items() if p == person)
        elif roll < 0.45 and rows:  # some faces go
            step.removed_face_ids.update(int(f) for f in rng.choice(list(rows), size=min(2, len(rows)), replace=False))
        for face_id in step.removed_face_ids:
            rows.pop(face_id, None)
        for _ in range(int(rng.integers(0, 3))):
            person = int(rng.integers(1, 20))
            step.added.append(FaceRow(next_face, person, embedding()))
            rows[next_face] = (person, step.added[-1].embedding)
            next_face += 1
        index = index.apply(step)
        whole = index_of([(f, p, e) for f, (p, e) in sorted(rows.items())], generation=generation + 1)
        assert_same_index(index, whole)
        assert len(index) == len(whole) and index.max_person_id == whole.max_person_id
        assert index.digest() == whole.digest()
        for query in queries:
            for min_score in (None, 0.1):
                got, want = index.search(query, min_score), whole.search(query, min_score)
                assert got.person_ids.tolist() == want.person_ids.tolist()
                assert np.array_equal(got.scores, want.scores)


def test_the_catch_up_read_is_one_statement(tmp_path: Path) -> None:
    store = SQLITE.store(tmp_path)
    try:
        key = SpaceKey(ClientId("c"), 0)
        write(store, key, (1, toward(0.5)), (2, toward(0.6)))
        write(store, key, (3, toward(0.7)), delete=1)
        assert isinstance(store, SqliteStore)
        statements: list[str] = []
        store._conn().set_trace_callback(statements.append)
        changes = store.changes_since(key, 1, 2)
        store._conn().set_trace_callback(None)
        assert changes is not None and changes.added.person_ids.tolist() == [3] and len(changes.removed_face_ids) == 1
        assert len(statements) == 1, statements
    finally:
        store.close()


def test_a_record_of_the_first_schema_gets_the_change_log_and_loads_whole_once(tmp_path: Path) -> None:
    """Writes made before the log existed are not in it: an index of that time cannot catch up across them."""
    with closing(sqlite3.connect(tmp_path / DB_FILENAME)) as conn:
        conn.executescript(sqlite_store._MIGRATIONS[0])
        conn.execute("INSERT INTO spaces (client, space, generation) VALUES ('c', 0, 5)")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    store = SQLITE.store(tmp_path)
    try:
        key = SpaceKey(ClientId("c"), 0)
        assert store.changes_since(key, 4, 0) is None
        assert store.changes_since(key, 5, 0) is not None
        write(store, key, (1, toward(0.5)))
        caught = store.changes_since(key, 5, 0)
        assert caught is not None and caught.generation == 6 and caught.added.person_ids.tolist() == [1]
    finally:
        store.close()
