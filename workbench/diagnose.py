"""Where does an int8 file lose its accuracy? Output-scale audit and per-block sensitivity in AP.

1. **Output-scale audit** (:func:`audit_outputs`): each output tensor's int8 scale and the pixel
   step it implies at this image size — for a normalized one-tensor head, ``scale × imgsz`` pixels
   for every coordinate; for a split head (stride units) ``scale × stride`` for box distances and
   ``2 × scale × stride`` for keypoint offsets. Then the AP of the *float* reference with only its
   outputs rounded to those scales: the share of the loss the output tensors alone explain.
2. **Sensitivity** (:func:`block_sensitivity`): the model is calibrated once and re-quantized with
   one block of ops kept in float at a time (:class:`~workbench.recipes.selective.SelectiveQuantizer`,
   TF's ``QuantizationDebugger`` denylists); each file is scored on a small image slice (the loop
   is O(blocks) evaluations). "AP recovered" = that file's AP − the all-int8 file's AP on the slice.
   A block whose float version the converter cannot make into a valid file (e.g. an int8
   CONCATENATION left with mismatched input scales) gets AP NaN and is listed last.
3. **Top-k table**: blocks by AP recovered, with the worst per-layer SQNR inside the block
   (:func:`workbench.inspect.layer_sqnr`) and the widest channel-range ratio of its weights (what
   per-tensor weights suffer from).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from workbench.decode.yolo import STRIDES as LEVEL_STRIDES
from workbench.decode.yolo import anchor_count, level_sizes
from workbench.errors import WorkbenchError
from workbench.recipes.selective import Block, SelectiveQuantizer

if TYPE_CHECKING:
    from workbench.evaluate import EvalRunner

log = logging.getLogger(__name__)
DEFAULT_SLICE = 32
DEFAULT_BLOCK_SIZE = 16
STRIDES = (8, 32)


@dataclass
class OutputAudit:
    """One output tensor: its quantization and the pixel step that implies."""

    name: str
    shape: tuple[int, ...]
    role: str
    scale: float | None
    zero_point: int | None
    px_per_step: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), shape=list(self.shape))


@dataclass
class BlockSensitivity:
    """AP of the file with ``block`` kept in float, and the block's SQNR and channel-range ratio."""

    block: Block
    ap: float
    ap_recovered: float
    worst_sqnr_db: float | None
    channel_range_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "block"}
        out.update({k: None for k in ("ap", "ap_recovered") if math.isnan(out[k])})  # JSON has no NaN
        return dict(out, block=self.block.label, first_op=self.block.first_op, nodes=len(self.block.nodes))


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` measured about one int8 file."""

    model: str
    reference: str
    imgsz: int
    slice_images: int
    block_size: int
    ap_reference: float
    ap_model: float
    ap_outputs_only: float
    ap_rebuilt: float
    outputs: list[OutputAudit]
    blocks: list[BlockSensitivity] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("ap_reference", "ap_model", "ap_outputs_only", "ap_rebuilt"):
            value = getattr(self, key)
            if not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise ValueError(f"{key} = {value} is not a fraction")
        if self.slice_images < 1 or self.block_size < 1:
            raise ValueError("slice_images and block_size must be positive")

    def top(self, k: int = 5) -> list[BlockSensitivity]:
        """Blocks by AP recovered, best first; blocks without a valid file (NaN) last."""
        return sorted(
            self.blocks,
            key=lambda b: (math.isnan(b.ap_recovered), -np.nan_to_num(b.ap_recovered), b.block.index),
        )[:k]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("outputs", "blocks")}
        out["outputs"] = [o.to_dict() for o in self.outputs]
        out["blocks"] = [b.to_dict() for b in self.top(len(self.blocks))]
        return out

    def table(self, k: int = 5) -> str:
        lines = [
            f"model {self.model} vs {self.reference} at {self.imgsz} px; AP on the first "
            f"{self.slice_images} images (a slice: the sensitivity loop evaluates once per block)",
            f"  AP fp32 {self.ap_reference:.3f}   int8 {self.ap_model:.3f}   fp32 with int8-rounded outputs only "
            f"{self.ap_outputs_only:.3f}",
            "output scales:",
        ]
        for o in self.outputs:
            steps = ", ".join(f"{k} {v:.2f} px" for k, v in o.px_per_step.items()) or "-"
            scale = f"{o.scale:.5g}" if o.scale is not None else "float"
            lines.append(f"  {o.role:<8} {str(list(o.shape)):<16} scale {scale:<10} step {steps}")
        if self.blocks:
            lines.append(
                f"top {k} blocks kept in float (blocks of {self.block_size} ops; recovered vs the rebuilt "
                f"all-int8 file, AP {self.ap_rebuilt:.3f}):"
            )
            lines.append(f"  {'AP':>6} {'recov':>7} {'SQNR dB':>8} {'range x':>8}  block")
            for b in self.top(k):
                sqnr = f"{b.worst_sqnr_db:8.1f}" if b.worst_sqnr_db is not None else f"{'-':>8}"
                ratio = f"{b.channel_range_ratio:8.0f}" if b.channel_range_ratio is not None else f"{'-':>8}"
                lines.append(f"  {b.ap:6.3f} {b.ap_recovered:+7.3f} {sqnr} {ratio}  {b.block.label}")
        return "\n".join(lines)


# ---- 1. output audit -----------------------------------------------------------------------------
def output_role(channels: int, n_outputs: int, nc: int, kpt_shape: Sequence[int] | None) -> str:
    """What an output holds, from its channel count ("head" for a one-tensor head)."""
    if n_outputs == 1:
        return "head"
    k = kpt_shape[0] if kpt_shape else -1
    return {4: "boxes", nc: "scores", 2 * k: "kpt_xy", k: "kpt_vis"}.get(channels, "other")


def audit_outputs(model_path: str | Path) -> list[OutputAudit]:
    """Scale, zero point and implied pixel step of each output of an int8 ``.tflite``."""
    from workbench.runtime import TFLiteModel
    from workbench.tflite_graph import read_graph

    model = TFLiteModel(model_path)
    graph = read_graph(model_path)
    meta = model.metadata
    nc = len(meta.get("names") or {0: "person"})
    kpt = meta.get("kpt_shape")
    imgsz = model.input_hw[0]
    out = []
    for spec in model.outputs:
        scale, zp = spec.scale, spec.zero_point
        if scale is None:  # float output: read the int8 tensor its DEQUANTIZE reads
            producer = graph.producer(spec.index)
            if producer is not None and producer.op == "DEQUANTIZE":
                src = model.interpreter.get_tensor_details()[producer.inputs[0]]
                q = src["quantization_parameters"]
                if len(q["scales"]) == 1:
                    scale, zp = float(q["scales"][0]), int(q["zero_points"][0])
        # a split-levels output spans one stride level's anchors; the other dimension is channels
        level = {size: s for size, s in zip(level_sizes(model.input_hw), LEVEL_STRIDES, strict=True)}
        dims = list(spec.shape[1:])
        strides = [level[d] for d in dims if d in level] or list(STRIDES)
        channels = next((d for d in dims if d not in level and d != anchor_count(model.input_hw)), min(dims))
        role = output_role(channels, len(model.outputs), nc, kpt)
        steps: dict[str, float] = {}
        if scale is not None:
            if role == "head":
                steps = {"coordinates": scale * imgsz}
            elif role in ("boxes", "kpt_xy"):
                factor = 2.0 if role == "kpt_xy" else 1.0
                steps = {f"stride {s}": factor * scale * s for s in strides}
        out.append(OutputAudit(spec.name, spec.shape, role, scale, zp, steps))
    return out


def rounded_outputs(audit: Sequence[OutputAudit]) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """A function rounding float outputs to the int8 grid of ``audit`` (matched by shape), clipping to its range."""
    by_shape = {tuple(a.shape): a for a in audit}

    def apply(outputs: list[np.ndarray]) -> list[np.ndarray]:
        result = []
        for x in outputs:
            a = by_shape.get(tuple(x.shape))
            if a is None or a.scale is None:
                result.append(x)
                continue
            q = np.clip(np.round(x / a.scale) + a.zero_point, -128, 127)
            result.append(((q - a.zero_point) * a.scale).astype(np.float32))
        return result

    return apply


# ---- 2. sensitivity ------------------------------------------------------------------------------
def block_sensitivity(
    selective: SelectiveQuantizer,
    blocks: Sequence[Block],
    score: Callable[[Path], float],
    metadata: dict[str, Any] | None = None,
) -> tuple[float, list[tuple[Block, float]]]:
    """Score of the all-int8 file, and of each file with one block kept in float (same order).

    ``score`` takes a ``.tflite`` path (written with ``metadata`` appended) and returns a number
    where higher is better (AP on a slice; output SQNR in tests).
    """
    from workbench.runtime import write_tflite_metadata

    with tempfile.TemporaryDirectory(prefix="wb-diagnose-") as scratch:
        path = Path(scratch) / "candidate.tflite"

        def scored(nodes: Sequence[str]) -> float:
            path.write_bytes(selective.convert(nodes, "uf"))
            if metadata:
                write_tflite_metadata(path, metadata)
            return float(score(path))

        def scored_or_nan(nodes: Sequence[str]) -> float:
            try:
                return scored(nodes)
            except WorkbenchError as err:  # the converter's file does not load
                log.warning("block left out: %s", err)
                return math.nan

        base = scored([])
        results = [(b, scored_or_nan(b.nodes)) for b in tqdm(blocks, desc="float one block at a time")]
    return base, results


def channel_range_ratio(selective: SelectiveQuantizer, block: Block) -> float | None:
    """Widest max/min ratio of per-output-channel weight ranges among the block's convolutions."""
    from workbench.inspect import WEIGHT_OPS
    from workbench.runtime import make_interpreter

    if not hasattr(selective, "_weights_interpreter"):
        selective._weights_interpreter = make_interpreter(selective.calibrated_path)
    interp = selective._weights_interpreter
    graph = selective.graph
    worst = None
    for op in graph.ops[block.first_op : block.last_op + 1]:
        if op.op not in WEIGHT_OPS or len(op.inputs) < 2 or not graph.tensors[op.inputs[1]].is_constant:
            continue
        w = interp.get_tensor(op.inputs[1]).astype(np.float64)
        axis = WEIGHT_OPS[op.op]
        ranges = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
        if len(ranges) > 1 and ranges.max() > 0:
            ratio = float(ranges.max() / max(ranges.min(), 1e-12))
            worst = ratio if worst is None else max(worst, ratio)
    return worst


# ---- entry point ---------------------------------------------------------------------------------
def check_inputs_match(model: str | Path, reference: str | Path, saved_model: str | Path) -> None:
    """Refuse, before any work, a ``reference`` that is not ``model``'s network in float, and a
    ``saved_model`` exported from other weights or at another size than ``model`` records."""
    from workbench.exported import ExportResult
    from workbench.runtime import read_tflite_metadata
    from workbench.sqnr import check_same_network
    from workbench.tflite_graph import read_graph

    check_same_network(read_graph(model), read_graph(reference), reference)
    recorded = read_tflite_metadata(model).get("workbench", {})
    try:
        export = ExportResult.load(saved_model)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise WorkbenchError(
            f"not a SavedModel written by `workbench export` ({err})", path=saved_model
        ) from None
    for key, value in (("weights_sha256", export.weights_sha256), ("imgsz", export.imgsz)):
        if recorded.get(key) is not None and recorded[key] != value:
            raise WorkbenchError(
                f"was not converted from this SavedModel ({key} {recorded[key]} in the file, {value} in "
                f"{saved_model})",
                path=model,
            )


def diagnose(
    model: str | Path,
    reference: str | Path,
    ann: str | Path,
    images: str | Path,
    saved_model: str | Path,
    calib: str | Path,
    *,
    task: str = "pose",
    slice_images: int = DEFAULT_SLICE,
    block_size: int = DEFAULT_BLOCK_SIZE,
    calib_count: int = 200,
    sqnr_images: int = 4,
    threads: int = 2,
    runner_for: Callable[..., EvalRunner],
) -> Diagnosis:
    """Diagnose ``model`` (int8 .tflite) against ``reference`` (its fp32 .tflite) on a COCO slice.

    ``saved_model`` (what both were converted from) and ``calib`` (the calibration images) rebuild
    the int8 conversion with one block at a time in float; per-channel or per-tensor as ``model``.
    ``runner_for(path, output_transform=...)`` gives each file's evaluation runner
    (``workbench.families.evaluation_runner``).

    Example:
        >>> # from workbench.families import evaluation_runner
        >>> # d = diagnose("pc.tflite", "fp32.tflite", "val.json", "val/", "build/sm256", "train/images",
        >>> #              runner_for=evaluation_runner)
        >>> # print(d.table())
    """
    from workbench.data.images import list_images, load_image
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.inspect import layer_sqnr, weight_granularity
    from workbench.quantize import calibration_batches
    from workbench.runtime import TFLiteModel, read_tflite_metadata
    from workbench.tflite_graph import read_graph

    if slice_images < 1 or block_size < 1:
        raise WorkbenchError(
            f"slice_images and block_size must be positive, got {slice_images}, {block_size}"
        )
    granularity = weight_granularity(read_graph(model)).verdict
    if granularity not in ("per-channel", "per-tensor"):
        raise WorkbenchError(
            f"diagnosis needs an int8 file, this one's weights are {granularity}", path=model
        )
    check_inputs_match(model, reference, saved_model)  # before any AP is computed
    imgsz = TFLiteModel(model).input_hw[0]

    settings = EvalSettings(ann, images, task, max_images=slice_images, threads=threads, progress=False)

    def ap(path: Path, transform=None) -> float:
        return evaluate(runner_for(path, output_transform=transform), settings).AP

    audit = audit_outputs(model)
    ap_ref, ap_model = ap(Path(reference)), ap(Path(model))
    ap_outputs = ap(Path(reference), rounded_outputs(audit))

    batches = calibration_batches(calib, imgsz, calib_count)
    selective = SelectiveQuantizer(saved_model, batches, per_tensor=granularity == "per-tensor")
    blocks = selective.blocks(block_size)
    base, scored = block_sensitivity(selective, blocks, ap, read_tflite_metadata(model))
    sqnr_images_list = [load_image(p) for p in list_images(images, sqnr_images)]
    sqnr = {s.tensor: s.sqnr_db for s in layer_sqnr(model, reference, sqnr_images_list, threads=threads)}
    results = []
    for block, block_ap in scored:
        values = [sqnr[n] for n in block.nodes if n in sqnr and math.isfinite(sqnr[n])]
        results.append(
            BlockSensitivity(
                block=block,
                ap=block_ap,
                ap_recovered=block_ap - base,
                worst_sqnr_db=min(values) if values else None,
                channel_range_ratio=channel_range_ratio(selective, block),
            )
        )
    return Diagnosis(
        model=str(model),
        reference=str(reference),
        imgsz=imgsz,
        slice_images=slice_images,
        block_size=block_size,
        ap_reference=ap_ref,
        ap_model=ap_model,
        ap_outputs_only=ap_outputs,
        ap_rebuilt=base,
        outputs=audit,
        blocks=results,
    )
