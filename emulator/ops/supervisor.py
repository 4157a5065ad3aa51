"""``serve --workers N``: uvicorn's supervisor of worker processes, made to refuse new connections at once on
SIGTERM or SIGINT.

Every worker holds a copy of the listening socket and closes it when it begins its graceful shutdown; uvicorn's
supervisor holds one more copy until it exits, so during the workers' shutdown (up to ``SMARTY_SHUTDOWN_TIMEOUT``)
the kernel would still accept new connections into the backlog, and they would hang until the supervisor exits.
Here the supervisor closes its copy as soon as the signal arrives and passes the signal on to the workers at once:
once they have closed theirs, a new connection is refused, as with one process.
"""

from __future__ import annotations

import contextlib
import signal
from socket import socket
from types import FrameType

from uvicorn import Config
from uvicorn.supervisors import Multiprocess

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Supervisor(Multiprocess):
    def __init__(self, config: Config, sockets: list[socket]) -> None:
        super().__init__(config, sockets)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, sig: int, frame: FrameType | None) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.should_exit.set()  # uvicorn's own loop then stops the workers at once (not at its next 0.5 s tick)


def run_workers(config: Config, sockets: list[socket] | None = None) -> None:
    """What ``uvicorn.run`` does for ``workers > 1``, with :class:`Supervisor`; ``sockets`` bound already (the HTTPS
    port and the proxy beside the plain port), else the plain port is bound here."""
    bound = sockets or [config.bind_socket()]
    try:
        Supervisor(config, sockets=bound).run()
    finally:
        for sock in bound:
            sock.close()
