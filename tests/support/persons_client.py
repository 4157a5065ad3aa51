"""Persons API calls over any ``httpx.Client`` (one connection of a multi-worker server, a thread's own client)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

TOKEN = "test-token"


def call(
    http: httpx.Client, method: str, meta: Mapping[str, Any], files: Iterable[tuple[str, bytes]] = ()
) -> dict[str, Any]:
    """POST one persons request; return the envelope after checking it is a success."""
    parts: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
        (name, (f"{name}.jpg", data, "image/jpeg")) for name, data in files
    ]
    parts.append(("meta", (None, json.dumps(meta), "text/plain")))
    response = http.post(
        f"/api/v1/persons/{method}", params={"oauth_token": TOKEN, "oauth_provider": "mcs"}, files=parts
    )
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    assert payload["status"] == 200, payload
    return payload


def set_photos(http: httpx.Client, space: int, person_id: int, photos: Iterable[bytes]) -> list[dict[str, Any]]:
    images = list(photos)
    meta = {"space": str(space), "images": [{"name": f"f{i}", "person_id": person_id} for i in range(len(images))]}
    body = call(http, "set", meta, [(f"f{i}", data) for i, data in enumerate(images)])["body"]
    objects: list[dict[str, Any]] = body["objects"]
    return objects


def recognize(http: httpx.Client, space: int, photo: bytes, **options: Any) -> dict[str, Any]:
    meta = {"space": str(space), "images": [{"name": "f"}], **options}
    obj: dict[str, Any] = call(http, "recognize", meta, [("f", photo)])["body"]["objects"][0]
    return obj


def tags(obj: Mapping[str, Any]) -> list[str]:
    return [p["tag"] for p in obj.get("persons", [])]


def delete(http: httpx.Client, space: int, person_ids: Iterable[int]) -> None:
    ids = list(person_ids)
    meta = {"space": str(space), "images": [{"name": f"d{i}", "person_id": p} for i, p in enumerate(ids)]}
    call(http, "delete", meta)


def truncate(http: httpx.Client, space: int) -> None:
    call(http, "truncate", {"space": str(space)})
