"""Read a .tflite flatbuffer's main graph: tensors, ops in execution order, weight quantization.

Parsed with the flatbuffer schema that ``ai_edge_litert`` ships (no TensorFlow import). Unlike the
interpreter's op list, this is the graph as stored — before XNNPACK replaces ops by ``DELEGATE``.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class GraphTensor:
    """One tensor of the main subgraph.

    ``is_constant``: has data in the file (weights, biases, shape constants).
    ``scales_len``: number of quantization scales (0 unquantized, 1 per-tensor, >1 per-axis).
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    is_constant: bool
    scales_len: int
    quantized_dimension: int

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data (dynamic dimensions, -1, count as 1; exotic types 1 byte)."""
        try:
            itemsize = np.dtype(self.dtype).itemsize
        except TypeError:  # e.g. float8 variants numpy lacks
            itemsize = 1
        return int(np.prod([max(d, 1) for d in self.shape], dtype=np.int64)) * itemsize


@dataclass(frozen=True)
class GraphOp:
    """One operator, in execution order (``index``); ``op`` is the builtin name or the custom code."""

    index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class TFLiteGraph:
    """The main subgraph (subgraph 0) of a .tflite file.

    Example:
        >>> # g = read_graph("model.tflite"); g.op_histogram()["CONV_2D"]
    """

    path: Path
    tensors: list[GraphTensor]
    ops: list[GraphOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    num_subgraphs: int = 1
    producers: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.tensors)
        for i in (*self.inputs, *self.outputs):
            if not 0 <= i < n:
                raise WorkbenchError(f"graph input/output tensor {i} out of range", path=self.path)
        self.producers = {t: op.index for op in self.ops for t in op.outputs if t >= 0}

    def op_histogram(self) -> dict[str, int]:
        """Count of each op type, most frequent first."""
        return dict(Counter(op.op for op in self.ops).most_common())

    def producer(self, tensor: int) -> GraphOp | None:
        """The op that writes ``tensor`` (None for graph inputs and constants)."""
        i = self.producers.get(tensor)
        return None if i is None else self.ops[i]


@cache
def _enum_names() -> tuple[dict[int, str], dict[int, str]]:
    from ai_edge_litert import schema_py_generated as schema

    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return ops, types


_NUMPY_DTYPES = {
    "BOOL": "bool",
    "STRING": "object",
    "RESOURCE": "object",
    "VARIANT": "object",
    "INT4": "int8",
}


_CACHE_SIZE = 32  # parsed graphs kept (names, shapes and ops: no weights)
_cache: OrderedDict[bytes, TFLiteGraph] = OrderedDict()
_cache_lock = threading.Lock()


def read_graph(path: str | Path) -> TFLiteGraph:
    """Parse the main subgraph of ``path``; a missing or malformed file raises :class:`WorkbenchError`.

    A file whose bytes were parsed before (same sha256) gets that parse back, with its own ``path``:
    parsing YOLOv8n-pose takes 65 ms and hashing it 7 ms, and the default report's benchmark step
    made 51 reads of its 12 files (arena, granularity, same-network check, per-layer SQNR of the
    model and of its fp32 reference). Treat the result as read-only.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("model file not found", path=path)
    data = path.read_bytes()
    key = hashlib.sha256(data).digest()
    with _cache_lock:
        graph = _cache.get(key)
        if graph is not None:
            _cache.move_to_end(key)
    if graph is None:
        graph = _parse_graph(path, data)
        with _cache_lock:
            _cache[key] = graph
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if graph.path != path:
        graph = copy.copy(graph)  # shares the (read-only) tensors and ops
        graph.path = path
    return graph


def _parse_graph(path: Path, data: bytes) -> TFLiteGraph:
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WorkbenchError("not a TFLite flatbuffer (missing 'TFL3' identifier)", path=path)
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        subgraph = model.subgraphs[0]
    except Exception as err:  # the generated parser raises anything from struct.error to IndexError
        raise WorkbenchError(
            f"cannot parse TFLite flatbuffer ({type(err).__name__}: {err})", path=path
        ) from None
    op_names, type_names = _enum_names()

    def has_data(buffer_index: int) -> bool:
        if buffer_index <= 0 or buffer_index >= len(model.buffers or []):
            return False
        buf = model.buffers[buffer_index]
        # small models keep data inline; >2 GB models point past the flatbuffer with offset/size
        return (buf.data is not None and len(buf.data) > 0) or (buf.offset > 1 and buf.size > 0)

    tensors = []
    for i, t in enumerate(subgraph.tensors or []):
        q = t.quantization
        scales = 0 if q is None or q.scale is None else len(q.scale)
        type_name = type_names.get(t.type, "FLOAT32")
        tensors.append(
            GraphTensor(
                index=i,
                name=(t.name or b"").decode(errors="replace"),
                shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                dtype=_NUMPY_DTYPES.get(type_name, type_name.lower()),
                is_constant=has_data(t.buffer),
                scales_len=scales,
                quantized_dimension=0 if q is None else int(q.quantizedDimension),
            )
        )
    ops = []
    for k, op in enumerate(subgraph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # schema v3a split the field
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM" and code.customCode:
            name = code.customCode.decode(errors="replace")
        ops.append(
            GraphOp(
                index=k,
                op=name,
                inputs=tuple(int(i) for i in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(i) for i in (op.outputs if op.outputs is not None else ())),
            )
        )
    return TFLiteGraph(
        path=path,
        tensors=tensors,
        ops=ops,
        inputs=tuple(int(i) for i in subgraph.inputs),
        outputs=tuple(int(i) for i in subgraph.outputs),
        num_subgraphs=len(model.subgraphs),
    )
