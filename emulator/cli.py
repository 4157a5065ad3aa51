"""Command line: ``smarty-emulator serve`` (and ``python -m emulator``)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.settings import SETTINGS, Settings, SettingsError

if TYPE_CHECKING:
    import uvicorn


def markdown_table() -> str:
    """The settings table of docs/settings.md, generated from :data:`SETTINGS` (``smarty-emulator settings``)."""
    rows = [
        "| Setting | Flag | Type | Default | Live | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        default = "(empty)" if s.default == "" else str(s.default)
        kind = "one of " + ", ".join(s.choices) if s.choices else s.type.__name__
        live = "yes" if s.live else ""
        rows.append(f"| `{s.env}` | `{s.flag}` | {kind} | `{default}` | {live} | {s.help} |")
    return "\n".join(rows)


SETTINGS_TYPES_DOC = '''"""The type of every setting's attribute on :class:`emulator.settings.Settings`, for mypy.

Generated from ``SETTINGS`` in emulator/settings.py by ``python -m emulator settings-types``: do not edit.
tests/test_settings.py fails while this copy is stale. Only mypy reads this stub: at run time ``Settings`` reads
the values in its ``__getattr__``, which mypy does not see, so an unknown setting's name is a type error.
"""'''


def settings_types() -> str:
    """The text of emulator/settings_types.pyi: a read-only property per setting, typed as its row says."""
    lines = [SETTINGS_TYPES_DOC, ""]
    if any(s.type is Path for s in SETTINGS):
        lines += ["from pathlib import Path", ""]
    lines += ["class SettingTypes:"]
    for s in SETTINGS:
        lines += ["    @property", f"    def {s.name}(self) -> {s.type.__name__}: ..."]
    return "\n".join(lines) + "\n"


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for setting in SETTINGS:
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.name.upper(),
            help=f"{setting.help} [env {setting.env}, default {setting.default!s}]",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smarty-emulator", description="Offline emulator of the Smarty persons API.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="Serve the API (the default command).")
    _add_setting_flags(serve)
    commands.add_parser("settings", help="Print the settings table (Markdown).")
    commands.add_parser("settings-types", help="Print emulator/settings_types.pyi (the settings' types, for mypy).")
    ca = commands.add_parser("ca", help="Print the emulator's CA certificate (PEM) for clients to trust.")
    _add_setting_flags(ca)
    export = commands.add_parser("export", help="Write a snapshot of everything, a client or a space to a file.")
    export.add_argument("file", help="Snapshot file to write (`-`: standard output; `.gz`: compressed).")
    export.add_argument("--client", default=None, help="Only this client.")
    export.add_argument("--space", type=int, default=None, help="Only this space of --client.")
    _add_setting_flags(export)
    restore = commands.add_parser("import", help="Load a snapshot file into the database.")
    restore.add_argument("file", help="Snapshot file to read (`-`: standard input).")
    restore.add_argument(
        "--mode",
        choices=("replace", "merge"),
        default="replace",
        help="replace: empty the snapshot's scope first; merge: add to what is there [default replace].",
    )
    _add_setting_flags(restore)
    seed = commands.add_parser("seed", help="Add persons from a directory of photos or a snapshot file (idempotent).")
    seed.add_argument("source", help="A directory <space>/<person_id>/*.jpg (maybe under <client>/), or a snapshot.")
    _add_setting_flags(seed)
    from emulator.upstream import offline

    compare = commands.add_parser(
        "compare",
        help="Replay recorded cassettes through a fresh emulator and compare its answers with the recorded ones.",
    )
    offline.add_arguments(compare)
    _add_setting_flags(compare)  # the emulator under test: --match-threshold, --embedder, ...
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return Settings.from_sources(os.environ, overrides)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = load_settings(args)
    from emulator.ops.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread or worker starts: RSS settles low and stays flat
    # Workers are separate processes: hand them the settings through the environment.
    for setting in SETTINGS:
        os.environ[setting.env] = str(settings.values[setting.name])
    # One id for this run, shared by its workers: the testing aids' shared state of an earlier run is emptied.
    import uuid

    from emulator.control.state import BOOT_ID_ENV

    os.environ[BOOT_ID_ENV] = uuid.uuid4().hex
    from emulator.ops import logs
    from emulator.ops.metrics import multiprocess_dir

    with multiprocess_dir(settings.workers):  # several workers share their metrics through files
        options: dict[str, Any] = {  # uvicorn's keyword arguments
            "factory": True,
            "host": settings.host,
            "port": settings.port,
            "workers": settings.workers,
            "log_level": settings.log_level,
            "log_config": logs.logging_config(settings),  # every line redacted (tokens), human or JSON
            "access_log": settings.access_log,  # off by default: persons requests have their own line, without query
            "timeout_graceful_shutdown": settings.shutdown_timeout,  # then requests in flight get the envelope
        }
        if settings.tls_port or settings.proxy_port:
            return serve_with_tls(settings, uvicorn.Config("emulator.app:app_from_env", **options))
        if settings.workers > 1:
            from emulator.ops.supervisor import run_workers

            run_workers(uvicorn.Config("emulator.app:app_from_env", **options))  # refuses new connections at once
        else:
            uvicorn.run("emulator.app:app_from_env", **options)
    return 0


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` for the HTTPS port or the proxy. ``::`` accepts IPv4 too where the
    system allows it, as uvicorn's plain port does (``create_server`` alone would make it IPv6-only)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    dualstack = host == "::" and socket.has_dualstack_ipv6()
    return socket.create_server((host, port), family=family, backlog=backlog, dualstack_ipv6=dualstack)


def serve_with_tls(settings: Settings, config: uvicorn.Config) -> int:
    """``serve`` with the HTTPS port or the proxy: every port is bound here, then served by one uvicorn server per
    process whose protocol tells them apart (:mod:`emulator.ops.listeners`); with ``--workers N`` the supervisor
    hands all of them to every worker."""
    import logging

    import uvicorn

    from emulator.ops.listeners import PROTOCOL
    from emulator.ops.supervisor import run_workers

    config.http = PROTOCOL
    log = logging.getLogger("emulator.serve")  # configured by uvicorn.Config (log_config) by now
    sockets = [config.bind_socket()]  # logs "Uvicorn running on http://..."
    try:
        for port, what in ((settings.tls_port, "HTTPS"), (settings.proxy_port, "the HTTPS proxy")):
            if port:
                try:
                    sock = listening_socket(settings.host, port, config.backlog)
                except OSError as exc:  # as uvicorn does for the plain port: one line, no traceback
                    print(f"smarty-emulator: {what} cannot listen on {settings.host}:{port}: {exc}", file=sys.stderr)
                    return 1
                sock.set_inheritable(True)
                sockets.append(sock)
                log.info("%s on %s:%d", what, settings.host, port)  # beside uvicorn's line, in SMARTY_LOG_FORMAT
        if settings.workers > 1:
            run_workers(config, sockets)
            return 0
        server = uvicorn.Server(config)
        server.run(sockets=sockets)
        return 0 if server.started else 3  # 3: uvicorn's code for a server that could not start
    finally:
        for sock in sockets:
            sock.close()


def print_ca(settings: Settings) -> int:
    """``smarty-emulator ca``: the CA certificate of the record (the data dir, or PostgreSQL), made if it has none
    yet, so that a client can be given it before the server first starts. Never the key."""
    from emulator.ops.tls import Tls, TlsError
    from emulator.store import store_from_settings
    from emulator.store.records import StoreError

    store = store_from_settings(settings)
    try:
        if settings.database_url:
            store.open()  # its tables (the CA's row); the data dir needs nothing opened
        sys.stdout.write(Tls(settings).ca_pem(store).decode())
    except (StoreError, TlsError) as exc:
        print(f"smarty-emulator: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "settings":
            print(markdown_table())
            return 0
        if args.command == "settings-types":
            print(settings_types(), end="")
            return 0
        if args.command == "ca":
            return print_ca(load_settings(args))
        if args.command in ("export", "import", "seed"):
            from emulator.control import commands

            return commands.run(args.command, args, load_settings(args))
        if args.command == "compare":
            from emulator.upstream import offline

            load_settings(args)  # validates the flags (a bad value: exit 2, naming it)
            return offline.main(args, offline.settings_from_flags(args, [s.name for s in SETTINGS]))
        if args.command in (None, "serve"):
            if args.command is None:
                args = parser.parse_args(["serve", *(argv or sys.argv[1:])])
            return serve(args)
    except SettingsError as exc:
        print(f"smarty-emulator: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 2
