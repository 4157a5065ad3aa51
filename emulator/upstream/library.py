"""The cassettes of one process: which file the settings name, what it holds, where replay stands in it.

Replay reads a cassette once and again only when its file changed (another process recorded into it, say).
Identical requests replay in recorded order, the last answer repeating: the position for each key is kept here,
per process, and starts over whenever the mode or the cassette changes (the pytest plugin names a cassette per test).
With several worker processes each keeps its own position, so repeats of one request spread over workers replay
out of order: record and replay such sequences with one worker.

Recording appends to the file under a lock, so the interactions of several processes are all kept. A write that is
refused (a live secret would have been stored) or fails is logged and reported to health through ``warn``; the
client's answer is never changed by it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from emulator.settings import Settings
from emulator.upstream.cassette import Cassette, CassetteError, Interaction, Response, cassette_path

log = logging.getLogger("emulator.upstream")

CASSETTES = "cassettes"  # the folder in the data dir when SMARTY_CASSETTE_DIR is empty


def cassette_dir(settings: Settings) -> Path:
    return Path(settings.cassette_dir) if settings.cassette_dir else settings.data_dir / CASSETTES


def active_path(settings: Settings) -> Path:
    """The file of the cassette the settings name."""
    return cassette_path(cassette_dir(settings), settings.cassette)


@dataclass
class _Loaded:
    cassette: Cassette
    stamp: tuple[int, int, int] | None  # (inode, mtime_ns, size) of the file read; None: there was no file


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:  # missing (or unreachable: loading it says why)
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class CassetteLibrary:
    """Loads, replays and records the cassettes of one process (thread-safe)."""

    def __init__(self, warn: Callable[[str], None] = lambda text: None) -> None:
        self._warn = warn
        self._lock = threading.Lock()
        self._loaded: dict[Path, _Loaded] = {}
        self._positions: dict[str, int] = {}
        self._scene: tuple[str, Path] | None = None  # (mode, cassette) of the positions

    def _cassette(self, path: Path) -> Cassette:
        stamp = _stamp(path)
        loaded = self._loaded.get(path)
        if loaded is None or loaded.stamp != stamp or stamp is None:
            loaded = _Loaded(Cassette.load(path), stamp)
            self._loaded[path] = loaded
        return loaded.cassette

    def rewind(self) -> None:
        """Replay every key from its first recorded answer again."""
        with self._lock:
            self._positions.clear()

    def replay(self, settings: Settings, key: str) -> Response | None:
        """The next recorded answer for ``key`` in the cassette the settings name (the last one repeats), or
        ``None`` on a miss. A cassette that cannot be read is a :class:`CassetteError`."""
        path = active_path(settings)
        with self._lock:
            scene = (str(settings.upstream_mode), path)
            if scene != self._scene:
                self._scene, self._positions = scene, {}
            found = self._cassette(path).find(key)
            if not found:
                return None
            position = self._positions.get(key, 0)
            self._positions[key] = position + 1
            return found[min(position, len(found) - 1)].response

    def record(
        self, settings: Settings, interaction: Interaction, blobs: Mapping[str, bytes], secrets: Iterable[str]
    ) -> bool:
        """Append ``interaction`` (and ``blobs``) to the cassette the settings name: True if written. A refusal or a
        failure is logged and warned about, never raised (the client already has its answer)."""
        try:
            path = active_path(settings)
            Cassette.append(path, interaction, upstream=str(settings.upstream_url), blobs=blobs, secrets=secrets)
        except CassetteError as exc:  # LeakRefused too: its message names no secret
            text = f"{exc} (the {interaction.method} interaction was not recorded)"
            log.error("%s", text)
            self._warn(text)
            return False
        return True
