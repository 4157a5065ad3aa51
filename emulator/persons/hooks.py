"""The chain a persons request runs through: hooks around the service call.

A hook is an async callable ``hook(request, call_next)``. It gets the parsed :class:`PersonsRequest` and either
answers by itself or awaits ``call_next(request)`` (with the same request, or one it derived, e.g. with images
left out) and returns that answer, changed or not. A 4xx/5xx of the contract is raised as a
:class:`emulator.persons.errors.RequestError`, which the wire layer renders as the error envelope, wherever in the
chain it was raised.

An answer is a :class:`Success` (the envelope's body: the wire layer renders the envelope) or :class:`Verbatim`
(bytes sent as they are, with their HTTP status: an injected 502, say, or a dropped connection).

The app factory (:func:`emulator.app.create_app`) composes the chain; the route knows only :data:`Next`. A new hook
is a class or function with :class:`Hook`'s signature, added to that list: the outermost runs first.

The OAuth token endpoint has one optional hook of its own, a :data:`TokenHook`: it sees the request as sent
(:class:`TokenCall`) and answers it (a :class:`Verbatim`), or returns ``None`` for the emulator to answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator.persons.request import PersonsRequest
from emulator.settings import Settings


@dataclass(frozen=True)
class Success:
    """A successful answer: the body of the ``{"status":200,"body":…}`` envelope."""

    body: dict[str, Any]


@dataclass(frozen=True)
class Verbatim:
    """An answer that is not the emulator's envelope: ``content`` sent as it is with ``status`` (and ``headers``, for
    a hook that answers another server's bytes, such as a recorded answer), or, with ``drop``, the connection closed
    with no response at all. ``text`` is what the journal shows of it."""

    status: int = 0
    content: bytes = b""
    media_type: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    drop: bool = False

    @property
    def text(self) -> str:
        return "connection dropped" if self.drop else self.content.decode("utf-8", "replace")


Answer = Success | Verbatim
Next = Callable[[PersonsRequest], Awaitable[Answer]]


@dataclass(frozen=True)
class TokenCall:
    """A request to the OAuth token endpoint as it was sent, before the emulator reads it."""

    path: str
    query: str = field(repr=False)
    content_type: str
    authorization: str = field(repr=False)
    body: bytes = field(repr=False)
    settings: Settings = field(repr=False)


TokenHook = Callable[[TokenCall], Awaitable[Verbatim | None]]


class Hook(Protocol):
    """One link of the chain: answer ``request`` itself, or pass it (or a request derived from it) on."""

    async def __call__(self, request: PersonsRequest, call_next: Next) -> Answer: ...


def compose(hooks: Sequence[Hook], last: Next) -> Next:
    """The chain: ``hooks[0]`` runs first and ``last`` (the service call) runs at the end, if no hook answers."""
    chain = last
    for hook in reversed(hooks):
        chain = _link(hook, chain)
    return chain


def _link(hook: Hook, call_next: Next) -> Next:
    async def run(request: PersonsRequest) -> Answer:
        return await hook(request, call_next)

    return run
