"""One request forwarded to the upstream, with the standard library (no HTTP client dependency).

Blocking: the hooks call :func:`post` off the event loop. Redirects are not followed (the client gets the upstream's
3xx as it is); proxies of the environment (``HTTPS_PROXY``, ``NO_PROXY``) apply, as for any client on the machine.
An upstream that cannot be reached, times out or closes the connection without a whole answer is an
:class:`UpstreamFailed`, whose message names the upstream and the cause, never the query string (it carries the
token).
"""

from __future__ import annotations

import http.client
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

USER_AGENT = "smarty-emulator (upstream forward)"


class UpstreamFailed(RuntimeError):
    """No answer from the upstream: unreachable, timed out, or the connection dropped."""


@dataclass(frozen=True)
class UpstreamAnswer:
    """What the upstream answered: its HTTP status, all its headers, its exact bytes, and how long it took."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = field(repr=False)
    latency_ms: float

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((value for key, value in self.headers if key.lower() == lower), None)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches the client as the upstream sent it


_OPENER = urllib.request.build_opener(_NoRedirect)


def target(base: str, path: str, query: str = "") -> str:
    """``base`` (scheme and host) + ``path`` + ``?query`` when there is one."""
    return base.rstrip("/") + path + (f"?{query}" if query else "")


def _quote(name: str) -> str:
    """A part's name or file name inside its Content-Disposition, quoted as browsers do."""
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def multipart(parts: Iterable[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of ``(name, file name or None, bytes)`` in order, and its Content-Type (with a
    fresh boundary: the upstream sees the same parts, not the same bytes)."""
    boundary = "smarty-emulator-" + secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{_quote(name)}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}"
        if filename is not None:
            head += f'; filename="{_quote(filename)}"\r\nContent-Type: application/octet-stream'
        chunks += [head.encode("utf-8"), b"\r\n\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float, shown: str) -> UpstreamAnswer:
    """POST ``body`` to ``url`` and read the whole answer (any HTTP status). ``shown`` is how errors name the
    upstream (its URL without the query string)."""
    request = urllib.request.Request(url, data=body, method="POST")
    for name, value in headers.items():
        request.add_header(name, value)
    request.add_header("User-Agent", USER_AGENT)
    started = time.perf_counter()
    try:
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                status, got, content = response.status, list(response.headers.items()), response.read()
        except urllib.error.HTTPError as answer:  # a 3xx, 4xx or 5xx: still the upstream's answer
            with answer:
                status, got, content = answer.code, list(answer.headers.items()), answer.read()
    except TimeoutError:
        raise UpstreamFailed(f"{shown}: no answer within {timeout:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise UpstreamFailed(f"{shown}: no answer within {timeout:g} s") from None
        raise UpstreamFailed(f"{shown}: {_cause(reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UpstreamFailed(f"{shown}: {_cause(exc)}") from None
    latency_ms = (time.perf_counter() - started) * 1000
    return UpstreamAnswer(status, tuple(got), content, latency_ms)


def _cause(exc: object) -> str:
    """The failure in a few words: its kind and text (no URL: the caller names the upstream)."""
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | http.client.IncompleteRead):
        return f"the connection was closed without a whole answer ({type(exc).__name__})"
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, str) else exc
