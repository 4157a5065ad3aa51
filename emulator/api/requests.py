"""From named multipart parts to the typed requests of the four methods."""

from __future__ import annotations

from emulator.api.meta import RawImage, RawMeta, decode_meta, validate_images, validate_searcher, validate_space
from emulator.api.multipart import Part
from emulator.persons import errors
from emulator.persons.errors import BadRequest
from emulator.persons.types import DeleteRequest, ImageInput, RecognizeRequest, SetRequest, TruncateRequest
from emulator.settings import Settings


def _meta(parts: dict[str, Part], settings: Settings) -> RawMeta:
    """Decode meta; it is bounded by the per-part limit (``max_image_bytes``), as every part is."""
    part = parts.get("meta")
    if part is not None and part.overflow:
        raise BadRequest(
            f"could not parse meta: meta is {part.size} bytes, the limit is {settings.max_image_bytes} bytes"
        )
    return decode_meta(part.data if part is not None else None)


def _images(parts: dict[str, Part], images: list[RawImage]) -> tuple[ImageInput, ...]:
    out = []
    for image in images:
        part = parts.get(image.name)
        if part is None:
            raise BadRequest(errors.no_such_image(image.name))
        if part.size == 0:
            raise BadRequest(errors.EMPTY_IMAGE)
        out.append(ImageInput(image.name, part.data, part.size, image.person_id or None, part.sha256))
    return tuple(out)


def image_names(parts: dict[str, Part]) -> list[str] | None:
    """Meta's image names, or ``None`` unless meta decodes and names a valid space (for per-object faults, which
    apply only to requests the service would accept as a whole)."""
    part = parts.get("meta")
    if part is None or part.data is None:
        return None
    try:
        meta = decode_meta(part.data)
        validate_space(meta)
    except BadRequest:
        return None
    return [image.name for image in meta.images or []]


def _kept(images: tuple[ImageInput, ...], skip: frozenset[str]) -> tuple[ImageInput, ...]:
    return tuple(image for image in images if image.name not in skip) if skip else images


# ``skip``: names of images validated with the rest of the request but left out of it (an injected per-object
# fault answers for them; see emulator/control/faults.py), so that nothing is stored or matched for them.


def set_request(parts: dict[str, Part], settings: Settings, skip: frozenset[str] = frozenset()) -> SetRequest:
    meta = _meta(parts, settings)
    space = validate_space(meta)
    images = validate_images(meta, max_images=settings.max_images, need_person_id=True)
    return SetRequest(space, _kept(_images(parts, images), skip))


def recognize_request(
    parts: dict[str, Part], settings: Settings, skip: frozenset[str] = frozenset()
) -> RecognizeRequest:
    meta = _meta(parts, settings)
    space = validate_space(meta)
    images = validate_images(meta, max_images=settings.max_images, need_person_id=False)
    searcher = validate_searcher(meta)
    return RecognizeRequest(
        space,
        _kept(_images(parts, images), skip),
        create_new=meta.create_new,
        update_embedding=meta.update_embedding,
        searcher=searcher,
    )


def delete_request(parts: dict[str, Part], settings: Settings, skip: frozenset[str] = frozenset()) -> DeleteRequest:
    meta = _meta(parts, settings)
    space = validate_space(meta)
    images = validate_images(meta, max_images=settings.max_images, need_person_id=True)
    return DeleteRequest(space, tuple((image.name, image.person_id) for image in images if image.name not in skip))


def truncate_request(parts: dict[str, Part], settings: Settings, skip: frozenset[str] = frozenset()) -> TruncateRequest:
    return TruncateRequest(validate_space(_meta(parts, settings)))
