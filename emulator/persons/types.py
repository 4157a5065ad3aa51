"""Small typed values passed between the wire layer, the service and the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.face.engine import Face

# The record's keys, re-exported for the layers above.
from emulator.store.records import DEFAULT_CLIENT as DEFAULT_CLIENT
from emulator.store.records import ClientId as ClientId
from emulator.store.records import SpaceKey as SpaceKey

MAX_SPACE = 9  # spaces are 0..MAX_SPACE


def space_out_of_range(space: int) -> str:
    """The text for a space outside 0..9 (meta, the admin API, snapshots and seeding say it alike)."""
    return f"space {space} is out of range, allowed spaces are 0..{MAX_SPACE}"


@dataclass(frozen=True)
class ImageInput:
    """One image named in meta, with the bytes of its part (``None`` if it was over the size limit) and their
    SHA-256 (hex), hashed once by the wire layer."""

    name: str
    data: bytes | None
    size: int
    person_id: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SetRequest:
    space: int
    images: tuple[ImageInput, ...]


@dataclass(frozen=True)
class RecognizeRequest:
    space: int
    images: tuple[ImageInput, ...]
    create_new: bool = False
    update_embedding: bool = True
    searcher: int = 0


@dataclass(frozen=True)
class DeleteRequest:
    space: int
    entries: tuple[tuple[str, int], ...]  # (name, person_id)


@dataclass(frozen=True)
class TruncateRequest:
    space: int


@dataclass(frozen=True)
class PersonResult:
    """One face found by recognize, as the envelope reports it."""

    tag: str
    coord: tuple[int, int, int, int]
    confidence: float
    awesomeness: float
    similarity: float
    aliases: tuple[str, ...] = ()
    attributes: dict[str, Any] | None = None  # searcher=1 only


@dataclass(frozen=True)
class ObjectResult:
    """The outcome for one image (or delete entry)."""

    name: str
    status: int = 0
    error: str | None = None
    persons: tuple[PersonResult, ...] | None = None


@dataclass(frozen=True)
class RecognizeResult:
    objects: tuple[ObjectResult, ...]
    aliases_changed: bool = False


def face_meta(image: ImageInput, face: Face) -> dict[str, object]:
    """What is kept with a stored face besides its embedding (the admin API shows it; seeding skips by sha256)."""
    return {
        "name": image.name,
        "sha256": image.sha256,
        "coord": list(face.box),
    }
