"""Who may read ``GET /metrics``: ``SMARTY_METRICS`` = open | admin | off, and ``auto`` (the default) by the bind."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from emulator.face.engine import DlibEngine
from tests.support.emulator_process import EmulatorProcess
from tests.support.emulator_server import EmulatorServer

TOKEN = "metrics-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _status(server: EmulatorServer, headers: dict[str, str] | None = None) -> int:
    response = server.http.get("/metrics", headers=headers or {})
    if response.status_code == 200:
        assert "# HELP smarty_requests_total" in response.text
    return response.status_code


# (settings, metrics status without a token, with the admin token). The server listens on loopback in every case;
# `host` is what the guard judges the bind by, as the admin API does.
CASES = {
    "auto on a loopback bind: open": ({}, 200, 200),
    "auto on a public bind: the admin guard, loopback mode refuses": ({"host": "0.0.0.0"}, 403, 403),
    "auto on a public bind, admin token": ({"host": "0.0.0.0", "admin": "token", "admin_token": TOKEN}, 403, 200),
    "open on a public bind": ({"host": "0.0.0.0", "metrics": "open"}, 200, 200),
    "admin on loopback: open to loopback clients": ({"metrics": "admin"}, 200, 200),
    "admin, admin API off": ({"metrics": "admin", "admin": "off"}, 404, 404),
    "admin, admin token": ({"metrics": "admin", "admin": "token", "admin_token": TOKEN}, 403, 200),
    "off": ({"metrics": "off"}, 404, 404),
}


@pytest.mark.parametrize("case", list(CASES))
def test_metrics_access(engine: DlibEngine, tmp_path: Path, case: str) -> None:
    settings, without_token, with_token = CASES[case]
    server = EmulatorServer(tmp_path / "data", engine=engine, **settings).start()
    try:
        assert (_status(server), _status(server, BEARER)) == (without_token, with_token)
        assert server.http.get("/emulator/health").status_code == 200  # health and readiness stay open
        assert server.http.get("/emulator/ready").status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
def test_serve_on_a_public_bind_guards_metrics_by_default(tmp_path: Path) -> None:
    """A real ``serve`` on 0.0.0.0 (reached over loopback): metrics need the admin token, as the admin API does."""
    server = EmulatorProcess(tmp_path / "data", host="0.0.0.0", admin="token", admin_token=TOKEN).start()
    try:
        refused = httpx.get(f"{server.base_url}/metrics", timeout=30)
        assert refused.status_code == 403 and "admin token required" in refused.text
        allowed = httpx.get(f"{server.base_url}/metrics", headers=BEARER, timeout=30)
        assert allowed.status_code == 200 and "# HELP smarty_requests_total" in allowed.text
    finally:
        server.stop()
