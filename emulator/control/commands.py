"""The state commands of the CLI: ``export``, ``import`` and ``seed``.

They open the database directly (the data dir's SQLite file, or ``SMARTY_DATABASE_URL``), so they work with or
without a running server; a running server (every worker, every replica) sees their writes on its next request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emulator.control import snapshot
from emulator.control.seed import SeedLimits, seed
from emulator.persons.types import ClientId
from emulator.settings import Settings
from emulator.store import Store, store_from_settings
from emulator.store.records import StoreError


def run(command: str, args: argparse.Namespace, settings: Settings) -> int:
    """Run one command; a problem with its input or the database is one line on standard error and status 1."""
    store = store_from_settings(settings)
    try:
        store.open()  # a database file that is not the emulator's is refused here, untouched
        try:
            if command == "export":
                return _export(store, args)
            if command == "import":
                return _import(store, args, settings)
            return _seed(store, args, settings)
        finally:
            store.close()
    except (snapshot.SnapshotError, StoreError, OSError) as exc:
        print(f"smarty-emulator {command}: {exc}", file=sys.stderr)
        return 1


def _export(store: Store, args: argparse.Namespace) -> int:
    scope = snapshot.Scope(ClientId(args.client) if args.client else None, args.space)
    taken = snapshot.take(store, scope)
    data = snapshot.dumps(taken, compress=args.file.endswith(".gz"))
    if args.file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(args.file).write_bytes(data)
    faces = sum(len(s.faces) for s in taken.spaces)
    print(f"exported {len(taken.spaces)} space(s), {faces} face(s)", file=sys.stderr)
    return 0


def _import(store: Store, args: argparse.Namespace, settings: Settings) -> int:
    limits = snapshot.SnapshotLimits.from_settings(settings)
    if args.file == "-":
        data = snapshot.read_file(sys.stdin.buffer, limits)
    else:
        with open(args.file, "rb") as handle:
            data = snapshot.read_file(handle, limits)
    loaded = snapshot.loads(data, limits)
    del data
    report = snapshot.restore(store, loaded, args.mode, max_faces_per_space=settings.max_faces_per_space)
    print(
        f"imported ({args.mode}): {report.spaces} space(s), {report.faces_added} face(s) added,"
        f" {report.faces_skipped} already there, {report.spaces_emptied} other space(s) emptied",
        file=sys.stderr,
    )
    return 0


def _seed(store: Store, args: argparse.Namespace, settings: Settings) -> int:
    from emulator.face.from_settings import engine_from_settings  # loads dlib: only for this command

    outcome = seed(
        store,
        engine_from_settings(settings),  # the server's engine; the image bounds are checked before it decodes
        Path(args.source),
        max_faces_per_space=settings.max_faces_per_space,
        limits=SeedLimits.from_settings(settings),
    )
    print(f"seeded from {args.source}: {outcome.summary()}", file=sys.stderr)
    return 0
