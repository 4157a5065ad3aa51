"""Small typed values passed between the wire layer, the service and the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NewType

ClientId = NewType("ClientId", str)

DEFAULT_CLIENT = ClientId("default")


@dataclass(frozen=True)
class SpaceKey:
    client: ClientId
    space: int


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
