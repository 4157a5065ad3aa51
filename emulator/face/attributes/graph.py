"""Run the age and gender ONNX graphs on numpy, with the descriptor's convolution code.

The two graphs (see :mod:`emulator.face.attributes.onnx_reader`) use few operators: Conv, then an affine layer as
Mul and Add by per-channel constants, Relu, MaxPool, AveragePool, Pad (the residual skip's missing channels, rows
and columns as zeros at the end), Add, GlobalAveragePool, Mul by a scalar, Flatten, Gemm, Softmax. They are run in
NHWC, like :mod:`emulator.face.resnet`: each Conv followed by its Mul and Add becomes one convolution with scaled
filters and bias (im2col and one sgemm, :func:`emulator.face.resnet._conv`). Flatten restores ONNX's NCHW order
before the dense layers. Results agree with ONNX Runtime's on the same file within float32 rounding (1e-6 on the
probabilities).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from emulator.face.attributes.onnx_reader import Graph, Node
from emulator.face.resnet import Op, _avg_pool, _conv, _max_pool

Array = NDArray[np.float32]


@dataclass(frozen=True)
class Step:
    """One operation: ``kind`` on the values named ``inputs``, its result named ``output``."""

    kind: str  # conv, relu, max_pool, avg_pool, pad, add, add_const, mul_const, global_avg, flatten, gemm, softmax
    inputs: tuple[str, ...]
    output: str
    op: Op | None = None  # conv and pools
    const: Array | None = None  # add_const, mul_const: broadcast over NHWC; gemm: the weight
    bias: Array | None = None  # gemm
    pads: tuple[int, int, int] = (0, 0, 0)  # pad: rows, columns, channels added at the end


def _nhwc_const(array: np.ndarray) -> Array:
    """A per-channel (1, C, 1, 1) or scalar (1,) constant as an array that broadcasts over NHWC."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 4:
        return np.ascontiguousarray(array.reshape(-1))
    return np.ascontiguousarray(array.reshape(()))


def _ints(node: Node, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = node.attributes.get(name, default)
    return value if isinstance(value, tuple) else (int(value),)


def _pool_op(kind: str, node: Node) -> Op:
    kernel, strides = _ints(node, "kernel_shape", ()), _ints(node, "strides", (1, 1))
    if any(_ints(node, "pads", (0, 0, 0, 0))) or kernel[0] != kernel[1] or strides[0] != strides[1]:
        raise ValueError(f"unsupported {node.op_type} {node.attributes}")
    return Op(kind, size=kernel[0], stride=strides[0])


def compile_graph(graph: Graph) -> tuple[Step, ...]:
    """The graph's nodes as steps on NHWC arrays, each Conv + Mul + Add fused into one convolution."""
    consts = graph.initializers
    uses = Counter(name for node in graph.nodes for name in node.inputs)
    steps: list[Step] = []
    nodes = list(graph.nodes)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        kind = node.op_type
        if kind == "Conv":
            weight = consts[node.inputs[1]].astype(np.float32)
            bias = consts[node.inputs[2]].astype(np.float32) if len(node.inputs) > 2 else np.zeros(len(weight))
            output = node.outputs[0]
            # The affine layer after it: Mul by a per-channel scale, Add a per-channel offset.
            if (
                i + 2 < len(nodes)
                and nodes[i + 1].op_type == "Mul"
                and nodes[i + 1].inputs[0] == output
                and nodes[i + 1].inputs[1] in consts
                and uses[output] == 1
                and nodes[i + 2].op_type == "Add"
                and nodes[i + 2].inputs[0] == nodes[i + 1].outputs[0]
                and nodes[i + 2].inputs[1] in consts
                and uses[nodes[i + 1].outputs[0]] == 1
            ):
                scale = consts[nodes[i + 1].inputs[1]].reshape(-1).astype(np.float32)
                offset = consts[nodes[i + 2].inputs[1]].reshape(-1).astype(np.float32)
                weight = weight * scale[:, None, None, None]
                bias = bias * scale + offset
                output = nodes[i + 2].outputs[0]
                i += 2
            pads = _ints(node, "pads", (0, 0, 0, 0))
            strides = _ints(node, "strides", (1, 1))
            if len(set(pads)) != 1 or strides[0] != strides[1] or weight.shape[2] != weight.shape[3]:
                raise ValueError(f"unsupported Conv {node.attributes}")
            # im2col rows are ordered (dy, dx, channel): filters (out, in, kh, kw) -> (kh * kw * in, out).
            filters = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0]))
            op = Op("conv", size=weight.shape[2], stride=strides[0], padding=pads[0])
            op = dataclasses.replace(op, weight=filters, bias=np.ascontiguousarray(bias, dtype=np.float32))
            steps.append(Step("conv", (node.inputs[0],), output, op=op))
        elif kind == "Relu":
            steps.append(Step("relu", node.inputs[:1], node.outputs[0]))
        elif kind == "MaxPool":
            steps.append(Step("max_pool", node.inputs[:1], node.outputs[0], op=_pool_op("max_pool", node)))
        elif kind == "AveragePool":
            steps.append(Step("avg_pool", node.inputs[:1], node.outputs[0], op=_pool_op("avg_pool", node)))
        elif kind == "Pad":
            pads = tuple(int(p) for p in consts[node.inputs[1]].reshape(-1))  # NCHW: 4 begins, then 4 ends
            if any(pads[:4]) or pads[4]:
                raise ValueError(f"unsupported Pad {pads}")
            steps.append(Step("pad", node.inputs[:1], node.outputs[0], pads=(pads[6], pads[7], pads[5])))
        elif kind in ("Add", "Mul"):
            a, b = node.inputs
            if b in consts:
                const = _nhwc_const(consts[b])
                steps.append(Step("add_const" if kind == "Add" else "mul_const", (a,), node.outputs[0], const=const))
            elif kind == "Add":
                steps.append(Step("add", (a, b), node.outputs[0]))
            else:
                raise ValueError("unsupported Mul of two tensors")
        elif kind == "GlobalAveragePool":
            steps.append(Step("global_avg", node.inputs[:1], node.outputs[0]))
        elif kind == "Flatten":
            steps.append(Step("flatten", node.inputs[:1], node.outputs[0]))
        elif kind == "Gemm":
            if node.attributes.get("transA", 0) or node.attributes.get("transB", 0):
                raise ValueError("unsupported transposed Gemm")
            weight = np.ascontiguousarray(consts[node.inputs[1]], dtype=np.float32)
            bias = np.ascontiguousarray(consts[node.inputs[2]], dtype=np.float32)
            steps.append(Step("gemm", node.inputs[:1], node.outputs[0], const=weight, bias=bias))
        elif kind == "Softmax":
            steps.append(Step("softmax", node.inputs[:1], node.outputs[0]))
        else:
            raise ValueError(f"unsupported ONNX operator {kind}")
        i += 1
    return tuple(steps)


def softmax(x: Array) -> Array:
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    out: Array = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


class GraphNetwork:
    """A compiled ONNX graph with one NCHW float32 input; stateless, usable from several threads."""

    def __init__(self, graph: Graph) -> None:
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ValueError("expected one input and one output")
        self.input_name = graph.inputs[0]
        self.output_name = graph.outputs[0]
        self.steps = compile_graph(graph)

    def run(self, nhwc: Array) -> Array:
        """The output for an (N, H, W, C) float32 input (the graph's NCHW input, transposed)."""
        values: dict[str, Array] = {self.input_name: nhwc}
        for step in self.steps:
            x = values[step.inputs[0]]
            if step.kind == "conv":
                assert step.op is not None
                out = _conv(x, step.op)
            elif step.kind == "relu":
                out = np.maximum(x, np.float32(0.0))
            elif step.kind == "max_pool":
                assert step.op is not None
                out = _max_pool(x, step.op)
            elif step.kind == "avg_pool":
                assert step.op is not None
                out = _avg_pool(x, step.op)
            elif step.kind == "pad":
                rows, cols, channels = step.pads
                out = np.pad(x, ((0, 0), (0, rows), (0, cols), (0, channels)))
            elif step.kind == "add":
                out = x + values[step.inputs[1]]
            elif step.kind == "add_const":
                assert step.const is not None
                out = x + step.const
            elif step.kind == "mul_const":
                assert step.const is not None
                out = x * step.const
            elif step.kind == "global_avg":
                out = x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
            elif step.kind == "flatten":
                out = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1) if x.ndim == 4 else x
            elif step.kind == "gemm":
                assert step.const is not None and step.bias is not None
                out = x @ step.const + step.bias
            elif step.kind == "softmax":
                out = softmax(x)
            else:
                raise AssertionError(f"unknown step {step.kind}")
            values[step.output] = out.astype(np.float32, copy=False)
        return values[self.output_name]
