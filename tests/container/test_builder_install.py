"""The image's builder stage, outside the image: docker/install.sh's two steps (the dependencies from pyproject.toml
alone, then the package) from the source tree as the Dockerfile copies it, into a fresh venv that then serves.

With the container tests (marked ``container``), which build and run the image from the same steps; the wheel that
users install is tested in tests/ops/test_docker.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.fresh_venv import ROOT, install_and_serve

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_the_builder_steps_from_the_tree_give_a_working_server(tmp_path: Path) -> None:
    src = tmp_path / "src"  # what the Dockerfile COPYs
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "emulator", src / "emulator", ignore=shutil.ignore_patterns("__pycache__"))
    install_and_serve(src, [["--deps"], ["--package"]], tmp_path)
