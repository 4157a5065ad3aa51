"""``POST /auth/oauth/v1/token``: VK Cloud's OAuth token endpoint, as real clients call it.

The body may be JSON (as the official curl examples send it) or form-encoded (as most
OAuth libraries send it); the client id and secret may also come as HTTP Basic auth. The
response has ``access_token``, ``refresh_token`` and ``expires_in``; errors are shaped as
RFC 6749 errors: ``{"error": "invalid_client", "error_description": "..."}`` with 400 or 401.
The real endpoint's error bodies are not documented; these are the emulator's.

The signing secret is read at startup (a file of the data dir, or a row of the database), never on the event
loop; a token asked for before that reads it in a worker thread.

A :data:`emulator.persons.hooks.TokenHook` (the app factory gives the upstream's: record, replay...) may answer a
request first, from its bytes as sent; when it returns ``None`` the emulator answers.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from emulator.api.middleware import drop_connection
from emulator.persons.hooks import TokenCall, TokenHook
from emulator.persons.oauth import OAuthError
from emulator.runtime import Runtime

TOKEN_PATH = "/auth/oauth/v1/token"
_MAX_BODY = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _error(exc: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description}, status_code=exc.http_status, headers=headers
    )


def _parse(content_type: str, raw: bytes) -> dict[str, str]:
    text = raw.decode("utf-8", "replace")
    if "json" in content_type or (not content_type.startswith("application/x-www-form") and text.lstrip()[:1] == "{"):
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError:
            raise OAuthError("invalid_request", "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise OAuthError("invalid_request", "the body must be a JSON object")
        return {str(k): v if isinstance(v, str) else str(v) for k, v in doc.items() if v is not None}
    return dict(parse_qsl(text, keep_blank_values=True))


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (client_id, secret) if sep else None


def build_oauth_router(runtime: Runtime, hook: TokenHook | None = None) -> APIRouter:
    router = APIRouter()

    @router.post(TOKEN_PATH, name="oauth_token")
    async def token(request: Request) -> Response:
        raw = await request.body()
        if hook is not None and len(raw) <= _MAX_BODY:  # a larger body gets the emulator's own 400
            call = TokenCall(
                path=TOKEN_PATH,
                query=request.url.query,
                content_type=request.headers.get("content-type", ""),
                authorization=request.headers.get("authorization", ""),
                body=raw,
                settings=runtime.settings,
            )
            answer = await hook(call)
            if answer is not None:
                if answer.drop:
                    drop_connection(request)
                    return Response(b"", status_code=500)  # not sent: the transport is closed
                headers = dict(answer.headers)
                return Response(answer.content, status_code=answer.status, headers=headers)
        if not runtime.oauth.secret_loaded:  # a token asked for before the startup read it: read it off the loop
            await run_in_threadpool(runtime.oauth.load_secret)
        try:
            if len(raw) > _MAX_BODY:
                raise OAuthError("invalid_request", "the body is too large")
            fields: dict[str, Any] = _parse(request.headers.get("content-type", "").lower(), raw)
            basic = _basic(request.headers.get("authorization", ""))
            if basic is not None:
                fields.setdefault("client_id", basic[0])
                fields.setdefault("client_secret", basic[1])
            grant = fields.get("grant_type", "")
            client_id = fields.get("client_id", "")
            if grant == "client_credentials":
                issued = runtime.oauth.client_credentials(client_id, fields.get("client_secret", ""))
            elif grant == "refresh_token":
                issued = runtime.oauth.refresh(client_id, fields.get("refresh_token", ""))
            elif not grant:
                raise OAuthError("invalid_request", "grant_type is required")
            else:
                raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials or refresh_token")
        except OAuthError as exc:
            return _error(exc)
        body = {
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in,
        }
        return JSONResponse(body, headers=_NO_STORE)

    return router
