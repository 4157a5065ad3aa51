"""One persons request as every hook sees it: its method, its client, its parts, and ``meta`` decoded once.

The wire layer (``emulator/api``) reads the multipart body into :class:`Part` objects and builds one
:class:`PersonsRequest`; from then on the journal, the hooks of the chain (:mod:`emulator.persons.hooks`) and the
typed request builders all read the same :class:`Meta`: the part's bytes, its JSON for the journal, and the
Go-style decode (:func:`emulator.persons.meta.decode_meta`) or the 400 it gives. Nothing here knows HTTP.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.ops.observe import ImageInfo, RequestRecord
from emulator.persons.errors import BadRequest
from emulator.persons.meta import RawMeta, decode_meta, validate_space
from emulator.persons.types import ClientId
from emulator.settings import Settings


@dataclass
class Part:
    """One named part of the multipart body. Past the per-part bound only its size is kept."""

    name: str
    filename: str | None
    size: int = 0
    chunks: list[bytes] = field(default_factory=list)
    overflow: bool = False  # more than max_part_bytes: bytes dropped, size still counted

    @property
    def data(self) -> bytes | None:
        return None if self.overflow else b"".join(self.chunks)

    @functools.cached_property
    def sha256(self) -> str | None:
        """Hex SHA-256 of the part's bytes (``None`` past the size limit): computed once per request, then
        shared by the journal, the hooks, the face cache key and the stored face's metadata."""
        data = self.data
        return hashlib.sha256(data).hexdigest() if data is not None else None


@dataclass(frozen=True)
class Meta:
    """The ``meta`` part, read once: ``raw`` (its bytes as sent, ``None`` when absent or over the bound: for hooks that
    need the request exactly, such as one that forwards it), ``json`` (the parsed JSON for the journal, ``None``
    unless it is JSON) and ``decoded`` (Go's view of it, or its 400)."""

    raw: bytes | None
    json: Any
    decoded: RawMeta | BadRequest

    @classmethod
    def read(cls, part: Part | None, max_bytes: int) -> Meta:
        """Decode meta; it is bounded by the per-part limit (``max_bytes``), as every part is."""
        decoded: RawMeta | BadRequest
        if part is not None and part.overflow:
            decoded = BadRequest(f"could not parse meta: meta is {part.size} bytes, the limit is {max_bytes} bytes")
        else:
            try:
                decoded = decode_meta(part.data if part is not None else None)
            except BadRequest as exc:
                decoded = exc
        raw = part.data if part is not None else None
        return cls(raw, _journal_json(raw), decoded)

    def value(self) -> RawMeta:
        """The decoded meta, or its 400 raised."""
        if isinstance(self.decoded, BadRequest):
            raise self.decoded
        return self.decoded

    @property
    def journal_space(self) -> int | None:
        """The space as the journal files it: meta's ``space`` when it is a short decimal string."""
        space = self.json.get("space") if isinstance(self.json, dict) else None
        if isinstance(space, str) and space.isascii() and space.isdigit() and len(space) < 3:
            return int(space)
        return None

    def image_names(self) -> list[str] | None:
        """Meta's image names, or ``None`` unless meta decodes and names a valid space (what applies only to
        requests the service would accept as a whole, such as per-object faults, reads this)."""
        if isinstance(self.decoded, BadRequest):
            return None
        try:
            validate_space(self.decoded)
        except BadRequest:
            return None
        return [image.name for image in self.decoded.images or []]


def _journal_json(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class PersonsRequest:
    """A parsed persons request. ``skip`` names images validated with the rest of the request but left out of the
    service call (a hook answers for them, e.g. an injected per-object fault); ``record`` is what the observers
    (journal, log, metrics) will see, where a hook notes what it did; ``query`` is the URL's query string as sent
    (credentials included: for a hook that forwards the request, never for a log or a record)."""

    method: str  # set | recognize | delete | truncate
    client: ClientId
    parts: Mapping[str, Part]
    meta: Meta
    settings: Settings  # as they were when the request arrived
    record: RequestRecord
    skip: frozenset[str] = frozenset()
    query: str = field(default="", repr=False)

    @classmethod
    def parsed(
        cls,
        method: str,
        client: ClientId,
        parts: Mapping[str, Part],
        settings: Settings,
        record: RequestRecord,
        query: str = "",
    ) -> PersonsRequest:
        """The request of ``parts``, with meta decoded once and ``record`` told what the request carried (its meta
        if JSON, its image parts without their bytes)."""
        meta = Meta.read(parts.get("meta"), settings.max_image_bytes)
        record.meta, record.space = meta.json, meta.journal_space
        record.images.extend(ImageInfo(name, part.size, part.sha256) for name, part in parts.items() if name != "meta")
        return cls(method, client, parts, meta, settings, record, query=query)

    def without(self, names: frozenset[str]) -> PersonsRequest:
        """The same request with ``names`` left out of the service call as well."""
        return dataclasses.replace(self, skip=self.skip | names)
