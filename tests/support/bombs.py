"""Files made to exhaust memory: a gzip bomb, a snapshot with one enormous string or millions of tiny entries, and
a 200-megapixel PNG. Each is built in a few seconds at most, streaming, without holding what it inflates to."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from tests.support.hostile import png_bomb

HEAD = b'{"format":"smarty-emulator-snapshot","version":1,"spaces":[{"client":"c","space":0,"faces":['
TAIL = b"]}]}"
STRING_HEAD = HEAD + b'{"person_id":1,"meta":{"name":"'
STRING_TAIL = b'"}}' + TAIL


def gzip_bomb(inflated: int = 4 << 30) -> bytes:
    """A snapshot whose one face's name is ``inflated`` bytes of ``A``, gzip-compressed: about 1 KB per MB (4 MB for
    4 GiB). Valid gzip: one member for the head, the same 64 MiB member again and again, one for the tail."""
    block = 64 << 20
    member = gzip.compress(b"A" * block, compresslevel=9, mtime=0)
    return gzip.compress(STRING_HEAD, mtime=0) + member * (inflated // block) + gzip.compress(STRING_TAIL, mtime=0)


def enormous_string(size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A plain-JSON snapshot with one string of ``size`` bytes, in chunks (never whole in memory)."""
    yield STRING_HEAD
    for _ in range(size // chunk):
        yield b"A" * chunk
    yield STRING_TAIL


def enormous_string_size(size: int, chunk: int = 1 << 20) -> int:
    return len(STRING_HEAD) + (size // chunk) * chunk + len(STRING_TAIL)


def tiny_entries(count: int) -> bytes:
    """A snapshot whose one space lists ``count`` empty faces: 3 bytes each on the wire, a dict each once parsed."""
    return HEAD + b"{}," * (count - 1) + b"{}" + TAIL


def huge_png(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A real 8-bit RGB PNG of ``width`` x ``height`` black pixels (200 megapixels, 600 MB decoded; ~600 KB)."""
    path.write_bytes(png_bomb(width, height, rgb=True))
    return path
