"""Look inside a .tflite: I/O, ops, weight-quantization granularity, activation RAM, per-layer SQNR.

Granularity verdict (:func:`weight_granularity`)
    For every CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and TRANSPOSE_CONV the filter tensor
    (followed through a DEQUANTIZE if the weights are stored compressed) is classified:

    - *per-channel*: integer weights with one scale per output channel (more than one scale);
    - *per-tensor*: integer weights with a single scale and more than one output channel;
    - *single-channel*: integer weights with one output channel — one scale is then per-tensor and
      per-channel at once, so these say nothing about the scheme and are left out of the verdict
      (YOLOv8's three 1-class score convs and its DFL conv in ST's files are such: hence "69 of 73");
    - *float32* / *float16*: unquantized weights.

    Verdict: "per-channel" if all informative integer weights are per-channel, "per-tensor" if all
    are per-tensor (or only single-channel ones exist), "mixed" if both occur; without integer
    weights, "fp16" if any weight is stored as float16, else "float".

Activation arena (:func:`activation_arena`)
    Each non-constant tensor lives from the op that writes it (graph inputs: from the start) to the
    last op that reads it (graph outputs: to the end), in the stored execution order. Tensors are
    packed into one arena greedily by size, as TFLite Micro's ``GreedyMemoryPlanner``: largest
    first, each at the lowest offset not overlapping any already-placed tensor whose lifetime
    intersects its own (sizes rounded up to ``alignment``). Reported with two bounds: the naive sum
    (no reuse) above and the largest simultaneously-live set below. In-place ops (e.g. RESHAPE
    sharing its input buffer) and kernel scratch buffers are not modelled: an estimate, not the
    exact figure of a given runtime. Outputs of ops whose inputs are all constant (an fp16 file's
    DEQUANTIZE of its weights) are computed once when the model loads and kept: weights in float32
    form, not activations. They are left out of the arena and reported as ``folded_weight_bytes``.

Per-layer SQNR against a float reference: :mod:`workbench.sqnr` (its names are importable from here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.runtime import TensorSpec, TFLiteModel
from workbench.sqnr import (  # noqa: F401  (per-layer SQNR, public here as before)
    SAME_NETWORK_MIN_SIMILARITY,
    LayerSQNR,
    check_same_network,
    layer_sqnr,
    layer_sqnr_many,
    match_tensors,
    same_network,
)
from workbench.tflite_graph import TFLiteGraph, read_graph

# Ops with a weight (filter) tensor at input 1, and the filter's output-channel dimension.
WEIGHT_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 0}
VERDICTS = ("per-channel", "per-tensor", "mixed", "fp16", "float")
_INTEGER_WEIGHTS = ("int8", "uint8", "int16")
_FORMAT_OPS = ("QUANTIZE", "DEQUANTIZE")  # format changes, not computation


@dataclass
class WeightGranularity:
    """Counts of weight tensors by quantization granularity, and the verdict (module docstring)."""

    verdict: str
    per_channel: int
    per_tensor: int
    single_channel: int
    float32: int
    float16: int

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def total(self) -> int:
        return self.per_channel + self.per_tensor + self.single_channel + self.float32 + self.float16

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


@dataclass
class ArenaEstimate:
    """Activation memory in bytes: greedy-by-size arena, naive sum, largest-live-set lower bound."""

    arena_bytes: int
    naive_bytes: int
    lower_bound_bytes: int
    largest_tensor_bytes: int
    tensors: int
    alignment: int
    folded_weight_bytes: int = 0

    def __post_init__(self) -> None:
        if self.folded_weight_bytes < 0:
            raise ValueError(f"negative folded_weight_bytes: {self}")
        if not self.largest_tensor_bytes <= self.lower_bound_bytes <= self.arena_bytes <= self.naive_bytes:
            raise ValueError(f"inconsistent arena estimate: {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InspectResult:
    """Everything :func:`inspect_model` found about one .tflite file."""

    path: str
    size_bytes: int
    sha256: str
    input: TensorSpec
    outputs: list[TensorSpec]
    op_histogram: dict[str, int]
    weights: WeightGranularity
    arena: ArenaEstimate
    metadata: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    calib_images: int = 0
    sqnr: list[LayerSQNR] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size_bytes <= 0 or len(self.sha256) != 64:
            raise ValueError(f"invalid file identity: {self.size_bytes} bytes, sha256 {self.sha256!r}")
        if self.sqnr and not self.reference:
            raise ValueError("per-layer SQNR needs the reference it was measured against")

    @property
    def worst_sqnr_db(self) -> float | None:
        return self.sqnr[0].sqnr_db if self.sqnr else None

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst_sqnr_db
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "input": self.input.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "op_histogram": dict(self.op_histogram),
            "weights": self.weights.to_dict(),
            "arena": self.arena.to_dict(),
            "metadata": self.metadata,
            "reference": self.reference,
            "calib_images": self.calib_images,
            "worst_sqnr_db": worst if worst is None or math.isfinite(worst) else None,
            "sqnr": [s.to_dict() for s in self.sqnr],
        }

    def to_pandas(self):
        """Per-layer SQNR as a DataFrame, worst first (empty without a reference)."""
        import pandas as pd

        columns = ["tensor", "op", "op_index", "shape", "sqnr_db", "reference_tensor"]
        return pd.DataFrame([asdict(s) for s in self.sqnr], columns=columns)

    def plot(self, ax=None, worst: int = 20):
        """Horizontal bars of the ``worst`` layers' SQNR (dB); returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if not self.sqnr:
            raise WorkbenchError(
                "no per-layer SQNR to plot (inspect with a reference and calibration images)"
            )
        rows = [s for s in self.sqnr if math.isfinite(s.sqnr_db)][:worst][::-1]
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1))
        ax.barh([f"{s.op_index}:{s.op}" for s in rows], [s.sqnr_db for s in rows])
        ax.set_xlabel("SQNR vs float reference (dB)")
        ax.set_title(f"{Path(self.path).name}: worst layers")
        return ax


# ---- weight granularity --------------------------------------------------------------------------
def weight_granularity(graph: TFLiteGraph) -> WeightGranularity:
    """Classify conv/FC filter tensors by quantization granularity (rule in the module docstring)."""
    counts = dict.fromkeys(("per_channel", "per_tensor", "single_channel", "float32", "float16"), 0)
    for op in graph.ops:
        if op.op not in WEIGHT_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        weight = graph.tensors[op.inputs[1]]
        source = graph.producer(weight.index)
        if source is not None and source.op == "DEQUANTIZE":  # fp16 / compressed weights
            weight = graph.tensors[source.inputs[0]]
        if weight.dtype in _INTEGER_WEIGHTS and weight.scales_len >= 1:
            dim = weight.quantized_dimension if weight.scales_len > 1 else WEIGHT_OPS[op.op]
            channels = weight.shape[dim] if dim < len(weight.shape) else 1
            if weight.scales_len > 1:
                counts["per_channel"] += 1
            elif channels == 1:
                counts["single_channel"] += 1
            else:
                counts["per_tensor"] += 1
        elif weight.dtype == "float16":
            counts["float16"] += 1
        else:
            counts["float32"] += 1
    pc, pt = counts["per_channel"], counts["per_tensor"]
    if pc or pt or counts["single_channel"]:
        verdict = "mixed" if pc and pt else "per-channel" if pc else "per-tensor"
    else:
        verdict = "fp16" if counts["float16"] else "float"
    return WeightGranularity(verdict=verdict, **counts)


def is_all_int8(graph: TFLiteGraph) -> bool:
    """True when every op computes on 8-bit integers: what ST's NPUs run.

    Every non-constant tensor an op reads or writes must be int8/uint8, except the float side of
    the QUANTIZE/DEQUANTIZE ops at the model's own inputs and outputs (a ``uf`` file's float
    output is a format change). A float op kept by ``float-fallback`` or an int16 activation
    (``int16x8``) makes it False.

    Example:
        >>> # is_all_int8(read_graph("int8-per-tensor-uf.tflite"))   # True
    """
    boundary = set(graph.inputs) | set(graph.outputs)
    for op in graph.ops:
        tensors = [graph.tensors[t] for t in (*op.inputs, *op.outputs) if t >= 0]
        for t in tensors:
            if t.is_constant:
                if op.op in WEIGHT_OPS and t.index == op.inputs[1] and t.dtype not in ("int8", "uint8"):
                    return False
                continue
            if t.dtype in ("int8", "uint8"):
                continue
            if op.op in _FORMAT_OPS and t.index in boundary:
                continue
            return False
    return True


# ---- activation arena ----------------------------------------------------------------------------
def activation_arena(graph: TFLiteGraph, alignment: int = 16) -> ArenaEstimate:
    """Peak activation memory of ``graph`` (greedy-by-size packing; method in the module docstring).

    Example:
        >>> # a = activation_arena(read_graph("m.tflite")); a.lower_bound_bytes <= a.arena_bytes <= a.naive_bytes
    """
    n_ops = len(graph.ops)
    last_step = max(n_ops - 1, 0)
    first: dict[int, int] = {t: 0 for t in graph.inputs if not graph.tensors[t].is_constant}
    last: dict[int, int] = dict(first)
    folded: set[int] = set()  # computed from constants only: persistent, not activations
    for op in graph.ops:
        inputs = [t for t in op.inputs if t >= 0]
        if inputs and all(graph.tensors[t].is_constant or t in folded for t in inputs):
            folded.update(t for t in op.outputs if t >= 0 and not graph.tensors[t].is_constant)
            continue
        for t in op.outputs:
            if t >= 0 and not graph.tensors[t].is_constant:
                first.setdefault(t, op.index)
                last[t] = max(last.get(t, op.index), op.index)
        for t in op.inputs:
            if t >= 0 and t in first:
                last[t] = max(last[t], op.index)
    for t in graph.outputs:
        if t in first:
            last[t] = last_step

    def aligned(nbytes: int) -> int:
        return -(-nbytes // alignment) * alignment

    sizes = {t: aligned(graph.tensors[t].nbytes) for t in first}
    folded_bytes = sum(aligned(graph.tensors[t].nbytes) for t in folded)
    if not sizes:
        return ArenaEstimate(0, 0, 0, 0, 0, alignment, folded_bytes)
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    for t in sorted(sizes, key=lambda t: (-sizes[t], first[t], t)):
        size, start, end = sizes[t], first[t], last[t]
        offset = 0
        for o, s, _, _ in sorted(p for p in placed if not (p[3] < start or end < p[2])):
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, start, end))
    live = np.zeros(last_step + 1, dtype=np.int64)
    for t, size in sizes.items():
        live[first[t] : last[t] + 1] += size
    return ArenaEstimate(
        arena_bytes=max(o + s for o, s, _, _ in placed),
        naive_bytes=sum(sizes.values()),
        lower_bound_bytes=int(live.max()),
        largest_tensor_bytes=max(sizes.values()),
        tensors=len(sizes),
        alignment=alignment,
        folded_weight_bytes=folded_bytes,
    )


# ---- entry point ---------------------------------------------------------------------------------
def inspect_model(
    path: str | Path,
    reference: str | Path | None = None,
    calib_images: str | Path | None = None,
    calib_count: int = 8,
    threads: int = 2,
) -> InspectResult:
    """Inspect one .tflite; with ``reference`` (float .tflite) and ``calib_images`` also per-layer SQNR.

    Example:
        >>> # r = inspect_model("yolov8n_256_quant_pc_uf_pose_coco-st.tflite")
        >>> # r.weights.verdict, r.weights.per_channel, r.arena.arena_bytes   # ('per-channel', 69, ...)
    """
    from workbench.data.images import list_images, load_image

    path = Path(path)
    model = TFLiteModel(path, threads)
    graph = read_graph(path)
    sqnr: list[LayerSQNR] = []
    n_images = 0
    if reference is not None:
        if calib_images is None:
            raise WorkbenchError("per-layer SQNR against a reference needs calibration images (--calib DIR)")
        if calib_count <= 0:
            raise WorkbenchError(f"calib_count must be positive, got {calib_count}")
        check_same_network(graph, read_graph(reference), reference)
        images = [load_image(p) for p in list_images(calib_images, calib_count)]
        n_images = len(images)
        sqnr = layer_sqnr(path, reference, images, threads=threads)
    return InspectResult(
        path=str(path),
        size_bytes=path.stat().st_size,
        sha256=sha256_file(path),
        input=model.input,
        outputs=model.outputs,
        op_histogram=graph.op_histogram(),
        weights=weight_granularity(graph),
        arena=activation_arena(graph),
        metadata=model.metadata,
        reference=None if reference is None else str(reference),
        calib_images=n_images,
        sqnr=sqnr,
    )
