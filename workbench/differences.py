"""The AP differences a report prints, each with a paired bootstrap 95 % interval over images.

Per model and image size: what int8 costs (``int8-per-channel − fp32``, ``int8-per-tensor − fp32``,
``fp16 − fp32``) and what per-tensor costs over per-channel (``int8-per-tensor −
int8-per-channel``); and ours against the zoo's file of the same size and scheme. On a few hundred
images such differences are often the size of the noise: the interval says which are not.

Reads the COCO-protocol detections 03_evaluate kept (``eval/<variant>/coco/detections.json``), so
it runs from a finished run folder alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.config import Scheme
from workbench.errors import WorkbenchError
from workbench.metrics.bootstrap import N_BOOT, ApBootstrap, Interval

# (a, b) scheme pairs whose AP(a) − AP(b) a report states, within one model and image size
SCHEME_PAIRS = (
    (Scheme.INT8_PER_CHANNEL, Scheme.FP32),
    (Scheme.INT8_PER_TENSOR, Scheme.FP32),
    (Scheme.INT8_PER_TENSOR, Scheme.INT8_PER_CHANNEL),
    (Scheme.FP16, Scheme.FP32),
)
METRICS = {"ap": None, "ap50": 0.5}  # column -> IoU/OKS threshold (None: 0.50:0.95)


@dataclass
class Difference:
    """AP(a) − AP(b) of two variants on the same images, with its bootstrap interval."""

    model: str
    imgsz: int
    comparison: str  # e.g. "int8-per-tensor − int8-per-channel", "ours − zoo (int8-per-channel)"
    a: str  # variant names
    b: str
    metric: str  # "ap" or "ap50"
    estimate: float
    low: float
    high: float
    excludes_zero: bool
    n_images: int
    n_boot: int

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {tuple(METRICS)}, got {self.metric!r}")
        if not self.low <= self.high:
            raise ValueError(f"interval low {self.low} > high {self.high}")

    @classmethod
    def of(cls, model: str, imgsz: int, comparison: str, a: str, b: str, metric: str, iv: Interval):
        return cls(
            model, int(imgsz), comparison, a, b, metric,
            iv.estimate, iv.low, iv.high, iv.excludes_zero, iv.n_images, iv.n_boot,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(table: pd.DataFrame) -> list[tuple[str, int, str, str, str]]:
    """(model, imgsz, comparison, variant a, variant b) for every difference the report states."""
    pairs = []
    recipe = table["recipe"].fillna("").astype(str) if "recipe" in table else pd.Series("", index=table.index)
    for (model, imgsz), rows in table.groupby(["model", "imgsz"], sort=True):
        plain = rows[recipe[rows.index] == ""]
        by_scheme = {r.scheme: r.variant for r in plain.itertuples()}
        for a, b in SCHEME_PAIRS:
            if a.value in by_scheme and b.value in by_scheme:
                pairs.append((model, imgsz, f"{a.value} − {b.value}", by_scheme[a.value], by_scheme[b.value]))
        # a recovery recipe against fp32 (what is left to recover) and against its plain scheme (what it won)
        for r in rows[recipe[rows.index] != ""].itertuples():
            label = f"{r.scheme}+{recipe[r.Index]}"
            for base in (Scheme.FP32.value, r.scheme):
                if base in by_scheme:
                    pairs.append((model, imgsz, f"{label} − {base}", r.variant, by_scheme[base]))
    ours = table[(table["source"] == "ours") & (recipe == "")]
    for zoo in table[table["source"] == "zoo"].itertuples():
        same = ours[(ours["imgsz"] == zoo.imgsz) & (ours["scheme"] == zoo.scheme)]
        for mine in same.itertuples():
            pairs.append(
                (mine.model, zoo.imgsz, f"ours − {zoo.model} ({zoo.scheme})", mine.variant, zoo.variant)
            )
    return pairs


def ap_differences(
    table: pd.DataFrame,
    run_dir: str | Path,
    gt: Any,
    n_images: int | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Intervals for every variant's AP and every stated difference.

    Args:
        table: the results table (variant, model, source, imgsz, scheme, metric).
        run_dir: the run folder holding ``eval/<variant>/coco/detections.json``.
        gt: the evaluation ground truth (COCO JSON path or dict).
        n_images: the first N images were evaluated (``eval_images``); None: all.

    Returns:
        (per-variant intervals: variant, ap_low, ap_high, ap50_low, ap50_high;
        differences: one :class:`Difference` per row).
    """
    from workbench.metrics.coco import load_gt_dict

    gt_dict, _ = load_gt_dict(gt)
    iou_type = table["metric"].iloc[0]
    img_ids = [img["id"] for img in gt_dict["images"]][:n_images]
    detections = {}
    for variant in table["variant"]:
        path = Path(run_dir) / "eval" / variant / "coco" / "detections.json"
        if not path.is_file():
            raise WorkbenchError(
                "no COCO-protocol detections for the intervals (is 'coco' among protocols?)", path=path
            )
        detections[variant] = json.loads(path.read_text())
    # the categories the models predict (as CocoEvaluator scores them), e.g. person on an 80-class GT
    gt_cats = {c["id"] for c in gt_dict["categories"]}
    cat_ids = sorted({d["category_id"] for dets in detections.values() for d in dets} & gt_cats) or None
    boot = ApBootstrap(gt_dict, iou_type, img_ids=img_ids, cat_ids=cat_ids, n_boot=n_boot, seed=seed)
    per_variant = []
    for variant in tqdm(list(table["variant"]), desc="bootstrap", leave=False):
        row: dict[str, Any] = {"variant": variant}
        for column, iou in METRICS.items():
            iv = boot.interval(detections[variant], iou)
            row[f"{column}_low"], row[f"{column}_high"] = iv.low, iv.high
        per_variant.append(row)
    diffs = [
        Difference.of(
            model, imgsz, comparison, a, b, column, boot.difference(detections[a], detections[b], iou)
        )
        for model, imgsz, comparison, a, b in _pairs(table)
        for column, iou in METRICS.items()
    ]
    columns = list(Difference.__dataclass_fields__)
    return pd.DataFrame(per_variant), pd.DataFrame([d.to_dict() for d in diffs], columns=columns)
