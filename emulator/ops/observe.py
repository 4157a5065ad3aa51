"""What one persons request was, for whoever observes requests (logs, metrics, journal).

The wire layer fills a :class:`RequestRecord` per request and hands it to every observer
registered in ``Runtime.observers``. Observers must be quick and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageInfo:
    name: str
    size: int
    sha256: str | None  # None when the part was over the size limit (bytes not kept)


@dataclass
class RequestRecord:
    method: str  # set | recognize | delete | truncate
    client: str | None  # None when auth failed
    started_at: float  # unix time
    space: int | None = None
    meta: Any = None  # the decoded meta JSON, when it was JSON
    images: list[ImageInfo] = field(default_factory=list)
    body: Any = None  # the envelope's body: a dict on success, the error text otherwise
    envelope_status: int = 200
    http_status: int = 200
    duration_ms: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)  # e.g. decode, detect, embed, match
    faults: list[str] = field(default_factory=list)  # fault rules that fired ("kind#id", emulator.faults)
    faces: int = 0  # faces detected in the request's images

    @property
    def objects(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("objects", []))
        return []


Observer = Callable[[RequestRecord], None]
