"""The demo page at ``/emulator/ui`` and the face thumbnails it shows (not part of the real service).

Everything here is behind ``check_admin``, like the admin API. The page is plain static files shipped inside the
package (``emulator/control/static``: HTML, CSS and JavaScript, no build step), read once when the router is built;
it loads nothing from other hosts, which the Content-Security-Policy below also enforces.

Thumbnails are addressed by face id, which is unique across clients. The admin API sees every client by design
(it is an operator's view); ``?client=`` narrows a thumbnail to one client, and the page always passes it.
"""

from __future__ import annotations

import hashlib
import hmac
from importlib import resources

from fastapi import APIRouter, Depends, Form, Header, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from emulator.control.access import ADMIN_COOKIE, check_admin
from emulator.persons.types import ClientId
from emulator.runtime import Runtime

UI_PATH = "/emulator/ui"
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self';"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the page: name -> (bytes, media type)."""
    root = resources.files("emulator.control") / "static"
    files = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _MEDIA_TYPES:
            files[entry.name] = (entry.read_bytes(), _MEDIA_TYPES[suffix])
    return files


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>smarty-emulator: sign in</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 28rem; margin: 3rem auto; padding: 0 1rem">
<h1>smarty-emulator</h1>
<p>The admin API is guarded (<code>SMARTY_ADMIN=token</code>). Enter the admin token to open the demo page.</p>
<form method="post" action="/emulator/ui/login">
<label for="token">Admin token</label><br>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
%s</body></html>
"""


def build_login_router(runtime: Runtime) -> APIRouter:
    """``SMARTY_ADMIN=token``: a browser cannot add an Authorization header, so the page signs in once and
    keeps the token in an HttpOnly, SameSite=Strict cookie that ``check_admin`` accepts."""
    router = APIRouter()

    @router.get(UI_PATH + "/login", include_in_schema=False)
    async def login_page() -> HTMLResponse:
        return HTMLResponse(_LOGIN_PAGE % "", headers=_HEADERS)

    @router.post(UI_PATH + "/login", include_in_schema=False)
    async def login(token: str = Form(default="")) -> Response:
        settings = runtime.settings
        expected = settings.admin_token.encode()
        if settings.admin != "token" or not expected or not hmac.compare_digest(token.encode(), expected):
            return HTMLResponse(_LOGIN_PAGE % '<p role="alert">Wrong token.</p>', status_code=403, headers=_HEADERS)
        response = RedirectResponse(UI_PATH, status_code=303)
        response.set_cookie(ADMIN_COOKIE, token, httponly=True, samesite="strict", path="/emulator")
        return response

    return router


def build_ui_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(dependencies=[Depends(check_admin)])
    files = _static_files()

    def serve(name: str) -> Response:
        if name not in files:
            raise HTTPException(status_code=404, detail=f"no such file: {name}")
        body, media_type = files[name]
        return Response(body, media_type=media_type, headers=_HEADERS)

    @router.get(UI_PATH, include_in_schema=False)
    async def ui_page() -> Response:
        return serve("index.html")

    @router.get(UI_PATH + "/{name}", include_in_schema=False)
    async def ui_file(name: str) -> Response:
        return serve(name)

    @router.get("/emulator/faces/{face_id}/thumbnail.jpg", include_in_schema=False)
    async def face_thumbnail(
        face_id: int, client: str | None = Query(default=None), if_none_match: str | None = Header(default=None)
    ) -> Response:
        owner = ClientId(client) if client is not None else None
        jpeg = await run_in_threadpool(runtime.store.read_thumbnail, face_id, owner)
        if jpeg is None:
            raise HTTPException(status_code=404, detail=f"face {face_id} has no thumbnail")
        # Revalidated on every use: a fresh data dir gives the same face ids to other faces.
        etag = '"' + hashlib.sha256(jpeg).hexdigest()[:32] + '"'
        headers = {"Cache-Control": "private, no-cache", "ETag": etag}
        if if_none_match == etag:
            return Response(status_code=304, headers=headers)
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    return router
