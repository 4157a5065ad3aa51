"""Hand-built requests for hostile-input tests: raw multipart bodies, bad images, and a raw socket sender.

httpx always writes a well-formed multipart body; the catalogue needs bodies that are not
(no boundary, truncated, a part name with an escaped quote), images Pillow writes on the fly,
and a body streamed slowly over a socket that stops as soon as the server answers.
"""

from __future__ import annotations

import io
import json
import select
import socket
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.support.emulator_server import fixture

BOUNDARY = "hostile-boundary-7d3f"
FACE = "people/obama/obama.jpg"  # person 1 of the seeded space
OTHER_FACE = "people/biden/biden.jpg"  # person 2


def quote_name(name: str) -> str:
    """A part name as Go's mime/multipart writer quotes it (backslash escapes)."""
    return name.replace("\\", "\\\\").replace('"', '\\"')


def multipart(parts: Iterable[tuple[str, bytes]], boundary: str = BOUNDARY, *, close: bool = True) -> bytes:
    """A multipart/form-data body; a part named ``meta`` is a plain field, every other part a file."""
    out = io.BytesIO()
    for name, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{quote_name(name)}"'
        if name != "meta":
            disposition += '; filename="upload.bin"'
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if name != "meta":
            out.write(b"Content-Type: application/octet-stream\r\n")
        out.write(b"\r\n" + data + b"\r\n")
    if close:
        out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def form(meta: object, files: Iterable[tuple[str, bytes]] = ()) -> bytes:
    text = meta if isinstance(meta, (str, bytes)) else json.dumps(meta)
    raw = text.encode() if isinstance(text, str) else text
    return multipart([*files, ("meta", raw)])


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


# --- images -----------------------------------------------------------------------------


def face_image() -> Image.Image:
    return Image.open(io.BytesIO(fixture(FACE))).convert("RGB")


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def png_16bit() -> bytes:
    gray = np.asarray(face_image().convert("L"), dtype=np.uint16) * 257
    img = Image.fromarray(gray.astype(np.uint16))
    assert img.mode == "I;16"
    return encode(img, "PNG")


def png_palette() -> bytes:
    return encode(face_image().quantize(colors=256), "PNG")


def png_rgba() -> bytes:
    rgba = face_image().convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, dtype=np.uint8)
    alpha[:40, :] = 0  # a transparent band at the top, away from the face
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba, "PNG")


def jpeg_cmyk() -> bytes:
    return encode(face_image().convert("CMYK"), "JPEG", quality=92)


def jpeg_gray() -> bytes:
    return encode(face_image().convert("L"), "JPEG", quality=92)


def multipage_tiff() -> bytes:
    """Page 1: person 1's face; page 2: person 2's face."""
    first = face_image()
    first = first.resize((first.width // 2, first.height // 2))
    other = Image.open(io.BytesIO(fixture(OTHER_FACE))).convert("RGB")
    return encode(first, "TIFF", save_all=True, append_images=[other], compression="jpeg")


def tiny(side: int) -> bytes:
    return encode(Image.new("RGB", (side, side), (128, 100, 90)), "PNG")


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    b'<circle cx="50" cy="50" r="40" fill="tan"/></svg>'
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 40000, height: int | None = None, *, rgb: bool = False) -> bytes:
    """A real PNG of ``width`` x ``height`` (square by default) zero pixels: 1-bit grayscale, or 8-bit RGB with
    ``rgb``. The default, 40000x40000 1-bit, is ~200 KB on the wire and 4.8 GB once decoded to RGB. Built a few MB of
    rows at a time, never whole."""
    height = width if height is None else height
    bit_depth, colour_type, bits_per_pixel = (8, 2, 24) if rgb else (1, 0, 1)
    row = b"\x00" * (1 + (width * bits_per_pixel + 7) // 8)  # filter byte + pixels
    rows_per_step = max(1, (4 << 20) // len(row))
    packer = zlib.compressobj(9)
    chunks = [packer.compress(row * min(rows_per_step, height - y)) for y in range(0, height, rows_per_step)]
    chunks.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def over_size_limit(limit: int) -> bytes:
    """A valid JPEG (the face) padded with a trailing comment so it is just over ``limit`` bytes."""
    data = fixture(FACE)
    return data + b"\x00" * (limit + 1 - len(data))


# --- a raw socket sender -------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to write before the answer came


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(rest) >= length:
                return data
        ready, _, _ = select.select([sock], [], [], 0.5)
        if ready:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    return data


def raw_post(
    port: int,
    path: str,
    headers: dict[str, str],
    chunks: Iterator[bytes],
    *,
    max_bytes: int,
    pause: float = 0.0,
    timeout: float = 60.0,
) -> RawResponse:
    """POST ``chunks`` over a raw socket, at most ``max_bytes`` of them, stopping once the server answers."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        sent = 0
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable or sent >= max_bytes or time.monotonic() > deadline:
                break  # the server answered (or closed): stop sending
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            if pause:
                time.sleep(pause)
        raw = _read_response(sock, deadline)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return RawResponse(status, {k.lower(): v for k, v in fields.items()}, body, sent)
