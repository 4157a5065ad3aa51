"""The response envelope, rendered byte for byte as the real (Go) server renders it.

This is the one place where results and errors become wire bytes and HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emulator.api import gojson
from emulator.api.gojson import go_round
from emulator.persons.types import ObjectResult, PersonResult, RecognizeResult

JSON_MEDIA_TYPE = "application/json"

# Rounding as the official examples show.
_DECIMALS = {
    "confidence": 5,
    "similarity": 4,
    "awesomeness": 4,
    "valence": 4,
    "arousal": 4,
    "frontality": 4,
    "visibility": 4,
}


def _envelope(status: int, body: Any) -> bytes:
    return gojson.dumps_bytes({"status": status, "body": body, "htmlencoded": False, "last_modified": 0})


def success(body: dict[str, Any]) -> bytes:
    return _envelope(200, body)


def error(status: int, message: str) -> bytes:
    return _envelope(status, message)


def http_status(envelope_status: int, mode: str) -> int:
    """``always-200`` (the documented behaviour) or ``mirror`` (the envelope's status)."""
    return envelope_status if mode == "mirror" else 200


def _number(name: str, value: float) -> float:
    return go_round(value, _DECIMALS[name])


def person_json(person: PersonResult) -> dict[str, Any]:
    out: dict[str, Any] = {"tag": person.tag, "coord": list(person.coord)}
    if person.aliases:
        out["aliases"] = list(person.aliases)
    out["confidence"] = _number("confidence", person.confidence)
    out["awesomeness"] = _number("awesomeness", person.awesomeness)
    out["similarity"] = _number("similarity", person.similarity)
    if person.attributes:
        for key, value in person.attributes.items():
            if key == "age":
                out[key] = float(round(value))
            elif key in _DECIMALS:
                out[key] = _number(key, value)
            else:
                out[key] = value
    return out


def object_json(result: ObjectResult) -> dict[str, Any]:
    out: dict[str, Any] = {"status": result.status}
    if result.error is not None:
        out["error"] = result.error
    out["name"] = result.name
    if result.persons:
        out["persons"] = [person_json(p) for p in result.persons]
    return out


def objects_body(results: Sequence[ObjectResult]) -> dict[str, Any]:
    return {"objects": [object_json(r) for r in results]}


def recognize_body(result: RecognizeResult, aliases_changed_mode: str) -> dict[str, Any]:
    body = objects_body(result.objects)
    if result.aliases_changed or aliases_changed_mode == "always":
        body["aliases_changed"] = result.aliases_changed
    return body
