"""From a parsed persons request (meta decoded once) to the typed requests of the four methods.

Images in the request's ``skip`` are validated with the rest of the request but left out of the typed request (a
hook answers for them, e.g. an injected per-object fault: see emulator/control/faults.py), so that nothing is stored
or matched for them.
"""

from __future__ import annotations

from collections.abc import Mapping

from emulator.persons import errors
from emulator.persons.errors import BadRequest
from emulator.persons.meta import RawImage, validate_images, validate_searcher, validate_space
from emulator.persons.request import Part, PersonsRequest
from emulator.persons.types import DeleteRequest, ImageInput, RecognizeRequest, SetRequest, TruncateRequest


def _images(parts: Mapping[str, Part], images: list[RawImage], skip: frozenset[str]) -> tuple[ImageInput, ...]:
    out = []
    for image in images:
        part = parts.get(image.name)
        if part is None:
            raise BadRequest(errors.no_such_image(image.name))
        if part.size == 0:
            raise BadRequest(errors.EMPTY_IMAGE)
        if image.name not in skip:
            out.append(ImageInput(image.name, part.data, part.size, image.person_id or None, part.sha256))
    return tuple(out)


def set_request(request: PersonsRequest) -> SetRequest:
    meta = request.meta.value()
    space = validate_space(meta)
    images = validate_images(meta, max_images=request.settings.max_images, need_person_id=True)
    return SetRequest(space, _images(request.parts, images, request.skip))


def recognize_request(request: PersonsRequest) -> RecognizeRequest:
    meta = request.meta.value()
    space = validate_space(meta)
    images = validate_images(meta, max_images=request.settings.max_images, need_person_id=False)
    searcher = validate_searcher(meta)
    return RecognizeRequest(
        space,
        _images(request.parts, images, request.skip),
        create_new=meta.create_new,
        update_embedding=meta.update_embedding,
        searcher=searcher,
    )


def delete_request(request: PersonsRequest) -> DeleteRequest:
    meta = request.meta.value()
    space = validate_space(meta)
    images = validate_images(meta, max_images=request.settings.max_images, need_person_id=True)
    return DeleteRequest(
        space, tuple((image.name, image.person_id) for image in images if image.name not in request.skip)
    )


def truncate_request(request: PersonsRequest) -> TruncateRequest:
    return TruncateRequest(validate_space(request.meta.value()))
