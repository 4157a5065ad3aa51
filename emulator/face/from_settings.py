"""The engine the emulator runs, built from its settings: the server and the ``seed`` command use the same one."""

from __future__ import annotations

from emulator.face.engine import DlibEngine
from emulator.settings import Settings

# The engine's own decode ceiling. The live pixel limits (SMARTY_MAX_IMAGE_WIDTH/HEIGHT) are checked from the
# header before the engine sees an image, so they may be raised at run time up to this ceiling.
ENGINE_MAX_SIDE = 8192


def engine_from_settings(settings: Settings) -> DlibEngine:
    """A :class:`DlibEngine` with ``SMARTY_EMBEDDER`` and ``SMARTY_DETECTOR``, decoding up to
    :data:`ENGINE_MAX_SIDE` (or the pixel limits, if larger)."""
    side = max(ENGINE_MAX_SIDE, settings.max_image_width, settings.max_image_height)
    return DlibEngine(max_width=side, max_height=side, embedder=settings.embedder, detector=settings.detector)
