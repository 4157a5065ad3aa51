"""The pytest plugin: registered by the package, its emulator is a real subprocess, its helpers work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.pytest_plugin import SmartyEmulator

PHOTOS = Path(__file__).resolve().parents[2] / "fixtures" / "people"


def recognize(emulator: SmartyEmulator, photo: Path, token: str | None = None) -> dict[str, Any]:
    response = httpx.post(
        f"{emulator.base_url}/v1/persons/recognize",
        params={"oauth_token": token or emulator.token, "oauth_provider": emulator.provider},
        files=[
            ("q", ("q.jpg", photo.read_bytes(), "image/jpeg")),
            ("meta", (None, json.dumps({"space": "2", "images": [{"name": "q"}], "update_embedding": False}))),
        ],
        timeout=60,
    )
    assert response.status_code == 200
    envelope: dict[str, Any] = response.json()
    return envelope


def test_plugin_is_registered_by_the_package(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("smarty_emulator")


def test_emulator_is_a_subprocess_on_loopback(smarty_emulator: SmartyEmulator) -> None:
    assert smarty_emulator.process.poll() is None
    assert smarty_emulator.base_url.startswith("http://127.0.0.1:") and smarty_emulator.base_url.endswith("/api")
    assert smarty_emulator.settings()["http_status"] == "always-200"


def test_seed_reset_and_configure(smarty_emulator: SmartyEmulator, tmp_path: Path) -> None:
    smarty_emulator.reset()
    person = tmp_path / "photos" / "2" / "7"
    person.mkdir(parents=True)
    shutil.copy(PHOTOS / "biden" / "biden.jpg", person / "biden.jpg")
    smarty_emulator.seed(tmp_path / "photos")
    assert recognize(smarty_emulator, PHOTOS / "biden" / "biden2.jpg")["body"]["objects"][0]["persons"][0]["tag"] == (
        "person7"
    )
    smarty_emulator.configure(match_threshold=0.9999)
    assert smarty_emulator.settings()["match_threshold"] == 0.9999
    smarty_emulator.add_fault("latency", latency_ms=1)
    smarty_emulator.reset()  # persons, faults, journal and settings back to the start
    assert smarty_emulator.settings()["match_threshold"] != 0.9999
    assert smarty_emulator.faults() == []
    assert smarty_emulator.requests() == []
    assert recognize(smarty_emulator, PHOTOS / "biden" / "biden2.jpg")["body"]["objects"][0]["persons"][0]["tag"] == (
        "undefined"
    )


def test_oauth_flow_with_a_real_short_lifetime(smarty_emulator: SmartyEmulator) -> None:
    """The same flow as tests/test_oauth.py, against the subprocess and the real clock (2 s lifetime)."""
    smarty_emulator.reset()
    smarty_emulator.configure(token_lifetime=2)
    try:
        credentials = {"client_id": "my-app", "client_secret": "anything", "grant_type": "client_credentials"}
        tokens = httpx.post(smarty_emulator.token_url, json=credentials).json()
        assert tokens["expires_in"] == 2
        photo = PHOTOS / "biden" / "biden.jpg"
        assert recognize(smarty_emulator, photo, tokens["access_token"])["status"] == 200
        time.sleep(2.05)
        assert recognize(smarty_emulator, photo, tokens["access_token"])["status"] == 403
        refresh = {"client_id": "my-app", "refresh_token": tokens["refresh_token"], "grant_type": "refresh_token"}
        new = httpx.post(smarty_emulator.token_url, json=refresh).json()
        assert recognize(smarty_emulator, photo, new["access_token"])["status"] == 200
    finally:
        smarty_emulator.reset()


def test_docs_example_is_the_one_in_the_suite() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "testing-aids.md").read_text()
    section = page.split("this file is\n`tests/control/test_plugin_example.py` in this repository", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    example = (Path(__file__).resolve().parent / "test_plugin_example.py").read_text()
    assert block == example


def test_registering_the_plugin_costs_nothing() -> None:
    """Every pytest run of an environment with the package imports the plugin: it must stay light."""
    probe = (
        "import sys, emulator.pytest_plugin; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'dlib', 'numpy', 'httpx') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"
