"""The built image as an artifact: its health check kept, its size over the base, and what is not in it."""

from __future__ import annotations

import re

import pytest

from tests.container.launch import FIGURES, Podman

pytestmark = [pytest.mark.container, pytest.mark.slow]

MiB = 1024 * 1024
BUDGET_OVER_BASE = 180 * MiB
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "ld", "as", "make", "cmake")


def test_the_docker_format_keeps_the_health_check_and_the_user(podman: Podman, image: str) -> None:
    inspected = podman.inspect(image)
    assert inspected["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert inspected["Healthcheck"]["Test"] == ["CMD", "python", "-m", "emulator.healthcheck"]
    assert inspected["Healthcheck"]["StartPeriod"] == 60 * 10**9
    config = inspected["Config"]
    assert config["User"] == "smarty"
    assert config["Entrypoint"] == ["smarty-emulator"] and config["Cmd"] == ["serve"]
    assert config["Volumes"] == {"/data": {}} and config["WorkingDir"] == "/data"


def test_the_image_adds_at_most_160_mib_to_its_base(podman: Podman, image: str, base_image: str) -> None:
    """The figure the README gives: ``podman image inspect --format '{{.Size}}'`` of the image minus its base."""
    over = podman.image_size(image) - podman.image_size(base_image)
    FIGURES["image size over its base"] = f"{over / MiB:.1f} MiB"
    assert 0 < over <= BUDGET_OVER_BASE, f"{over / MiB:.1f} MiB over the base"


def test_the_final_stage_adds_no_compiler_pip_cache_tests_or_sources(
    podman: Podman, image: str, base_image: str
) -> None:
    # `podman image diff A B` lists what A has that B lacks ("A"), lacks ("D") or has otherwise ("C").
    changes = [line.split(maxsplit=1) for line in podman.output("image", "diff", image, base_image).splitlines()]
    added = {path for kind, path in changes if kind == "A"}
    assert "/opt/venv/bin/smarty-emulator" in added and "/data" in added
    outside = {p for p in added if not p.startswith(("/opt/venv", "/data"))}
    # useradd's own backups, and the empty /ca where the compose recipe has the emulator write its CA certificate
    assert outside <= {"/etc/gshadow-", "/etc/shadow-", "/ca"}, outside
    changed = {path for kind, path in changes if kind == "C"}
    assert changed <= {
        "/etc",
        "/opt",
        "/etc/passwd",
        "/etc/passwd-",
        "/etc/group",
        "/etc/group-",
        "/etc/shadow",
        "/etc/gshadow",
    }, changed
    for path in added:
        name = path.rsplit("/", 1)[-1]
        assert not ("/bin/" in path and name in COMPILERS), path
        assert "/.cache/" not in path and not path.endswith("/.cache"), path  # no pip (or other) cache
        assert not re.search(r"/(tests?|conftest\.py)(/|$)", path), path  # no test suite, ours or a package's
        assert "/site-packages/pip/" not in path and not path.endswith("/bin/pip"), path  # nothing installs later
    assert not any(p.startswith("/src") for p in added)  # the builder's sources stay in the builder
    # Nor anything a compiler would need from the base: minbase has none and the image adds none.
    found = podman.run(
        "run", "--rm", "--entrypoint", "sh", image, "-c", f"command -v {' '.join(COMPILERS)} pip pip3", check=False
    )
    assert found.stdout.strip() == "", found.stdout
