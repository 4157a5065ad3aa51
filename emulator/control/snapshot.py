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

Import modes: ``replace`` empties every space in the snapshot's scope (a space, a client, or
everything) and loads the snapshot's spaces; ``merge`` adds the snapshot's faces to what is
there, skipping a face its person already holds (so merging twice changes nothing). Each
space is written in one transaction, which bumps its generation: every worker process sees
the import on its next request.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emulator.persons.types import MAX_SPACE, ClientId, SpaceKey, space_out_of_range
from emulator.store.records import EMBEDDING_DIM, OnWrite, Store

FORMAT = "smarty-emulator-snapshot"
VERSION = 1
MODES = ("replace", "merge")
_EMBEDDING_BYTES = EMBEDDING_DIM * 4
_KINDS = ("set", "created", "learned", "imported")


class SnapshotError(ValueError):
    """The snapshot cannot be read or imported; the message says why."""


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


def loads(data: bytes) -> Snapshot:
    """Parse and validate a snapshot file (plain or gzip-compressed JSON)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SnapshotError(f"not a snapshot: broken gzip data ({exc})") from None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise SnapshotError("not a snapshot: the file is not JSON") from None
    return from_json(doc)


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
        for key in store.space_keys(snapshot.scope.client, snapshot.scope.space):
            if key not in loaded:
                with store.write(key) as writer:
                    writer.truncate()
                if on_write is not None:
                    on_write(writer.delta)
                report.spaces_emptied += 1
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
