"""Per-layer SQNR of a quantized .tflite against a float reference of the same network.

The model and a float reference run side by side on the same pre-processed calibration images
with every intermediate tensor kept; quantized tensors are dequantized; tensors are paired by
name where the names agree, otherwise by aligning the two execution orders of (op, output
shape) (QUANTIZE/DEQUANTIZE ops are format changes and skipped). Per pair over all images:
``SQNR = 10·log10(Σ ref² / Σ (ref − q)²)`` dB, worst first.

The reference must be the same network (:func:`check_same_network`): same input and output
shapes, and compute-op sequences at least ``SAME_NETWORK_MIN_SIMILARITY`` alike (difflib ratio;
conversions of one network score 1.0, since QUANTIZE/DEQUANTIZE are left out). An unrelated
reference would otherwise pair tensors by coincidence and print meaningless (negative) SQNRs.

Several files against one reference (:func:`layer_sqnr_many`, e.g. the fp16 and int8 files of one
export against its fp32 file, as the report's benchmark step does) run the reference once per
image, and give each file the figures :func:`layer_sqnr` gives it alone.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.runtime import TensorSpec, TFLiteModel
from workbench.tflite_graph import TFLiteGraph, read_graph

SAME_NETWORK_MIN_SIMILARITY = 0.9
_FORMAT_OPS = ("QUANTIZE", "DEQUANTIZE")  # format changes, not computation: skipped when pairing


@dataclass
class LayerSQNR:
    """SQNR of one intermediate tensor against its float reference (``inf``: identical)."""

    tensor: str
    op: str
    op_index: int
    shape: tuple[int, ...]
    sqnr_db: float
    reference_tensor: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["sqnr_db"] = self.sqnr_db if math.isfinite(self.sqnr_db) else None  # JSON has no inf
        return out


def _comparable(graph: TFLiteGraph) -> list[tuple[int, int]]:
    """(op index, tensor index) of every non-constant numeric output of a compute op, in order."""
    out = []
    for op in graph.ops:
        if op.op in _FORMAT_OPS:
            continue
        for t in op.outputs:
            tensor = graph.tensors[t] if t >= 0 else None
            if tensor is not None and not tensor.is_constant and tensor.dtype != "object":
                out.append((op.index, t))
    return out


def match_tensors(graph: TFLiteGraph, reference: TFLiteGraph) -> list[tuple[int, int]]:
    """Pairs (tensor in ``graph``, tensor in ``reference``) that hold the same activation.

    Same name and shape first; the rest by aligning the two execution orders of (op, shape).
    """
    ours, theirs = _comparable(graph), _comparable(reference)
    ref_by_name = {reference.tensors[t].name: t for _, t in theirs}
    pairs: dict[int, int] = {}
    for _, t in ours:
        r = ref_by_name.get(graph.tensors[t].name)
        if r is not None and graph.tensors[t].shape == reference.tensors[r].shape and r not in pairs.values():
            pairs[t] = r
    used = set(pairs.values())
    rest_ours = [(i, t) for i, t in ours if t not in pairs]
    rest_theirs = [(i, t) for i, t in theirs if t not in used]

    def key(g: TFLiteGraph, i: int, t: int) -> tuple:
        return (g.ops[i].op, g.tensors[t].shape)

    a = [key(graph, i, t) for i, t in rest_ours]
    b = [key(reference, i, t) for i, t in rest_theirs]
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            pairs[rest_ours[block.a + k][1]] = rest_theirs[block.b + k][1]
    order = {t: n for n, (_, t) in enumerate(ours)}
    return sorted(pairs.items(), key=lambda p: order[p[0]])


def same_network(path: str | Path, reference: str | Path) -> bool:
    """Whether :func:`check_same_network` accepts ``reference`` for the file at ``path``."""
    from workbench.tflite_graph import read_graph

    try:
        check_same_network(read_graph(path), read_graph(reference), reference)
    except WorkbenchError:
        return False
    return True


def check_same_network(
    graph: TFLiteGraph, reference: TFLiteGraph, reference_path: str | Path | None = None
) -> float:
    """Raise unless ``reference`` is the same network as ``graph``; return the op-sequence similarity.

    Example:
        >>> # check_same_network(read_graph("int8.tflite"), read_graph("fp32.tflite"))   # 1.0
    """

    def shapes(g: TFLiteGraph, tensors) -> list[tuple[int, ...]]:
        return [tuple(g.tensors[t].shape) for t in tensors]

    def fail(problem: str) -> None:
        raise WorkbenchError(f"is not a reference of the same network: {problem}", path=reference_path)

    if shapes(graph, graph.inputs) != shapes(reference, reference.inputs):
        fail(
            f"input shape {shapes(reference, reference.inputs)} vs the model's {shapes(graph, graph.inputs)}"
        )
    ours, theirs = sorted(shapes(graph, graph.outputs)), sorted(shapes(reference, reference.outputs))
    if ours != theirs:
        fail(f"output shapes {theirs} vs the model's {ours}")
    a = [op.op for op in graph.ops if op.op not in _FORMAT_OPS]
    b = [op.op for op in reference.ops if op.op not in _FORMAT_OPS]
    similarity = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    if similarity < SAME_NETWORK_MIN_SIMILARITY:
        fail(
            f"its {len(b)} compute ops match the model's {len(a)} at only {similarity:.0%} "
            f"(at least {SAME_NETWORK_MIN_SIMILARITY:.0%} needed)"
        )
    return similarity


def layer_sqnr(
    model_path: str | Path,
    reference_path: str | Path,
    images: Sequence[np.ndarray],
    preprocess: str | None = None,
    threads: int = 2,
) -> list[LayerSQNR]:
    """Per-layer SQNR (dB) of ``model_path`` against ``reference_path`` on RGB ``images``, worst first.

    Both models get the same pre-processed input (``model_path``'s pre-processing, or ``preprocess``).

    Example:
        >>> # layer_sqnr("int8.tflite", "fp32.tflite", [load_image(p) for p in paths])[0].sqnr_db
    """
    return layer_sqnr_many([model_path], reference_path, images, preprocess, threads)[0]


def layer_sqnr_many(
    model_paths: Sequence[str | Path],
    reference_path: str | Path,
    images: Sequence[np.ndarray],
    preprocess: str | None = None,
    threads: int = 2,
) -> list[list[LayerSQNR]]:
    """:func:`layer_sqnr` of each of ``model_paths`` against one reference (e.g. the fp16 and int8
    files of one export against its fp32 file): the reference runs once per image and input,
    not once per model, and each model's figures are those :func:`layer_sqnr` gives it alone."""
    if not images:
        raise WorkbenchError("per-layer SQNR needs at least one calibration image")
    models = [TFLiteModel(path, threads, preprocess, preserve_all_tensors=True) for path in model_paths]
    # the reference is fed each model's own input (its pre-processing mode is not used)
    ref = TFLiteModel(reference_path, threads, models[0].preprocess_mode, preserve_all_tensors=True)
    ref_graph = read_graph(reference_path)
    ref_specs = {d["index"]: TensorSpec.from_details(d) for d in ref.interpreter.get_tensor_details()}
    setups = []
    for path, model in zip(model_paths, models, strict=True):
        if ref.input_hw != model.input_hw:
            raise WorkbenchError(
                f"reference input size {ref.input_hw} differs from the model's {model.input_hw}",
                path=reference_path,
            )
        graph = read_graph(path)
        check_same_network(graph, ref_graph, reference_path)
        pairs = match_tensors(graph, ref_graph)
        if not pairs:
            raise WorkbenchError(
                "no tensors could be matched between model and reference", path=reference_path
            )
        specs = {d["index"]: TensorSpec.from_details(d) for d in model.interpreter.get_tensor_details()}
        setups.append((model, graph, pairs, specs, np.zeros(len(pairs)), np.zeros(len(pairs))))
    wanted = sorted({r for setup in setups for _, r in setup[2]})  # reference tensors any model compares
    for image in tqdm(images, desc="per-layer SQNR", leave=False):
        reference: dict[bytes, tuple[dict[int, np.ndarray], dict[int, float]]] = {}
        for model, _, pairs, specs, signal, noise in setups:
            x, _ = model.preprocess(image)
            key = x.tobytes()
            if key not in reference:  # float activations of the reference on this input, and their energy
                ref.run(x)
                floats = {
                    r: ref_specs[r].dequantize(ref.interpreter.get_tensor(r)).astype(np.float64)
                    for r in wanted
                }
                reference[key] = floats, {r: float(np.square(f).sum()) for r, f in floats.items()}
            floats, energy = reference[key]
            model.run(x)
            for k, (t, r) in enumerate(pairs):
                q = specs[t].dequantize(model.interpreter.get_tensor(t)).astype(np.float64)
                signal[k] += energy[r]
                noise[k] += float(np.square(floats[r] - q).sum())
    out = []
    for _, graph, pairs, _, signal, noise in setups:
        producers = graph.producers
        results = []
        for k, (t, r) in enumerate(pairs):
            with np.errstate(divide="ignore", invalid="ignore"):
                db = float(10 * np.log10(signal[k] / noise[k])) if noise[k] > 0 else math.inf
            op = graph.ops[producers[t]]
            results.append(
                LayerSQNR(
                    graph.tensors[t].name,
                    op.op,
                    op.index,
                    graph.tensors[t].shape,
                    db,
                    ref_graph.tensors[r].name,
                )
            )
        out.append(sorted(results, key=lambda s: (s.sqnr_db, s.op_index)))
    return out
