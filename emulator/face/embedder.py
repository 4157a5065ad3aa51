"""The face descriptor step: aligned 150x150 chips in, dlib's 128-d descriptors out.

Three implementations of the same network with the same weights (``SMARTY_EMBEDDER``):

- ``numpy`` (default): :class:`NumpyEmbedder`, the network on numpy's BLAS (:mod:`emulator.face.resnet`).
- ``onnx``: :class:`OnnxEmbedder`, the network as an ONNX graph built at first start from the parsed weights, on
  ONNX Runtime (:mod:`emulator.face.resnet_onnx`). About 2x the numpy path per face, but ONNX Runtime adds ~80 MB
  to an install (two 35 MB libraries), more than the rest of the emulator's dependencies together: it is the
  optional extra ``onnx`` (``pip install 'smarty-emulator[onnx]'``), not a default dependency.
- ``dlib``: :class:`DlibEmbedder`, dlib's own ``compute_face_descriptor``, one chip at a time under a lock (dlib
  holds the GIL while it runs and its network keeps per-call state). The reference the tests compare against;
  dlib's build has no BLAS, so it is 10-20x slower.

``onnx`` and ``numpy`` run all the faces of a call in batches of up to 8 and agree with ``dlib`` to float32
rounding (cosine >= 0.99999, at most 1e-4 per component; ~4e-7 on the fixtures).

Threads: both fast paths run on one thread per call (ONNX Runtime with one intra-op thread, numpy's BLAS limited
to one thread by :func:`limit_blas_threads`). The bundled OpenBLAS given both cores is barely faster on this
network's small products, and on a busy machine its spinning threads made a pass up to tens of times slower.
Cores are used by processes and request threads instead: neither fast embedder holds a lock, so concurrent
requests embed in parallel, and the analysis pool (:mod:`emulator.face.pool`) runs one process per core.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from emulator.face.models import model_paths
from emulator.face.resnet_model import DESCRIPTOR_SIZE
from emulator.ops.memory import trim_now

log = logging.getLogger("emulator.face")

EMBEDDERS = ("onnx", "numpy", "dlib")
DEFAULT_EMBEDDER = "numpy"
BLAS_THREADS = 1
NUM_JITTERS = 1  # face_recognition's default: the chip as it is


class Embedder(Protocol):
    name: str

    def load(self) -> None:
        """Load the model (once; thread-safe)."""
        ...

    def descriptors(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (not normalised) descriptors, float32 (N, 128), of N aligned 150x150x3 uint8 RGB chips."""
        ...


def limit_blas_threads(threads: int = BLAS_THREADS) -> None:
    """Set this process's BLAS thread count (all BLAS libraries numpy has loaded)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def make_embedder(name: str) -> Embedder:
    if name == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"SMARTY_EMBEDDER=onnx needs ONNX Runtime, which cannot be imported ({exc}): install the extra with"
                " pip install 'smarty-emulator[onnx]', or use SMARTY_EMBEDDER=numpy"
            ) from None
        return OnnxEmbedder()
    if name == "numpy":
        return NumpyEmbedder()
    if name == "dlib":
        return DlibEmbedder()
    raise ValueError(f"unknown embedder {name!r}; expected one of {', '.join(EMBEDDERS)}")


class NumpyEmbedder:
    """dlib's network on numpy (:class:`emulator.face.resnet.ResnetDescriptor`), weights from the cached arrays."""

    name = "numpy"

    def __init__(self) -> None:
        self._network: Any = None  # has compute(chips) -> (N, 128)
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._network is not None:
            return
        with self._lock:
            if self._network is None:
                from emulator.face.resnet_cache import load_weights

                limit_blas_threads()
                self._network = self._build(load_weights(model_paths().face_recognition))
                # Building leaves tens of MB freed but resident (the parsed weights before fusion, ONNX Runtime's
                # graph optimisation): ~50 MB of a process's RSS with the onnx embedder, for nothing.
                trim_now()

    def _build(self, weights: Any) -> Any:
        from emulator.face.resnet import ResnetDescriptor

        return ResnetDescriptor(weights)

    def descriptors(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
        self.load()
        result: np.ndarray = self._network.compute(np.stack([np.asarray(chip, dtype=np.uint8) for chip in chips]))
        return result


class OnnxEmbedder(NumpyEmbedder):
    """dlib's network on ONNX Runtime (:class:`emulator.face.resnet_onnx.OnnxDescriptor`), built at first load."""

    name = "onnx"

    def _build(self, weights: Any) -> Any:
        from emulator.face.resnet_onnx import OnnxDescriptor

        return OnnxDescriptor(weights)


class DlibEmbedder:
    """dlib's ``face_recognition_model_v1.compute_face_descriptor`` (``num_jitters=1``), the reference."""

    name = "dlib"

    def __init__(self) -> None:
        self._model: Any = None  # dlib.face_recognition_model_v1
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def load(self) -> None:
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is None:
                import dlib

                self._model = dlib.face_recognition_model_v1(str(model_paths().face_recognition))

    def descriptors(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        self.load()
        out = np.zeros((len(chips), DESCRIPTOR_SIZE), dtype=np.float32)
        for i, chip in enumerate(chips):
            with self._run_lock:
                out[i] = np.asarray(self._model.compute_face_descriptor(np.asarray(chip, dtype=np.uint8), NUM_JITTERS))
        return out
