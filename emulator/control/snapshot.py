"""Snapshots: a space, a client or everything in one portable file, and back.

The file is JSON (gzip-compressed when its name ends in ``.gz``; reading detects it):

.. code-block:: json

    {"format": "smarty-emulator-snapshot", "version": 1, "created_at": 1767225600.0,
     "embedding": {"dim": 128, "dtype": "float32-le", "encoding": "base64"},
     "scope": {"client": "default", "space": 0},
     "spaces": [{"client": "default", "space": 0, "next_person_id": 3,
                 "persons": [1, 2],
                 "faces": [{"person_id": 1, "kind": "set", "created_at": 1767225500.0,
                            "meta": {"name": "file", "sha256": "...", "coord": [1, 2, 3, 4]},
                            "embedding": "<base64 of 128 little-endian float32>", "thumbnail": null}],
                 "alias_pairs": [[1, 2]]}]}

Embeddings are stored bit for bit, so recognition after an import gives the same results as
before the export, on any machine. ``next_person_id`` is the id ``create_new`` hands out
next; the emulator derives it from the largest person id of the space, so importing the
persons restores it.

Bounds (:class:`SnapshotLimits`, from ``SMARTY_MAX_SNAPSHOT_BYTES`` and ``SMARTY_MAX_SNAPSHOT_FACES``): a snapshot
is refused with :class:`SnapshotTooLarge`, before anything is parsed, when its file or upload is larger than the
byte bound (counted while it is read), when it inflates past it (a first pass inflates in small chunks and keeps
nothing, so a gzip bomb costs no memory), or when its JSON holds more values than the face bound allows (commas,
objects and arrays are counted in the bytes: at most :data:`VALUES_PER_FACE` per face). Parsing what passes takes
at most about three times the byte bound.

Import modes: ``replace`` empties every space in the snapshot's scope (a space, a client, or
everything) and loads the snapshot's spaces; ``merge`` adds the snapshot's faces to what is
there, skipping a face its person already holds (so merging twice changes nothing). Each
space is written in one transaction, which bumps its generation: every worker process sees
the import on its next request.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import json
import math
import os
import stat
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from emulator.control import admin
from emulator.persons.types import MAX_SPACE, ClientId, SpaceKey, space_out_of_range
from emulator.settings import SETTINGS_BY_NAME, Settings
from emulator.store.records import EMBEDDING_DIM, OnWrite, Store

FORMAT = "smarty-emulator-snapshot"
VERSION = 1
MODES = ("replace", "merge")
_EMBEDDING_BYTES = EMBEDDING_DIM * 4
_KINDS = ("set", "created", "learned", "imported")


# JSON values (commas, objects, arrays) a snapshot may hold per allowed face. A face as exported has 15 (its object,
# its meta and coord, their commas, its person id in the space's list); the rest is slack for alias pairs and names.
VALUES_PER_FACE = 24
VALUES_OVERHEAD = 4096  # the header and the spaces' own fields
_CHUNK = 64 * 1024


class SnapshotError(ValueError):
    """The snapshot cannot be read or imported; the message says why."""


class SnapshotTooLarge(SnapshotError):
    """The snapshot is past a bound of :class:`SnapshotLimits`; nothing of it was parsed or written."""


@dataclass(frozen=True)
class SnapshotLimits:
    """What one snapshot may cost: ``max_bytes`` of JSON (read, and after decompression), ``max_faces`` faces."""

    max_bytes: int
    max_faces: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SnapshotLimits:
        return cls(int(settings.max_snapshot_bytes), int(settings.max_snapshot_faces))

    @classmethod
    def defaults(cls) -> SnapshotLimits:
        return cls(SETTINGS_BY_NAME["max_snapshot_bytes"].default, SETTINGS_BY_NAME["max_snapshot_faces"].default)

    def too_large(self, what: str) -> SnapshotTooLarge:
        return SnapshotTooLarge(
            f"snapshot too large: {what}; the limit is {self.max_bytes} bytes (SMARTY_MAX_SNAPSHOT_BYTES)"
        )


@dataclass(frozen=True)
class Scope:
    """What a snapshot covers: everything, one client, or one space of one client."""

    client: ClientId | None = None
    space: int | None = None

    def __post_init__(self) -> None:
        if self.space is not None and self.client is None:
            raise SnapshotError("a space can only be chosen together with its client")
        if self.space is not None and not 0 <= self.space <= MAX_SPACE:
            raise SnapshotError(space_out_of_range(self.space))


@dataclass(frozen=True)
class SnapshotFace:
    person_id: int
    kind: str
    created_at: float
    meta: dict[str, Any]
    embedding: np.ndarray
    thumbnail: bytes | None


@dataclass(frozen=True)
class SnapshotSpace:
    key: SpaceKey
    faces: tuple[SnapshotFace, ...]
    alias_pairs: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    scope: Scope
    spaces: tuple[SnapshotSpace, ...]
    created_at: float = field(default_factory=time.time)


@dataclass
class ImportReport:
    spaces: int = 0
    faces_added: int = 0
    faces_skipped: int = 0
    spaces_emptied: int = 0

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# --- export ----------------------------------------------------------------------------


def take(store: Store, scope: Scope) -> Snapshot:
    """Read the spaces in ``scope`` (each one consistently) into a :class:`Snapshot`."""
    spaces = []
    for key in store.space_keys(scope.client, scope.space):
        contents = store.space_contents(key)
        if not contents.faces:
            continue
        faces = tuple(
            SnapshotFace(f.person_id, f.kind, f.created_at, f.meta, f.embedding, f.thumbnail) for f in contents.faces
        )
        spaces.append(SnapshotSpace(key, faces, contents.alias_pairs))
    return Snapshot(scope, tuple(spaces))


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    spaces = []
    for space in snapshot.spaces:
        person_ids = sorted({f.person_id for f in space.faces})
        spaces.append(
            {
                "client": space.key.client,
                "space": space.key.space,
                "next_person_id": (person_ids[-1] if person_ids else 0) + 1,
                "persons": person_ids,
                "faces": [
                    {
                        "person_id": f.person_id,
                        "kind": f.kind,
                        "created_at": f.created_at,
                        "meta": f.meta,
                        "embedding": base64.b64encode(np.asarray(f.embedding, dtype="<f4").tobytes()).decode(),
                        "thumbnail": base64.b64encode(f.thumbnail).decode() if f.thumbnail is not None else None,
                    }
                    for f in space.faces
                ],
                "alias_pairs": [list(p) for p in space.alias_pairs],
            }
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": snapshot.created_at,
        "embedding": {"dim": EMBEDDING_DIM, "dtype": "float32-le", "encoding": "base64"},
        "scope": {"client": snapshot.scope.client, "space": snapshot.scope.space},
        "spaces": spaces,
    }


def dumps(snapshot: Snapshot, *, compress: bool = False) -> bytes:
    data = json.dumps(to_json(snapshot), ensure_ascii=False, separators=(",", ":")).encode()
    return gzip.compress(data, mtime=0) if compress else data


# --- reading ---------------------------------------------------------------------------


def read_bounded(chunks: Iterable[bytes], limits: SnapshotLimits) -> bytearray:
    """Join ``chunks`` (a file or an upload as it streams in), refusing once more than ``max_bytes`` arrived."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limits.max_bytes:
            raise limits.too_large("it holds more")
    return buffer


def read_file(handle: BinaryIO, limits: SnapshotLimits) -> bytearray:
    """A snapshot file's bytes (``handle`` opened in binary mode, or standard input), within ``max_bytes``: a
    regular file is refused from its size, a pipe while it is read."""
    size = 0
    with contextlib.suppress(OSError, ValueError):  # not a real file (a pipe, a test's buffer): counted below
        info = os.fstat(handle.fileno())
        size = info.st_size if stat.S_ISREG(info.st_mode) else 0
    if size > limits.max_bytes:
        raise limits.too_large(f"it holds {size} bytes")
    return read_bounded(iter(lambda: handle.read(_CHUNK), b""), limits)


def _inflated_size(data: bytes | bytearray, limit: int) -> int:
    """The size of gzip ``data`` once inflated (every member), inflating in small chunks and keeping nothing;
    raises :class:`SnapshotTooLarge` as soon as it passes ``limit``, :class:`SnapshotError` if it is broken."""
    total, rest = 0, data
    while rest:  # one gzip member after another
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        offset = 0
        while not inflater.eof and offset < len(rest):
            pending = rest[offset : offset + _CHUNK]
            offset += len(pending)
            while pending:
                total += len(inflater.decompress(pending, _CHUNK))  # at most one chunk out per call
                if total > limit:
                    raise SnapshotTooLarge(f"snapshot too large: it inflates past {limit} bytes")
                pending = inflater.unconsumed_tail
        total += len(inflater.flush())  # what zlib still holds: less than its window
        if not inflater.eof:
            raise zlib.error("the compressed data ends early")
        rest = inflater.unused_data + rest[offset:]
    return total


def inflate(data: bytes | bytearray, limits: SnapshotLimits) -> bytes | bytearray:
    """Plain JSON as it is; gzip data inflated once it is known to fit ``max_bytes`` (a bomb is never inflated)."""
    if data[:2] != b"\x1f\x8b":
        if len(data) > limits.max_bytes:
            raise limits.too_large(f"it holds {len(data)} bytes")
        return data
    try:
        size = _inflated_size(data, limits.max_bytes)
    except SnapshotTooLarge:
        raise limits.too_large("it inflates to more") from None
    except (zlib.error, OSError, EOFError) as exc:
        raise SnapshotError(f"not a snapshot: broken gzip data ({exc})") from None
    try:
        inflated = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise SnapshotError(f"not a snapshot: broken gzip data ({exc})") from None
    if len(inflated) != size:  # cannot happen for gzip.decompress and zlib agree; a bound must never be skipped
        raise SnapshotError("not a snapshot: inconsistent gzip data")
    return inflated


def count_values(text: bytes | bytearray, limits: SnapshotLimits) -> None:
    """Refuse JSON with more values than ``max_faces`` faces need, before it is parsed (C-speed byte counts; those
    inside strings count too, which only errs on the safe side)."""
    values = text.count(b",") + text.count(b"{") + text.count(b"[")
    allowed = VALUES_PER_FACE * limits.max_faces + VALUES_OVERHEAD
    if values > allowed:
        raise SnapshotTooLarge(
            f"snapshot too large: its JSON holds about {values} values, at most {allowed} are allowed for"
            f" {limits.max_faces} faces (SMARTY_MAX_SNAPSHOT_FACES)"
        )


def loads(data: bytes | bytearray, limits: SnapshotLimits | None = None) -> Snapshot:
    """Parse and validate a snapshot file (plain or gzip-compressed JSON) within ``limits`` (default: the
    settings' defaults)."""
    limits = limits or SnapshotLimits.defaults()
    text = inflate(data, limits)
    count_values(text, limits)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise SnapshotError("not a snapshot: the file is not JSON") from None
    del text
    snapshot = from_json(doc)
    faces = sum(len(space.faces) for space in snapshot.spaces)
    if faces > limits.max_faces:
        raise SnapshotTooLarge(
            f"snapshot too large: {faces} faces, the limit is {limits.max_faces} (SMARTY_MAX_SNAPSHOT_FACES)"
        )
    return snapshot


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise SnapshotError(message)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def from_json(doc: Any) -> Snapshot:
    _need(isinstance(doc, dict) and doc.get("format") == FORMAT, f"not a snapshot: format is not {FORMAT!r}")
    version = doc.get("version")
    _need(_int(version) and 1 <= version <= VERSION, f"snapshot version {version!r} is not supported (1..{VERSION})")
    embedding = doc.get("embedding") or {}
    _need(embedding.get("dim", EMBEDDING_DIM) == EMBEDDING_DIM, f"embeddings must have {EMBEDDING_DIM} dimensions")
    raw_scope = doc.get("scope") or {}
    _need(isinstance(raw_scope, dict), "scope must be an object")
    client, space = raw_scope.get("client"), raw_scope.get("space")
    _need(client is None or (isinstance(client, str) and client != ""), "scope.client must be a non-empty string")
    _need(space is None or _int(space), "scope.space must be a whole number")
    scope = Scope(ClientId(client) if client is not None else None, space)
    raw_spaces = doc.get("spaces")
    _need(isinstance(raw_spaces, list), "spaces must be a list")
    spaces = [_space(item, position, scope) for position, item in enumerate(raw_spaces)]
    keys = [s.key for s in spaces]
    _need(len(set(keys)) == len(keys), "a space appears twice")
    created_at = doc.get("created_at")
    return Snapshot(scope, tuple(spaces), float(created_at) if isinstance(created_at, (int, float)) else time.time())


def _space(item: Any, position: int, scope: Scope) -> SnapshotSpace:
    where = f"spaces[{position}]"
    _need(isinstance(item, dict), f"{where} must be an object")
    client, space = item.get("client"), item.get("space")
    _need(isinstance(client, str) and client != "", f"{where}.client must be a non-empty string")
    _need(_int(space) and 0 <= space <= MAX_SPACE, f"{where}.space must be 0..{MAX_SPACE}")
    _need(scope.client is None or scope.client == client, f"{where} is outside the snapshot's scope")
    _need(scope.space is None or scope.space == space, f"{where} is outside the snapshot's scope")
    raw_faces = item.get("faces")
    _need(isinstance(raw_faces, list), f"{where}.faces must be a list")
    faces = tuple(_face(face, f"{where}.faces[{i}]") for i, face in enumerate(raw_faces))
    pairs = []
    for pair in item.get("alias_pairs") or []:
        valid = isinstance(pair, list) and len(pair) == 2 and all(_int(p) and p > 0 for p in pair)
        _need(valid, f"{where}.alias_pairs must hold pairs of person ids")
        pairs.append((min(pair), max(pair)))
    return SnapshotSpace(SpaceKey(ClientId(client), space), faces, tuple(pairs))


def _face(item: Any, where: str) -> SnapshotFace:
    _need(isinstance(item, dict), f"{where} must be an object")
    person_id = item.get("person_id")
    _need(_int(person_id) and person_id > 0, f"{where}.person_id must be a positive whole number")
    kind = item.get("kind", "imported")
    _need(kind in _KINDS, f"{where}.kind must be one of {', '.join(_KINDS)}")
    try:
        blob = base64.b64decode(item.get("embedding", ""), validate=True)
        thumbnail = item.get("thumbnail")
        thumb = base64.b64decode(thumbnail, validate=True) if thumbnail is not None else None
    except (ValueError, TypeError):
        raise SnapshotError(f"{where}: embedding or thumbnail is not base64") from None
    _need(len(blob) == _EMBEDDING_BYTES, f"{where}.embedding must be {_EMBEDDING_BYTES} bytes")
    embedding = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(embedding))
    _need(math.isfinite(norm) and abs(norm - 1.0) < 1e-3, f"{where}.embedding must have unit length")
    meta = item.get("meta") or {}
    _need(isinstance(meta, dict), f"{where}.meta must be an object")
    created_at = item.get("created_at")
    return SnapshotFace(
        person_id,
        kind,
        float(created_at) if isinstance(created_at, (int, float)) else time.time(),
        meta,
        embedding,
        thumb,
    )


# --- import ----------------------------------------------------------------------------


def restore(
    store: Store,
    snapshot: Snapshot,
    mode: str = "replace",
    *,
    max_faces_per_space: int | None = None,
    on_write: OnWrite | None = None,
) -> ImportReport:
    """Import ``snapshot`` (see the module docstring for the modes).

    A space that would hold more than ``max_faces_per_space`` faces is refused with
    :class:`SnapshotError`, before anything of that space is written.
    """
    if mode not in MODES:
        raise SnapshotError(f"mode must be one of {', '.join(MODES)}")
    report = ImportReport()
    if max_faces_per_space is not None:
        for space in snapshot.spaces:
            if len(space.faces) > max_faces_per_space:
                raise SnapshotError(
                    f"space {space.key.space} of client {space.key.client} holds {len(space.faces)} faces,"
                    f" the limit is {max_faces_per_space}"
                )
    loaded = {s.key for s in snapshot.spaces}
    if mode == "replace":
        emptied = admin.reset(store, snapshot.scope.client, snapshot.scope.space, on_write, keep=loaded)
        report.spaces_emptied = len(emptied)
    for space in snapshot.spaces:
        with store.write(space.key) as writer:
            if mode == "replace":
                writer.truncate()
            for face in space.faces:
                if mode == "merge" and writer.has_embedding(face.person_id, face.embedding):
                    report.faces_skipped += 1
                    continue
                writer.add_face(
                    face.person_id, face.embedding, face.kind, face.meta, face.thumbnail, created_at=face.created_at
                )
                report.faces_added += 1
            for low, high in space.alias_pairs:
                writer.record_alias_pairs(low, (high,))
            if max_faces_per_space is not None and writer.count_faces() > max_faces_per_space:
                raise SnapshotError(
                    f"space {space.key.space} of client {space.key.client} would hold more than"
                    f" {max_faces_per_space} faces"
                )
        if on_write is not None:
            on_write(writer.delta)
        report.spaces += 1
    return report
