"""A small JPEG crop of one face, kept with the face in the store for the demo page.

The crop is the face box grown by a margin, made square, upright as ``decode_image`` makes the photo (EXIF
orientation applied, so the box from the engine lands on the right pixels), at most ``THUMBNAIL_SIDE`` pixels a
side, and at most ``MAX_THUMBNAIL_BYTES`` bytes. JPEGs are decoded at a reduced scale where that still leaves
enough pixels for the crop (Pillow's ``draft``), so a thumbnail of a large photo costs a few milliseconds.

A thumbnail is optional: if anything goes wrong, :func:`face_thumbnail` returns ``None`` and the face is stored
without one. It never carries EXIF or other metadata of the photo.
"""

from __future__ import annotations

import io
import math

from PIL import Image

from emulator.face.decode import _OPEN_FORMATS, _SWAPS_SIDES, _TRANSPOSE, ACCEPTED_FORMATS, _orientation, _to_rgb

THUMBNAIL_SIDE = 96
MAX_THUMBNAIL_BYTES = 16 * 1024
MARGIN = 0.25  # of the box side, added on each side
_QUALITIES = (82, 65, 45, 25)


def crop_region(
    box: tuple[int, int, int, int], width: int, height: int, margin: float = MARGIN
) -> tuple[int, int, int, int]:
    """The square around ``box`` (left, top, right, bottom) grown by ``margin``, kept inside the image."""
    left, top, right, bottom = box
    side = min(round(max(right - left, bottom - top, 1) * (1 + 2 * margin)), width, height)
    x0 = min(max(round((left + right - side) / 2), 0), width - side)
    y0 = min(max(round((top + bottom - side) / 2), 0), height - side)
    return x0, y0, x0 + side, y0 + side


def face_thumbnail(data: bytes, box: tuple[int, int, int, int], side: int = THUMBNAIL_SIDE) -> bytes | None:
    """A JPEG (at most ``side`` x ``side``, at most ``MAX_THUMBNAIL_BYTES``) of the face at ``box``, or None.

    ``box`` is in the upright image's pixels, as the engine reports it. ``data`` must already have been accepted
    by ``decode_image`` (its size is within the limits); this function does not check it again.
    """
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as img:
            if img.format not in ACCEPTED_FORMATS:
                return None
            return _thumbnail(img, box, side)
    except Exception:  # noqa: BLE001 - a thumbnail must never fail the request that stores the face
        return None


def _thumbnail(img: Image.Image, box: tuple[int, int, int, int], side: int) -> bytes | None:
    orientation = _orientation(img)
    stored_w, stored_h = img.size
    upright_w, upright_h = (stored_h, stored_w) if orientation in _SWAPS_SIDES else (stored_w, stored_h)
    x0, y0, x1, y1 = crop_region(box, upright_w, upright_h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    # Decode JPEGs at the smallest scale that still leaves `side` pixels across the crop.
    scale = min(1.0, side / (x1 - x0))
    if img.format in ("JPEG", "MPO") and scale < 1.0:
        img.draft("RGB", (math.ceil(stored_w * scale), math.ceil(stored_h * scale)))
    img.load()
    rgb = _to_rgb(img.convert("RGBA") if img.mode == "P" and "transparency" in img.info else img)
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        rgb = rgb.transpose(method)
    factor = rgb.width / upright_w  # 1, or 1/2, 1/4, 1/8 after draft
    crop = rgb.crop((round(x0 * factor), round(y0 * factor), round(x1 * factor), round(y1 * factor)))
    crop.thumbnail((side, side), Image.Resampling.LANCZOS)
    for quality in _QUALITIES:
        out = io.BytesIO()
        crop.save(out, format="JPEG", quality=quality, optimize=True)
        if out.tell() <= MAX_THUMBNAIL_BYTES:
            return out.getvalue()
    return None
