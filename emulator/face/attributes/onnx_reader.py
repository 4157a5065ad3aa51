"""Read an ONNX model's graph and weights without the ``onnx`` package: a minimal protobuf decoder.

Only the fields the age and gender graphs use are read: the graph's nodes (op type, inputs, outputs, integer,
float and integer-list attributes) and its float32 initializers (``raw_data`` or ``float_data``), and the names
of the graph's inputs and outputs. Anything else in the file is skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

FLOAT, INT64 = 1, 7  # TensorProto.DataType


class OnnxFormatError(ValueError):
    """The bytes are not an ONNX model this reader understands."""


@dataclass(frozen=True)
class Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: dict[str, int | float | tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    initializers: dict[str, np.ndarray]
    inputs: tuple[str, ...]  # the graph's inputs that are not initializers
    outputs: tuple[str, ...]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise OnnxFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message: varints and fixed as ints, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 5:
            out.append((number, struct.unpack_from("<I", data, pos)[0]))
            pos += 4
        elif wire == 1:
            out.append((number, struct.unpack_from("<Q", data, pos)[0]))
            pos += 8
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_ints(value: int | bytes) -> list[int]:
    if isinstance(value, int):
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        out.append(_signed(number))
    return out


def _tensor(data: bytes) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype = FLOAT
    name = ""
    raw: bytes | None = None
    floats: list[float] = []
    ints: list[int] = []
    for number, value in _fields(data):
        if number == 1:
            dims.extend(_packed_ints(value))
        elif number == 2 and isinstance(value, int):
            dtype = value
        elif number == 4:
            if isinstance(value, bytes):
                floats.extend(np.frombuffer(value, dtype="<f4").tolist())
            else:
                floats.append(struct.unpack("<f", struct.pack("<I", value))[0])
        elif number == 7:
            ints.extend(_packed_ints(value))
        elif number == 8 and isinstance(value, bytes):
            name = value.decode()
        elif number == 9 and isinstance(value, bytes):
            raw = value
    if dtype == FLOAT:
        array = np.frombuffer(raw, dtype="<f4") if raw is not None else np.asarray(floats, dtype=np.float32)
        array = array.astype(np.float32)
    elif dtype == INT64:
        array = np.frombuffer(raw, dtype="<i8").astype(np.int64) if raw is not None else np.asarray(ints, np.int64)
    else:
        raise OnnxFormatError(f"tensor {name!r} has unsupported data type {dtype}")
    return name, array.reshape(dims)


def _attribute(data: bytes) -> tuple[str, int | float | tuple[int, ...]]:
    name = ""
    value: int | float | tuple[int, ...] = ()
    ints: list[int] = []
    for number, item in _fields(data):
        if number == 1 and isinstance(item, bytes):
            name = item.decode()
        elif number == 2 and isinstance(item, int):
            value = struct.unpack("<f", struct.pack("<I", item))[0]
        elif number == 3 and isinstance(item, int):
            value = _signed(item)
        elif number == 8:
            ints.extend(_packed_ints(item))
    return name, tuple(ints) if ints else value


def _node(data: bytes) -> Node:
    inputs: list[str] = []
    outputs: list[str] = []
    op_type = ""
    attributes: dict[str, int | float | tuple[int, ...]] = {}
    for number, value in _fields(data):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            inputs.append(value.decode())
        elif number == 2:
            outputs.append(value.decode())
        elif number == 4:
            op_type = value.decode()
        elif number == 5:
            key, item = _attribute(value)
            attributes[key] = item
    return Node(op_type, tuple(inputs), tuple(outputs), attributes)


def _value_name(data: bytes) -> str:
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            return value.decode()
    return ""


def read_graph(data: bytes) -> Graph:
    """The graph of the ONNX model ``data`` (ModelProto.graph, field 7)."""
    graph_bytes = next((v for n, v in _fields(data) if n == 7 and isinstance(v, bytes)), None)
    if graph_bytes is None:
        raise OnnxFormatError("no graph in the model")
    nodes: list[Node] = []
    initializers: dict[str, np.ndarray] = {}
    inputs: list[str] = []
    outputs: list[str] = []
    for number, value in _fields(graph_bytes):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            nodes.append(_node(value))
        elif number == 5:
            name, array = _tensor(value)
            initializers[name] = array
        elif number == 11:
            inputs.append(_value_name(value))
        elif number == 12:
            outputs.append(_value_name(value))
    return Graph(tuple(nodes), initializers, tuple(i for i in inputs if i not in initializers), tuple(outputs))
