"""Database URLs (``SMARTY_DATABASE_URL``): the password they carry, and where they point without it.

A URL may be ``postgresql://user:pass@host/db?password=...`` or a libpq ``key=value`` string; the password is kept
out of every message (:func:`database_location`) and redacted from logs (:func:`database_password`).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit


def _conninfo_pairs(text: str) -> list[tuple[str, str]]:
    """The ``key=value`` pairs of a libpq connection string (values maybe single-quoted, with backslash escapes)."""
    pairs = []
    for match in re.finditer(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", text):
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.append((match.group(1), value))
    return pairs


def database_password(url: str) -> str:
    """The password a database URL (or a libpq ``key=value`` string) carries, or ``""``."""
    if "://" in url:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        return unquote(parts.password or "") or query.get("password", "")
    return dict(_conninfo_pairs(url)).get("password", "")


def database_location(url: str) -> str:
    """A database URL without its password, for messages (``postgresql://user@host:5432/smarty``)."""
    if "://" in url:
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{host}" if at else host
        query = "&".join(p for p in parts.query.split("&") if p and unquote(p.partition("=")[0]) != "password")
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return " ".join(f"{k}={v}" for k, v in _conninfo_pairs(url) if k != "password")
