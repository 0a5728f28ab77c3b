"""ST's NPU boards: STM32N6 (Neural-ART) and STM32MP2 (VeriSilicon NPU beside a GPU).

No ST compiler runs offline, so each op is placed by ST's documented rules and the latency comes
from a small model fitted to the figures ST publishes in its model-zoo cards (``../shared/seeds``):
a power law in the MACs with a scale per engine (:class:`LatencyModel`). Every estimate carries the
model's leave-one-out error over those published points (``latency_source: fitted``); ST's own
zoo files also show the published figure beside the estimate.

Placement rules, with their sources:
- MP2 NPU: 8-bit per-tensor (asymmetric) int8 only; per-channel weights run mainly on the GPU;
  float ops on the CPU; int16 tensors are refused by the TFLite VX delegate (CPU). Sources: ST wiki
  "How to deploy your NN model on STM32MPU" / X-LINUX-AI's VX delegate notes, and the cards (seed
  000, 001, 004): "To get the most out of MP25 NPU hardware acceleration, please use per-tensor
  quantization"; per-channel pose 256: 11.7 % NPU / 88.3 % GPU, per-tensor: 86.8 % NPU.
- N6 Neural-ART: int8 per-channel and per-tensor on the NPU, float ops on the CPU (ST Edge AI
  documentation, "Neural-ART accelerator" supported operators; the cards show pc files NPU/MCU).
- An op whose placement ST does not document (GATHER on either chip) is ``unknown``, not guessed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.targets.base import OpPlacement, Target, TargetEstimate
from workbench.targets.macs import op_macs

UNDOCUMENTED = {"GATHER", "GATHER_ND"}  # placement not documented by ST for either chip
CARDS = "ST model-zoo cards in ../shared/seeds (pose: 000, seg: 001, SSD: 004)"


@dataclass(frozen=True)
class PublishedPoint:
    """One latency ST publishes, with the MACs per engine of the file it was measured on (MMACs
    counted by :func:`workbench.targets.macs.op_macs` on ST's zoo file of that name)."""

    file: str
    ms: float
    mmacs: dict[str, float]


# MACs: pose and seg from ST's zoo files; SSD from the workbench's int8 conversions of ST's SSD .h5
# (the card's int8 files' sources), which count the same MACs as the zoo's older SSD files (tests)
N6_POINTS = (
    PublishedPoint("yolov8n_192_quant_pc_uf_pose_coco-st.tflite", 24.46, {"npu": 413.0}),
    PublishedPoint("yolov8n_256_quant_pc_uf_pose_coco-st.tflite", 35.79, {"npu": 734.2}),
    PublishedPoint("yolov8n_320_quant_pc_uf_pose_coco-st.tflite", 51.35, {"npu": 1147.2}),
    PublishedPoint("yolov8n_256_quant_pc_ii_seg_coco-st.tflite", 31.57, {"npu": 960.2}),
    PublishedPoint("yolov8n_320_quant_pc_ii_seg_coco-st.tflite", 41.87, {"npu": 1500.3}),
    PublishedPoint("st_ssd_mobilenet_v1_025_224_int8.tflite", 9.63, {"npu": 59.1}),
    PublishedPoint("st_ssd_mobilenet_v1_025_256_int8.tflite", 10.37, {"npu": 71.6}),
)
MP2_POINTS = (
    PublishedPoint("yolov8n_256_quant_pc_uf_pose_coco-st.tflite", 102.8, {"gpu": 734.2}),
    PublishedPoint("yolov8n_256_quant_pt_uf_pose_coco-st.tflite", 17.57, {"npu": 734.2}),
    PublishedPoint("yolov8n_256_quant_pc_ii_seg_coco-st.tflite", 19.84, {"npu": 960.2}),
    PublishedPoint("yolov8n_320_quant_pc_ii_seg_coco-st.tflite", 30.97, {"npu": 1500.3}),
    PublishedPoint("st_ssd_mobilenet_v1_025_192_int8.tflite", 12.34, {"gpu": 39.9}),
    PublishedPoint("st_ssd_mobilenet_v1_025_224_int8.tflite", 18.65, {"gpu": 59.1}),
    PublishedPoint("st_ssd_mobilenet_v1_025_256_int8.tflite", 14.33, {"gpu": 71.6}),
)


@dataclass(frozen=True)
class LatencyModel:
    """A power law in the MACs, scaled per engine: ``log ms = a + b log MMACs + sum_e c_e share_e``.

    ``share_e`` is the share of the MACs on engine ``e`` (the NPU is the baseline). A power law, not
    a line: ST's figures show small networks running at a lower MAC throughput than large ones
    (SSD MobileNet 0.25 at 59 MMACs takes 9.6 ms on the N6, YOLOv8n-seg at 1500 MMACs 41.9 ms).
    """

    engines: tuple[str, ...]  # every engine the points use; the first is the baseline
    coefficients: tuple[float, ...]  # a, b, then c_e for each engine after the first

    @classmethod
    def fit(cls, points: tuple[PublishedPoint, ...] | list[PublishedPoint]) -> LatencyModel:
        engines = tuple(sorted({e for p in points for e in p.mmacs}, key=lambda e: (e != "npu", e)))
        design = np.array([cls._features(engines, p.mmacs) for p in points])
        solution, *_ = np.linalg.lstsq(design, np.log([p.ms for p in points]), rcond=None)
        return cls(engines, tuple(float(c) for c in solution))

    @staticmethod
    def _features(engines: tuple[str, ...], mmacs: dict[str, float]) -> list[float]:
        total = sum(mmacs.get(e, 0.0) for e in engines)
        return [1.0, float(np.log(total)), *(mmacs.get(e, 0.0) / total for e in engines[1:])]

    def predict(self, mmacs: dict[str, float]) -> float:
        return float(np.exp(np.dot(self.coefficients, self._features(self.engines, mmacs))))

    def describe(self) -> str:
        a, b, *shares = self.coefficients
        scales = "".join(
            f" x {np.exp(c):.2f} on the {e}" for e, c in zip(self.engines[1:], shares, strict=True)
        )
        return f"fitted: {np.exp(a):.3f} ms x MMACs^{b:.3f}{scales}"


def leave_one_out(points: tuple[PublishedPoint, ...]) -> list[float]:
    """Absolute % error of each point predicted by the model fitted without it."""
    errors = []
    for i, point in enumerate(points):
        model = LatencyModel.fit([p for j, p in enumerate(points) if j != i])
        errors.append(abs(model.predict(point.mmacs) - point.ms) / point.ms * 100.0)
    return errors


def place_mp2(graph, op, granularity: dict[int, int]) -> str:
    """MP2: per-tensor int8 on the NPU, per-channel weights on the GPU, float / int16 on the CPU."""
    if op.op in UNDOCUMENTED:
        return "unknown"
    dtypes = {graph.tensors[t].dtype for t in (*op.inputs, *op.outputs) if t >= 0}
    if dtypes & {"float32", "float16", "int16"} and op.op not in ("QUANTIZE",):
        return "cpu"
    return "gpu" if granularity.get(op.index, 1) > 1 else "npu"


def place_n6(graph, op, granularity: dict[int, int]) -> str:
    """N6: int8 (per-channel or per-tensor) on the NPU, float on the CPU."""
    if op.op in UNDOCUMENTED:
        return "unknown"
    dtypes = {graph.tensors[t].dtype for t in (*op.inputs, *op.outputs) if t >= 0}
    return "cpu" if dtypes & {"float32", "float16"} and op.op != "QUANTIZE" else "npu"


class StBoardTarget(Target):
    """One ST board: ``place`` puts each op on an engine, a :class:`LatencyModel` fitted to
    ``points`` costs the MACs per engine. ``accelerator=False`` (CPU-only boards): no MAC share and
    no fallback ops; ``int8_only``: a file with float MACs is refused (ST publishes int8 figures only);
    ``io_buffers``: the RAM counts a buffer for every graph output, constant ones too, as ST's
    published memory figures do ("default STM32Cube.AI configuration with enabled input / output
    allocated option", seed 004): a constant output (the SSD's anchors) is copied into its buffer."""

    latency_source = "fitted"
    latency_label = "fitted estimate"

    def __init__(
        self, name: str, description: str, points: tuple[PublishedPoint, ...], place, sram_means: str,
        *, fitted_on: str = CARDS, accelerator: bool = True, int8_only: bool = False, io_buffers: bool = False,
    ) -> None:  # fmt: skip
        self.name, self.description, self.points, self.place = name, description, points, place
        self.sram_means, self.fitted_on = sram_means, fitted_on
        self.accelerator, self.int8_only, self.io_buffers = accelerator, int8_only, io_buffers
        self.model = LatencyModel.fit(points)
        self.loo_errors = leave_one_out(points)
        self.published = {p.file: p.ms for p in points}

    @property
    def loo_median_pct(self) -> float:
        return statistics.median(self.loo_errors)

    def estimate(self, model: str | Path) -> TargetEstimate:
        from workbench.inspect import activation_arena
        from workbench.tflite_graph import read_graph

        model = Path(model)
        if not model.is_file():
            raise WorkbenchError("model file not found", path=model)
        graph = read_graph(model)
        scales = {op.index: _weight_scales(graph, op) for op in graph.ops}
        placement = [
            OpPlacement(op.index, op.op, self.place(graph, op, scales), "ST's documented rules")
            for op in graph.ops
        ]
        mmacs: dict[str, float] = {}
        for op, where in zip(graph.ops, placement, strict=True):
            mmacs[where.engine] = mmacs.get(where.engine, 0.0) + op_macs(graph, op) / 1e6
        total = sum(mmacs.values())
        if total == 0:
            return TargetEstimate.failed(
                self.name, model, "no convolution MACs: the latency model has nothing to scale"
            )
        unfitted = {e: m for e, m in mmacs.items() if m > 0 and e not in self.model.engines}
        if self.int8_only and (float_macs := _float_mmacs(graph)):
            unfitted = {"cpu in float": float_macs}
        fallback = [p.op for p in placement if p.engine != "npu"] if self.accelerator else []
        if unfitted:  # e.g. float convolutions on the CPU: ST publishes no figure to fit them on
            where = ", ".join(f"{m:.1f} MMACs on the {e}" for e, m in unfitted.items())
            return TargetEstimate(
                target=self.name, model=str(model), placement=placement, fallback_ops=fallback,
                error=f"no latency model for {where} (ST publishes no such figure)",
            )  # fmt: skip
        provenance = {
            "model": self.model.describe(),
            "fitted_on": self.fitted_on, "points": len(self.points),
            "loo_median_pct": round(self.loo_median_pct, 1), "loo_max_pct": round(max(self.loo_errors), 1),
            "published_ms": self.published.get(model.name), "model_sha256": sha256_file(model),
            "not_costed": f"{sum(p.engine == 'unknown' for p in placement)} ops of undocumented placement",
            "sram_means": self.sram_means,
        }  # fmt: skip
        return TargetEstimate(
            target=self.name,
            model=str(model),
            latency_ms=max(self.model.predict(mmacs), 0.1),
            latency_source="fitted",
            latency_error_pct=round(self.loo_median_pct, 1),
            sram_bytes=activation_arena(graph).arena_bytes
            + (_constant_output_bytes(graph) if self.io_buffers else 0),
            flash_bytes=sum(t.nbytes for t in graph.tensors if t.is_constant),
            accelerator_mac_share=mmacs.get("npu", 0.0) / total if self.accelerator else None,
            fallback_ops=fallback,
            placement=placement,
            provenance=provenance,
        )


def _constant_output_bytes(graph) -> int:
    """Bytes of the graph outputs that are constants (not in the activation arena)."""
    return sum(graph.tensors[t].nbytes for t in graph.outputs if graph.tensors[t].is_constant)


def _float_mmacs(graph) -> float:
    """MMACs of the ops that read or write float tensors."""
    return sum(
        op_macs(graph, op) / 1e6
        for op in graph.ops
        if {graph.tensors[t].dtype for t in (*op.inputs, *op.outputs) if t >= 0} & {"float32", "float16"}
    )


def _weight_scales(graph, op) -> int:
    """Scales of the op's constant weights (1: per-tensor; >1: per-channel; 0: none)."""
    constants = [graph.tensors[t] for t in op.inputs[1:2] if t >= 0 and graph.tensors[t].is_constant]
    return max((t.scales_len for t in constants), default=0)


# What ``sram_bytes`` means on each board; the figures are checked against ST's published RAM in
# benchmarks/targets.py (benchmarks/results/targets.json, "memory"; docs/targets.md)
# published / estimate over ST's 7 published N6 internal-RAM figures (measured by benchmarks/targets.py
# on ST's zoo files and the workbench's conversions of ST's SSD .h5; tests check the range holds)
N6_RAM_RATIO = (0.96, 2.05)
N6_SRAM = (
    "estimate: peak live activations of the .tflite (greedy arena, TFLite Micro's planner) plus a "
    "buffer per constant output (ST's I/O-allocated option), not ST's Neural-ART allocation; ST's "
    f"published N6 internal RAM (seeds 000, 001, 004) is {N6_RAM_RATIO[0]}x to {N6_RAM_RATIO[1]}x this "
    "figure on its 7 published models: the activations' size, neither the RAM the N6 reserves nor a "
    "bound on it"
)
MP2_SRAM = (
    "estimate: peak live activations of the .tflite (greedy arena, TFLite Micro's planner); ST "
    "publishes no MP2 RAM figure (DDR-based Linux board), so it is unchecked"
)
STM32N6 = StBoardTarget(
    "stm32n6",
    "STM32N6 Neural-ART NPU: ST's rules, latency fitted to ST's cards",
    N6_POINTS,
    place_n6,
    N6_SRAM,
    io_buffers=True,
)
STM32MP2 = StBoardTarget(
    "stm32mp2",
    "STM32MP2 NPU (per-tensor) + GPU: ST's rules, latency fitted to ST's cards",
    MP2_POINTS,
    place_mp2,
    MP2_SRAM,
)
