"""The OAuth token endpoint against its upstream (``SMARTY_OAUTH_UPSTREAM_URL``), in the modes of
:mod:`emulator.upstream.hook`.

The body is forwarded as it was sent (with its Content-Type and Authorization). The key is the request's fields
without their secrets (``client_secret``, ``refresh_token``...), so a token request of the same client with
another secret is a hit. On write the answer's issued tokens become ``"<redacted>"``: a replayed token answer has
``"access_token":"<redacted>"``, and the persons requests made with that token replay all the same (the token is
never part of a key). The emulator's own answer to an upstream that fails is an RFC 6749 ``server_error`` (500).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool

from emulator.persons.errors import INTERNAL_ERROR
from emulator.persons.hooks import TokenCall, Verbatim
from emulator.upstream.cassette import (
    SECRET_FIELDS,
    CassetteError,
    Interaction,
    Response,
    kept_headers,
    oauth_meta,
    redact_token_body,
    request_key,
)
from emulator.upstream.forward import UpstreamAnswer, UpstreamFailed, post, target
from emulator.upstream.hook import REPLAY_HEADER, live_answer, miss_text, query_secrets, replayed
from emulator.upstream.library import CassetteLibrary, active_path

log = logging.getLogger("emulator.upstream")

METHOD = "oauth"  # the method of a token interaction in the cassette


def _error(text: str, *extra: tuple[str, str]) -> Verbatim:
    body = json.dumps({"error": "server_error", "error_description": text}).encode()
    return Verbatim(status=500, content=body, headers=(("content-type", "application/json"), *extra))


def token_fields(call: TokenCall) -> tuple[dict[str, str], list[str]]:
    """The request's fields (a JSON or form body, and HTTP Basic's client id and secret), and every secret in it."""
    fields: dict[str, str] = {}
    text = call.body.decode("utf-8", "replace")
    parsed: object = None
    if "json" in call.content_type.lower() or text.lstrip()[:1] == "{":
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
    if isinstance(parsed, dict):
        fields = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items() if v is not None}
    else:
        fields = dict(parse_qsl(text, keep_blank_values=True))
    secrets = [value for name, value in fields.items() if name in SECRET_FIELDS and value]
    scheme, _, value = call.authorization.partition(" ")
    if value:
        secrets.append(value.strip())
    if scheme.lower() == "basic" and value:
        try:
            client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if sep:
            fields.setdefault("client_id", client_id)
            secrets.append(secret)
    return fields, secrets + query_secrets(call.query)


def issued_secrets(body: bytes) -> list[str]:
    """The tokens (and any other secret field) of a token endpoint's answer."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(doc, dict):
        return []
    return [value for name, value in doc.items() if name in SECRET_FIELDS and isinstance(value, str) and value]


class TokenUpstream:
    """The token endpoint's hook (:data:`emulator.persons.hooks.TokenHook`): ``None`` lets the emulator answer."""

    def __init__(self, library: CassetteLibrary) -> None:
        self.library = library

    async def __call__(self, call: TokenCall) -> Verbatim | None:
        settings = call.settings
        mode = settings.upstream_mode
        if mode == "off":
            return None
        fields, secrets = token_fields(call)
        meta = oauth_meta(fields)
        key = request_key(METHOD, call.path, json.dumps(meta), [])
        if mode in ("replay", "spy"):
            try:
                recorded = await run_in_threadpool(self.library.replay, settings, key)
            except CassetteError as exc:
                log.error("%s: %s", METHOD, exc)
                return _error(INTERNAL_ERROR)
            if recorded is not None:
                return replayed(recorded)
            if mode == "replay":
                text = miss_text(f"the token request {call.path}", key, settings)
                log.warning("%s (%s)", text, active_path(settings))
                return None if settings.replay_miss == "emulate" else _error(text, (REPLAY_HEADER, "miss"))
        headers = {
            "Content-Type": call.content_type or "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if call.authorization:
            headers["Authorization"] = call.authorization
        base = str(settings.oauth_upstream_url)
        try:
            answer: UpstreamAnswer = await run_in_threadpool(
                post,
                target(base, call.path, call.query),
                call.body,
                headers,
                float(settings.upstream_timeout),
                target(base, call.path),
            )
        except UpstreamFailed as exc:
            log.error("%s forwarded to the upstream failed: %s", METHOD, exc)
            return _error(INTERNAL_ERROR)
        if mode in ("record", "spy"):
            stored = Response(
                answer.status, kept_headers(answer.headers), answer.latency_ms, redact_token_body(answer.body)
            )
            interaction = Interaction(key, METHOD, call.path, meta, (), stored)
            secrets += issued_secrets(answer.body)
            await run_in_threadpool(self.library.record, settings, interaction, {}, secrets)
        return live_answer(answer)
