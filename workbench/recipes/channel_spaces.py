"""Channel spaces of a traced network: which convolution output orders are tied together, and how.

A convolution's output channel order is free: permute its weight rows and its readers' weight
columns and the network computes the same thing. Where tensors meet the orders are tied:

- an elementwise add/mul of two channel tensors (a residual) needs both in one order;
- a concatenation on channels is a tensor made of its inputs' orders, block after block;
- a chunk/split on channels cuts a writer's order into blocks it may only permute within;
- a depthwise convolution (and SiLU, max-pool, upsample, ...) carries its input's order through;
- anything else that reads channels (view/reshape/matmul, the graph's outputs, a convolution whose
  weights are not a plain parameter) pins them: they keep the identity order.

:func:`trace_channels` runs that dataflow on a ``torch.export`` ATen graph, one id per channel and a
union-find over them, and returns the *spaces*: sets of writer blocks that must share one order
(or keep the identity when pinned). :meth:`ChannelSpaces.tensor_order` then says, for orders chosen
per space, in what order each reader sees its input. Family-agnostic: only the graph is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.errors import WorkbenchError

# ops whose output has the channels of their first input, in the same order
_PASS = {
    "silu", "silu_", "relu", "relu_", "relu6", "sigmoid", "sigmoid_", "hardswish", "hardswish_",
    "hardsigmoid", "gelu", "tanh", "leaky_relu", "hardtanh", "hardtanh_", "clamp", "clamp_", "clone",
    "contiguous", "dropout", "alias", "detach", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "upsample_nearest2d", "upsample_bilinear2d", "_to_copy", "to",
}  # fmt: skip
_BINARY = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_SPLITS = {"chunk", "split", "split_with_sizes", "tensor_split", "unbind"}


@dataclass
class Block:
    """Positions ``start .. start+size-1`` of one producer's output (channel ids ``first + start``
    on), one member of a space; ``writer``: the convolution that writes it (None: an op's result)."""

    writer: str | None
    first: int
    start: int
    size: int


@dataclass
class ChannelSpaces:
    """The traced channel dataflow: writers (free convolutions), their readers, and the spaces."""

    writers: dict[str, int]  # conv module name → first channel id of its output
    sizes: dict[str, int]  # conv module name → output channels
    count: int  # channel ids in all
    readers: dict[str, np.ndarray]  # ungrouped conv module name → channel ids of its input
    depthwise: dict[str, np.ndarray]  # depthwise conv module name → channel ids of its input
    spaces: list[list[Block]] = field(default_factory=list)
    pinned: list[bool] = field(default_factory=list)  # per space: identity order only

    def writer_order(self, name: str, orders: list[np.ndarray | None]) -> np.ndarray:
        """The new output order of writer ``name`` (new position → old) under per-space ``orders``
        (None: identity)."""
        order = np.arange(self.sizes[name])
        for space, blocks in enumerate(self.spaces):
            if orders[space] is None:
                continue
            for block in blocks:
                if block.writer == name:
                    order[block.start : block.start + block.size] = block.start + orders[space]
        return order

    def new_ids(self, orders: list[np.ndarray | None], count: int) -> np.ndarray:
        """For every channel id, the id whose value takes its place once each space is in its order."""
        new = np.arange(count)
        for space, blocks in enumerate(self.spaces):
            if orders[space] is not None:
                for b in blocks:
                    at = b.first + b.start
                    new[at : at + b.size] = at + orders[space]
        return new

    def tensor_order(self, ids: np.ndarray, new_ids: np.ndarray) -> np.ndarray:
        """For a tensor of channel ``ids``: new position → old position, once every writer writes
        its new order (``new_ids[id]``: the id now at the place of ``id``)."""
        where = {int(c): p for p, c in enumerate(ids)}
        try:
            return np.array([where[int(new_ids[c])] for c in ids], dtype=np.int64)
        except KeyError:
            raise WorkbenchError(
                "split-channels: a tensor reads part of a channel block (unsupported graph)"
            ) from None


class _Flow:
    """Channel ids, their union-find and their marks, grown as the graph is walked."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.source: list[int] = []  # which source (writer or pinned producer) made the id
        self.pos: list[int] = []
        self.pinned: list[bool] = []
        self.cut: list[bool] = []  # a slice boundary lies right before this id
        self.sizes: list[int] = []

    def new(self, size: int, pinned: bool) -> np.ndarray:
        base = len(self.parent)
        src = len(self.sizes)
        self.sizes.append(size)
        for i in range(size):
            self.parent.append(base + i)
            self.source.append(src)
            self.pos.append(i)
            self.pinned.append(pinned)
            self.cut.append(False)
        return np.arange(base, base + size)

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx

    def derive(self, ids: np.ndarray) -> np.ndarray:
        """Fresh ids for an op's result, tied one-to-one to ``ids`` (a tensor never repeats an id)."""
        out = self.new(len(ids), pinned=False)
        self.union(out, ids)
        return out

    def pin(self, ids: np.ndarray | None) -> None:
        for x in [] if ids is None else ids.tolist():
            self.pinned[x] = True

    def mark_cut(self, ids: np.ndarray, at: int) -> None:
        """A slice boundary between ``ids[at-1]`` and ``ids[at]``."""
        if 0 < at < len(ids):
            self.cut[int(ids[at])] = True
            after = int(ids[at - 1]) + 1
            if after < len(self.parent) and self.source[after] == self.source[int(ids[at - 1])]:
                self.cut[after] = True


def _name(target) -> str:
    return getattr(target, "__name__", str(target)).split(".")[0]


def _shape(node) -> tuple[int, ...] | None:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    return tuple(val.shape) if hasattr(val, "shape") else None


def _flatten(args) -> list:
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _flatten(a)
        elif isinstance(a, dict):
            out += _flatten(list(a.values()))
        else:
            out.append(a)
    return out


def trace_channels(model, example, keep: frozenset[str] = frozenset()) -> ChannelSpaces:
    """The channel spaces of ``model`` (BatchNorm folded) traced on ``example``.

    Writers are the ungrouped convolutions whose weight is a plain parameter, called once, and not in
    ``keep`` (module names whose output rows others read by index); every other producer of
    channels is pinned.
    """
    import torch

    try:
        program = torch.export.export(model, (example,), strict=False)
    except Exception as err:  # an untraceable model: say so in one line
        raise WorkbenchError(f"split-channels cannot trace the model: {type(err).__name__}: {err}") from None
    params = program.graph_signature.inputs_to_parameters
    nodes = list(program.graph.nodes)
    uses: dict[str, int] = {}
    for node in nodes:
        if node.op == "call_function" and _name(node.target) == "conv2d" and node.args[1].name in params:
            module = params[node.args[1].name].rsplit(".", 1)[0]
            uses[module] = uses.get(module, 0) + 1
    flow, val = _Flow(), {}
    writers, sizes, readers, depthwise = {}, {}, {}, {}
    for node in nodes:
        shape = _shape(node)
        if node.op == "placeholder":
            if node.name not in params and shape is not None and len(shape) == 4:
                val[node] = flow.new(shape[1], pinned=True)  # the network's input
            continue
        if node.op == "output":
            for a in _flatten(node.args):
                flow.pin(val.get(a) if isinstance(a, torch.fx.Node) else None)
            continue
        if node.op != "call_function":
            continue
        name = _name(node.target)
        ins = [val.get(a) if isinstance(a, torch.fx.Node) else None for a in node.args]
        if name == "conv2d":
            weight = node.args[1]
            direct = weight.name in params
            source = (
                weight
                if direct
                else (weight.args[0] if _name(weight.target) in ("index", "index_select") else None)
            )
            module = (
                params[source.name].rsplit(".", 1)[0]
                if source is not None and source.name in params
                else None
            )
            groups = node.args[6] if len(node.args) > 6 else 1
            x = ins[0]
            if x is not None and groups == len(x) and shape[1] == len(x) and direct:
                depthwise[module] = x
                val[node] = flow.derive(x)
            elif groups == 1 and module is not None:
                if module in readers and not np.array_equal(readers[module], x):
                    flow.pin(x)
                    flow.pin(readers[module])
                readers[module] = x
                free = direct and module not in keep and uses.get(module) == 1
                val[node] = flow.new(shape[1], pinned=not free)
                if free:
                    writers[module], sizes[module] = int(val[node][0]), shape[1]
            else:
                flow.pin(x)
                val[node] = flow.new(shape[1], pinned=True)
        elif name in _PASS and ins and ins[0] is not None and shape and shape[1] == len(ins[0]):
            val[node] = flow.derive(ins[0])
        elif name in _BINARY and len(ins) >= 2:
            val[node] = _binary(flow, node, ins, shape)
        elif name == "cat":
            val[node] = _cat(flow, node, val, shape)
        elif name in _SPLITS or (name in ("slice", "narrow") and ins[0] is not None):
            val[node] = _split(flow, node, ins[0], name)
        elif name == "getitem" and isinstance(ins[0], list):
            item = ins[0][node.args[1]]
            val[node] = None if item is None else flow.derive(item)
        else:
            for a in _flatten(node.args):
                flow.pin(val.get(a) if isinstance(a, torch.fx.Node) else None)
            if shape is not None and len(shape) == 4:
                val[node] = flow.new(shape[1], pinned=True)
    return _spaces(flow, ChannelSpaces(writers, sizes, len(flow.parent), readers, depthwise))


def _binary(flow: _Flow, node, ins, shape):
    a, b = ins[0], ins[1]
    other = node.args[1]
    if a is not None and b is not None and len(a) == len(b):
        flow.union(a, b)
        return flow.derive(a)
    if a is not None and b is None and (not hasattr(other, "meta") or np.prod(_shape(other) or (1,)) == 1):
        return flow.derive(a)  # times a scalar
    for ids in (a, b):
        flow.pin(ids)
    return flow.new(shape[1], pinned=True) if shape is not None and len(shape) == 4 else None


def _cat(flow: _Flow, node, val, shape):
    tensors = node.args[0]
    parts = [val.get(t) for t in tensors]
    dim = node.args[1] if len(node.args) > 1 else 0
    if shape is None or len(shape) != 4:
        for ids in parts:
            flow.pin(ids)
        return None
    if any(ids is None for ids in parts):
        for ids in parts:
            flow.pin(ids)
        return flow.new(shape[1], pinned=True)
    if dim % 4 == 1:
        return flow.derive(np.concatenate(parts))
    for ids in parts[1:]:
        flow.union(parts[0], ids)
    return flow.derive(parts[0])


def _split(flow: _Flow, node, ids, name):
    shape = _shape(node.args[0])
    dim = (node.args[2] if name in ("chunk", "split", "split_with_sizes") and len(node.args) > 2 else
           node.args[1] if name in ("slice", "narrow") and len(node.args) > 1 else
           node.kwargs.get("dim", 0))  # fmt: skip
    out_shapes = node.meta.get("val")
    if ids is None or shape is None or len(shape) != 4 or dim % 4 != 1:
        flow.pin(ids)
        if isinstance(out_shapes, (list, tuple)):
            return [flow.new(v.shape[1], True) if len(v.shape) == 4 else None for v in out_shapes]
        return flow.new(out_shapes.shape[1], True) if len(out_shapes.shape) == 4 else None
    if name in ("slice", "narrow"):
        start = node.args[2] if len(node.args) > 2 else 0
        start = 0 if start is None else start
        if name == "slice" and (len(node.args) > 4 and node.args[4] != 1):
            flow.pin(ids)
            return flow.new(out_shapes.shape[1], True)
        stop = start + out_shapes.shape[1]
        flow.mark_cut(ids, start)
        flow.mark_cut(ids, stop)
        return ids[start:stop]
    out, at = [], 0
    for v in out_shapes:
        flow.mark_cut(ids, at)
        out.append(ids[at : at + v.shape[1]])
        at += v.shape[1]
    return out


def _spaces(flow: _Flow, result: ChannelSpaces) -> ChannelSpaces:
    """Cut each source into blocks whose channels are tied one-to-one, in order, to the channels of
    every block they are tied to; a space is a set of such blocks."""
    n = len(flow.parent)
    cls = np.array([flow.find(x) for x in range(n)])
    pos = np.array(flow.pos)
    last = np.array([flow.pos[x] == flow.sizes[flow.source[x]] - 1 for x in range(n)])
    members: dict[int, list[int]] = {}
    for x in range(n):
        members.setdefault(int(cls[x]), []).append(x)
    start = np.array(flow.cut) | (pos == 0)
    for group in members.values():  # a block starts where any tied channel starts or has another predecessor
        prev = {int(cls[m - 1]) if pos[m] > 0 else -1 for m in group}
        nxt = {int(cls[m + 1]) if not last[m] else -1 for m in group}
        if len(prev) > 1 or any(start[m] for m in group):
            start[group] = True
        if len(nxt) > 1 or -1 in nxt:
            for m in group:
                if not last[m]:
                    start[m + 1] = True
    pinned_cls = {int(cls[x]) for x in range(n) if flow.pinned[x]}
    by_writer = {first: name for name, first in result.writers.items()}
    spaces: dict[int, int] = {}
    x = 0
    while x < n:
        end = x + 1
        while end < n and not start[end]:
            end += 1
        key = int(cls[x])
        seq = [int(c) for c in cls[x:end]]
        if key not in spaces:
            spaces[key] = len(result.spaces)
            result.spaces.append([])
            result.pinned.append(False)
        space = spaces[key]
        first = x - int(pos[x])
        if len(set(seq)) < len(seq) or pinned_cls & set(seq):
            result.pinned[space] = True
        result.spaces[space].append(Block(by_writer.get(first), first, int(pos[x]), end - x))
        x = end
    for space, blocks in enumerate(result.spaces):
        if len({b.size for b in blocks}) > 1:
            result.pinned[space] = True
    return result
