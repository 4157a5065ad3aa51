"""The four persons operations over the engine, the index and the store.

Where the emulator knowingly differs from the real service, it says so here:

* Matching: a face matches the person whose best stored embedding has the highest
  cosine similarity, if that is at or above ``match_threshold``. Other persons at or
  above the threshold are its ``aliases``, best first.
* ``create_new``: the new person's id is one more than the largest id in the space (so
  after deleting the largest person, its id is given again; truncate restarts at 1).
* ``update_embedding`` (the real service's rule is not documented): a matched face is
  stored as a *learned* embedding of that person, unless it is a near-duplicate
  (cosine >= ``NEAR_DUPLICATE``) of what the person already has. A person keeps at most
  ``learned_per_person`` learned embeddings, the oldest replaced first; photos from
  ``set`` are never replaced. Learning therefore only ever adds ways to match a person.
* ``aliases_changed`` is true when recognize reported a pair of persons as aliases that
  had not been reported as aliases before in that space (pairs are forgotten when either
  person is deleted, and on truncate).
* ``similarity`` for ``undefined`` is the best candidate's cosine similarity (0 in an
  empty space), clipped to 0..1.
* When the store cannot write (the disk is full, say), a recognize without ``create_new``
  still answers its matches against what is stored: what it would have learned and the
  alias pairs it would have recorded are dropped (so ``aliases_changed`` is false), and the
  failure is reported to ``on_store_failure`` (health shows it). A ``create_new`` recognize,
  whose new person ids must be stored, fails with the internal error, as set, delete and
  truncate do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from emulator.face.cache import FaceCache, image_key
from emulator.face.decode import ImageError
from emulator.face.engine import Face, FaceEngine
from emulator.face.parallel_scan import available_cores
from emulator.face.pool import AnalyzePool
from emulator.face.thumbnail import face_thumbnail
from emulator.ops.timing import bind, count, timed
from emulator.persons import errors
from emulator.persons.attributes import person_attributes
from emulator.persons.errors import ObjectError
from emulator.persons.index import IndexCache, SpaceIndex
from emulator.persons.limits import ImageLimits, refusal
from emulator.persons.types import (
    ClientId,
    DeleteRequest,
    ImageInput,
    ObjectResult,
    PersonResult,
    RecognizeRequest,
    RecognizeResult,
    SetRequest,
    SpaceKey,
    TruncateRequest,
    face_meta,
)
from emulator.settings import Settings
from emulator.store.records import FaceRow, SpaceWriter, Store, StoreError, WriteDelta

NEAR_DUPLICATE = 0.985
UNDEFINED = "undefined"

log = logging.getLogger("emulator.persons")


def tag(person_id: int) -> str:
    return f"person{person_id}"


@dataclass(frozen=True)
class Analysis:
    """An image after detection: its faces, or the error for its object."""

    image: ImageInput
    faces: tuple[Face, ...] = ()
    error: ObjectError | None = None


class PersonsService:
    """set, recognize, delete and truncate. Methods are blocking: call them off the event loop."""

    def __init__(
        self,
        engine: FaceEngine,
        store: Store,
        settings: Callable[[], Settings],
        on_store_failure: Callable[[StoreError], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self._on_store_failure = on_store_failure
        self.index = IndexCache(store)
        self._settings = settings
        workers = self.settings.analyze_workers or available_cores()  # the cores this process may run on
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyze")
        # Processes for many-image requests, when the engine can be rebuilt in a worker (the real one can).
        options = getattr(engine, "options", None)
        self._engine_options: dict[str, object] = dict(options()) if callable(options) else {}
        self.processes = AnalyzePool(workers, self._engine_options) if workers > 1 and callable(options) else None
        self.cache = FaceCache(self.settings.cache_size)
        self._cache_scope = tuple(sorted(self._engine_options.items())) or repr(engine)

    @property
    def settings(self) -> Settings:
        return self._settings()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.processes is not None:
            self.processes.close()

    # --- images ------------------------------------------------------------------------

    def _refused(self, image: ImageInput) -> Analysis | None:
        """The error for an image refused by the live limits (before any cache or worker sees it), else None."""
        # The limits may change at run time: checked here, the pixel bounds from the header only.
        refused = refusal(image.data, image.size, ImageLimits.from_settings(self.settings))
        return None if refused is None else Analysis(image, error=ObjectError(refused))

    def _analyze_one(self, image: ImageInput, attributes: bool = False) -> Analysis:
        refused = self._refused(image)
        if refused is not None or image.data is None:
            return refused or Analysis(image)
        try:
            # Only asked for when needed: an engine (or a test's fake) without attributes keeps its signature.
            faces = self.engine.analyze(image.data, attributes=True) if attributes else self.engine.analyze(image.data)
            return Analysis(image, faces=tuple(faces))
        except ImageError as exc:
            return Analysis(image, error=ObjectError(exc.message))

    def analyze(self, images: Sequence[ImageInput], attributes: bool = False) -> list[Analysis]:
        """Detect and embed the faces of every image: from the cache, else spread over the cores.

        Images not in the cache are analysed in this thread when there is one, in the worker processes when
        there are several (``analyze_workers`` > 1 and a real engine), else in a thread pool. With
        ``attributes`` (``searcher: 1``), the faces also carry their sex, age and expression estimates: a cached
        analysis without them counts as a miss, and the new one, with them, replaces it (it serves both).
        """
        cache = self.cache
        if cache.capacity != self.settings.cache_size:  # a live setting
            cache.resize(self.settings.cache_size)
        analyses: list[Analysis | None] = [None] * len(images)
        keys: list[object] = [None] * len(images)
        todo: list[int] = []
        for i, image in enumerate(images):
            refused = self._refused(image)
            if refused is not None:
                analyses[i] = refused
                continue
            if image.sha256 is not None and cache.capacity:
                keys[i] = image_key(image.sha256, self._cache_scope)
                faces = cache.get(keys[i])
                if faces is not None and (not attributes or all(f.attributes is not None for f in faces)):
                    analyses[i] = Analysis(image, faces=faces)
                    count("cache_hits")
                    continue
            todo.append(i)
        for i, analysis in zip(todo, self._analyze_uncached([images[i] for i in todo], attributes), strict=True):
            analyses[i] = analysis
            if keys[i] is not None and analysis.error is None:
                cache.put(keys[i], analysis.faces)
        done = [a for a in analyses if a is not None]
        count("faces", sum(len(a.faces) for a in done))
        return done

    def _analyze_uncached(self, images: list[ImageInput], attributes: bool) -> list[Analysis]:
        if len(images) <= 1 or self._workers <= 1:
            return [self._analyze_one(image, attributes) for image in images]
        if self.processes is None:  # bind: the worker threads record their phases into this request's timings
            return list(self._pool.map(bind(self._analyze_one), images, [attributes] * len(images)))
        with timed("analyze_processes"):  # wall time; the workers send their own phases back (merged)
            # analyze() refused no-data
            outcomes = self.processes.analyze([image.data or b"" for image in images], attributes=attributes)
        return [
            Analysis(image, error=ObjectError(outcome.message))
            if isinstance(outcome, ImageError)
            else Analysis(image, faces=outcome)
            for image, outcome in zip(images, outcomes, strict=True)
        ]

    # --- set ---------------------------------------------------------------------------

    def set(self, client: ClientId, request: SetRequest) -> list[ObjectResult]:
        key = SpaceKey(client, request.space)
        analyses = self.analyze(request.images)
        thumbnails = [_thumbnail(a) if len(a.faces) == 1 else None for a in analyses]  # outside the write lock
        results: list[ObjectResult] = []
        with self.store.write(key) as writer:
            count = writer.count_faces()
            limit = self.settings.max_faces_per_space
            for analysis, thumbnail in zip(analyses, thumbnails, strict=True):
                name = analysis.image.name
                if analysis.error is not None:
                    results.append(ObjectResult(name, analysis.error.status, analysis.error.message))
                elif len(analysis.faces) != 1:
                    results.append(ObjectResult(name, 1, errors.ONE_FACE_REQUIRED))
                elif count >= limit:
                    results.append(ObjectResult(name, 1, errors.space_full(limit)))
                else:
                    face = analysis.faces[0]
                    person_id = analysis.image.person_id
                    assert person_id is not None
                    writer.add_face(
                        person_id, face.embedding, "set", face_meta(analysis.image, face), thumbnail=thumbnail
                    )
                    count += 1
                    results.append(ObjectResult(name))
        self.index.apply(writer.delta)
        return results

    # --- recognize ---------------------------------------------------------------------

    def recognize(self, client: ClientId, request: RecognizeRequest) -> RecognizeResult:
        key = SpaceKey(client, request.space)
        # searcher 1 with the models: the faces' attributes are estimated with their descriptors.
        attributes = request.searcher == 1 and self.settings.attributes == "model"
        analyses = self.analyze(request.images, attributes)
        may_write = request.create_new or request.update_embedding
        if not may_write:
            matcher = _Matcher(self, self.index.get(key), None, request)
            with timed("match"):
                return RecognizeResult(tuple(matcher.run(analyses)), False)
        try:
            with self.store.write(key) as writer:
                # Inside the write transaction the index is current, and stays ours until commit:
                # two requests can never hand out the same new id, nor create one face twice.
                matcher = _Matcher(self, self.index.get(key, writer.generation), writer, request)
                with timed("match"):
                    objects = tuple(matcher.run(analyses))
        except StoreError as exc:
            if request.create_new:  # a new person's id means nothing unless it is stored
                raise
            # Learning and alias pairs are side effects: the matches against what is stored stand without them.
            log.warning("recognize answered without storing what it learned: %s", exc)
            if self._on_store_failure is not None:
                self._on_store_failure(exc)
            matcher = _Matcher(self, self.index.get(key), None, request)
            with timed("match"):
                return RecognizeResult(tuple(matcher.run(analyses)), False)
        self.index.apply(writer.delta)
        return RecognizeResult(objects, writer.aliases_changed)

    # --- delete, truncate --------------------------------------------------------------

    def delete(self, client: ClientId, request: DeleteRequest) -> list[ObjectResult]:
        key = SpaceKey(client, request.space)
        with self.store.write(key) as writer:
            for _, person_id in request.entries:
                writer.delete_person(person_id)
        self.index.apply(writer.delta)
        return [ObjectResult(name) for name, _ in request.entries]

    def truncate(self, client: ClientId, request: TruncateRequest) -> None:
        key = SpaceKey(client, request.space)
        with self.store.write(key) as writer:
            writer.truncate()
        self.index.apply(writer.delta)


def _thumbnail(analysis: Analysis) -> bytes | None:
    """The demo page's crop of the only face of a photo given to set."""
    return face_thumbnail(analysis.image.data or b"", analysis.faces[0].box)


class _Matcher:
    """Matches the faces of one recognize request, in order, against a running index."""

    def __init__(
        self, service: PersonsService, index: SpaceIndex, writer: SpaceWriter | None, request: RecognizeRequest
    ) -> None:
        self.service = service
        self.settings = service.settings
        self.index = index
        self.writer = writer
        self.request = request

    def run(self, analyses: Sequence[Analysis]) -> list[ObjectResult]:
        results = []
        for analysis in analyses:
            name = analysis.image.name
            if analysis.error is not None:
                results.append(ObjectResult(name, analysis.error.status, analysis.error.message))
                continue
            try:
                persons = tuple(self.match(analysis.image, face) for face in analysis.faces)
            except ObjectError as exc:
                results.append(ObjectResult(name, exc.status, exc.message))
                continue
            results.append(ObjectResult(name, persons=persons or None))
        return results

    def _add(self, person_id: int, face: Face, kind: str, image: ImageInput) -> None:
        writer = self.writer
        assert writer is not None
        # A new person gets a thumbnail for the demo page; learned faces do not need one.
        thumbnail = face_thumbnail(image.data or b"", face.box) if kind == "created" else None
        face_id = writer.add_face(person_id, face.embedding, kind, face_meta(image, face), thumbnail)
        step = WriteDelta(writer.key, self.index.generation, self.index.generation)
        step.added.append(FaceRow(face_id, person_id, face.embedding))
        if kind == "learned":
            step.removed_face_ids.update(
                self._removed_by(lambda: writer.trim_learned(person_id, self.settings.learned_per_person))
            )
        self.index = self.index.apply(step)

    def _removed_by(self, operation: Callable[[], int]) -> set[int]:
        assert self.writer is not None
        before = set(self.writer.delta.removed_face_ids)
        operation()
        return self.writer.delta.removed_face_ids - before

    def match(self, image: ImageInput, face: Face) -> PersonResult:
        threshold = self.settings.match_threshold
        candidates = self.index.search(face.embedding, min_score=threshold)
        above = candidates.scores >= threshold
        best = candidates.best
        if best is not None and above[0]:
            person_id, score = best
            alias_ids = [int(p) for p in candidates.person_ids[1:][above[1:]]]
            if self.writer is not None:
                if alias_ids:
                    self.writer.record_alias_pairs(person_id, alias_ids)
                if (
                    self.request.update_embedding
                    and score < NEAR_DUPLICATE
                    and self.settings.learned_per_person > 0
                    and len(self.index) < self.settings.max_faces_per_space
                ):
                    self._add(person_id, face, "learned", image)
            return self._result(face, tag(person_id), score, tuple(tag(a) for a in alias_ids))
        if self.request.create_new:
            limit = self.settings.max_faces_per_space
            if len(self.index) >= limit:
                raise ObjectError(errors.space_full(limit))
            new_id = self.index.max_person_id + 1
            self._add(new_id, face, "created", image)
            return self._result(face, tag(new_id), 1.0, ())
        return self._result(face, UNDEFINED, best[1] if best else 0.0, ())

    def _result(self, face: Face, person_tag: str, similarity: float, aliases: tuple[str, ...]) -> PersonResult:
        attributes = (
            person_attributes(self.settings.attributes, face.embedding, face.landmarks, face.box, face.attributes)
            if self.request.searcher == 1
            else None
        )
        return PersonResult(
            tag=person_tag,
            coord=face.box,
            confidence=face.confidence,
            awesomeness=face.awesomeness,
            similarity=float(np.clip(similarity, 0.0, 1.0)),
            aliases=aliases,
            attributes=attributes,
        )
