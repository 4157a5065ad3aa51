"""Query auth: ``oauth_token`` and ``oauth_provider`` → the client that owns the request.

Default mode (no clients configured): any non-empty token belongs to the client
``default``, so a client that refreshes its token keeps its data. With configured
clients, a token must be one of a client's service tokens. Tokens are compared in
constant time, against every configured token.

Access tokens from the OAuth endpoint (:mod:`emulator.persons.oauth`) are checked first, in every
mode: a current one belongs to its client, an expired one is refused with 403 (even in the
default mode, so that a client's refresh logic is exercised).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from emulator.persons.errors import Forbidden
from emulator.persons.oauth import TokenIssuer
from emulator.persons.types import DEFAULT_CLIENT, ClientId

PROVIDERS = ("mcs", "mr")


class TokenDirectory:
    """Resolves tokens to clients."""

    def __init__(self, clients: Mapping[str, tuple[str, ...]], issuer: TokenIssuer | None = None) -> None:
        self._tokens = [(token.encode(), ClientId(name)) for name, tokens in clients.items() for token in tokens]
        self.issuer = issuer

    @property
    def open(self) -> bool:
        return not self._tokens and (self.issuer is None or not self.issuer.configured)

    def client_for(self, token: str) -> ClientId | None:
        if self.issuer is not None:
            issued = self.issuer.check_access(token)
            if issued is not None:
                if issued.expired:
                    raise Forbidden("oauth_token has expired")
                return ClientId(issued.client)
        if self.open:
            return DEFAULT_CLIENT
        found: ClientId | None = None
        given = token.encode()
        for known, client in self._tokens:
            if hmac.compare_digest(given, known) and found is None:
                found = client
        return found


def authenticate(query: Mapping[str, str], directory: TokenDirectory) -> ClientId:
    """The client of a request, or 403."""
    token = query.get("oauth_token", "")
    provider = query.get("oauth_provider", "")
    if not token:
        raise Forbidden("empty oauth_token")
    if not provider:
        raise Forbidden("empty oauth_provider")
    if provider not in PROVIDERS:
        raise Forbidden(f"unknown oauth_provider {provider}")
    client = directory.client_for(token)
    if client is None:
        raise Forbidden("invalid oauth_token")
    return client
