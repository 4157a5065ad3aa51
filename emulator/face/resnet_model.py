"""Read dlib's serialization of the face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``).

The network is dlib's ``anet_type`` of ``tools/python/src/face_recognition.cpp`` (and
``examples/dnn_face_recognition_ex.cpp``): a 29-layer ResNet on a 150x150 RGB input. dlib's file has no header and
no table of contents: its layout follows from that C++ type, so this reader walks the same type (built by
:func:`architecture`) and checks every field against it. Anything unexpected (a version string, a filter count, a
kernel size, a stride or padding, a tensor shape, a truncated or over-long file) raises :class:`ModelFormatError`
naming the byte offset and the layer: a foreign or damaged file never becomes a silently wrong network.

The format (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h, dlib/cuda/tensor.h):

- integers: a control byte (length 1..8 in the low bits, 0x80 = negative for signed types), then that many bytes,
  little endian;
- floats: ``float_details``, a signed 64-bit mantissa and a signed 16-bit exponent (value = mantissa * 2**exponent);
- strings: a length (integer), then the bytes; bools: the byte ``'0'`` or ``'1'``;
- tensors: version 2, then num_samples, k, nr, nc, then the values as raw little-endian IEEE float32;
- a network is written outside in: ``add_loss_layer`` (version, loss details, subnetwork); every ``add_layer``
  writes its version, then its whole subnetwork, then its own details and training state (flags, gradient and
  output tensors); tag and skip layers write a version and their subnetwork. So the headers of all layers come
  first, top to bottom, then the input layer, then the details of each layer bottom to top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHIP_SIDE = 150  # input_rgb_image_sized<150>
DESCRIPTOR_SIZE = 128


class ModelFormatError(ValueError):
    """The file is not dlib's face recognition ResNet (truncated, damaged or another model)."""


# -- the network's layers, in forward order ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer of the network. ``kind`` is one of: con, affine, relu, max_pool, avg_pool, avg_pool_everything,
    tag, skip, add_prev, fc. ``tag`` is the tag id of tag/skip/add_prev layers."""

    kind: str
    filters: int = 0  # con: number of filters; fc: number of outputs
    size: int = 0  # con, max_pool, avg_pool: square kernel or window side
    stride: int = 1
    padding: int = 0
    tag: int = 0


def _con(filters: int, size: int, stride: int) -> Layer:
    # dlib's default padding (layers.h): stride 1 pads by size/2 ("same"); a strided layer does not pad.
    return Layer("con", filters=filters, size=size, stride=stride, padding=size // 2 if stride == 1 else 0)


def _pool(kind: str, size: int, stride: int) -> Layer:
    return Layer(kind, size=size, stride=stride, padding=size // 2 if stride == 1 else 0)


def _block(filters: int, stride: int) -> list[Layer]:
    """``block<N,affine,stride>`` = affine(con N 3x3/1(relu(affine(con N 3x3/stride(x))))), in forward order."""
    return [_con(filters, 3, stride), Layer("affine"), Layer("relu"), _con(filters, 3, 1), Layer("affine")]


def _ares(filters: int) -> list[Layer]:
    """``ares<N>`` = relu(add_prev1(block(tag1(x)))): x + block(x)."""
    return [Layer("tag", tag=1), *_block(filters, 1), Layer("add_prev", tag=1), Layer("relu")]


def _ares_down(filters: int) -> list[Layer]:
    """``ares_down<N>`` = relu(add_prev2(avg_pool 2x2/2(skip1(tag2(block/2(tag1(x))))))): avg_pool(x) + block(x)."""
    return [
        Layer("tag", tag=1),
        *_block(filters, 2),
        Layer("tag", tag=2),
        Layer("skip", tag=1),
        _pool("avg_pool", 2, 2),
        Layer("add_prev", tag=2),
        Layer("relu"),
    ]


def architecture() -> tuple[Layer, ...]:
    """The layers of dlib's ``anet_type``, input to output (loss_metric on top, which adds no computation)."""
    layers: list[Layer] = [_con(32, 7, 2), Layer("affine"), Layer("relu"), _pool("max_pool", 3, 2)]
    for _ in range(3):  # alevel4
        layers += _ares(32)
    layers += _ares_down(64)  # alevel3
    for _ in range(3):
        layers += _ares(64)
    layers += _ares_down(128)  # alevel2
    for _ in range(2):
        layers += _ares(128)
    layers += _ares_down(256)  # alevel1
    for _ in range(2):
        layers += _ares(256)
    layers += _ares_down(256)  # alevel0
    layers += [Layer("avg_pool_everything"), Layer("fc", filters=DESCRIPTOR_SIZE)]
    return tuple(layers)


# -- what the file holds -----------------------------------------------------------------------------------------


@dataclass
class ResnetWeights:
    """The parameters of the network, as numpy arrays in dlib's layouts.

    ``params[i]`` holds the arrays of ``layers[i]``: con ``weight`` (filters, channels, rows, cols) and ``bias``
    (filters,); affine ``gamma`` and ``beta`` (channels,); fc ``weight`` (inputs, outputs). ``input_mean`` is the
    per-channel (R, G, B) mean the input layer subtracts before dividing by 256.
    """

    layers: tuple[Layer, ...]
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    input_mean: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float32))

    def nbytes(self) -> int:
        return int(sum(a.nbytes for p in self.params.values() for a in p.values()) + self.input_mean.nbytes)


class _Reader:
    """dlib's primitive types over a byte buffer; every failure names the offset and what was being read."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source
        self.where = "the start of the file"

    def fail(self, message: str) -> ModelFormatError:
        return ModelFormatError(
            f"{self.source} is not dlib's face recognition ResNet model: {message} "
            f"(at byte {self.pos} of {len(self.data)}, in {self.where})"
        )

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail(f"the file ends early (needs {n} more bytes, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _int(self, signed: bool, max_bytes: int) -> int:
        control = self.take(1)[0]
        negative = signed and bool(control & 0x80)
        size = control & (0x0F if signed else 0x8F)
        if size == 0 or size > max_bytes:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if negative else value

    def integer(self, max_bytes: int = 8) -> int:
        return self._int(True, max_bytes)

    def unsigned(self, max_bytes: int = 8) -> int:
        return self._int(False, max_bytes)

    def real(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("a number in dlib's old text format")
        mantissa = self.integer(8)
        exponent = self.integer(2)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def float32(self) -> np.float32:
        """A ``float`` field: dlib converts the mantissa to float, then scales it (exact for float32 values)."""
        value = self.real()
        return np.float32(value)

    def string(self, max_length: int = 64) -> str:
        length = self.unsigned(8)
        if length > max_length:
            raise self.fail(f"a string of {length} bytes where a short layer name belongs")
        raw = bytes(self.take(length))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"a string that is not ASCII ({raw[:16]!r})") from None

    def boolean(self) -> bool:
        byte = self.take(1)[0]
        if byte not in (ord("0"), ord("1")):
            raise self.fail(f"a bool byte 0x{byte:02x} (expected '0' or '1')")
        return byte == ord("1")

    def version(self, allowed: tuple[int, ...]) -> int:
        value = self.integer(4)
        if value not in allowed:
            raise self.fail(f"version {value}, expected one of {allowed}")
        return value

    def expect_string(self, allowed: tuple[str, ...]) -> str:
        value = self.string()
        if value not in allowed:
            raise self.fail(f"found {value!r}, expected {' or '.join(repr(a) for a in allowed)}")
        return value

    def expect_int(self, what: str, expected: int, *, signed: bool = True) -> None:
        value = self.integer() if signed else self.unsigned()
        if value != expected:
            raise self.fail(f"{what} is {value}, expected {expected}")

    def tensor(self, shape: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """A resizable_tensor (version 2): 4 dimensions, then raw little-endian float32 values."""
        self.version((2,))
        dims = tuple(self.integer(8) for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"a tensor with negative dimensions {dims}")
        if shape is not None and dims != shape and math.prod(dims) != 0:
            raise self.fail(f"a tensor of shape {dims}, expected {shape}")
        count = math.prod(dims)
        if count * 4 > len(self.data) - self.pos:
            raise self.fail(f"the file ends early (a tensor of {count} floats)")
        values = np.frombuffer(self.take(count * 4), dtype="<f4").astype(np.float32)
        return values.reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.version((1,))
        dims = (self.integer(8), self.integer(8), self.integer(8), self.integer(8))
        return dims


def _read_details(reader: _Reader, layer: Layer, channels: int, spatial: int) -> tuple[dict[str, np.ndarray], int]:
    """Read the details of one computing layer; return its arrays and its output channel count."""
    if layer.kind == "con":
        version = reader.expect_string(("con_4", "con_5", "con_6"))
        params = reader.tensor()
        reader.expect_int("the number of filters", layer.filters)
        reader.expect_int("the filter rows", layer.size)
        reader.expect_int("the filter columns", layer.size)
        reader.expect_int("the vertical stride", layer.stride)
        reader.expect_int("the horizontal stride", layer.stride)
        reader.expect_int("the vertical padding", layer.padding)
        reader.expect_int("the horizontal padding", layer.padding)
        filters_shape = reader.alias_tensor()
        biases_shape = reader.alias_tensor()
        for _ in range(4):  # learning rate and weight decay multipliers (training only)
            reader.real()
        use_bias = reader.boolean() if version in ("con_5", "con_6") else True
        if version == "con_6" and reader.boolean():
            raise reader.fail("a convolution with a fused relu, which this network does not have")
        expected_filters = (layer.filters, channels, layer.size, layer.size)
        if filters_shape != expected_filters:
            raise reader.fail(f"filters of shape {filters_shape}, expected {expected_filters}")
        weight_count = math.prod(expected_filters)
        bias_count = layer.filters if use_bias else 0
        if use_bias and biases_shape != (1, layer.filters, 1, 1):
            raise reader.fail(f"biases of shape {biases_shape}, expected (1, {layer.filters}, 1, 1)")
        if params.size != weight_count + bias_count:
            raise reader.fail(f"{params.size} convolution parameters, expected {weight_count + bias_count}")
        flat = params.reshape(-1)
        bias = flat[weight_count:].copy() if use_bias else np.zeros(layer.filters, dtype=np.float32)
        return {"weight": flat[:weight_count].reshape(expected_filters).copy(), "bias": bias}, layer.filters
    if layer.kind == "affine":
        # dlib also accepts a batch normalisation layer here (bn_con2) and folds it; this model file has none.
        version = reader.expect_string(("affine_", "affine_2"))
        params = reader.tensor()
        gamma_shape = reader.alias_tensor()
        beta_shape = reader.alias_tensor()
        mode = reader.integer(4)
        if mode != 0:
            raise reader.fail(f"an affine layer in mode {mode}, expected 0 (per channel, CONV_MODE)")
        if version == "affine_2" and reader.boolean():
            raise reader.fail("a disabled affine layer, which this network does not have")
        if gamma_shape != (1, channels, 1, 1) or beta_shape != gamma_shape or params.size != 2 * channels:
            raise reader.fail(f"affine parameters of shapes {gamma_shape}/{beta_shape}, expected {channels} channels")
        flat = params.reshape(-1)
        return {"gamma": flat[:channels].copy(), "beta": flat[channels:].copy()}, channels
    if layer.kind == "relu":
        if reader.expect_string(("relu_", "relu_2")) == "relu_2" and reader.boolean():
            raise reader.fail("a disabled relu layer, which this network does not have")
        return {}, channels
    if layer.kind in ("max_pool", "avg_pool", "avg_pool_everything"):
        name = "max_pool_2" if layer.kind == "max_pool" else "avg_pool_2"
        reader.expect_string((name,))
        size = 0 if layer.kind == "avg_pool_everything" else layer.size  # 0: the window is the whole image
        reader.expect_int("the window rows", size)
        reader.expect_int("the window columns", size)
        reader.expect_int("the vertical stride", layer.stride)
        reader.expect_int("the horizontal stride", layer.stride)
        reader.expect_int("the vertical padding", layer.padding)
        reader.expect_int("the horizontal padding", layer.padding)
        return {}, channels
    if layer.kind == "add_prev":
        reader.expect_string(("add_prev_",))
        return {}, channels
    if layer.kind == "fc":
        version = reader.expect_string(("fc_2", "fc_3"))
        reader.expect_int("the number of outputs", layer.filters, signed=False)
        inputs = channels * spatial * spatial
        reader.expect_int("the number of inputs", inputs, signed=False)
        params = reader.tensor()
        weights_shape = reader.alias_tensor()
        reader.alias_tensor()  # biases: unused without a bias
        bias_mode = reader.integer(4)
        if bias_mode != 1:
            raise reader.fail(f"an fc layer with bias mode {bias_mode}, expected 1 (FC_NO_BIAS)")
        for _ in range(4):
            reader.real()
        if version == "fc_3":
            reader.boolean()  # use_bias: meaningless in FC_NO_BIAS mode
        if weights_shape != (inputs, layer.filters, 1, 1) or params.size != inputs * layer.filters:
            raise reader.fail(f"fc weights of shape {weights_shape}, expected ({inputs}, {layer.filters}, 1, 1)")
        return {"weight": params.reshape(inputs, layer.filters).copy()}, layer.filters
    raise AssertionError(f"no details for layer kind {layer.kind}")


def _output_side(layer: Layer, side: int) -> int:
    if layer.kind in ("con", "max_pool", "avg_pool"):
        return 1 + (side + 2 * layer.padding - layer.size) // layer.stride
    if layer.kind == "avg_pool_everything":
        return 1
    return side


def parse(data: bytes, source: str = "the model file") -> ResnetWeights:
    """Parse dlib's serialized ``anet_type``; raise :class:`ModelFormatError` unless it is exactly that network."""
    reader = _Reader(data, source)
    layers = architecture()
    reader.where = "the loss layer"
    reader.version((1,))
    if reader.expect_string(("loss_metric_", "loss_metric_2")) == "loss_metric_2":
        reader.float32()  # margin (training only)
        reader.float32()  # distance threshold (training only)
    # Headers, top to bottom: a version per layer (add_layer 1..2; tag and skip layers 1).
    add_layer_versions: dict[int, int] = {}
    for index in range(len(layers) - 1, 0, -1):
        layer = layers[index]
        reader.where = f"the header of layer {index} ({layer.kind})"
        if layer.kind in ("tag", "skip"):
            reader.version((1,))
        else:
            add_layer_versions[index] = reader.version((1, 2))
    # The bottom add_layer holds the input layer: version 2..3, the input layer, then its own details (the 7x7 con).
    reader.where = "the input layer"
    input_version = reader.version((2, 3))
    reader.expect_string(("input_rgb_image_sized",))
    mean = np.array([reader.float32() for _ in range(3)], dtype=np.float32)
    reader.expect_int("the input rows", CHIP_SIDE, signed=False)
    reader.expect_int("the input columns", CHIP_SIDE, signed=False)
    weights = ResnetWeights(layers=layers, input_mean=mean)
    channels, side = 3, CHIP_SIDE
    channel_stack: dict[int, tuple[int, int]] = {}  # tag id -> (channels, side) of the tagged output
    for index, layer in enumerate(layers):
        reader.where = f"layer {index} ({layer.kind})"
        if layer.kind == "tag":
            channel_stack[layer.tag] = (channels, side)
            continue
        if layer.kind == "skip":
            channels, side = channel_stack[layer.tag]
            continue
        params, out_channels = _read_details(reader, layer, channels, side)
        if params:
            weights.params[index] = params
        if layer.kind == "add_prev":  # the sum has the larger of both shapes (dlib zero-pads the smaller)
            tagged_channels, tagged_side = channel_stack[layer.tag]
            out_channels, side = max(channels, tagged_channels), max(side, tagged_side)
        else:
            side = _output_side(layer, side)
        channels = out_channels
        # Training state after the details: three flags, then x_grad, cached_output (and params_grad or
        # grad_final plus the sample expansion factor at the input).
        for _ in range(3):
            reader.boolean()
        reader.tensor()
        reader.tensor()
        if index == 0:
            reader.tensor()  # grad_final
            if input_version >= 3:
                reader.unsigned(4)  # sample expansion factor
        elif add_layer_versions[index] == 2:
            reader.tensor()  # params_grad
    if reader.pos != len(reader.data):
        reader.where = "the end of the network"
        raise reader.fail(f"{len(reader.data) - reader.pos} bytes follow the network")
    if (channels, side) != (DESCRIPTOR_SIZE, 1):
        raise AssertionError("the architecture does not end in the 128-d descriptor")
    return weights


def param_shapes(layers: tuple[Layer, ...]) -> dict[int, dict[str, tuple[int, ...]]]:
    """The shape of every array of :class:`ResnetWeights` for these layers (to check arrays read from a cache)."""
    shapes: dict[int, dict[str, tuple[int, ...]]] = {}
    channels, side = 3, CHIP_SIDE
    tagged: dict[int, tuple[int, int]] = {}
    for index, layer in enumerate(layers):
        if layer.kind == "tag":
            tagged[layer.tag] = (channels, side)
        elif layer.kind == "skip":
            channels, side = tagged[layer.tag]
        elif layer.kind == "add_prev":
            channels, side = max(channels, tagged[layer.tag][0]), max(side, tagged[layer.tag][1])
        elif layer.kind == "con":
            shapes[index] = {"weight": (layer.filters, channels, layer.size, layer.size), "bias": (layer.filters,)}
            channels, side = layer.filters, _output_side(layer, side)
        elif layer.kind == "affine":
            shapes[index] = {"gamma": (channels,), "beta": (channels,)}
        elif layer.kind == "fc":
            shapes[index] = {"weight": (channels * side * side, layer.filters)}
            channels, side = layer.filters, 1
        else:
            side = _output_side(layer, side)
    return shapes


def read_model(path: Path) -> ResnetWeights:
    """Read and check the model file at ``path``."""
    return parse(path.read_bytes(), source=str(path))
