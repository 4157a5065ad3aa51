"""Cassettes written from the answers of a real server without the upstream hook (the format's own classes, from
:mod:`emulator.upstream.cassette`): for the tests of what reads cassettes, such as the offline compare."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from emulator.upstream.cassette import Cassette, Image, Interaction, Response, request_key, stored_meta


class HandRecorder:
    """Sends persons requests to ``http`` (a client of a real server) and keeps each pair as an interaction of the
    cassette ``<directory>/<name>.json``; :meth:`save` writes it, with the images in ``blobs/`` unless told not to."""

    def __init__(self, http: httpx.Client, directory: Path, name: str) -> None:
        self.http = http
        self.cassette = Cassette(directory / f"{name}.json", str(http.base_url))
        self.blobs: dict[str, bytes] = {}

    def call(self, method: str, meta: dict[str, Any], images: list[tuple[str, bytes]] | None = None) -> Any:
        path = f"/api/v1/persons/{method}"
        raw = json.dumps(meta)
        files: list[tuple[str, tuple[str | None, bytes | str, str]]] = [("meta", (None, raw, "text/plain"))]
        files += [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in images or []]
        response = self.http.post(path, params={"oauth_token": "t", "oauth_provider": "mcs"}, files=files)
        digests = [(name, hashlib.sha256(data).hexdigest(), data) for name, data in images or []]
        hashed = [(name, digest) for name, digest, _ in digests]
        self.blobs.update({digest: data for _, digest, data in digests})
        self.cassette.interactions.append(
            Interaction(
                key=request_key(method, path, raw, hashed),
                method=method,
                path=path,
                meta=stored_meta(raw),
                images=tuple(Image(name, digest, len(data)) for name, digest, data in digests),
                response=Response(
                    response.status_code,
                    {"content-type": response.headers.get("content-type", "")},
                    response.elapsed.total_seconds() * 1000,
                    response.content,
                ),
            )
        )
        return response.json()

    def save(self) -> Path:
        self.cassette.save(self.blobs)
        return self.cassette.path
