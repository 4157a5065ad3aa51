"""Fixtures of the container tests: the engine, the cached base images, the emulator image built once per session.

When a container cannot run here (no podman, no root for debootstrap, no arm64 emulation), the tests skip with the
reason, except in CI (``CI=true``), where they fail: there ``make test`` installs what they need.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.container.launch import (
    FIGURES,
    Container,
    EngineUnavailable,
    Podman,
    build_image,
    ensure_base_image,
    named_volume,
    setup_podman,
)
from tests.support import ci
from tests.support.parallel import FIGURE

ARM64_BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """The container figures measured so far go with each test's teardown report, so that tests/conftest.py prints
    them at the end also when the tests ran in worker processes (nothing is asserted on them)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "teardown":
        report.user_properties.extend((FIGURE, f"{name}: {text}") for name, text in FIGURES.items())


def unavailable(reason: str) -> NoReturn:
    ci.unavailable(f"a container cannot run here: {reason}")


def native_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("container")


@pytest.fixture(scope="session")
def podman(workdir: Path) -> Podman:
    try:
        return setup_podman(workdir)
    except EngineUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def base_image(podman: Podman, workdir: Path) -> str:
    """The stand-in for python:3.12-slim on this machine's architecture (debootstrap the first time only)."""
    try:
        return ensure_base_image(podman, native_arch(), workdir)
    except EngineUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def image(podman: Podman, base_image: str, workdir: Path) -> str:
    """docker/Dockerfile built on the base, once per session."""
    return build_image(podman, base_image, native_arch(), workdir)


@pytest.fixture
def volume(podman: Podman) -> Iterator[str]:
    """A new named volume, removed after the test."""
    with named_volume(podman) as name:
        yield name


@pytest.fixture(scope="module")
def served(podman: Podman, image: str) -> Iterator[Container]:
    """One container of the image for a test module, ready (``ready_seconds`` says after how long)."""
    with named_volume(podman) as name, Container(podman, image, volume=name) as container:
        FIGURES[f"ready after podman run ({native_arch()})"] = f"{container.wait_ready():.1f} s"
        yield container


# --- arm64 under emulation ------------------------------------------------------------------------------------------


def arm64_wanted() -> bool:
    return ci.in_ci() or os.environ.get("SMARTY_TEST_ARM64") == "1"


@pytest.fixture(scope="session")
def arm64_image(podman: Podman, workdir: Path) -> str:
    """docker/Dockerfile built for linux/arm64 on an arm64 base, run through QEMU (minutes the first time)."""
    if native_arch() == "arm64":
        pytest.skip("this machine is arm64: the whole container group already runs arm64")
    if not arm64_wanted():
        pytest.skip("arm64 under emulation takes minutes: it runs in CI and in `make test-arm64`")
    if "enabled" not in (ARM64_BINFMT.read_text() if ARM64_BINFMT.exists() else ""):
        unavailable(f"no arm64 emulation registered ({ARM64_BINFMT}): `make test-arm64` sets it up as root")
    try:
        base = ensure_base_image(podman, "arm64", workdir)
    except EngineUnavailable as exc:
        unavailable(str(exc))
    return build_image(podman, base, "arm64", workdir)
