"""Decode the ``meta`` part with Go's ``encoding/json`` semantics, then validate it.

The real service unmarshals meta into an anonymous Go struct, so its errors read like
``json: cannot unmarshal number into Go struct field .space of type string``. Mirrored
here: keys match case-insensitively (exact match preferred), ``null`` leaves a field at
its zero value, the first type error wins, unknown keys are ignored, and a whole number
must fit the Go type. The Go type names in the messages are the emulator's rendering of
the anonymous struct (the real server's exact type text is not documented).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emulator.persons import errors
from emulator.persons.errors import BadRequest
from emulator.persons.types import MAX_SPACE, space_out_of_range

_IMAGE_TYPE = 'struct { Name string "json:\\"name\\""; PersonID int64 "json:\\"person_id\\"" }'
_META_TYPE = "struct { Space string; Images []struct; CreateNew bool; UpdateEmbedding bool; Searcher int }"
_INT64 = (-(2**63), 2**63 - 1)
_INT_RE = re.compile(r"-?(0|[1-9][0-9]*)")


@dataclass
class RawImage:
    name: str = ""
    person_id: int = 0


@dataclass
class RawMeta:
    space: str = ""
    images: list[RawImage] | None = None
    create_new: bool = False
    update_embedding: bool = True
    searcher: int = 0
    seen: set[str] = field(default_factory=set)


class _Number(str):
    """A JSON number kept as its literal text, as Go's decoder sees it."""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, _Number):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _Object):  # a list subclass: test it first
        return "object"
    if isinstance(value, list):
        return "array"
    return "object"


class _Decoder:
    def __init__(self) -> None:
        self.first_error: str | None = None

    def type_error(self, value: Any, path: str, go_type: str, literal: bool = False) -> None:
        if self.first_error is None:
            what = f"number {value}" if literal else _kind(value)
            self.first_error = f"json: cannot unmarshal {what} into Go struct field {path} of type {go_type}"

    def string(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        if isinstance(value, str) and not isinstance(value, _Number):
            return value
        self.type_error(value, path, "string")
        return None

    def boolean(self, value: Any, path: str) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        self.type_error(value, path, "bool")
        return None

    def integer(self, value: Any, path: str, go_type: str) -> int | None:
        if value is None:
            return None
        if not isinstance(value, _Number):
            self.type_error(value, path, go_type)
            return None
        # Length first: int() of thousands of digits is slow, and past 4300 digits Python refuses it.
        if len(value) > 20 or not _INT_RE.fullmatch(value) or not (_INT64[0] <= int(value) <= _INT64[1]):
            self.type_error(value, path, go_type, literal=True)
            return None
        return int(value)


def _fields(obj: list[tuple[str, Any]], names: tuple[str, ...]) -> list[tuple[str, Any]]:
    """Map each key to a field name as Go does: exact match first, else case-insensitive."""
    out = []
    for key, value in obj:
        if key in names:
            out.append((key, value))
            continue
        folded = [n for n in names if n.lower() == key.lower()]
        if folded:
            out.append((folded[0], value))
    return out


def _loads_text(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> Any:
        return _Object(items)

    def constant(name: str) -> Any:
        raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")

    return json.loads(text, object_pairs_hook=pairs, parse_int=_Number, parse_float=_Number, parse_constant=constant)


# Go's encoding/json refuses nesting deeper than 10000 ("exceeded max depth") and decodes anything
# shallower. Python's decoder recurses and stops near its recursion limit (1000), so a deeper document
# (at most 10000 levels: a few hundred KB) is decoded in a thread with a large stack and a raised limit.
GO_MAX_DEPTH = 10000
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_DEEP_LOCK = threading.Lock()


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (string contents ignored)."""
    bare = _STRINGS.sub("", text).encode("utf-8", "replace")
    steps = np.frombuffer(bare, dtype=np.uint8)
    delta = np.isin(steps, (ord("["), ord("{"))).astype(np.int32) - np.isin(steps, (ord("]"), ord("}")))
    return int(np.cumsum(delta).max(initial=0))


def _loads_deep(text: str) -> Any:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = _loads_text(text)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    with _DEEP_LOCK:
        old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
        try:
            sys.setrecursionlimit(max(old_limit, GO_MAX_DEPTH * 2 + 1000))
            threading.stack_size(512 * 1024 * 1024)  # virtual; only what the recursion touches is used
            worker = threading.Thread(target=run, name="meta-deep")
            worker.start()  # the stack size is taken at start
            threading.stack_size(old_stack)
            worker.join()
        finally:
            threading.stack_size(old_stack)
            sys.setrecursionlimit(old_limit)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _loads(raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    try:
        return _loads_text(text)
    except RecursionError:
        if nesting_depth(text) > GO_MAX_DEPTH:
            raise ValueError("exceeded max depth") from None
        return _loads_deep(text)


class _Object(list[tuple[str, Any]]):
    """A JSON object as its ordered (key, value) pairs, duplicates kept."""


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote_char(char: str) -> str:
    """A character as Go's JSON scanner quotes it in a syntax error (``quoteChar``)."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    if char in _GO_ESCAPES:
        return f"'{_GO_ESCAPES[char]}'"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"'\\x{ord(char):02x}'"
    if not char.isprintable():
        return f"'\\u{ord(char):04x}'"
    return f"'{char}'"


def _innermost_container(doc: str, pos: int) -> str:
    """``[`` or ``{``: the innermost container still open at ``pos`` (strings ignored; only on the error path)."""
    bare = _STRINGS.sub('""', doc[:pos]).encode("utf-8", "replace")
    chars = np.frombuffer(bare, dtype=np.uint8)
    opener = np.isin(chars, (ord("["), ord("{")))
    depth = np.cumsum(opener.astype(np.int32) - np.isin(chars, (ord("]"), ord("}"))))
    if not depth.size:
        return "{"
    candidates = np.flatnonzero(opener & (depth == depth[-1]))
    return chr(chars[candidates[-1]]) if candidates.size else "{"


def _syntax_error(exc: json.JSONDecodeError) -> str:
    """Python's reason for invalid JSON, in the words of Go's scanner."""
    doc, pos, msg = exc.doc, exc.pos, exc.msg
    if pos >= len(doc.rstrip()) or msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    char = doc[pos]
    if msg.startswith("Unexpected UTF-8 BOM"):
        return "invalid character 'ï' looking for beginning of value"  # Go sees the BOM's first byte, 0xEF
    if msg.startswith("Expecting property name"):
        return f"invalid character {_go_quote_char(char)} looking for beginning of object key string"
    if msg.startswith("Expecting value"):
        literal = next((word for word in ("true", "false", "null") if word[0] == char), None)
        if literal is not None:  # a misspelt literal: Go names the first wrong character
            rest = doc[pos : pos + len(literal)]
            for index, expected in enumerate(literal):
                if index >= len(rest):
                    return "unexpected end of JSON input"
                if rest[index] != expected:
                    return (
                        f"invalid character {_go_quote_char(rest[index])} in literal {literal}"
                        f" (expecting {_go_quote_char(expected)})"
                    )
        return f"invalid character {_go_quote_char(char)} looking for beginning of value"
    if msg.startswith("Extra data"):
        return f"invalid character {_go_quote_char(char)} after top-level value"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {_go_quote_char(char)} after object key"
    if msg.startswith("Expecting ','"):
        where = "object key:value pair" if _innermost_container(doc, pos) == "{" else "array element"
        return f"invalid character {_go_quote_char(char)} after {where}"
    if msg.startswith("Invalid control character"):
        return f"invalid character {_go_quote_char(char)} in string literal"
    if msg.startswith("Invalid \\uXXXX"):
        start = doc.rfind("\\u", 0, pos + 2) + 2
        bad = next((c for c in doc[start : start + 4] if c not in "0123456789abcdefABCDEF"), char)
        return f"invalid character {_go_quote_char(bad)} in \\u hexadecimal character escape"
    if msg.startswith("Invalid \\escape"):
        bad = doc[pos + 1] if pos + 1 < len(doc) and doc[pos] == "\\" else char
        return f"invalid character {_go_quote_char(bad)} in string escape code"
    return f"invalid character {_go_quote_char(char)} looking for beginning of value"


def decode_meta(raw: bytes | None) -> RawMeta:
    """Decode meta as Go would; a missing, non-JSON or mistyped meta is a 400."""
    if raw is None:
        raise BadRequest("could not get meta: http: no such file")
    try:
        doc = _loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"could not parse meta: {_syntax_error(exc)}") from None
    except ValueError as exc:
        raise BadRequest(f"could not parse meta: {exc}") from None
    except RecursionError:  # not expected (see _loads); still a clear 400, never a 500
        raise BadRequest("could not parse meta: exceeded max depth") from None
    meta = RawMeta()
    if doc is None:
        return meta
    if not isinstance(doc, _Object):
        raise BadRequest(f"json: cannot unmarshal {_kind(doc)} into Go value of type {_META_TYPE}")
    decoder = _Decoder()
    for key, value in _fields(doc, ("space", "images", "create_new", "update_embedding", "searcher")):
        meta.seen.add(key)
        if key == "space":
            got = decoder.string(value, ".space")
            meta.space = got if got is not None else meta.space
        elif key in ("create_new", "update_embedding"):
            flag = decoder.boolean(value, f".{key}")
            if flag is not None:
                setattr(meta, key, flag)
        elif key == "searcher":
            number = decoder.integer(value, ".searcher", "int")
            meta.searcher = number if number is not None else meta.searcher
        elif key == "images":
            if value is None:
                meta.images = None
            elif not isinstance(value, list) or isinstance(value, _Object):
                decoder.type_error(value, ".images", "[]" + _IMAGE_TYPE)
            else:
                meta.images = [_decode_image(decoder, item) for item in value]
    if decoder.first_error is not None:
        raise BadRequest(decoder.first_error)
    return meta


def _decode_image(decoder: _Decoder, item: Any) -> RawImage:
    image = RawImage()
    if item is None:
        return image
    if not isinstance(item, _Object):
        decoder.type_error(item, ".images", _IMAGE_TYPE)
        return image
    for key, value in _fields(item, ("name", "person_id")):
        if key == "name":
            got = decoder.string(value, ".images.name")
            image.name = got if got is not None else image.name
        else:
            number = decoder.integer(value, ".images.person_id", "int64")
            image.person_id = number if number is not None else image.person_id
    return image


# --- validation, after decoding ---------------------------------------------------------


def _atoi(text: str) -> int:
    """Go's strconv.Atoi: optional sign, ASCII digits only, int64 range."""
    quoted = json.dumps(text, ensure_ascii=False)
    body = text[1:] if text[:1] in "+-" else text
    if not body or not all("0" <= c <= "9" for c in body):
        raise BadRequest(f"wrong space param : strconv.Atoi: parsing {quoted}: invalid syntax")
    value = int(text)
    if not (_INT64[0] <= value <= _INT64[1]):
        raise BadRequest(f"wrong space param : strconv.Atoi: parsing {quoted}: value out of range")
    return value


def validate_space(meta: RawMeta) -> int:
    space = _atoi(meta.space)
    if not 0 <= space <= MAX_SPACE:
        raise BadRequest(f"wrong space param : {space_out_of_range(space)}")
    return space


def validate_images(meta: RawMeta, *, max_images: int, need_person_id: bool) -> list[RawImage]:
    images = meta.images or []
    if not images:
        raise BadRequest("no images have been provided")
    if len(images) > max_images:
        raise BadRequest(f"too many images: {len(images)}, at most {max_images} are allowed per request")
    seen: set[str] = set()
    for position, image in enumerate(images):
        if not image.name:
            raise BadRequest(f"image name is empty (images[{position}])")
        if image.name in seen:
            raise BadRequest(f"duplicate image name {image.name}")
        seen.add(image.name)
        if need_person_id:
            if image.person_id == 0:
                raise BadRequest(errors.NO_PERSON_ID)
            if image.person_id < 0:
                raise BadRequest(f"wrong person_id {image.person_id} for image {image.name}: must be positive")
    return images


def validate_searcher(meta: RawMeta) -> int:
    if meta.searcher not in (0, 1):
        raise BadRequest(f"wrong searcher param : {meta.searcher}, allowed values are 0 and 1")
    return meta.searcher
