"""Turn uploaded bytes into an upright RGB pixel array, refusing what the service refuses.

Only JPEG, PNG and TIFF are accepted (the format is checked from the header, before any pixel is decoded).
The image size is checked from the header too, so a decompression bomb never gets decoded. EXIF orientation
is applied (same table as ``PIL.ImageOps.exif_transpose``), so every coordinate the engine reports is in the
upright image's pixels. Any pixel mode is converted to 8-bit RGB; transparent pixels are composited on white.

Every failure caused by the bytes is an ``ImageError``; no other exception escapes for bad input.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

UNKNOWN_IMAGE_TYPE = "The memory contains data of an unknown image type"

# Pillow's format names we accept. MPO is what Pillow calls a JPEG that carries extra frames (many phone photos).
ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "TIFF"})
_OPEN_FORMATS = ["JPEG", "PNG", "TIFF"]  # plugins Pillow may try; MPO comes through the JPEG plugin

ORIENTATION_TAG = 0x0112
# EXIF Orientation -> the transpose that makes the stored pixels upright (as PIL.ImageOps.exif_transpose).
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


class ImageError(Exception):
    """The bytes are not an image the service accepts. ``message`` is the text shown to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownImageType(ImageError):
    """Not JPEG/PNG/TIFF, or not decodable (corrupt or truncated)."""

    def __init__(self, message: str = UNKNOWN_IMAGE_TYPE) -> None:
        super().__init__(message)


class ImageTooSmall(ImageError):
    """A side of the (upright) image is below the minimum."""


class ImageTooLarge(ImageError):
    """The (upright) image is wider or taller than allowed."""


def decode_image(data: bytes, *, max_width: int, max_height: int, min_side: int = 5) -> np.ndarray:
    """Decode ``data`` into an upright HxWx3 ``uint8`` RGB array (C-contiguous, writable).

    ``max_width`` x ``max_height`` bound the upright image (after EXIF rotation); both sides must be at least
    ``min_side``. Raises ``UnknownImageType``, ``ImageTooSmall`` or ``ImageTooLarge``.
    """
    if not data:
        raise UnknownImageType()
    try:
        img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError:
        raise _too_large_from_header(data, max_width, max_height) from None
    except (UnidentifiedImageError, Exception):  # noqa: BLE001 - any failure to parse the header is 'unknown'
        raise UnknownImageType() from None
    try:
        return _decode_opened(img, max_width=max_width, max_height=max_height, min_side=min_side)
    finally:
        img.close()


def check_dimensions(data: bytes, *, max_width: int, max_height: int, min_side: int) -> None:
    """Refuse an image whose (upright) size is outside the limits, from its header alone (no pixel decoded).

    Bytes that are not an accepted image pass: :func:`decode_image` reports those. The service calls this with
    the live settings before the engine decodes, so a pixel limit changed at run time applies at once.
    """
    if not data:
        return
    try:
        img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError:
        raise _too_large_from_header(data, max_width, max_height) from None
    except Exception:  # noqa: BLE001 - not an image: decode_image words that
        return
    try:
        if img.format in ACCEPTED_FORMATS:
            _checked_orientation(img, max_width=max_width, max_height=max_height, min_side=min_side)
    finally:
        img.close()


def _checked_orientation(img: Image.Image, *, max_width: int, max_height: int, min_side: int) -> int:
    """Check the size (stored, then upright) against the limits; return the EXIF orientation."""
    stored_w, stored_h = img.size
    # 1) Header-only check that holds for either orientation: nothing larger than the limits is ever decoded.
    #    (An image that fits neither way is reported with its stored size: its orientation is not read yet.)
    fits_as_stored = stored_w <= max_width and stored_h <= max_height
    fits_turned = stored_h <= max_width and stored_w <= max_height
    if min(stored_w, stored_h) < min_side:
        raise ImageTooSmall(_too_small_message(stored_w, stored_h, min_side))
    if not (fits_as_stored or fits_turned):
        raise _too_large(stored_w, stored_h, max_width, max_height)
    # 2) Orientation (for PNG, Pillow may need to read the whole file to find an eXIf chunk; the size is bounded).
    orientation = _orientation(img)
    upright_w, upright_h = (stored_h, stored_w) if orientation in _SWAPS_SIDES else (stored_w, stored_h)
    _check_size(upright_w, upright_h, max_width=max_width, max_height=max_height, min_side=min_side)
    return orientation


def _decode_opened(img: Image.Image, *, max_width: int, max_height: int, min_side: int) -> np.ndarray:
    if img.format not in ACCEPTED_FORMATS:
        raise UnknownImageType()
    orientation = _checked_orientation(img, max_width=max_width, max_height=max_height, min_side=min_side)
    upright_w, upright_h = (img.height, img.width) if orientation in _SWAPS_SIDES else img.size
    # 3) Pixels.
    try:
        img.load()
        if img.mode == "P" and img.info.get("transparency") is not None:
            rgb = _to_rgb(img.convert("RGBA"))
        else:
            rgb = _to_rgb(img)
        method = _TRANSPOSE.get(orientation)
        if method is not None:
            rgb = rgb.transpose(method)
        array = np.array(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise _too_large(upright_w, upright_h, max_width, max_height) from None
    except Exception:  # noqa: BLE001 - truncated, corrupt, unsupported compression, odd modes, MemoryError...
        raise UnknownImageType() from None
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[:2] != (upright_h, upright_w):
        raise UnknownImageType()
    return np.ascontiguousarray(array)


def _check_size(width: int, height: int, *, max_width: int, max_height: int, min_side: int) -> None:
    if width < min_side or height < min_side:
        raise ImageTooSmall(_too_small_message(width, height, min_side))
    # The limit is a resolution (4K), so a portrait photo may be max_height wide and max_width tall.
    fits = (width <= max_width and height <= max_height) or (width <= max_height and height <= max_width)
    if not fits:
        raise _too_large(width, height, max_width, max_height)


def _too_small_message(width: int, height: int, min_side: int) -> str:
    return f"image is {width}x{height} pixels, smaller than the allowed minimum {min_side}x{min_side}"


def _too_large(width: int, height: int, max_width: int, max_height: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"image is {width}x{height} pixels, larger than the allowed {max_width}x{max_height}"
        f" (or {max_height}x{max_width})"
    )


def _too_large_from_header(data: bytes, max_width: int, max_height: int) -> ImageError:
    """Pillow refused to open a decompression bomb; read its size from the header for the message."""
    Image.init()
    for name in _OPEN_FORMATS:
        factory, accept = Image.OPEN[name]
        try:
            if accept is not None and not accept(data[:16]):
                continue
            opened = factory(io.BytesIO(data), "")
            width, height = opened.size
            opened.close()
        except Exception:  # noqa: BLE001 - only used to word the message
            continue
        return _too_large(width, height, max_width, max_height)
    return ImageTooLarge(f"image is larger than the allowed {max_width}x{max_height} pixels")


def _orientation(img: Image.Image) -> int:
    """The EXIF Orientation tag (1..8), or 1 when absent or unreadable (bad EXIF does not reject a photo)."""
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
        orientation = int(value)
    except Exception:  # noqa: BLE001 - malformed EXIF: treat as upright
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "A" in img.getbands():
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Pillow's convert("L") clips 16-bit values at 255; scale them instead.
        values = np.asarray(img, dtype=np.float64)
        if mode == "F" and values.size and float(np.nanmax(values)) <= 1.0:
            scaled = values * 255.0
        elif mode.startswith("I;16") or (values.size and float(values.min()) >= 0 and float(values.max()) <= 65535):
            scaled = values / 257.0
        else:
            low, high = float(values.min()), float(values.max())
            scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        gray = np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return img.convert("RGB")
