"""dlib's face descriptor network on ONNX Runtime: the graph is built at first start from the parsed weights.

The same fused layers as the numpy path (:func:`emulator.face.resnet.fuse`: each con + affine (+ relu) as one
convolution with scaled filters and bias) become an ONNX graph: Conv, Relu, MaxPool, AveragePool, Add,
GlobalAveragePool, MatMul. dlib's ``add_prev`` of two tensors of different shapes (fewer channels in the pooled
skip; 3x3 against 4x4 and 1x1 against 2x2 at 256 filters) is a zero ``Pad`` of the smaller one at the end of each
dimension, then ``Add``: the same sum as dlib's, where a missing value counts as 0. The input normalisation
(``(pixel - mean) / 256``) runs in numpy before the graph.

ONNX Runtime's CPU kernels (MLAS, with blocked channel layouts and fused bias and activation) run this network
about twice as fast per face as the numpy path on one thread; it is offered as ``SMARTY_EMBEDDER=onnx`` with the
``[onnx]`` extra, not as the default, because ONNX Runtime adds ~80 MB to an install. The model is serialised here
with a minimal protobuf writer (the ``onnx`` package is not needed): only the message fields the graph uses are
written.

A session runs on one thread (``intra_op_num_threads=1``, no spinning threads): cores are used by processes and
request threads, as with the numpy path (see :mod:`emulator.face.embedder`). One session may run in several
threads at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emulator.face.resnet import Op, chip_batch, fuse
from emulator.face.resnet_model import CHIP_SIDE, DESCRIPTOR_SIZE, ResnetWeights

OPSET = 17
IR_VERSION = 8
FLOAT, INT64 = 1, 7  # TensorProto.DataType
ATTR_INT, ATTR_INTS = 2, 7  # AttributeProto.AttributeType
BATCH = 8  # faces per run: larger batches are no faster per face


# -- protobuf wire format (only what an ONNX model needs) --------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int64_tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto of a small int64 constant: dims (1), data_type (2), name (8), raw_data (9, little endian)."""
    dims = b"".join(_int_field(1, d) for d in array.shape)
    raw = np.ascontiguousarray(array, dtype="<i8").tobytes()
    return dims + _int_field(2, INT64) + _bytes_field(8, name) + _bytes_field(9, raw)


def _external_tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto whose data is external (data_location 14 = EXTERNAL, external_data 13 as key/value pairs);
    the session gets the array itself (``add_external_initializers``), so the weights are not copied into the
    model bytes and parsed back."""
    dims = b"".join(_int_field(1, d) for d in array.shape)
    location = _bytes_field(1, "location") + _bytes_field(2, "memory")  # never read: replaced before loading
    length = _bytes_field(1, "length") + _bytes_field(2, str(array.nbytes))
    return (
        dims
        + _int_field(2, FLOAT)
        + _bytes_field(8, name)
        + _bytes_field(13, location)
        + _bytes_field(13, length)
        + _int_field(14, 1)
    )


def _attribute(name: str, value: int | list[int]) -> bytes:
    """AttributeProto: name (1), i (3) or ints (8), type (20)."""
    if isinstance(value, int):
        return _bytes_field(1, name) + _int_field(3, value) + _int_field(20, ATTR_INT)
    return _bytes_field(1, name) + b"".join(_int_field(8, v) for v in value) + _int_field(20, ATTR_INTS)


def _node(op_type: str, inputs: list[str], outputs: list[str], **attributes: int | list[int]) -> bytes:
    """NodeProto: input (1), output (2), op_type (4), attribute (5)."""
    body = b"".join(_bytes_field(1, i) for i in inputs) + b"".join(_bytes_field(2, o) for o in outputs)
    body += _bytes_field(4, op_type)
    body += b"".join(_bytes_field(5, _attribute(k, v)) for k, v in attributes.items())
    return body


def _value_info(name: str, dims: list[int | str]) -> bytes:
    """ValueInfoProto of a float tensor: name (1), type (2) = TypeProto.tensor_type (1) {elem_type 1, shape 2}."""
    shape = b"".join(
        _bytes_field(1, _bytes_field(2, d) if isinstance(d, str) else _int_field(1, d)) for d in dims
    )  # TensorShapeProto.dim (1): dim_value (1) or dim_param (2)
    tensor_type = _int_field(1, FLOAT) + _bytes_field(2, shape)
    return _bytes_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))


# -- the graph ---------------------------------------------------------------------------------------------------


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self.external: dict[str, np.ndarray] = {}  # the float weights, by name, handed to the session as they are
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        if array.dtype == np.float32:
            self.external[name] = np.ascontiguousarray(array)
            self.initializers.append(_external_tensor(name, array))
        else:
            self.initializers.append(_int64_tensor(name, array))
        return name

    def add(self, op_type: str, inputs: list[str], **attributes: int | list[int]) -> str:
        output = self.name(op_type.lower())
        self.nodes.append(_node(op_type, inputs, [output], **attributes))
        return output


def model_with_external_weights(weights: ResnetWeights) -> tuple[bytes, dict[str, np.ndarray]]:
    """The network as a serialised ONNX ModelProto (input ``x`` (N, 3, 150, 150) normalised, output ``y``
    (N, 128)) with its float weights left out of the bytes: they are returned by name, to be handed to the session
    as external initializers (which keeps ~40 MB of copies out of memory)."""
    graph = _GraphBuilder()
    current, shape = "x", (3, CHIP_SIDE, CHIP_SIDE)  # channels, rows, columns
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for op in fuse(weights):
        current, shape = _add_op(graph, op, current, shape, tags)
    if shape != (DESCRIPTOR_SIZE, 1, 1):
        raise AssertionError("the graph does not end in the 128-d descriptor")
    graph.nodes.append(_node("Identity", [current], ["y"]))
    body = b"".join(_bytes_field(1, n) for n in graph.nodes) + _bytes_field(2, "dlib_face_recognition_resnet_v1")
    body += b"".join(_bytes_field(5, tensor) for tensor in graph.initializers)
    body += _bytes_field(11, _value_info("x", ["N", 3, CHIP_SIDE, CHIP_SIDE]))
    body += _bytes_field(12, _value_info("y", ["N", DESCRIPTOR_SIZE]))
    opset = _bytes_field(1, "") + _int_field(2, OPSET)
    header = _int_field(1, IR_VERSION) + _bytes_field(2, "smarty-emulator")
    return header + _bytes_field(7, body) + _bytes_field(8, opset), graph.external


def _add_op(
    graph: _GraphBuilder,
    op: Op,
    current: str,
    shape: tuple[int, int, int],
    tags: dict[int, tuple[str, tuple[int, int, int]]],
) -> tuple[str, tuple[int, int, int]]:
    channels, side, _ = shape
    if op.kind == "conv":
        assert op.weight is not None and op.bias is not None
        filters = op.weight.shape[0]
        weight = graph.constant("w", op.weight)  # (filters, channels, rows, cols): dlib's layout is ONNX's
        bias = graph.constant("b", op.bias)
        out = graph.add(
            "Conv",
            [current, weight, bias],
            kernel_shape=[op.size, op.size],
            strides=[op.stride, op.stride],
            pads=[op.padding] * 4,
        )
        side = 1 + (side + 2 * op.padding - op.size) // op.stride
        if op.relu:
            out = graph.add("Relu", [out])
        return out, (filters, side, side)
    if op.kind == "relu":
        return graph.add("Relu", [current]), shape
    if op.kind in ("max_pool", "avg_pool"):
        kind = "MaxPool" if op.kind == "max_pool" else "AveragePool"
        out = graph.add(kind, [current], kernel_shape=[op.size, op.size], strides=[op.stride, op.stride])
        side = 1 + (side - op.size) // op.stride
        return out, (channels, side, side)
    if op.kind == "tag":
        tags[op.tag] = (current, shape)
        return current, shape
    if op.kind == "skip":
        return tags[op.tag]
    if op.kind == "add_prev":
        other, other_shape = tags[op.tag]
        target = (max(shape[0], other_shape[0]), max(shape[1], other_shape[1]), max(shape[2], other_shape[2]))
        a = _pad_to(graph, current, shape, target)
        b = _pad_to(graph, other, other_shape, target)
        return graph.add("Add", [a, b]), target
    if op.kind == "avg_pool_everything":
        pooled = graph.add("GlobalAveragePool", [current])
        return graph.add("Flatten", [pooled], axis=1), (channels, 1, 1)
    if op.kind == "fc":
        assert op.weight is not None
        weight = graph.constant("fc", op.weight)
        return graph.add("MatMul", [current, weight]), (op.weight.shape[1], 1, 1)
    raise AssertionError(f"unknown operation {op.kind}")


def _pad_to(graph: _GraphBuilder, name: str, shape: tuple[int, int, int], target: tuple[int, int, int]) -> str:
    """Zero-pad (N, C, H, W) at the end of C, H and W up to ``target``: dlib's sum counts a missing value as 0."""
    if shape == target:
        return name
    ends = [0, target[0] - shape[0], target[1] - shape[1], target[2] - shape[2]]
    pads = graph.constant("pads", np.array([0, 0, 0, 0, *ends], dtype=np.int64))
    return graph.add("Pad", [name, pads])


class OnnxDescriptor:
    """The 128-d face descriptor on an ONNX Runtime session (one thread)."""

    def __init__(self, weights: ResnetWeights) -> None:
        import onnxruntime

        self.input_mean = weights.input_mean.astype(np.float32)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        model, external = model_with_external_weights(weights)
        # The session uses these arrays in place: they live as long as it does.
        self._external = external
        names = list(external)
        options.add_external_initializers(names, [onnxruntime.OrtValue.ortvalue_from_numpy(external[n]) for n in names])
        self.session: Any = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def compute(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) float32 of N aligned 150x150 RGB uint8 chips, shape (N, 150, 150, 3)."""
        chips = chip_batch(chips)
        out = np.zeros((len(chips), DESCRIPTOR_SIZE), dtype=np.float32)
        for start in range(0, len(chips), BATCH):
            batch = chips[start : start + BATCH]
            x = (batch.astype(np.float32) - self.input_mean) / np.float32(256.0)  # as dlib's input layer
            (y,) = self.session.run(["y"], {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
            out[start : start + len(batch)] = y
        return out
