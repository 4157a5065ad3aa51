"""The HTTPS port and the HTTPS proxy, served by uvicorn's own server beside the plain port.

When ``SMARTY_TLS_PORT`` or ``SMARTY_PROXY_PORT`` is set, ``serve`` binds those ports too and gives uvicorn
:class:`ListenerProtocol` as its HTTP protocol. uvicorn then accepts on every port as one server (the same app, the
same workers, the same graceful shutdown), and each connection is handed to uvicorn's own HTTP protocol:

* on the plain port at once, as without this module;
* on the TLS port after the TLS handshake, with the certificate of :mod:`emulator.ops.tls`;
* on the proxy port after a ``CONNECT`` that :func:`connect_action` accepts: once the certificate is loaded the
  proxy answers ``200 Connection established`` (``503`` if it cannot be loaded), then the TLS handshake runs on
  that same connection and the decrypted stream is served as on the TLS port. Any other ``CONNECT`` gets 403 and
  a log line naming the host; a plain proxy request (``GET http://...``, what ``HTTP_PROXY`` sends for ``http://``
  URLs) gets 405: the emulator only terminates TLS.

The app sees the real client's address (the admin API's loopback rule holds) and the scheme ``https``. Both real
hosts, ``smarty.mail.ru`` and ``mcs.mail.ru``, are served by the one app whatever the Host header or SNI says.
Unlike the real service, where each host serves only its own paths, the persons API and the token endpoint answer
on either name: a client never calls the other host's paths, and one certificate and one listener serve both.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.server import ServerState

from emulator.ops.tls import TLS_STATE, Tls

log = logging.getLogger("emulator.proxy")

PROTOCOL = "emulator.ops.listeners:ListenerProtocol"  # uvicorn's ``http`` option (an import string: workers too)
MAX_HEAD_BYTES = 8192  # a CONNECT request's head; longer is refused
HEAD_TIMEOUT_SECONDS = 10.0  # a proxy client that has not sent its whole CONNECT request by then is disconnected
CONTEXT_WAIT_SECONDS = 60.0  # a connection during the warm-up waits this long for the certificate, as requests do
HANDSHAKE_TIMEOUT_SECONDS = 10.0
HTTPS_PORT = 443

_tasks: set[asyncio.Task[None]] = set()  # handshakes in progress (a task nobody holds may be collected)


class ConnectAction(enum.Enum):
    SERVE = "serve"  # terminate TLS with the emulator's certificate and serve the app
    REFUSE = "refuse"  # 403


def connect_action(host: str, port: int, served: frozenset[str]) -> ConnectAction:
    """What the proxy does with ``CONNECT host:port``: the one place where a target is decided (a new case, such as
    passing a host through to the real service, is one more branch here)."""
    if port == HTTPS_PORT and host in served:
        return ConnectAction.SERVE
    return ConnectAction.REFUSE


def parse_target(target: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``) of a CONNECT request, the host lower-case without a final dot; None if
    malformed."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower().rstrip("."), int(port)


def _reply(status: int, reason: str, text: str, extra: str = "") -> bytes:
    body = (text + "\n").encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode() + body


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on an accepted connection. asyncio does it only for sockets made with the protocol
    number set, and the listening sockets bound here are not: with TLS, whose records go out as separate writes,
    every response would otherwise wait for the client's delayed ACK (about 40 ms)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Handoff(asyncio.Protocol):
    """Holds what arrives on a TLS connection between the end of the handshake and the moment uvicorn's protocol
    takes over (asyncio may deliver the first request in the same turn as the handshake's end)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None
        self.target: asyncio.Protocol | None = None

    def data_received(self, data: bytes) -> None:
        if self.target is not None:
            self.target.data_received(data)
        else:
            self.received.append(data)

    def eof_received(self) -> bool | None:
        if self.target is not None:
            return self.target.eof_received()
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.target is not None:
            self.target.connection_lost(exc)
        else:
            self.lost = (exc,)

    def hand_to(self, protocol: asyncio.Protocol, transport: asyncio.Transport) -> None:
        self.target = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self.received:
            protocol.data_received(data)
        self.received.clear()
        if self.eof:
            protocol.eof_received()
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


class ListenerProtocol(asyncio.Protocol):
    """uvicorn's ``http`` protocol class while TLS or the proxy is on; it tells the ports apart by the connection's
    local port and hands every connection to uvicorn's HTTP protocol (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_running_loop()
        self.tls: Tls | None = app_state.get(TLS_STATE)
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.head_timer: asyncio.TimerHandle | None = None

    def _http(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = AutoHTTPProtocol(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _no_delay(transport)
        port = (transport.get_extra_info("sockname") or ("", 0))[1]
        tls = self.tls
        if tls is not None and port == tls.settings.tls_port:
            transport.pause_reading()  # the ClientHello stays in the socket until the handshake reads it
            self._spawn(self._serve_tls(transport))
        elif tls is not None and port == tls.settings.proxy_port:  # the CONNECT request comes in data_received
            self.head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, transport.abort)
        else:
            http = self._http()
            transport.set_protocol(http)
            http.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """The proxy port: the head of the CONNECT request."""
        assert self.transport is not None and self.tls is not None
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._refuse(_reply(431, "Request Header Fields Too Large", "the request head is too long"))
            return
        self.transport.pause_reading()
        self._stop_head_timer()
        if len(self.head) > end + 4:  # a client that did not wait for the answer: nothing to hand the bytes to
            self._refuse(_reply(400, "Bad Request", "data sent before the tunnel was established"))
            return
        words = bytes(self.head[:end]).split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self._refuse(_reply(400, "Bad Request", "not an HTTP/1.x request"))
            return
        method, target, _ = words
        if method != "CONNECT":
            text = "this proxy serves only CONNECT (HTTPS_PROXY) to the hosts of the emulator"
            self._refuse(_reply(405, "Method Not Allowed", text, "Allow: CONNECT\r\n"))
            return
        parsed = parse_target(target)
        if parsed is None:
            self._refuse(_reply(400, "Bad Request", f"not a host:port: {target}"))
            return
        host, port = parsed
        if connect_action(host, port, self.tls.proxy_hosts) is ConnectAction.REFUSE:
            served = ", ".join(f"{name}:{HTTPS_PORT}" for name in sorted(self.tls.proxy_hosts))
            log.warning("proxy: refused CONNECT %s:%d (the emulator serves %s)", host, port, served)
            self._refuse(_reply(403, "Forbidden", f"CONNECT {host}:{port} refused: the emulator serves {served}"))
            return
        self._spawn(self._serve_proxy(self.transport))

    def _refuse(self, answer: bytes) -> None:
        assert self.transport is not None
        self._stop_head_timer()
        self.transport.write(answer)
        self.transport.close()

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _spawn(self, work: Any) -> None:
        task = self.loop.create_task(work)
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    async def _context(self) -> ssl.SSLContext | None:
        """The server context, waiting for the startup to load it (the CA may be in a database still coming up);
        None at once if loading it failed for good, or after ``CONTEXT_WAIT_SECONDS``."""
        assert self.tls is not None
        deadline = self.loop.time() + CONTEXT_WAIT_SECONDS
        while self.tls.context is None:
            if self.tls.failure is not None:
                log.warning("TLS: no certificate (%s): connection closed", self.tls.failure)
                return None
            if self.loop.time() >= deadline:
                log.warning("TLS: no certificate %.0f s after the start: connection closed", CONTEXT_WAIT_SECONDS)
                return None
            await asyncio.sleep(0.05)
        return self.tls.context

    async def _serve_proxy(self, transport: asyncio.Transport) -> None:
        """An accepted CONNECT: the tunnel is established only once there is a certificate to serve in it."""
        context = await self._context()
        if transport.is_closing():  # the client left while the certificate was still loading
            return
        if context is None:
            transport.write(_reply(503, "Service Unavailable", "the emulator has no certificate to serve"))
            transport.close()
            return
        transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await self._handshake(transport, context)

    async def _serve_tls(self, transport: asyncio.Transport) -> None:
        context = await self._context()
        if transport.is_closing():  # the client left while the certificate was still loading
            return
        if context is None:
            transport.abort()
            return
        await self._handshake(transport, context)

    async def _handshake(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        handoff = _Handoff()
        try:
            secure = await self.loop.start_tls(
                transport, handoff, context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:  # asyncio has closed the connection
            log.debug("TLS handshake failed: %s", exc)
            return
        if secure is None:  # the connection went away during the handshake
            return
        handoff.hand_to(self._http(), secure)

    def eof_received(self) -> bool | None:
        return None  # the proxy's client left before its CONNECT was answered: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self.transport = None
