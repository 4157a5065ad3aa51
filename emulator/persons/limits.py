"""The bounds an image must keep before it is analysed, and the words that refuse it.

``set`` and ``recognize`` refuse such an image for itself (its object's error), seeding skips it with the same
words: past ``SMARTY_MAX_IMAGE_BYTES``, or past the pixel bounds (``SMARTY_MAX_IMAGE_WIDTH``/``HEIGHT``,
``SMARTY_MIN_IMAGE_SIDE``), which are read from the image header alone, so a decompression bomb is never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.face.decode import ImageError, check_dimensions
from emulator.settings import Settings


@dataclass(frozen=True)
class ImageLimits:
    """What one image may be: ``max_bytes`` long, within ``max_width`` x ``max_height`` and ``min_side`` pixels."""

    max_bytes: int
    max_width: int
    max_height: int
    min_side: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            int(settings.max_image_bytes),
            int(settings.max_image_width),
            int(settings.max_image_height),
            int(settings.min_image_side),
        )


def refusal(data: bytes | None, size: int, limits: ImageLimits) -> str | None:
    """Why an image of ``size`` bytes is refused by ``limits``, or ``None`` if it is within them. ``data`` is its
    bytes, or ``None`` when they were not read for being past ``max_bytes``."""
    if data is None:
        return f"image is too large: {size} bytes, the limit is {limits.max_bytes} bytes"
    try:
        check_dimensions(data, max_width=limits.max_width, max_height=limits.max_height, min_side=limits.min_side)
    except ImageError as exc:
        return exc.message
    return None
