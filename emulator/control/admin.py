"""What the admin API shows and does, without HTTP: list clients, spaces and persons, show a
person's photos, and reset state. Not part of the real service.

Writes go through :meth:`Store.write`, so they bump the space's generation and every
worker process notices them on its next request; ``on_write`` lets this process's index
follow at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from emulator.persons.types import ClientId, SpaceKey
from emulator.store.records import OnWrite, Store


@dataclass(frozen=True)
class PhotoInfo:
    """One stored embedding of a person, as the admin API shows it (never the embedding itself)."""

    face_id: int
    kind: str  # set | created | learned
    created_at: float
    name: str | None
    sha256: str | None
    coord: list[int] | None
    has_thumbnail: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def clients_overview(store: Store) -> list[dict[str, Any]]:
    """Every client with its non-empty spaces and their person and face counts."""
    clients: dict[str, list[dict[str, int]]] = {}
    for counts in store.space_counts():
        clients.setdefault(counts.key.client, []).append(
            {"space": counts.key.space, "persons": counts.persons, "faces": counts.faces}
        )
    return [{"client": client, "spaces": spaces} for client, spaces in clients.items()]


def persons(store: Store, key: SpaceKey) -> list[dict[str, int]]:
    """The persons of a space with how many embeddings each holds (of any kind)."""
    return [{"person_id": p, "photos": n} for p, n in store.person_photo_counts(key)]


def person_photos(store: Store, key: SpaceKey, person_id: int) -> list[PhotoInfo] | None:
    """A person's photos, oldest first; ``None`` if the space has no such person."""
    faces = store.person_faces(key, person_id)
    if not faces:
        return None
    photos = []
    for face in faces:
        coord = face.meta.get("coord")
        photos.append(
            PhotoInfo(
                face_id=face.face_id,
                kind=face.kind,
                created_at=face.created_at,
                name=face.meta.get("name") if isinstance(face.meta.get("name"), str) else None,
                sha256=face.meta.get("sha256") if isinstance(face.meta.get("sha256"), str) else None,
                coord=[int(c) for c in coord] if isinstance(coord, list) else None,
                has_thumbnail=face.thumbnail is not None,
            )
        )
    return photos


def reset(
    store: Store,
    client: ClientId | None = None,
    space: int | None = None,
    on_write: OnWrite | None = None,
    *,
    keep: Collection[SpaceKey] = (),
) -> list[SpaceKey]:
    """Empty every space (of ``client``; only ``space`` of it, if given) but those in ``keep``, as truncate does;
    the spaces emptied.

    Each space is emptied in its own transaction. Spaces keep their generation rows, so a
    worker holding an old index always sees a newer generation (never the same number again).
    """
    emptied = []
    for key in store.space_keys(client, space):
        if key in keep:
            continue
        with store.write(key) as writer:
            writer.truncate()
        if on_write is not None:
            on_write(writer.delta)
        emptied.append(key)
    return emptied
