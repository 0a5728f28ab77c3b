"""Multiply-accumulates of a ``.tflite`` op, from its tensors' shapes (the ops that hold nearly
all of a vision network's MACs; every other op counts 0).

Example:
    >>> # graph = read_graph("m.tflite"); sum(op_macs(graph, op) for op in graph.ops)
"""

from __future__ import annotations

import math

from workbench.tflite_graph import GraphOp, TFLiteGraph


def op_macs(graph: TFLiteGraph, op: GraphOp) -> int:
    """MACs of ``op``: CONV_2D out·kh·kw·cin, DEPTHWISE_CONV_2D out·kh·kw, FULLY_CONNECTED out·cin,
    TRANSPOSE_CONV in·kh·kw·cout; 0 for anything else."""
    if op.op not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
        return 0
    shapes = [graph.tensors[t].shape if t >= 0 else () for t in op.inputs]
    out = graph.tensors[op.outputs[0]].shape
    if op.op == "TRANSPOSE_CONV":  # inputs: output shape, weights [cout, kh, kw, cin], input
        _, kh, kw, _ = shapes[1]
        return _count(shapes[2]) * kh * kw * shapes[1][0]
    weights = shapes[1]
    if op.op == "CONV_2D":  # weights [cout, kh, kw, cin]
        return _count(out) * weights[1] * weights[2] * weights[3]
    if op.op == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, cout]
        return _count(out) * weights[1] * weights[2]
    return _count(out) * weights[-1]  # FULLY_CONNECTED: weights [cout, cin]


def _count(shape: tuple[int, ...]) -> int:
    return math.prod(max(d, 1) for d in shape)
