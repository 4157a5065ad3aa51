"""Streaming ``multipart/form-data`` parsing with the real service's part rules.

Parts are found by their part name (``name=`` in Content-Disposition), never by filename;
a part may be a plain field or a file part; a part with no or an empty name is ignored
(as Go's ``mime/multipart`` form reader does); ``Content-Transfer-Encoding: binary`` is
accepted. When two parts share a name, the first wins (as Go's ``FormFile``).

Memory is bounded while the body streams in: a part is buffered only up to
``max_part_bytes`` (past that only its size is counted, and the image is refused on its
own), and the whole body is refused once it passes ``max_body_bytes``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from emulator.persons.errors import BadRequest
from emulator.persons.request import Part

MAX_BOUNDARY_LENGTH = 70  # RFC 2046
MAX_PART_HEADERS = 32
MAX_PART_HEADER_BYTES = 64 * 1024


def _parse_error_text(exc: FormParserError) -> str:
    """python-multipart's reason for a malformed body, in the emulator's (Go-styled) words."""
    detail = str(exc)
    if detail.startswith("Expected boundary character"):
        return "multipart: NextPart: the body does not begin with the boundary given in Content-Type"
    if detail.startswith("Maximum header size"):
        return f"multipart: NextPart: part headers are larger than {MAX_PART_HEADER_BYTES} bytes"
    if detail.startswith("Maximum header count"):
        return f"multipart: NextPart: a part has more than {MAX_PART_HEADERS} headers"
    return f"multipart: NextPart: malformed part: {detail}"


def not_multipart_message() -> str:
    return "could not parse multipart form: request Content-Type isn't multipart/form-data"


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or a 400 in Go's words."""
    ctype, options = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise BadRequest(not_multipart_message())
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("could not parse multipart form: no multipart boundary param in Content-Type")
    return boundary


@dataclass
class _ReadState:
    """What the parser's callbacks share while one body is read: the part being read (``None`` between parts, and
    for an unnamed or repeated one, whose bytes are dropped), its headers, and whether the closing boundary came."""

    part: Part | None = None
    header_field: bytes = b""
    header_value: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False


async def parse_form(
    content_type: str | None,
    body: AsyncIterator[bytes],
    *,
    max_part_bytes: int,
    max_body_bytes: int,
) -> dict[str, Part]:
    """Read the body and return its named parts (first of each name)."""
    boundary = boundary_of(content_type)
    parts: dict[str, Part] = {}
    state = _ReadState()

    def on_part_begin() -> None:
        state.headers = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state.headers.get(b"content-disposition", b"").decode("latin-1"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        part = Part(name, filename.decode("utf-8", "replace") if filename is not None else None)
        state.part = part if name and name not in parts else None
        if state.part is not None:
            parts[name] = part

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = state.part
        if part is None:
            return
        part.size += end - start
        if part.overflow:
            return
        if part.size > max_part_bytes:
            part.overflow = True
            part.chunks.clear()
            return
        part.chunks.append(bytes(data[start:end]))

    def on_part_end() -> None:
        state.part = None

    def on_end() -> None:
        state.ended = True

    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise BadRequest(
            f"could not parse multipart form: the multipart boundary is {len(boundary)} bytes,"
            f" at most {MAX_BOUNDARY_LENGTH} are allowed"
        )
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_header_count=MAX_PART_HEADERS,
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_body_bytes:
                raise BadRequest(
                    f"could not parse multipart form: request body too large, the limit is {max_body_bytes} bytes"
                )
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        # Nobody will read the answer; this gives the request a clear record (and no traceback in the log).
        raise BadRequest(
            f"could not parse multipart form: the client disconnected after {received} bytes of the body"
        ) from None
    except FormParserError as exc:
        raise BadRequest(f"could not parse multipart form: {_parse_error_text(exc)}") from None
    if not state.ended:
        raise BadRequest("could not parse multipart form: multipart: NextPart: unexpected EOF")
    return parts
