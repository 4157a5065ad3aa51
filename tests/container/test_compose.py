"""docker/compose.yaml under podman-compose: both compose files validate, and the stack comes up with the
no-registry override, its client calling the emulator only once it is healthy, at https://smarty.mail.ru (the
emulator's network alias, its CA from the shared volume), and exiting 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.container.launch import ROOT, Podman, unique

pytestmark = [pytest.mark.container, pytest.mark.slow]

COMPOSE = ROOT / "docker" / "compose.yaml"
NO_REGISTRY = ROOT / "docker" / "compose.no-registry.yaml"
PODMAN_COMPOSE = [sys.executable, "-m", "podman_compose", "--in-pod", "false"]


def compose(podman: Podman, image: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN_COMPOSE, *args],
        env={**podman.env, "SMARTY_IMAGE": image},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def config(podman: Podman, image: str, *files: Path) -> dict[str, Any]:
    done = compose(podman, image, *[arg for f in files for arg in ("-f", str(f))], "config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


def test_both_compose_files_validate(podman: Podman) -> None:
    image = "localhost/smarty-emulator:config-check"
    plain = config(podman, image, COMPOSE)
    assert plain["services"]["smoke"]["image"].startswith("curlimages/curl:")
    assert plain["services"]["emulator"]["build"]["dockerfile"] == "docker/Dockerfile"
    both = config(podman, image, COMPOSE, NO_REGISTRY)
    emulator, smoke = both["services"]["emulator"], both["services"]["smoke"]
    assert emulator["image"] == smoke["image"] == image
    assert not emulator.get("ports")  # no host port: the client reaches the emulator by its name
    assert smoke["depends_on"]["emulator"]["condition"] == "service_healthy"
    assert emulator["healthcheck"]["test"] == ["CMD", "python", "-m", "emulator.healthcheck"]
    assert emulator["volumes"] == plain["services"]["emulator"]["volumes"]  # still the named volume


def test_compose_up_the_client_calls_a_healthy_emulator_and_exits_0(podman: Podman, image: str) -> None:
    project = unique("compose")
    files = ["-f", str(COMPOSE), "-f", str(NO_REGISTRY)]
    try:
        up = compose(podman, image, "-p", project, *files, "up", "--no-build", "--exit-code-from", "smoke", timeout=300)
        emulator_log = podman.run("logs", f"{project}_emulator_1", check=False)  # the server logs to stderr
        smoke_log = podman.run("logs", f"{project}_smoke_1", check=False).stdout
    finally:
        compose(podman, image, "-p", project, *files, "down", "-v", "-t", "5", timeout=120)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    *_, called_url, last = smoke_log.strip().splitlines()
    answer = json.loads(last)
    assert answer["status"] == 200 and answer["body"] == {}, smoke_log
    # By the real service's name, over HTTPS, trusting the CA the emulator wrote to the shared volume.
    assert called_url == "https://smarty.mail.ru/api/v1/persons/truncate", smoke_log
    # The emulator's JSON log: ready (the state its health check reports) before the client's first request.
    lines = (emulator_log.stdout + emulator_log.stderr).splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    ready = [i for i, event in enumerate(events) if event["message"].startswith("ready:")]
    called = [i for i, event in enumerate(events) if event.get("method") == "truncate"]
    assert ready and called and ready[0] < called[0], events
    # down -v left none of the project's volumes (other tests' containers may hold volumes meanwhile)
    assert podman.output("volume", "ls", "--quiet", "--filter", f"label=io.podman.compose.project={project}") == ""
    assert not [v for v in podman.output("volume", "ls", "--quiet").split() if v.startswith(project)]
