"""The descriptor network's weights, parsed from dlib's file once and then kept as a plain ``.npz`` array file.

Parsing dlib's ``.dat`` (a stream of variable-length integers and 22 MB of float32) takes ~0.1-0.2 s; loading the
arrays back takes a few ms. The cached file is named by a key over the source file's size, modification time and
SHA-256 and this module's format version, and holds the same fields to check: a changed or replaced source file
(another ``face_recognition_models`` version, a damaged copy) is parsed again, and a cache file that does not match
or does not load is ignored and rewritten. Writes are atomic (a temporary file in the same directory, then a
rename), so concurrent processes never read a half-written file. When the cache directory cannot be written, the
parsed weights are simply used from memory.

The cache directory is ``$XDG_CACHE_HOME/smarty-emulator`` (else ``~/.cache/smarty-emulator``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emulator.face.resnet_model import ResnetWeights, architecture, param_shapes, read_model

log = logging.getLogger("emulator.face")

FORMAT_VERSION = 1  # bump when the cached arrays change meaning
CACHE_PREFIX = "dlib_face_recognition_resnet_model_v1"


@dataclass(frozen=True)
class SourceKey:
    """What identifies the source ``.dat`` file: its size, modification time and SHA-256."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> SourceKey:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        stat = path.stat()
        return cls(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest.hexdigest())

    def as_dict(self) -> dict[str, object]:
        return {"format": FORMAT_VERSION, "size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.sha256}

    def file_name(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return f"{CACHE_PREFIX}.{hashlib.sha256(blob).hexdigest()[:20]}.npz"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smarty-emulator"


def load_weights(model_path: Path, cache_dir: Path | None = None) -> ResnetWeights:
    """The weights of ``model_path``: from the cache when it matches the file, else parsed (and cached).

    Raises :class:`emulator.face.resnet_model.ModelFormatError` if the model file is not dlib's ResNet.
    """
    directory = default_cache_dir() if cache_dir is None else cache_dir
    key = SourceKey.of(model_path)
    cached = directory / key.file_name()
    weights = _read_cache(cached, key)
    if weights is not None:
        return weights
    weights = read_model(model_path)
    try:
        _write_cache(directory, cached, key, weights)
    except OSError as exc:
        log.warning("the face descriptor weights are not cached (%s): parsed again at every start", exc)
    return weights


def _read_cache(path: Path, key: SourceKey) -> ResnetWeights | None:
    """The weights in ``path`` if it exists, matches ``key`` and holds every array in its shape; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["meta"])) != key.as_dict():
                return None
            layers = architecture()
            weights = ResnetWeights(layers=layers, input_mean=np.array(data["input_mean"], dtype=np.float32))
            for index, shapes in param_shapes(layers).items():
                arrays = {name: np.array(data[f"{index}.{name}"]) for name in shapes}
                if any(arrays[n].shape != shape or arrays[n].dtype != np.float32 for n, shape in shapes.items()):
                    return None
                weights.params[index] = arrays
            if weights.input_mean.shape != (3,):
                return None
            return weights
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        log.warning("ignoring an unreadable cache of the face descriptor weights: %s", path)
        return None


def _write_cache(directory: Path, path: Path, key: SourceKey, weights: ResnetWeights) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"{index}.{name}": array for index, params in weights.params.items() for name, array in params.items()}
    arrays["input_mean"] = weights.input_mean
    arrays["meta"] = np.array(json.dumps(key.as_dict(), sort_keys=True))
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            # mypy matches **arrays against savez's keyword allow_pickle (a bool) too: the names are never that.
            np.savez(out, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    for stale in directory.glob(f"{CACHE_PREFIX}.*.npz"):  # caches of an earlier model file
        if stale != path:
            stale.unlink(missing_ok=True)
