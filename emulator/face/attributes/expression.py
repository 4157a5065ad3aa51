"""face-api's facial expression network (``face_expression_model``, @vladmandic/face-api, MIT) on numpy.

The weights are the npm package's TensorFlow.js files as shipped: a manifest (names, shapes, and for each
uint8-quantized tensor its ``scale`` and ``min``) and one binary with the tensors in manifest order; a quantized
value ``q`` is ``q * scale + min``. The network (face-api's ``FaceFeatureExtractor`` + ``FaceExpressionNet``):

- input: the face box cut from the image (clipped at its borders), padded with zeros to a square (centred: the
  larger half of the padding after the face), resized bilinearly to 112x112 (TensorFlow's ``resizeBilinear``
  without corner alignment or half-pixel centres), then ``(pixel - mean) / 255`` per RGB channel;
- four dense blocks (32, 64, 128, 256 channels), each halving the resolution: ``out1 = relu(conv0(x))`` (a plain
  3x3 convolution in the first block, a depthwise-separable one after), then three depthwise-separable 3x3
  convolutions each fed the relu of the sum of all outputs before it; the block's output is the relu of the sum
  of all four;
- a 7x7 average pool (the 7x7 map to one value per channel), a dense layer to 7 classes and a softmax.

TensorFlow's ``same`` padding: for stride 1, one pixel on each side; for stride 2 on an even side, one pixel at the
end only. There is no ONNX model of this network: it runs on numpy whatever ``SMARTY_EMBEDDER`` says.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from emulator.face.attributes.graph import softmax
from emulator.face.resnet import Op, _conv

Array = NDArray[np.float32]

INPUT_SIDE = 112
FACES_PER_PASS = 2  # faces per forward pass: measured a little faster than 1 or 8 (caches)
MEAN_RGB = np.array([122.782, 117.001, 104.298], dtype=np.float32)
# face-api's class order (FACE_EXPRESSION_LABELS).
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def read_tfjs(manifest: Path) -> dict[str, Array]:
    """The float32 tensors of a TensorFlow.js weights manifest and its binary files (uint8 quantization undone)."""
    groups = json.loads(manifest.read_text())
    tensors: dict[str, Array] = {}
    for group in groups:
        data = b"".join((manifest.parent / name).read_bytes() for name in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"])) if spec["shape"] else 1
            quant = spec.get("quantization")
            if quant is not None:
                if quant["dtype"] != "uint8":
                    raise ValueError(f"unsupported quantization {quant['dtype']} of {spec['name']}")
                raw = np.frombuffer(data, dtype=np.uint8, count=count, offset=offset)
                values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                offset += count
            elif spec["dtype"] == "float32":
                values = np.frombuffer(data, dtype="<f4", count=count, offset=offset).astype(np.float32)
                offset += 4 * count
            else:
                raise ValueError(f"unsupported dtype {spec['dtype']} of {spec['name']}")
            tensors[spec["name"]] = values.reshape(spec["shape"])
    return tensors


def _split(side: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding of a 3x3 window along one side: the total
    ``max((ceil(side/s) - 1) * s + 3 - side, 0)``, the smaller half before."""
    total = max((-(-side // stride) - 1) * stride + 3 - side, 0)
    return total // 2, total - total // 2


def _same_pad(x: Array, stride: int) -> Array:
    """``x`` with TensorFlow's ``same`` padding of a 3x3 window (zeros)."""
    _, height, width, _ = x.shape
    return np.pad(x, ((0, 0), _split(height, stride), _split(width, stride), (0, 0)))


_padded_buffers = threading.local()  # per thread: shape -> a zero-bordered buffer, reused (its border stays zero)


def _relu_padded(x: Array) -> Array:
    """``relu(x)`` written straight into a buffer with one row and column of zeros on each side, plus one more row
    at the bottom so that every tap of :func:`_depthwise` is one contiguous run per face. The buffer is the
    calling thread's for this shape, reused from call to call (only its inside is ever written, so its border
    stays zero): valid until the thread's next call with the same shape."""
    n, height, width, channels = x.shape
    shape = (n, height + 3, width + 2, channels)
    buffers: dict[tuple[int, ...], Array] | None = getattr(_padded_buffers, "by_shape", None)
    if buffers is None:
        buffers = _padded_buffers.by_shape = {}
    padded = buffers.get(shape)
    if padded is None:
        padded = buffers[shape] = np.zeros(shape, dtype=np.float32)
    np.maximum(x, np.float32(0.0), out=padded[:, 1 : 1 + height, 1 : 1 + width])
    return padded


def _depthwise(padded: Array, filters: Array, taps: Array, stride: int) -> Array:
    """A 3x3 depthwise convolution with ``same`` padding of a :func:`_relu_padded` input; ``filters`` (3, 3, C),
    ``taps`` (3, 3, (W+2) * C) the same repeated along a padded row. All nine taps are one ``einsum`` over a
    strided view of the input (no copy). Stride 1: each tap is a contiguous run of every padded row, computed for
    every padded column: the result has two more columns than the input, to be discarded (after the pointwise
    convolution, which is cheaper than a copy). Stride 2 (even sides: TensorFlow pads
    at the end only): the windows start on the odd padded rows and columns."""
    n, rows, row_width, channels = padded.shape
    height, width = rows - 3, row_width - 2
    item = padded.itemsize
    row = row_width * channels * item
    if stride == 1:
        flat = padded.reshape(n, -1)
        view = as_strided(
            flat, (n, 3, 3, height, row_width * channels), (flat.strides[0], row, channels * item, row, item)
        )
        wide: Array = np.einsum("nabhr,abr->nhr", view, taps)
        return wide.reshape(n, height, row_width, channels)
    out_h, out_w = -(-height // 2), -(-width // 2)
    start = padded[:, 1:, 1:]
    view = as_strided(
        start,
        (n, 3, 3, out_h, out_w, channels),
        (padded.strides[0], row, channels * item, 2 * row, 2 * channels * item, item),
    )
    out: Array = np.einsum("nabhwc,abc->nhwc", view, filters)
    return out


class ExpressionNetwork:
    """The 7 expression probabilities of face crops; stateless, usable from several threads."""

    def __init__(self, tensors: dict[str, Array]) -> None:
        first = tensors["dense0/conv0/filters"]  # (3, 3, 3, 32), HWIO: im2col rows are (dy, dx, channel)
        self.conv0 = Op(
            "conv",
            size=3,
            stride=2,
            weight=np.ascontiguousarray(first.reshape(-1, first.shape[3])),
            bias=tensors["dense0/conv0/bias"],
        )
        self.separable: dict[str, tuple[Array, Array, Array, Array]] = {}
        for block in range(4):
            for conv in range(4):
                name = f"dense{block}/conv{conv}"
                if block == 0 and conv == 0:
                    continue
                depthwise = tensors[f"{name}/depthwise_filter"][:, :, :, 0]  # (3, 3, C)
                pointwise = tensors[f"{name}/pointwise_filter"][0, 0]  # (C, C_out)
                width = INPUT_SIDE // 2 ** (block + (conv > 0))  # the side of this convolution's input
                taps = np.tile(depthwise[:, :, None], (1, 1, width + 2, 1)).reshape(3, 3, -1)
                self.separable[name] = (
                    np.ascontiguousarray(depthwise, dtype=np.float32),
                    np.ascontiguousarray(taps, dtype=np.float32),
                    np.ascontiguousarray(pointwise),
                    tensors[f"{name}/bias"],
                )
        self.fc_weights = tensors["fc/weights"]
        self.fc_bias = tensors["fc/bias"]

    def _separable(self, padded: Array, name: str, stride: int) -> Array:
        """A depthwise-separable convolution of a ``same``-padded input: the depthwise pass, then the pointwise
        one as one matrix product over every pixel."""
        depthwise, taps, pointwise, bias = self.separable[name]
        mid = _depthwise(padded, depthwise, taps, stride)
        n, height, width, channels = mid.shape
        out: Array = mid.reshape(-1, channels) @ pointwise
        out += bias
        out = out.reshape(n, height, width, -1)
        return out[:, :, : padded.shape[2] - 2] if stride == 1 else out

    def _block(self, x: Array, block: int) -> Array:
        """One dense block: each convolution sees the relu of the sum of every output before it. ``x`` is the
        input before its relu (the relu of the previous block's sum; the input itself for the first block)."""
        if block == 0:
            first = _conv(_same_pad(x, 2), self.conv0)
        else:
            first = self._separable(_relu_padded(x), f"dense{block}/conv0", 2)
        total: Array = np.maximum(first, np.float32(0.0), out=first)  # out1
        total += self._separable(_relu_padded(total), f"dense{block}/conv1", 1)
        total += self._separable(_relu_padded(total), f"dense{block}/conv2", 1)
        total += self._separable(_relu_padded(total), f"dense{block}/conv3", 1)
        return total

    def probabilities(self, inputs: Array) -> Array:
        """(N, 7) probabilities, face-api's class order, of (N, 112, 112, 3) float32 RGB inputs (0..255).
        Faces run in batches of ``FACES_PER_PASS``."""
        out = np.empty((len(inputs), len(self.fc_bias)), dtype=np.float32)
        for i in range(0, len(inputs), FACES_PER_PASS):
            out[i : i + FACES_PER_PASS] = self._forward(inputs[i : i + FACES_PER_PASS])
        return out

    def _forward(self, inputs: Array) -> Array:
        x = (inputs - MEAN_RGB) / np.float32(255.0)
        for block in range(4):
            x = self._block(x, block)
        x = np.maximum(x, np.float32(0.0), out=x)  # the last block's output
        pooled = x.mean(axis=(1, 2), dtype=np.float32)  # avgPool 7x7 stride 2 'valid' on a 7x7 map
        return softmax(pooled @ self.fc_weights + self.fc_bias)


def face_input(rgb: np.ndarray, box: tuple[int, int, int, int]) -> Array:
    """The network's 112x112 float32 input for the face ``box`` (left, top, right, bottom) of an RGB image."""
    height, width = rgb.shape[:2]
    left, top = max(0, box[0]), max(0, box[1])
    right, bottom = min(width, box[2]), min(height, box[3])
    crop = np.asarray(rgb[top:bottom, left:right], dtype=np.float32)
    h, w = crop.shape[:2]
    if h == 0 or w == 0:
        return np.zeros((INPUT_SIDE, INPUT_SIDE, 3), dtype=np.float32)
    if h != w:  # padToSquare(centred): round(diff / 2) after, the rest before
        diff = abs(h - w)
        after = int(np.floor(diff * 0.5 + 0.5))
        before = diff - after
        pad = ((before, after), (0, 0), (0, 0)) if h < w else ((0, 0), (before, after), (0, 0))
        crop = np.pad(crop, pad)
    side = crop.shape[0]
    if side == INPUT_SIDE:
        return np.ascontiguousarray(crop)
    # resizeBilinear(alignCorners=false, halfPixelCenters=false): source = target * side / 112.
    source = np.arange(INPUT_SIDE, dtype=np.float64) * (side / INPUT_SIDE)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, side - 1)
    frac = (source - low).astype(np.float32)
    rows = crop[low] * (1 - frac)[:, None, None] + crop[high] * frac[:, None, None]
    out = rows[:, low] * (1 - frac)[None, :, None] + rows[:, high] * frac[None, :, None]
    return np.ascontiguousarray(out, dtype=np.float32)
