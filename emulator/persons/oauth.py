"""The OAuth token endpoint's domain: issuing, checking and refreshing tokens.

Real clients get an access token from VK Cloud's OAuth endpoint (``grant_type``
``client_credentials`` with ``client_id`` and ``client_secret``), use it as ``oauth_token``
for an hour, then get a new one with ``grant_type=refresh_token``. The emulator serves the
same exchange so that a client's refresh logic is exercised.

Tokens are self-verifying: a token is ``<payload>.<signature>``, both base64url, where the
payload names the token kind, the client and (for access tokens) the expiry, and the
signature is an HMAC-SHA256 under a secret kept with the store (``Store.secret("oauth")``,
created once: the data dir's ``oauth-secret`` file, or a row of the PostgreSQL database).
Every worker process, and every replica sharing a database, reads the same secret, so a token
issued by one is accepted by all of them, and after a restart, without a database write per
token. Consequences, documented as differences from the real service: tokens cannot be
revoked one by one (replace the secret to revoke all), refresh tokens do not expire, and the
real limit of 25 active tokens per project is not enforced.

The clock is injectable (``TokenIssuer.clock``) so tests can pass an hour in no time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from emulator.persons.types import DEFAULT_CLIENT

_ACCESS = "a"
_REFRESH = "r"
_ANY_CLIENT_ID = ""  # the client id recorded in tokens issued in the open (default) mode


class OAuthError(Exception):
    """An OAuth error response: ``error`` is the RFC 6749 code, ``http_status`` 400 or 401."""

    def __init__(self, error: str, description: str, http_status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.http_status = http_status


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class AccessCheck:
    """What an issued access token says: its client, and whether it has expired."""

    client: str
    expired: bool


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and checks the OAuth endpoint's tokens.

    ``clients`` maps a client name to its (OAuth client id, secret). With no clients, the
    issuer is *open*: any client id with a non-empty secret gets tokens of the client
    ``default`` (unless ``open_allowed`` is false, i.e. service-token clients are
    configured, in which case nobody gets tokens).
    """

    def __init__(
        self,
        clients: Mapping[str, tuple[str, str]],
        secret: Callable[[], bytes],
        lifetime: Callable[[], int],
        *,
        open_allowed: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._by_id = {client_id: (name, secret_) for name, (client_id, secret_) in clients.items()}
        self._load_key = secret  # read on first use, so building the issuer touches no files
        self._key: bytes | None = None
        self._lifetime = lifetime
        self._open_allowed = open_allowed
        self.clock = clock

    @property
    def open(self) -> bool:
        """True when any client id gets tokens of the default client."""
        return not self._by_id and self._open_allowed

    @property
    def configured(self) -> bool:
        return bool(self._by_id)

    # --- the two grants ----------------------------------------------------------------

    def client_credentials(self, client_id: str, client_secret: str) -> IssuedTokens:
        if not client_id:
            raise OAuthError("invalid_request", "client_id is required")
        if not client_secret:
            raise OAuthError("invalid_request", "client_secret is required")
        name = self._authenticate(client_id, client_secret)
        recorded_id = _ANY_CLIENT_ID if self.open else client_id
        return IssuedTokens(
            access_token=self._access_token(name, recorded_id),
            refresh_token=self._sign({"k": _REFRESH, "c": name, "i": recorded_id, "n": secrets.token_hex(8)}),
            expires_in=self._lifetime(),
        )

    def refresh(self, client_id: str, refresh_token: str) -> IssuedTokens:
        if not client_id:
            raise OAuthError("invalid_request", "client_id is required")
        if not refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required")
        payload = self._verify(refresh_token)
        if payload is None or payload.get("k") != _REFRESH:
            raise OAuthError("invalid_grant", "the refresh token is unknown")
        name, recorded_id = str(payload.get("c", "")), str(payload.get("i", ""))
        if recorded_id != _ANY_CLIENT_ID and recorded_id != client_id:
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        if not self._still_configured(name, recorded_id):
            raise OAuthError("invalid_grant", "the refresh token's client is no longer configured")
        return IssuedTokens(
            access_token=self._access_token(name, recorded_id),
            refresh_token=refresh_token,
            expires_in=self._lifetime(),
        )

    # --- checking ----------------------------------------------------------------------

    def check_access(self, token: str) -> AccessCheck | None:
        """``None`` if ``token`` is not an access token issued here (under the current secret
        and client configuration); else its client and whether it has expired."""
        payload = self._verify(token)
        if payload is None or payload.get("k") != _ACCESS:
            return None
        name, recorded_id = str(payload.get("c", "")), str(payload.get("i", ""))
        if not self._still_configured(name, recorded_id):
            return None
        expires_at = payload.get("e")
        if not isinstance(expires_at, (int, float)):
            return None
        return AccessCheck(client=name, expired=self.clock() >= expires_at)

    # --- internals ---------------------------------------------------------------------

    def _authenticate(self, client_id: str, client_secret: str) -> str:
        if self.open:
            return DEFAULT_CLIENT
        found = self._by_id.get(client_id)
        # Compare against a dummy when the id is unknown, so timing does not tell ids apart.
        expected = found[1] if found else secrets.token_hex(16)
        if not hmac.compare_digest(client_secret.encode(), expected.encode()) or found is None:
            raise OAuthError("invalid_client", "unknown client_id or wrong client_secret", http_status=401)
        return found[0]

    def _still_configured(self, name: str, recorded_id: str) -> bool:
        if recorded_id == _ANY_CLIENT_ID:
            return self.open and name == DEFAULT_CLIENT
        found = self._by_id.get(recorded_id)
        return found is not None and found[0] == name

    def _access_token(self, name: str, recorded_id: str) -> str:
        expires_at = self.clock() + self._lifetime()
        return self._sign({"k": _ACCESS, "c": name, "i": recorded_id, "e": expires_at, "n": secrets.token_hex(8)})

    @property
    def secret_loaded(self) -> bool:
        return self._key is not None

    def load_secret(self) -> None:
        """Read the signing secret now rather than on the first token (when reading it is a database round trip,
        it is then not made while a request waits)."""
        if self._key is None:
            self._key = self._load_key()

    def _signature(self, payload: bytes) -> bytes:
        self.load_secret()
        assert self._key is not None
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def _sign(self, payload: dict[str, object]) -> str:
        raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(raw)}.{_b64(self._signature(raw))}"

    def _verify(self, token: str) -> dict[str, object] | None:
        head, dot, tail = token.partition(".")
        if not dot or not head or not tail or len(token) > 1024:
            return None
        try:
            raw = _unb64(head)
        except (binascii.Error, ValueError):
            return None
        # Compare the canonical text, not decoded bytes: base64's spare bits would let several strings
        # decode to one signature, so one issued token would have look-alike twins.
        if head != _b64(raw) or not hmac.compare_digest(tail.encode(), _b64(self._signature(raw)).encode()):
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None
