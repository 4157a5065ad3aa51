"""The configured clients: ``SMARTY_CLIENTS`` (tokens per client) and ``SMARTY_OAUTH_CLIENTS`` (credentials).

Both are plain strings in the settings table; these parsers give them their meaning. :meth:`Settings.from_sources`
runs them too, so a malformed list fails at startup with a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

from emulator.settings import SettingsError


def parse_clients(spec: str) -> dict[str, tuple[str, ...]]:
    """Parse ``name=token[,token];name2=token`` into ``{name: tokens}``."""
    clients: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, tokens = entry.partition("=")
        token_list = tuple(t.strip() for t in tokens.split(",") if t.strip())
        if not sep or not name.strip() or not token_list:
            raise SettingsError(f"SMARTY_CLIENTS: {entry!r} is not of the form name=token[,token...]")
        clients[name.strip()] = clients.get(name.strip(), ()) + token_list
    return clients


def parse_oauth_clients(spec: str) -> dict[str, tuple[str, str]]:
    """Parse ``name=client_id:secret;name2=client_id:secret`` into ``{name: (client_id, secret)}``."""
    clients: dict[str, tuple[str, str]] = {}
    seen_ids: set[str] = set()
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        name, sep, credentials = entry.partition("=")
        client_id, colon, secret = credentials.partition(":")
        name, client_id, secret = name.strip(), client_id.strip(), secret.strip()
        if not sep or not colon or not name or not client_id or not secret:
            raise SettingsError(f"SMARTY_OAUTH_CLIENTS: an entry is not of the form name=client_id:secret ({name!r})")
        if name in clients or client_id in seen_ids:
            raise SettingsError(f"SMARTY_OAUTH_CLIENTS: client {name!r} or its client id is given twice")
        clients[name] = (client_id, secret)
        seen_ids.add(client_id)
    return clients
