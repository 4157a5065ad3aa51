"""Headless Chromium for the demo page's tests, driven by Playwright.

The browser is Debian's ``chromium`` package (``.ci/run`` and ``make test`` install it where missing); Playwright
never downloads one of its own. Without it the browser tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from tests.support.ci import unavailable

CHROMIUM = Path(os.environ.get("SMARTY_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def require_browser() -> None:
    """Skip (or, in CI, fail) when Chromium or Playwright is missing."""
    problem = None
    if not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing: install Debian's chromium package (make test does, as root)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing: pip install -e '.[test]'"
    if problem is not None:
        unavailable(f"browser tests cannot run: {problem}")


def drop_file(page: object, selector: str, name: str, data: bytes, mime: str) -> None:
    """Drop a file on an element as a user dragging it from the desktop would (dragenter, dragover, drop)."""
    page.evaluate(  # type: ignore[attr-defined]
        """([selector, name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [selector, name, base64.b64encode(data).decode(), mime],
    )
