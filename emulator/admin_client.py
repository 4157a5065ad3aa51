"""The testing aids' helpers over the admin API (faults, the journal, live settings, reset), shared by the pytest
plugin (:class:`emulator.pytest_plugin.SmartyEmulator`) and the Testcontainers module
(:class:`emulator.testcontainers.SmartyEmulatorContainer`), which differ only in where the server is and whether a
token is needed. Only the standard library is imported: the pytest plugin, which every pytest run of an environment
with the package loads, imports this module.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

# A server on loopback is reached directly, whatever the environment's *_proxy variables say (as the launcher's
# readiness probe does); another host (a remote Docker host's published port) the way the environment says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AdminCalls:
    """Mixed into a class that knows its server: :meth:`admin_root` (the server root URL), ``admin_token`` (``None``:
    no Authorization header) and ``admin_error`` (the exception a failed call raises)."""

    admin_token: str | None = None
    admin_error: type[Exception] = RuntimeError
    _initial_settings: dict[str, Any]

    def admin_root(self) -> str:
        raise NotImplementedError

    def admin(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        """Call the admin API (``path`` under the server root); its decoded JSON."""
        url = self.admin_root() + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if self.admin_token is not None:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            opener = _DIRECT if urllib.parse.urlsplit(url).hostname in _LOOPBACK else urllib.request.build_opener()
            with opener.open(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise self.admin_error(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def add_fault(self, kind: str, **rule: Any) -> dict[str, Any]:
        """Add a fault rule, e.g. ``add_fault("http_503", method="recognize", times=2)``; returns the rule."""
        created: dict[str, Any] = self.admin("POST", "/emulator/faults", {"kind": kind, **rule})
        return created

    def faults(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self.admin("GET", "/emulator/faults")["faults"]
        return rules

    def clear_faults(self) -> None:
        self.admin("DELETE", "/emulator/faults")

    def requests(
        self, method: str | None = None, space: int | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The journal of persons requests, oldest first (see ``GET /emulator/requests``)."""
        query = {"method": method, "space": space, "since": since}
        entries: list[dict[str, Any]] = self.admin("GET", "/emulator/requests", query=query)["requests"]
        return entries

    def clear_requests(self) -> None:
        self.admin("DELETE", "/emulator/requests")

    def settings(self) -> dict[str, Any]:
        """The live settings and their values."""
        values: dict[str, Any] = self.admin("GET", "/emulator/settings")["settings"]
        return values

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change live settings, e.g. ``configure(match_threshold=0.9)``; ``reset()`` restores them."""
        values: dict[str, Any] = self.admin("PATCH", "/emulator/settings", changes)["settings"]
        return values

    def reset(self) -> None:
        """Forget every person of every client, clear faults and the journal, restore the settings."""
        self.clear_faults()
        self.admin("POST", "/emulator/reset", {})
        if self._initial_settings:
            self.configure(**self._initial_settings)
        self.clear_requests()
