"""What ST publishes about memory and placement, as its model-zoo cards print it (``../shared/seeds``).

Two tables the ST targets are checked against (tests, ``benchmarks/targets.py``, docs/targets.md):

- :data:`PUBLISHED_RAM`: activation memory per board, model and image size, in KiB (ST's cards
  say KiB). N6: "Internal RAM" of the NPU memory-footprint tables (pose: seed 000, STM32Cube.AI
  10.2.0 / STEdgeAI Core 2.2.0; seg: seed 001, STEdgeAI Core 3.0.0; SSD: seed 004, STM32Cube.AI
  10.0.0 / STEdgeAI Core 2.0.0), external RAM 0.0 in every row. H7: "Activation RAM" of the SSD
  card's MCU table (seed 004, STM32Cube.AI 10.0.0); its runtime RAM (30-34 KiB) is separate.
- :data:`PUBLISHED_MP2_SHARES`: the STM32MP2's % NPU / % GPU of each published MP2 figure (pose:
  seed 000; seg: seed 001; SSD: seed 004; %CPU 0 in every row).

The pose and seg rows were measured on ST's zoo files of the given names; the SSD rows on the
card's int8 files, made by ST from the ``st_ssd_mobilenet_v1_025_<imgsz>.h5`` float files in
``../shared/weights/st`` (the zoo's ``ssd_mobilenet_v1_025_*_int8.tflite`` are older AI-ModelZoo
1.3 files), so the SSD rows are compared with per-channel conversions of those ``.h5`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

POSE = "yolov8n-pose"
SEG = "yolov8n-seg"
SSD = "st-ssd-mobilenet-v1-0.25"
# the zoo file (under ../shared/zoo/st) each published pose / seg row was measured on
ZOO_FILES = {
    (POSE, 192, "pc"): "pose_estimation/yolov8n_192_quant_pc_uf_pose_coco-st.tflite",
    (POSE, 256, "pc"): "pose_estimation/yolov8n_256_quant_pc_uf_pose_coco-st.tflite",
    (POSE, 320, "pc"): "pose_estimation/yolov8n_320_quant_pc_uf_pose_coco-st.tflite",
    (POSE, 256, "pt"): "pose_estimation/yolov8n_256_quant_pt_uf_pose_coco-st.tflite",
    (SEG, 256, "pc"): "segmentation/yolov8n_256_quant_pc_ii_seg_coco-st.tflite",
    (SEG, 320, "pc"): "segmentation/yolov8n_320_quant_pc_ii_seg_coco-st.tflite",
}
SSD_WEIGHTS = "st/st_ssd_mobilenet_v1_025_{imgsz}.h5"  # under ../shared/weights
SEED = {POSE: "seed 000 (ST YOLOv8n pose card)", SEG: "seed 001 (ST YOLOv8n seg card)",
        SSD: "seed 004 (ST SSD MobileNet v1 0.25 card)"}  # fmt: skip


@dataclass(frozen=True)
class PublishedMemory:
    board: str  # "stm32n6" or "stm32h7"
    model: str
    imgsz: int
    kib: float
    what: str  # ST's column name

    @property
    def source(self) -> str:
        return SEED[self.model]


PUBLISHED_RAM = (
    PublishedMemory("stm32n6", POSE, 192, 477.56, "Internal RAM"),
    PublishedMemory("stm32n6", POSE, 256, 1135.0, "Internal RAM"),
    PublishedMemory("stm32n6", POSE, 320, 2264.27, "Internal RAM"),
    PublishedMemory("stm32n6", SEG, 256, 855.0, "Internal RAM"),
    PublishedMemory("stm32n6", SEG, 320, 1413.89, "Internal RAM"),
    PublishedMemory("stm32n6", SSD, 224, 694.64, "Internal RAM"),
    PublishedMemory("stm32n6", SSD, 256, 1002.64, "Internal RAM"),
    PublishedMemory("stm32h7", SSD, 192, 266.3, "Activation RAM"),
    PublishedMemory("stm32h7", SSD, 224, 379.6, "Activation RAM"),
    PublishedMemory("stm32h7", SSD, 256, 456.1, "Activation RAM"),
)

# weights flash, the same tables (N6 "Weights Flash": seeds 000, 001, 004; H7 "Weights Flash": seed 004);
# compared with the targets' flash_bytes (the file's constant tensors)
PUBLISHED_FLASH = (
    PublishedMemory("stm32n6", POSE, 192, 3247.89, "Weights Flash"),
    PublishedMemory("stm32n6", POSE, 256, 3265.22, "Weights Flash"),
    PublishedMemory("stm32n6", POSE, 320, 3263.72, "Weights Flash"),
    PublishedMemory("stm32n6", SEG, 256, 3393.42, "Weights Flash"),
    PublishedMemory("stm32n6", SEG, 320, 3435.34, "Weights Flash"),
    PublishedMemory("stm32n6", SSD, 224, 827.16, "Weights Flash"),
    PublishedMemory("stm32n6", SSD, 256, 826.91, "Weights Flash"),
    PublishedMemory("stm32h7", SSD, 192, 483.16, "Weights Flash"),
    PublishedMemory("stm32h7", SSD, 224, 675.64, "Weights Flash"),
    PublishedMemory("stm32h7", SSD, 256, 675.64, "Weights Flash"),
)


@dataclass(frozen=True)
class PublishedShares:
    """ST's MP2 split of one published figure (% of the inference time per engine, as printed)."""

    model: str
    imgsz: int
    weights: str  # "pc" or "pt": the quantization granularity the card names
    npu_pct: float
    gpu_pct: float

    @property
    def majority(self) -> str:
        return "npu" if self.npu_pct > self.gpu_pct else "gpu"


PUBLISHED_MP2_SHARES = (
    PublishedShares(POSE, 256, "pc", 11.70, 88.30),
    PublishedShares(POSE, 256, "pt", 86.79, 13.21),
    PublishedShares(SEG, 256, "pc", 91.71, 8.29),  # named pc; the file holds per-tensor weights
    PublishedShares(SEG, 320, "pc", 93.59, 6.41),
    PublishedShares(SSD, 192, "pc", 15.35, 84.65),
    PublishedShares(SSD, 224, "pc", 14.02, 85.98),
    PublishedShares(SSD, 256, "pc", 14.12, 85.88),
)


def ram_check(files: dict[tuple[str, int], Path]) -> list[dict[str, Any]]:
    """Each :data:`PUBLISHED_RAM` row beside the board's target's ``sram_bytes`` for
    ``files[(model, imgsz)]``; a row whose file is missing says so instead of a figure.
    ``error_pct`` = (estimate - published) / published."""
    return memory_check(PUBLISHED_RAM, "sram_bytes", files)


def flash_check(files: dict[tuple[str, int], Path]) -> list[dict[str, Any]]:
    """:func:`ram_check` for :data:`PUBLISHED_FLASH` and the targets' ``flash_bytes``."""
    return memory_check(PUBLISHED_FLASH, "flash_bytes", files)


def memory_check(table, field: str, files: dict[tuple[str, int], Path]) -> list[dict[str, Any]]:
    from workbench.fileio import sha256_file
    from workbench.targets import get_target

    rows = []
    for row in table:
        out = {"board": row.board, "model": row.model, "imgsz": row.imgsz, "published": row.what,
               "published_kib": row.kib, "source": row.source}  # fmt: skip
        path = files.get((row.model, row.imgsz))
        if path is None or not Path(path).is_file():
            rows.append({**out, "error": f"file not found: {path}"})
            continue
        estimate_kib = getattr(get_target(row.board).estimate(path), field) / 1024
        rows.append({
            **out, "file": Path(path).name, "sha256": sha256_file(path), "estimate_kib": round(estimate_kib, 1),
            "error_pct": round((estimate_kib - row.kib) / row.kib * 100, 1),
            "published_over_estimate": round(row.kib / estimate_kib, 3),
        })  # fmt: skip
    return rows


def placement_check(target, files: dict[tuple[str, int, str], Path]) -> list[dict[str, Any]]:
    """Each :data:`PUBLISHED_MP2_SHARES` row beside ``target``'s placement of
    ``files[(model, imgsz, weights)]``: the engine holding most of its MACs against ST's majority
    engine (``match``). A row whose file is missing or whose estimate failed says so."""
    rows = []
    for row in PUBLISHED_MP2_SHARES:
        out = {"model": row.model, "imgsz": row.imgsz, "weights": row.weights, "published_npu_pct": row.npu_pct,
               "published_gpu_pct": row.gpu_pct, "published_majority": row.majority, "source": SEED[row.model]}  # fmt: skip
        path = files.get((row.model, row.imgsz, row.weights))
        if path is None or not Path(path).is_file():
            rows.append({**out, "error": f"file not found: {path}"})
            continue
        estimate = target.estimate(path)
        if estimate.error is not None:
            rows.append({**out, "file": Path(path).name, "error": estimate.error})
            continue
        macs = engine_macs(path, estimate.placement)
        majority = max(sorted(macs), key=macs.get)
        shares = {
            f"estimate_{e}_mac_pct": round(m / sum(macs.values()) * 100, 1) for e, m in sorted(macs.items())
        }
        rows.append({**out, "file": Path(path).name, **shares, "estimate_majority": majority,
                     "match": majority == row.majority})  # fmt: skip
    return rows


def engine_macs(path: str | Path, placement) -> dict[str, int]:
    """MACs of ``path`` per engine of ``placement`` (:func:`workbench.targets.macs.op_macs`)."""
    from workbench.targets.macs import op_macs
    from workbench.tflite_graph import read_graph

    graph = read_graph(path)
    engine = {p.index: p.engine for p in placement}
    macs: dict[str, int] = {}
    for op in graph.ops:
        macs[engine[op.index]] = macs.get(engine[op.index], 0) + op_macs(graph, op)
    return macs
