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
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from emulator.face.attributes.graph import softmax
from emulator.face.resnet import Op, _conv

Array = NDArray[np.float32]

INPUT_SIDE = 112
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


def _same_pad(x: Array, stride: int) -> Array:
    """TensorFlow's ``same`` padding of a 3x3 window: the total ``max((ceil(side/s) - 1) * s + 3 - side, 0)``,
    the smaller half before."""
    _, height, width, _ = x.shape

    def split(side: int) -> tuple[int, int]:
        total = max((-(-side // stride) - 1) * stride + 3 - side, 0)
        return total // 2, total - total // 2

    return np.pad(x, ((0, 0), split(height), split(width), (0, 0)))


def _depthwise(x: Array, filters: Array, stride: int) -> Array:
    """A 3x3 depthwise convolution (``filters`` (3, 3, C)) with ``same`` padding: nine shifted products."""
    padded = _same_pad(x, stride)
    _, height, width, _ = x.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            window = padded[:, dy : dy + stride * (out_h - 1) + 1 : stride, dx : dx + stride * (out_w - 1) + 1 : stride]
            out += window * filters[dy, dx]
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
        self.separable: dict[str, tuple[Array, Array, Array]] = {}
        for block in range(4):
            for conv in range(4):
                name = f"dense{block}/conv{conv}"
                if block == 0 and conv == 0:
                    continue
                depthwise = tensors[f"{name}/depthwise_filter"][:, :, :, 0]  # (3, 3, C)
                pointwise = tensors[f"{name}/pointwise_filter"][0, 0]  # (C, C_out)
                self.separable[name] = (
                    np.ascontiguousarray(depthwise),
                    np.ascontiguousarray(pointwise),
                    tensors[f"{name}/bias"],
                )
        self.fc_weights = tensors["fc/weights"]
        self.fc_bias = tensors["fc/bias"]

    def _separable(self, x: Array, name: str, stride: int) -> Array:
        depthwise, pointwise, bias = self.separable[name]
        mid = _depthwise(x, depthwise, stride)
        n, height, width, channels = mid.shape
        out: Array = mid.reshape(-1, channels) @ pointwise + bias
        return out.reshape(n, height, width, -1)

    def _block(self, x: Array, block: int) -> Array:
        """One dense block: each convolution sees the relu of the sum of every output before it."""
        first = _conv(_same_pad(x, 2), self.conv0) if block == 0 else self._separable(x, f"dense{block}/conv0", 2)
        out1: Array = np.maximum(first, np.float32(0.0))
        out2 = self._separable(out1, f"dense{block}/conv1", 1)
        total = out1 + out2
        out3 = self._separable(np.maximum(total, np.float32(0.0)), f"dense{block}/conv2", 1)
        total += out3
        out4 = self._separable(np.maximum(total, np.float32(0.0)), f"dense{block}/conv3", 1)
        total += out4
        out: Array = np.maximum(total, np.float32(0.0))
        return out

    def probabilities(self, inputs: Array) -> Array:
        """(N, 7) probabilities, face-api's class order, of (N, 112, 112, 3) float32 RGB inputs (0..255)."""
        x = (inputs - MEAN_RGB) / np.float32(255.0)
        for block in range(4):
            x = self._block(x, block)
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
