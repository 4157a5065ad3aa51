"""docker/install.sh into a fresh venv, then ``smarty-emulator serve`` from it: set, recognize and metrics answer.

Needs the package registry (or pip's cache); ~20-45 s, most of it pip. The interpreter is this one, not 3.12.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from emulator.launcher import clean_env
from tests.support.emulator_server import fixture, free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docker" / "install.sh"


def install_and_serve(src: Path, steps: list[list[str]], tmp_path: Path) -> None:
    """Run install.sh once per step (its options) from ``src`` (a tree or a wheel) into a new venv, check what it
    installed, then serve from the venv and check that a set is recognized."""
    venv = tmp_path / "venv"
    env = clean_env(drop=("SMARTY_", "PROMETHEUS_", "VIRTUAL_ENV"))
    for step in steps:
        installed = subprocess.run(
            ["sh", str(INSTALL), *step, str(venv), str(src)],
            env={**env, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert installed.returncode == 0, installed.stderr[-3000:]
    assert not (venv / "bin" / "pip").exists()
    [site_packages] = list(venv.glob("lib/python*/site-packages"))
    [models] = list(site_packages.glob("face_recognition_models/models"))
    assert sorted(p.name for p in models.iterdir()) == [
        "dlib_face_recognition_resnet_model_v1.dat",
        "shape_predictor_5_face_landmarks.dat",
    ]
    assert not list(site_packages.glob("**/tests")) and not list(site_packages.glob("**/conftest.py"))
    [record] = list(site_packages.glob("smarty_emulator-*.dist-info/RECORD"))  # a real install, not an editable one
    assert "emulator/cli.py" in record.read_text()

    port = free_port()
    server_env = {**env, "SMARTY_PORT": str(port), "SMARTY_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(venv / "bin" / "smarty-emulator"), "serve"],
            cwd=tmp_path,  # not the repository: only the venv's copy of the package can be imported
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        healthcheck = [str(venv / "bin" / "python"), "-m", "emulator.healthcheck"]
        deadline = time.monotonic() + 90
        while subprocess.run(healthcheck, env=server_env, capture_output=True, timeout=30).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        api = f"http://127.0.0.1:{port}/api/v1/persons"
        auth = {"oauth_token": "fresh-venv", "oauth_provider": "mcs"}
        set_meta = '{"space":"0","images":[{"name":"f","person_id":1}]}'
        files = {"f": ("f.jpg", fixture("people/obama/obama.jpg"), "image/jpeg"), "meta": (None, set_meta)}
        assert httpx.post(f"{api}/set", params=auth, files=files, timeout=60).json()["status"] == 200
        probe = {"f": ("f.jpg", fixture("people/obama/obama2.jpg"), "image/jpeg")}
        probe["meta"] = (None, '{"space":"0","images":[{"name":"f"}]}')
        body = httpx.post(f"{api}/recognize", params=auth, files=probe, timeout=60).json()["body"]
        assert body["objects"][0]["persons"][0]["tag"] == "person1"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert 'smarty_requests_total{method="recognize",status="200"} 1.0' in metrics
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # A single-process uvicorn ends by re-raising SIGTERM (exit status 143 in a container) after a clean shutdown.
    assert server.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete." in log.read_text()
