"""Logging: one line per persons request, human or JSON (``SMARTY_LOG_FORMAT``), never a token.

:func:`logging_config` is the ``logging.config.dictConfig`` the CLI hands to uvicorn, so the
emulator's lines and uvicorn's own (startup, errors and, with ``SMARTY_ACCESS_LOG=true``, the
access log) share one format and one stream (stderr), in every worker process.

Tokens never reach a log line: every line passes through :func:`redact` after it is formatted,
which blanks the values of ``oauth_token`` and the other credential query parameters, bearer
tokens, and every token or secret configured in the settings, wherever they appear (the access
log's request line, an exception's text). The request line itself carries no query at all.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from emulator.ops.observe import RequestRecord
from emulator.persons.clients import parse_clients
from emulator.settings import Settings
from emulator.store.urls import database_password

REQUEST_LOGGER = "emulator.requests"
REDACTED = "<redacted>"

# Query or form parameters whose value is a credential.
_CREDENTIAL_PARAMS = re.compile(
    r"(?i)\b((?:oauth_token|access_token|refresh_token|client_secret|token|password)=)[^&\s\"'\\]*"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"'\\,]+")
_CREDENTIAL_JSON = re.compile(
    r"(?i)(\"(?:oauth_token|access_token|refresh_token|client_secret|token|password)\"\s*:\s*\")[^\"]*"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every credential value replaced by ``<redacted>``."""
    text = _CREDENTIAL_PARAMS.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _CREDENTIAL_JSON.sub(rf"\1{REDACTED}", text)
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def configured_secrets(settings: Settings) -> list[str]:
    """Every token and secret the settings hold, longest first (so no part of one is left behind)."""
    secrets = [token for tokens in parse_clients(settings.clients).values() for token in tokens]
    if settings.admin_token:
        secrets.append(settings.admin_token)
    oauth_clients = getattr(settings, "oauth_clients", "")
    for entry in str(oauth_clients).split(";"):
        _, _, credentials = entry.partition("=")
        _, _, secret = credentials.partition(":")
        if secret.strip():
            secrets.append(secret.strip())
    password = database_password(getattr(settings, "database_url", ""))
    if password:  # as given, and as it may be written in a URL
        secrets += [password, quote(password, safe="")]
    return sorted(set(secrets), key=len, reverse=True)


class LineFormatter(logging.Formatter):
    """One line per record: ``human`` (time level logger: message) or ``json`` (one object); redacted."""

    def __init__(self, format: str = "human", secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.json = format == "json"
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        error = self.formatException(record.exc_info) if record.exc_info else None
        if self.json:
            payload: dict[str, Any] = {
                "time": stamp,
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                payload.update(fields)
            if error:
                payload["exception"] = error
            text = json.dumps(payload, ensure_ascii=False, default=str)
        else:
            text = f"{stamp} {record.levelname:<7} {record.name}: {message}"
            if error:
                text += "\n" + error
        return redact(text, self.secrets)


def make_formatter(format: str = "human", secrets: Iterable[str] = ()) -> LineFormatter:
    """Factory for ``dictConfig`` (``"()": "emulator.ops.logs.make_formatter"``)."""
    return LineFormatter(format, secrets)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig for uvicorn's ``log_config``: emulator and uvicorn loggers, one handler on stderr."""
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {
                "()": "emulator.ops.logs.make_formatter",
                "format": settings.log_format,
                "secrets": configured_secrets(settings),
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False}
            for name in ("emulator", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure(settings: Settings) -> None:
    """Apply :func:`logging_config` unless logging of the emulator is configured already (the CLI does it)."""
    if not logging.getLogger("emulator").handlers:
        logging.config.dictConfig(logging_config(settings))


def request_fields(record: RequestRecord) -> dict[str, Any]:
    """What the request line says: method, client, space, images, per-object statuses, status, timings."""
    fields: dict[str, Any] = {
        "method": record.method,
        "client": record.client,
        "space": record.space,
        "images": len(record.images),
        "statuses": [obj.get("status", 0) for obj in record.objects if isinstance(obj, dict)],
        "faces": record.faces,
        "status": record.envelope_status,
        "http_status": record.http_status,
        "duration_ms": round(record.duration_ms, 1),
        "timings_ms": {phase: round(ms, 1) for phase, ms in record.timings_ms.items()},
    }
    if record.envelope_status != 200 and isinstance(record.body, str):
        fields["error"] = record.body
    return fields


def human_line(fields: dict[str, Any]) -> str:
    statuses = ",".join(str(s) for s in fields["statuses"]) or "-"
    parts = [
        fields["method"],
        f"client={fields['client'] or '-'}",
        f"space={'-' if fields['space'] is None else fields['space']}",
        f"images={fields['images']}",
        f"objects={statuses}",
        f"faces={fields['faces']}",
        f"status={fields['status']}",
        f"duration_ms={fields['duration_ms']:.1f}",
    ]
    parts += [f"{phase}_ms={ms:.1f}" for phase, ms in fields["timings_ms"].items()]
    if "error" in fields:
        parts.append(f"error={json.dumps(fields['error'], ensure_ascii=False)}")
    return " ".join(parts)


class RequestLog:
    """A request observer: one INFO line per persons request on the ``emulator.requests`` logger."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(REQUEST_LOGGER)

    def __call__(self, record: RequestRecord) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        fields = request_fields(record)
        self.logger.info(human_line(fields), extra={"fields": fields})
