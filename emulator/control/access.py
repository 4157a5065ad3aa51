"""Who may use the admin API and page under ``/emulator/`` (not part of the real service).

``off``: nobody. ``loopback``: clients on a loopback address, and only while the server
listens on a loopback address (never open on a public bind). ``token``: anyone with
``Authorization: Bearer <admin_token>`` (or, for a browser, the cookie that
``/emulator/ui/login`` sets), compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import HTTPException, Request

from emulator.runtime import Runtime

ADMIN_COOKIE = "smarty_admin"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin(request: Request) -> None:
    """FastAPI dependency: raise 403/404 unless the admin API is open to this request."""
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    if settings.admin == "off":
        raise HTTPException(status_code=404, detail="the admin API is off (SMARTY_ADMIN=off)")
    if settings.admin == "token":
        given = request.headers.get("authorization", "")
        cookie = request.cookies.get(ADMIN_COOKIE)
        if not given and cookie:  # a browser on the demo page, signed in at /emulator/ui/login
            given = f"Bearer {cookie}"
        expected = f"Bearer {settings.admin_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                status_code=403,
                detail="admin token required: Authorization: Bearer <token> (a browser: sign in at /emulator/ui/login)",
            )
        return
    client_host = request.client.host if request.client else None
    if not (is_loopback(settings.host) and is_loopback(client_host)):
        raise HTTPException(
            status_code=403,
            detail="the admin API is open to loopback clients on a loopback bind only; set SMARTY_ADMIN=token",
        )
