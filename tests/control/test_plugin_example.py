"""Integration tests as a user of the package writes them: only the ``smarty_emulator`` fixture."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.pytest_plugin import SmartyEmulator

PHOTOS = Path(__file__).resolve().parents[2] / "fixtures" / "people"


def call(emulator: SmartyEmulator, method: str, meta: dict[str, Any], **images: bytes) -> Any:
    """One persons request, as the real service is called; returns the envelope."""
    files = [(name, (f"{name}.jpg", data, "image/jpeg")) for name, data in images.items()]
    files.append(("meta", (None, json.dumps(meta), "application/json")))
    response = httpx.post(
        f"{emulator.base_url}/v1/persons/{method}",
        params={"oauth_token": emulator.token, "oauth_provider": emulator.provider},
        files=files,
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def test_set_then_recognize_survives_a_503(smarty_emulator: SmartyEmulator) -> None:
    smarty_emulator.reset()
    obama = (PHOTOS / "obama" / "obama.jpg").read_bytes()
    other_obama = (PHOTOS / "obama" / "obama2.jpg").read_bytes()

    stored = call(smarty_emulator, "set", {"space": "1", "images": [{"name": "a", "person_id": 42}]}, a=obama)
    assert stored["body"]["objects"] == [{"status": 0, "name": "a"}]

    smarty_emulator.add_fault("http_503", method="recognize", times=1)
    with pytest.raises(httpx.HTTPStatusError):
        call(smarty_emulator, "recognize", {"space": "1", "images": [{"name": "q"}]}, q=other_obama)
    found = call(smarty_emulator, "recognize", {"space": "1", "images": [{"name": "q"}]}, q=other_obama)
    assert found["body"]["objects"][0]["persons"][0]["tag"] == "person42"

    journal = smarty_emulator.requests()
    assert [(r["method"], r["http_status"]) for r in journal] == [("set", 200), ("recognize", 503), ("recognize", 200)]
    assert journal[0]["objects"] == [{"status": 0, "name": "a"}]
