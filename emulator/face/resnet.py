"""dlib's face descriptor network on numpy: the same weights and the same arithmetic, batched over faces.

Reproduces ``net(chips)`` of dlib's ``face_recognition_model_v1`` (see :mod:`emulator.face.resnet_model` for the
layers) in float32, as dlib computes it:

- input (``input_rgb_image_sized<150>``): ``(pixel - channel mean) / 256`` per channel;
- ``con``: cross-correlation with zero padding (size/2 for stride 1, none when strided), output side
  ``1 + (side + 2*padding - size) // stride``, plus a per-filter bias;
- ``affine``: ``gamma[k] * x + beta[k]`` per channel (batch normalisation frozen at inference);
- ``max_pool`` 3x3/2 and ``avg_pool`` 2x2/2 without padding (every window lies inside the image);
- ``add_prev``: the element-wise sum of two tensors whose shape is the larger of both: where one of them has no
  value (fewer channels, or fewer rows and columns), it counts as 0. This happens in every down-sampling block
  (the pooled skip has half the channels) and at 256 filters, where the strided convolution gives 3x3 but the
  pooled skip 4x4, and 1x1 against 2x2;
- ``avg_pool_everything``: the mean over rows and columns; ``fc_no_bias``: a matrix product.

Tensors are NHWC here (dlib's are NCHW); a convolution is one float32 matrix product (im2col: the input's
``size x size`` windows as rows, built by ``size**2`` strided copies, against the filters reshaped to
``(size*size*channels, filters)``), so nearly all the work runs in the BLAS's sgemm. A convolution followed by an
affine layer runs as one convolution with scaled filters and bias (``gamma * (w*x + b) + beta``), the relu after it
in place. Results differ from dlib's by float32 rounding only (dlib sums in another order): on the fixtures, cosine
>= 0.99999 and at most ~1e-5 per component.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from emulator.face.resnet_model import CHIP_SIDE, DESCRIPTOR_SIZE, ResnetWeights

BATCH = 8  # faces per forward pass: larger batches are slower per face (they no longer fit the caches)


@dataclass(frozen=True)
class Op:
    kind: str  # conv, relu, max_pool, avg_pool, avg_pool_everything, tag, skip, add_prev, fc
    size: int = 0
    stride: int = 1
    padding: int = 0
    tag: int = 0
    relu: bool = False  # conv: apply relu to the output
    # conv: (filters, channels, size, size), dlib's layout; fc: (inputs, outputs)
    weight: NDArray[np.float32] | None = None
    bias: NDArray[np.float32] | None = None  # conv: (filters,)


def fuse(weights: ResnetWeights) -> tuple[Op, ...]:
    """The layers as operations, with each con + affine (+ relu) fused into one convolution."""
    ops: list[Op] = []
    layers = weights.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        params = weights.params.get(i, {})
        if layer.kind == "con":
            weight = params["weight"]  # (filters, channels, rows, cols), dlib's layout
            bias = params["bias"]
            scale = np.ones_like(bias)
            shift = np.zeros_like(bias)
            step = 1
            if i + 1 < len(layers) and layers[i + 1].kind == "affine":
                scale, shift = weights.params[i + 1]["gamma"], weights.params[i + 1]["beta"]
                step = 2
            relu = i + step < len(layers) and layers[i + step].kind == "relu"
            step += int(relu)
            fused = weight * scale[:, None, None, None]
            ops.append(
                Op(
                    "conv",
                    size=layer.size,
                    stride=layer.stride,
                    padding=layer.padding,
                    relu=relu,
                    weight=fused.astype(np.float32, copy=False),
                    bias=(bias * scale + shift).astype(np.float32),
                )
            )
            i += step
            continue
        if layer.kind == "affine":
            raise ValueError(f"layer {i}: an affine layer that does not follow a convolution")
        if layer.kind == "fc":
            ops.append(Op("fc", weight=np.ascontiguousarray(params["weight"], dtype=np.float32)))
        else:
            ops.append(Op(layer.kind, size=layer.size, stride=layer.stride, padding=layer.padding, tag=layer.tag))
        i += 1
    return tuple(ops)


def _im2col_filters(weight: NDArray[np.float32] | None) -> NDArray[np.float32]:
    assert weight is not None
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]))


def _conv(x: NDArray[np.float32], op: Op) -> NDArray[np.float32]:
    """im2col + one sgemm. ``x`` is (N, H, W, C) float32."""
    assert op.weight is not None and op.bias is not None
    n, height, width, channels = x.shape
    size, stride, pad = op.size, op.stride, op.padding
    if pad:
        padded = np.zeros((n, height + 2 * pad, width + 2 * pad, channels), dtype=np.float32)
        padded[:, pad : pad + height, pad : pad + width] = x
        x, height, width = padded, height + 2 * pad, width + 2 * pad
    out_h = 1 + (height - size) // stride
    out_w = 1 + (width - size) // stride
    # Every window as a view (no copy), then one copy: a window's rows are runs of size*channels floats.
    sn, sh, sw, sc = x.strides
    windows = as_strided(x, (n, out_h, out_w, size, size, channels), (sn, sh * stride, sw * stride, sh, sw, sc))
    cols = np.ascontiguousarray(windows)
    out = cols.reshape(n * out_h * out_w, size * size * channels) @ op.weight
    out += op.bias
    if op.relu:
        np.maximum(out, 0.0, out=out)
    return out.reshape(n, out_h, out_w, -1)


def chip_batch(chips: np.ndarray) -> np.ndarray:
    """``chips`` as an (N, 150, 150, 3) array (one chip becomes a batch of one); a ValueError for any other shape."""
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIDE, CHIP_SIDE, 3):
        raise ValueError(f"expected (N, {CHIP_SIDE}, {CHIP_SIDE}, 3) chips, got {chips.shape}")
    return chips


def _windows(x: NDArray[np.float32], op: Op, combine: np.ufunc) -> NDArray[np.float32]:
    """``combine`` (np.maximum or np.add) over each pooling window, one window offset at a time, row by row."""
    _, height, width, _ = x.shape
    size, stride = op.size, op.stride
    out_h = 1 + (height - size) // stride
    out_w = 1 + (width - size) // stride
    out: NDArray[np.float32] | None = None
    for dy in range(size):
        for dx in range(size):
            window = x[:, dy : dy + stride * (out_h - 1) + 1 : stride, dx : dx + stride * (out_w - 1) + 1 : stride]
            out = window.copy() if out is None else combine(out, window, out=out)
    assert out is not None
    return out


def _max_pool(x: NDArray[np.float32], op: Op) -> NDArray[np.float32]:
    return _windows(x, op, np.maximum)


def _avg_pool(x: NDArray[np.float32], op: Op) -> NDArray[np.float32]:
    """The mean of each window, summed row by row as dlib does, then divided by the window's area."""
    out = _windows(x, op, np.add)
    out /= np.float32(op.size * op.size)
    return out


def _add(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """dlib's ``add_prev``: the sum over the larger shape, a missing value counting as 0."""
    if a.shape == b.shape:
        return a + b
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
    out = np.zeros(shape, dtype=np.float32)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] = a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


class ResnetDescriptor:
    """The 128-d face descriptor of dlib's ResNet, computed with numpy. Stateless after construction: one instance
    may be used from several threads at once."""

    def __init__(self, weights: ResnetWeights) -> None:
        self.input_mean = weights.input_mean.astype(np.float32)
        # Rows of the im2col matrix are ordered (dy, dx, channel): filters become (rows * cols * channels, filters).
        self.ops = tuple(
            dataclasses.replace(op, weight=_im2col_filters(op.weight)) if op.kind == "conv" else op
            for op in fuse(weights)
        )

    def nbytes(self) -> int:
        """Memory held by the (fused) weights."""
        return int(sum(a.nbytes for op in self.ops for a in (op.weight, op.bias) if a is not None))

    def compute(self, chips: np.ndarray) -> NDArray[np.float32]:
        """Descriptors (N, 128) float32 of N aligned 150x150 RGB uint8 chips, shape (N, 150, 150, 3)."""
        chips = chip_batch(chips)
        out = np.zeros((len(chips), DESCRIPTOR_SIZE), dtype=np.float32)
        for start in range(0, len(chips), BATCH):  # larger batches are slower per face (caches)
            out[start : start + BATCH] = self._forward(chips[start : start + BATCH])
        return out

    def _forward(self, chips: np.ndarray) -> NDArray[np.float32]:
        # (pixel - mean) is computed in float and /256 is exact, as in dlib's input layer.
        x = (chips.astype(np.float32) - self.input_mean) / np.float32(256.0)
        tags: dict[int, NDArray[np.float32]] = {}
        for op in self.ops:
            if op.kind == "conv":
                x = _conv(x, op)
            elif op.kind == "relu":
                x = np.maximum(x, 0.0, out=x)
            elif op.kind == "max_pool":
                x = _max_pool(x, op)
            elif op.kind == "avg_pool":
                x = _avg_pool(x, op)
            elif op.kind == "tag":
                tags[op.tag] = x
            elif op.kind == "skip":
                x = tags[op.tag]
            elif op.kind == "add_prev":
                x = _add(x, tags[op.tag])
            elif op.kind == "avg_pool_everything":
                x = x.mean(axis=(1, 2), dtype=np.float32)
            elif op.kind == "fc":
                assert op.weight is not None
                x = x.reshape(len(x), -1) @ op.weight
            else:
                raise AssertionError(f"unknown operation {op.kind}")
        return x
