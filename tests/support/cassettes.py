"""Cassettes written by hand in the agreed format, from the answers of a real server: for the tests of what reads
cassettes (the offline compare), independently of the recorder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx


def request_key(method: str, path: str, meta: Any, images: list[tuple[str, bytes]]) -> str:
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    hashes = [[name, hashlib.sha256(data).hexdigest()] for name, data in images]
    return hashlib.sha256(json.dumps([method, path, canonical, hashes], separators=(",", ":")).encode()).hexdigest()


class HandRecorder:
    """Sends persons requests to ``http`` (a client of a real server) and keeps each pair as a cassette's
    interaction; :meth:`save` writes ``<directory>/<name>.json`` and the images into ``blobs/``."""

    def __init__(self, http: httpx.Client, directory: Path, name: str) -> None:
        self.http, self.directory, self.name = http, directory, name
        self.interactions: list[dict[str, Any]] = []
        self.blobs: dict[str, bytes] = {}

    def call(self, method: str, meta: dict[str, Any], images: list[tuple[str, bytes]] = ()) -> dict[str, Any]:
        path = f"/api/v1/persons/{method}"
        files = [("meta", (None, json.dumps(meta), "text/plain"))]
        files += [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in images]
        response = self.http.post(path, params={"oauth_token": "t", "oauth_provider": "mcs"}, files=files)
        for _, data in images:
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        self.interactions.append(
            {
                "key": request_key(method, path, meta, list(images)),
                "method": method,
                "path": path,
                "meta": meta,
                "images": [
                    {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                    for name, data in images
                ],
                "response": {
                    "status": response.status_code,
                    "headers": {"content-type": response.headers.get("content-type", "")},
                    "latency_ms": response.elapsed.total_seconds() * 1000,
                    "body": response.text,
                    "body_base64": None,
                },
                "recorded_at": "2026-12-03T10:00:00Z",
            }
        )
        envelope: dict[str, Any] = response.json()
        return envelope

    def save(self, images: bool = True) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": "smarty-emulator-cassette",
            "version": 1,
            "upstream": str(self.http.base_url),
            "interactions": self.interactions,
        }
        path = self.directory / f"{self.name}.json"
        path.write_text(json.dumps(doc, indent=1))
        if images:
            (self.directory / "blobs").mkdir(exist_ok=True)
            for digest, data in self.blobs.items():
                (self.directory / "blobs" / digest).write_bytes(data)
        return path
