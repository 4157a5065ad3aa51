"""Domain errors. They carry the contract's status and text; nothing here knows HTTP.

:class:`RequestError` fails a whole request (the envelope's ``status`` is 400, 403 or 500
and its ``body`` is the text). :class:`ObjectError` fails one image of a request (that
object's ``status`` is 1 or 2 and its ``error`` is the text), the rest go on.
"""

from __future__ import annotations

from emulator.store.records import StoreError as StoreError  # a failure of the record: an internal error

INTERNAL_ERROR = "Internal Server Error"  # the real service's text of its internal-error envelope (status 500)


class RequestError(Exception):
    """The whole request fails with an error envelope."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    status = 400


class Forbidden(RequestError):
    status = 403


class InternalError(RequestError):
    status = 500


class ObjectError(Exception):
    """One image of a request fails; ``status`` 1 is permanent, 2 temporary."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# The texts of the contract, in one place.
EMPTY_IMAGE = "empty image"
UNKNOWN_IMAGE_TYPE = "The memory contains data of an unknown image type"
ONE_FACE_REQUIRED = "face set required only one face per image"
NO_PERSON_ID = "no person_id has been provided"


def no_such_image(name: str) -> str:
    return f"could not get image by name {name}: http: no such file"


def space_full(limit: int) -> str:
    return f"space is full: it holds {limit} faces, the limit is {limit}"
