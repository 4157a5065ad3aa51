"""Seeding: load persons from a directory of photos, or from a snapshot file.

Directory layout (``client`` defaults to ``default``; a client directory's name must not be
a number, so that it cannot be taken for a space)::

    DIR/<space>/<person_id>/*.jpg|jpeg|png
    DIR/<client>/<space>/<person_id>/*.jpg|jpeg|png

Each photo must show exactly one face; it is stored as ``set`` would store it. Photos with
no face or several faces, unreadable files, photos past the image bounds of ``set``
(``SMARTY_MAX_IMAGE_BYTES`` checked from the file's size, the pixel bounds from the image
header, so a decompression bomb is never read whole nor decoded) and photos that do not fit
the space are reported by name, and seeding goes on. A snapshot file is read within the
snapshot bounds (see :mod:`emulator.control.snapshot`). Seeding is idempotent: a photo whose SHA-256 the
person already holds is skipped without running the face engine, and the check is repeated
inside the write transaction, so two processes seeding at once still store a photo once.
A snapshot file is imported in ``merge`` mode, which skips faces already stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from emulator.control import snapshot
from emulator.face.decode import ImageError
from emulator.face.engine import FaceEngine
from emulator.face.thumbnail import face_thumbnail
from emulator.persons import errors
from emulator.persons.limits import ImageLimits, refusal
from emulator.persons.types import DEFAULT_CLIENT, MAX_SPACE, ClientId, ImageInput, SpaceKey, face_meta
from emulator.settings import Settings
from emulator.store.records import OnWrite, Store

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
SEED_LOCK = "seed"  # the store's lock of that name: with several workers or replicas, one seeds at a time

log = logging.getLogger("emulator.seed")


@dataclass(frozen=True)
class SeedLimits:
    """The bounds of seeding: those of an image given to ``set``, and of a snapshot."""

    image: ImageLimits
    snapshot: snapshot.SnapshotLimits

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SeedLimits:
        """From ``settings`` (default: the settings' defaults)."""
        settings = settings or Settings.from_sources({})
        return cls(ImageLimits.from_settings(settings), snapshot.SnapshotLimits.from_settings(settings))


@dataclass(frozen=True)
class SeedPhoto:
    key: SpaceKey
    person_id: int
    path: Path
    name: str  # the path relative to the seed directory, for reports


@dataclass
class SeedReport:
    """What a seeding did. ``problems`` name every photo that was not stored, and why."""

    added: int = 0
    already_there: int = 0
    problems: list[str] = field(default_factory=list)
    persons: set[tuple[str, int, int]] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"{self.added} photo(s) added, {self.already_there} already there, {len(self.problems)} skipped,"
            f" {len(self.persons)} person(s)"
        )


def find_photos(root: Path) -> tuple[list[SeedPhoto], list[str]]:
    """The photos under ``root`` in the seed layout, and the entries that do not fit it."""
    photos: list[SeedPhoto] = []
    problems: list[str] = []
    if not root.is_dir():
        raise FileNotFoundError(f"seed directory {root} does not exist")
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            continue  # a README or a snapshot next to the photos
        if entry.name.isdigit():
            _space_dir(root, entry, DEFAULT_CLIENT, photos, problems)
        else:
            for space_dir in sorted(entry.iterdir()):
                if space_dir.is_dir() and not space_dir.name.startswith("."):
                    _space_dir(root, space_dir, ClientId(entry.name), photos, problems)
    return photos, problems


def _space_dir(root: Path, directory: Path, client: ClientId, photos: list[SeedPhoto], problems: list[str]) -> None:
    relative = directory.relative_to(root).as_posix()
    if not directory.name.isdigit() or not 0 <= int(directory.name) <= MAX_SPACE:
        problems.append(f"{relative}: not a space (0..{MAX_SPACE})")
        return
    key = SpaceKey(client, int(directory.name))
    for person_dir in sorted(directory.iterdir()):
        if person_dir.name.startswith("."):
            continue
        person_relative = person_dir.relative_to(root).as_posix()
        if not person_dir.is_dir():
            continue
        if not person_dir.name.isdigit() or int(person_dir.name) <= 0:
            problems.append(f"{person_relative}: not a person id (a positive whole number)")
            continue
        for photo in sorted(person_dir.iterdir()):
            if photo.is_file() and photo.suffix.lower() in IMAGE_SUFFIXES:
                photos.append(SeedPhoto(key, int(person_dir.name), photo, photo.relative_to(root).as_posix()))


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total > 0 and self.stream.isatty()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\rseeding [{bar}] {self.done}/{self.total} photos")
            self.stream.flush()

    def say(self, line: str) -> None:
        """Print a line (a problem) without breaking the bar."""
        if self.enabled:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def seed_directory(
    store: Store,
    engine: FaceEngine,
    root: Path,
    *,
    max_faces_per_space: int,
    on_write: OnWrite | None = None,
    stream: TextIO | None = None,
    limits: SeedLimits | None = None,
) -> SeedReport:
    """Store every photo under ``root`` that is not stored yet (see the module docstring)."""
    limits = limits or SeedLimits.from_settings()
    photos, problems = find_photos(Path(root))
    report = SeedReport()
    progress = Progress(len(photos), stream)
    for problem in problems:
        report.problems.append(problem)
        progress.say(f"seed: skipped {problem}")
    known: dict[SpaceKey, dict[int, set[str]]] = {}
    for photo in photos:
        if photo.key not in known:
            known[photo.key] = store.person_sha256s(photo.key)
        stored = known[photo.key]
        failure = _seed_one(store, engine, photo, stored, max_faces_per_space, on_write, report, limits)
        if failure:
            report.problems.append(f"{photo.name}: {failure}")
            progress.say(f"seed: skipped {photo.name}: {failure}")
        progress.step()
    progress.finish()
    return report


def _seed_one(
    store: Store,
    engine: FaceEngine,
    photo: SeedPhoto,
    stored: dict[int, set[str]],
    max_faces_per_space: int,
    on_write: OnWrite | None,
    report: SeedReport,
    limits: SeedLimits,
) -> str | None:
    """Store one photo; return why it was not stored (``None`` if it was, or already was)."""
    try:
        size = photo.path.stat().st_size
        data = photo.path.read_bytes() if size <= limits.image.max_bytes else None  # past the bound: never read
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if data is None:
        return refusal(None, size, limits.image)  # the same bound and words as set's
    digest = hashlib.sha256(data).hexdigest()
    person = (photo.key.client, photo.key.space, photo.person_id)
    if digest in stored.get(photo.person_id, set()):
        report.already_there += 1
        report.persons.add(person)
        return None
    refused = refusal(data, size, limits.image)  # from the header alone: a 200-megapixel PNG is never decoded
    if refused is not None:
        return refused
    try:
        faces = engine.analyze(data)
    except ImageError as exc:
        return exc.message
    if len(faces) != 1:
        return "no face found" if not faces else f"{len(faces)} faces found, a seed photo needs exactly one"
    face = faces[0]
    thumbnail = face_thumbnail(data, face.box)
    with store.write(photo.key) as writer:
        if digest in writer.person_sha256s(photo.person_id):  # another process seeded it meanwhile
            added = False
        elif writer.count_faces() >= max_faces_per_space:
            return errors.space_full(max_faces_per_space)
        else:
            image = ImageInput(photo.path.name, data, len(data), photo.person_id, digest)
            writer.add_face(photo.person_id, face.embedding, "set", face_meta(image, face), thumbnail)
            added = True
    if on_write is not None:
        on_write(writer.delta)
    stored.setdefault(photo.person_id, set()).add(digest)
    report.persons.add(person)
    if added:
        report.added += 1
    else:
        report.already_there += 1
    return None


@dataclass
class SeedOutcome:
    """What ``seed`` did, for either kind of source."""

    source: Path
    directory: SeedReport | None = None
    imported: snapshot.ImportReport | None = None

    def summary(self) -> str:
        if self.directory is not None:
            return self.directory.summary()
        assert self.imported is not None
        return (
            f"snapshot merged: {self.imported.faces_added} face(s) added,"
            f" {self.imported.faces_skipped} already there, {self.imported.spaces} space(s)"
        )


def seed(
    store: Store,
    engine: FaceEngine,
    source: Path,
    *,
    max_faces_per_space: int,
    limits: SeedLimits,
    on_write: OnWrite | None = None,
) -> SeedOutcome:
    """Seed from a directory of photos or a snapshot file (merged), within ``limits``."""
    source = Path(source)
    if source.is_dir():
        report = seed_directory(
            store, engine, source, max_faces_per_space=max_faces_per_space, on_write=on_write, limits=limits
        )
        return SeedOutcome(source, directory=report)
    if not source.is_file():
        raise FileNotFoundError(f"seed source {source} is neither a directory nor a snapshot file")
    with open(source, "rb") as handle:
        loaded = snapshot.loads(snapshot.read_file(handle, limits.snapshot), limits.snapshot)
    imported = snapshot.restore(store, loaded, "merge", max_faces_per_space=max_faces_per_space, on_write=on_write)
    return SeedOutcome(source, imported=imported)


def seed_at_startup(
    store: Store,
    engine: FaceEngine,
    source: Path,
    *,
    max_faces_per_space: int,
    on_write: OnWrite | None,
    limits: SeedLimits,
) -> SeedOutcome:
    """``SMARTY_SEED``: seed before the server reports ready. With several workers (or replicas sharing a
    database), the first one seeds and the others, waiting on the store's ``seed`` lock, find everything there."""
    with store.exclusive(SEED_LOCK):
        outcome = seed(store, engine, source, max_faces_per_space=max_faces_per_space, on_write=on_write, limits=limits)
    log.info("seed %s (pid %d): %s", source.name, os.getpid(), outcome.summary())
    return outcome
