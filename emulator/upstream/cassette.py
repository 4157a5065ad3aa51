"""The cassette: recorded pairs of (request, upstream answer), one versioned JSON file per cassette.

Layout: ``<dir>/<name>.json`` and ``<dir>/blobs/<sha256 hex>`` (each image's bytes, written once, only when images
are recorded ``full``). The file::

    {"format": "smarty-emulator-cassette", "version": 1, "upstream": "https://smarty.mail.ru",
     "interactions": [{"key": "<hex>", "method": "recognize", "path": "/api/v1/persons/recognize",
                       "meta": {...}, "images": [{"name": "file_0", "sha256": "<hex>", "size": 12345}],
                       "response": {"status": 200, "headers": {"content-type": "application/json"},
                                    "latency_ms": 123.4, "body": "<text when UTF-8>", "body_base64": null},
                       "recorded_at": "2026-12-03T10:00:00Z"}]}

Interactions stay in recorded order; several may share a key (replayed in that order, the last one repeating).

The key (:func:`request_key`) is the SHA-256 of ``[method, path, canonical meta, [[part name, sha256], ...]]``: the
token, the provider and the multipart boundary are never part of it, so the same request re-encoded with another
boundary and another token matches.

Safety, on every write (:meth:`Cassette.save`): the query string is never stored; only selected response headers
are kept (never ``Authorization``, ``Cookie`` or ``Set-Cookie``); OAuth secrets and issued tokens in token bodies
become ``"<redacted>"``; then the live secrets (the request's token, the client secret, the issued tokens) are
looked for in the JSON and in the blobs being written, and if one is found the write is refused
(:class:`LeakRefused`). Files are written atomically (a temporary file, fsync, ``os.replace``, fsync of the
folder), so a crash at any moment leaves the last good cassette.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "smarty-emulator-cassette"
VERSION = 1
REDACTED = "<redacted>"
BLOBS = "blobs"

# Query parameters that are never stored (the query string is not stored at all; these name why).
DROPPED_PARAMS = ("oauth_token", "oauth_provider")
# Headers never stored, whatever the list of kept headers says.
DROPPED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
# Response headers kept with an interaction (the ones a client reads); lower-case.
KEPT_HEADERS = ("content-type",)
# Fields of an OAuth token request or answer that are secrets: dropped from the key and the stored meta, replaced
# by REDACTED in a stored body.
SECRET_FIELDS = ("client_secret", "access_token", "refresh_token", "id_token", "password", "code")
# A live secret shorter than this is not looked for: a few letters occur in any JSON by chance, and would refuse
# every write (real tokens are tens of characters).
MIN_SECRET_CHARS = 6

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CassetteError(RuntimeError):
    """A cassette that cannot be read or written (the message names the file)."""


class LeakRefused(CassetteError):
    """A write refused because a live secret would have been stored. The message names no secret."""


def valid_name(name: str) -> bool:
    """Whether ``name`` may name a cassette file: letters, digits, ``.``, ``_``, ``-``; no path."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


def cassette_path(directory: Path, name: str) -> Path:
    if not valid_name(name):
        raise CassetteError(f"{name!r} is not a cassette name (letters, digits, '.', '_', '-')")
    return directory / f"{name}.json"


def canonical_meta(raw: bytes | str | None) -> str | None:
    """Meta as the key sees it: compact JSON with sorted keys when it is valid JSON, else its text as sent."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


def request_key(method: str, path: str, meta: bytes | str | None, images: Sequence[tuple[str, str | None]]) -> str:
    """The SHA-256 hex of ``[method, path, canonical meta, [[part name, sha256 of its bytes], ...]]``.

    ``method`` is the persons method (``set``, ``recognize``, ``delete``, ``truncate``) or ``oauth``; ``images``
    are in request order.
    """
    key = [method, path, canonical_meta(meta), [[name, digest] for name, digest in images]]
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()


def stored_meta(raw: bytes | str | None) -> Any:
    """Meta as the file shows it: the parsed JSON, or ``{"raw": text}`` when it is not JSON (``None`` if absent)."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return {"raw": text}


def oauth_meta(fields: Mapping[str, str]) -> dict[str, str]:
    """A token request's fields without its secrets: the meta of an ``oauth`` interaction (and of its key)."""
    return {name: value for name, value in sorted(fields.items()) if name not in SECRET_FIELDS}


def kept_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The response headers stored with an interaction: :data:`KEPT_HEADERS`, never a credential."""
    kept: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in KEPT_HEADERS and lower not in DROPPED_HEADERS:
            kept[lower] = value
    return kept


def redact_token_body(body: bytes) -> bytes:
    """A token endpoint's body with the values of :data:`SECRET_FIELDS` replaced by ``"<redacted>"``. The other bytes
    stay as they were when the values are plain (the usual case); a body that is not a JSON object is kept."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(doc, dict):
        return body
    secrets = [value for name, value in doc.items() if name in SECRET_FIELDS and isinstance(value, str) and value]
    out = body
    for value in secrets:
        encoded = json.dumps(value)[1:-1].encode()
        out = out.replace(encoded, REDACTED.encode())
    if any(json.dumps(value)[1:-1].encode() in out for value in secrets):  # escaped otherwise: rewrite the object
        doc = {k: REDACTED if k in SECRET_FIELDS and isinstance(v, str) else v for k, v in doc.items()}
        out = json.dumps(doc, separators=(",", ":")).encode()
    return out


def _secret_forms(secrets: Iterable[str]) -> list[bytes]:
    """Each checked secret as its bytes and as it would appear inside a JSON string."""
    forms: set[bytes] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_CHARS:
            continue
        forms.add(secret.encode())
        forms.add(json.dumps(secret)[1:-1].encode())
        forms.add(json.dumps(secret, ensure_ascii=False)[1:-1].encode())
    return sorted(forms)


def leaks(data: bytes, secrets: Iterable[str]) -> bool:
    """Whether any of ``secrets`` (of at least :data:`MIN_SECRET_CHARS` characters) occurs in ``data``."""
    return any(form in data for form in _secret_forms(secrets))


@dataclass(frozen=True)
class Image:
    """One image part of a recorded request: its part name, the SHA-256 of its bytes, its size."""

    name: str
    sha256: str | None
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Response:
    """The upstream's answer: its HTTP status, the kept headers, how long it took, its exact bytes."""

    status: int
    headers: Mapping[str, str]
    latency_ms: float
    body: bytes

    def to_json(self) -> dict[str, Any]:
        try:
            text: str | None = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return {
            "status": self.status,
            "headers": dict(self.headers),
            "latency_ms": round(self.latency_ms, 1),
            "body": text,
            "body_base64": None if text is not None else base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Response:
        if data.get("body_base64") is not None:
            body = base64.b64decode(data["body_base64"])
        else:
            body = str(data.get("body") or "").encode("utf-8")
        headers = {str(k).lower(): str(v) for k, v in (data.get("headers") or {}).items()}
        return cls(int(data["status"]), headers, float(data.get("latency_ms") or 0.0), body)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Interaction:
    """One recorded pair."""

    key: str
    method: str
    path: str
    meta: Any
    images: tuple[Image, ...]
    response: Response
    recorded_at: str = field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "method": self.method,
            "path": self.path,
            "meta": self.meta,
            "images": [image.to_json() for image in self.images],
            "response": self.response.to_json(),
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Interaction:
        images = tuple(
            Image(str(i["name"]), i.get("sha256"), int(i.get("size") or 0)) for i in data.get("images") or []
        )
        return cls(
            key=str(data["key"]),
            method=str(data["method"]),
            path=str(data["path"]),
            meta=data.get("meta"),
            images=images,
            response=Response.from_json(data["response"]),
            recorded_at=str(data.get("recorded_at") or ""),
        )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any moment leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the cassette (a lock file beside it), held by one writer process at a time."""
    import fcntl  # POSIX only, as the SQLite store's lock: imported where it is used

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class Cassette:
    """A cassette file's content. :meth:`load` reads one (missing: empty), :meth:`save` writes it safely."""

    path: Path
    upstream: str = ""
    interactions: list[Interaction] = field(default_factory=list)

    @property
    def blob_dir(self) -> Path:
        return self.path.parent / BLOBS

    @classmethod
    def load(cls, path: Path) -> Cassette:
        """The cassette at ``path``; an empty one if there is no file. A file that is not a cassette of this
        version is a :class:`CassetteError`."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise CassetteError(f"cannot read the cassette {path}: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not a smarty-emulator cassette")
            if doc.get("version") != VERSION:
                raise ValueError(f"version {doc.get('version')!r}, this emulator reads version {VERSION}")
            interactions = [Interaction.from_json(item) for item in doc.get("interactions") or []]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise CassetteError(f"cannot read the cassette {path}: {exc}") from None
        return cls(path, str(doc.get("upstream") or ""), interactions)

    def find(self, key: str) -> list[Interaction]:
        """The interactions recorded for ``key``, in recorded order."""
        return [item for item in self.interactions if item.key == key]

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "upstream": self.upstream,
            "interactions": [item.to_json() for item in self.interactions],
        }
        return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    def save(self, blobs: Mapping[str, bytes] | None = None, secrets: Iterable[str] = ()) -> None:
        """Write the blobs not yet stored, then the file, each atomically. Refused with :class:`LeakRefused`,
        before anything is written, if one of ``secrets`` occurs in the file or in a blob to be written."""
        blobs = dict(blobs or {})
        data = self.to_bytes()
        secrets = list(secrets)
        new_blobs = {digest: content for digest, content in blobs.items() if not (self.blob_dir / digest).exists()}
        if leaks(data, secrets):
            raise LeakRefused(f"refused to write the cassette {self.path}: a live secret would have been stored in it")
        if any(leaks(content, secrets) for content in new_blobs.values()):
            raise LeakRefused(f"refused to write the cassette {self.path}: a live secret occurs in an image's bytes")
        try:
            for digest, content in new_blobs.items():  # blobs first: the file never names a blob that is missing
                if hashlib.sha256(content).hexdigest() != digest:
                    raise CassetteError(f"blob {digest} does not hold the bytes of that hash")
                atomic_write(self.blob_dir / digest, content)
            atomic_write(self.path, data)
        except OSError as exc:
            raise CassetteError(f"cannot write the cassette {self.path}: {exc.strerror or exc}") from None

    @classmethod
    def append(
        cls,
        path: Path,
        interaction: Interaction,
        *,
        upstream: str,
        blobs: Mapping[str, bytes] | None = None,
        secrets: Iterable[str] = (),
    ) -> Cassette:
        """Add ``interaction`` to the cassette on disk (read afresh under a lock, so that the writers of several
        processes keep each other's interactions) and save it; the cassette as written."""
        try:
            with _locked(path):
                cassette = cls.load(path)
                cassette.upstream = cassette.upstream or upstream
                cassette.interactions.append(interaction)
                cassette.save(blobs, secrets)
        except OSError as exc:  # the folder or its lock file cannot be made
            raise CassetteError(f"cannot write the cassette {path}: {exc.strerror or exc}") from None
        return cassette
