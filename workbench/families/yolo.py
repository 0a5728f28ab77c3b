"""The ``yolo`` family: Ultralytics pose / seg / detect models (``.pt`` weights or a model ``.yaml``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.calibration import DEFAULT_CALIB_COUNT
from workbench.config import Task
from workbench.errors import WorkbenchError
from workbench.families.base import ModelFamily, Preprocessing
from workbench.recipes.edits import ExportEdits

if TYPE_CHECKING:
    import numpy as np

    from workbench.config import RunConfig
    from workbench.data.prepare import PreparedDataset
    from workbench.evaluate import EvalRunner
    from workbench.exported import ExportResult

SEG_YOLO_DIR = "yolo-seg"  # the segmentation copy of a dataset's YOLO labels (polygons)


class YoloFamily(ModelFamily):
    """Ultralytics YOLOv8/YOLO11: letterbox to [0, 1], normalized-head SavedModel, YOLO decoder."""

    name = "yolo"
    tasks = (Task.POSE, Task.SEG, Task.DETECT)
    decoder = "yolo"
    export_edits = frozenset({"head", "equalize", "split_channels", "bias_correct", "qat", "kpt_percentile"})

    def claims(self, model: str | Path) -> bool:
        return Path(str(model)).suffix in (".pt", ".yaml", ".yml")

    def dataset(self, cfg: RunConfig, need_training: bool | None = None) -> PreparedDataset:
        """The prepared dataset; for seg on a dataset folder (synthetic or custom), checks the masks
        and writes a YOLO polygon copy to train on (``dataset: coco`` makes its own seg copy)."""
        from workbench.data.prepare import prepare_dataset

        self.check_task(cfg.task, cfg.model)
        prepared = prepare_dataset(cfg, need_training=need_training)
        if cfg.task is Task.SEG and cfg.dataset != "coco":
            prepared = _with_seg_labels(prepared)
        return prepared

    def retrain(
        self, cfg: RunConfig, start: Path | str, dataset: PreparedDataset, out: Path
    ) -> dict[str, Any]:
        from workbench.train import train_from_config

        if cfg.epochs == 0:
            return {"weights": str(start), "train_seconds": 0.0, "val": None}
        result = train_from_config(cfg, dataset.data_yaml, start, out)
        # Ultralytics' own val of the new weights (conf 0.001, IoU 0.7, 100 dets); 03_evaluate
        # measures the converted files with the workbench's evaluator.
        return {
            "weights": str(result.weights),
            "train_seconds": result.seconds,
            "val": {"map50_95": result.map50_95, "map50": result.map50},
        }

    def export(
        self,
        weights: str | Path,
        imgsz: int,
        out: Path,
        *,
        edits: ExportEdits = ExportEdits(),
        calib: str | Path | None = None,
        calib_count: int = DEFAULT_CALIB_COUNT,
        normalize: bool = True,
    ) -> ExportResult:
        """Ultralytics' SavedModel export (:func:`workbench.export.export_saved_model`), the model
        edited first as :func:`edit_model` says."""
        from workbench.export import export_saved_model

        self.check_edits(edits, weights)
        weights = Path(weights).resolve()  # as the export records it
        edit = functools.partial(
            edit_model, edits=edits, weights=weights, imgsz=imgsz, calib=calib, calib_count=calib_count
        )
        return export_saved_model(weights, imgsz, out, normalize=normalize, head=edits.head, edit=edit)

    def preprocessing(self, weights: str | Path) -> Preprocessing:
        return Preprocessing("letterbox", "bilinear", (0.0, 1.0))

    # ---- evaluation (workbench.families.yolo_eval) --------------------------------------------
    st_eval_iou = 0.5  # ST's YOLOv8 person-detection card
    weights_suffixes = (".pt",)

    def evaluation_runner(self, weights: str | Path) -> EvalRunner:
        from workbench.families.yolo_eval import UltralyticsRunner

        return UltralyticsRunner(weights, self.st_eval_iou)

    def claims_outputs(self, outputs: list[np.ndarray], input_hw: tuple[int, int]) -> bool:
        from workbench.families.yolo_eval import is_yolo_head

        return is_yolo_head(outputs, input_hw)

    def default_preprocess(self, protocol: str) -> str:
        """Letterbox, Ultralytics' pipeline, under ``coco``; resize under ``st``, as
        stm32ai-modelzoo-services evaluates (``aspect_ratio: fit``)."""
        return "resize" if protocol == "st" else "letterbox"

    def output_classes(
        self, outputs: list[np.ndarray], metadata: dict[str, Any], task: Task, input_hw: tuple[int, int]
    ) -> int:
        from workbench.families.yolo_eval import yolo_head_classes

        return yolo_head_classes(outputs, metadata, task, input_hw)


def edit_model(
    model,
    task: str,
    *,
    edits: ExportEdits,
    weights: str | Path,
    imgsz: int,
    calib: str | Path | None,
    calib_count: int,
) -> dict[str, Any]:
    """Apply ``edits`` to a loaded Ultralytics model and return what the export records of them.

    Order: equalize, bias-correct, qat, split-channels (last: its split modules are no longer plain
    convolutions). bias-correct and qat learn on the first calibration images (letterboxed, [0, 1]);
    the keypoint clamp is measured on the float model from ``weights`` (equalized too if asked) over
    ``calib_count`` of them.
    """
    import hashlib

    from workbench.calibration import calibration_batches, calibration_fingerprint
    from workbench.heads import keypoint_offset_percentiles
    from workbench.recipes.bias_correct import BIAS_CORRECTION_IMAGES, correct_biases
    from workbench.recipes.qat import QAT_IMAGES, QAT_TASKS, finetune_int8

    if edits.qat and task not in QAT_TASKS:
        raise WorkbenchError(
            f"qat distils the split head's outputs, built for pose and detect models, not {task}",
            path=weights,
        )
    record: dict[str, Any] = {"equalized": edits.equalize, "split_channels": edits.split_channels}
    learned = {}
    for option, count, granularity in (
        ("bias_corrected", BIAS_CORRECTION_IMAGES, edits.bias_correct),
        ("qat", QAT_IMAGES, edits.qat),
    ):
        if granularity:
            if calib is None:
                name = {"bias_corrected": "bias-correct", "qat": "qat"}[option]
                raise WorkbenchError(f"{name} learns from calibration images: pass --calib IMAGES")
            batches = calibration_batches(calib, imgsz, count)
            digest = hashlib.sha256(b"".join(b.tobytes() for b in batches)).hexdigest()[:8]
            record[option], learned[option] = f"{granularity}:{digest}", batches
    if edits.kpt_percentile is not None:
        if calib is None or task != "pose":
            raise WorkbenchError(
                "calib-percentile clamps keypoint offsets: it needs a pose model and --calib IMAGES"
            )
        batches = calibration_batches(calib, imgsz, calib_count)
        record["kpt_clip"] = keypoint_offset_percentiles(
            weights, batches, edits.kpt_percentile, edits.equalize
        )
        record["kpt_percentile"] = edits.kpt_percentile
    if edits.calibrated:
        record["calibration"] = calibration_fingerprint(calib, edits.calibration_images(calib_count))
    if edits.equalize:
        from workbench.recipes.equalize import equalize_model

        equalize_model(model)
    if "bias_corrected" in learned:
        correct_biases(model, learned["bias_corrected"], per_channel=edits.bias_correct == "per-channel")
    if "qat" in learned:
        finetune_int8(model, learned["qat"], per_channel=edits.qat == "per-channel")
    if edits.split_channels:
        record["split_channels"] = _split_channels(model, edits, imgsz)
    return record


def _split_channels(model, edits: ExportEdits, imgsz: int) -> float:
    """The split-channels edit on an Ultralytics model; returns the setting to record.

    Ultralytics-specific, and only here: BatchNorm is folded first (``fuse``); the graph is traced
    as the export runs it (``export=True``, the same head edit); the head's last convolutions stay
    whole, since the split head reads their rows by quantity (:func:`workbench.heads.split_head`).
    """
    import contextlib

    import torch

    from workbench.heads import split_head
    from workbench.recipes.split_channels import split_model

    model.fuse(verbose=False)
    model.eval()
    flagged = [m for m in model.modules() if hasattr(m, "export")]
    saved = [m.export for m in flagged]
    head = split_head(levels=edits.head == "levels") if edits.head != "single" else contextlib.nullcontext()
    try:
        for m in flagged:
            m.export = True
        with head:
            split_model(
                model,
                torch.zeros(1, 3, imgsz, imgsz),
                keep=_head_output_convs(model),
                min_gain=edits.split_channels,
            )
    finally:
        for m, value in zip(flagged, saved, strict=True):
            m.export = value
    return edits.split_channels


def _head_output_convs(model) -> frozenset[str]:
    """Names of the detection head's last convolutions: the split head cuts their rows by quantity
    itself (:func:`workbench.heads.split_head`), and its decode reads them as plain convolutions."""
    head = model.model[-1]
    last = {
        id(branch[-1])
        for attr in ("cv2", "cv3", "cv4", "cv5")
        for branch in getattr(head, attr, ())
        if hasattr(branch, "__getitem__")
    }
    return frozenset(name for name, m in model.named_modules() if id(m) in last)


def _with_seg_labels(prepared: PreparedDataset) -> PreparedDataset:
    """Check that both splits have masks and point ``data_yaml`` at a YOLO segmentation copy.

    The synthetic generator and ``workbench data convert`` write pose labels; Ultralytics' seg
    trainer reads polygons, so the copy is made once beside them (images symlinked).
    """
    import dataclasses

    import yaml

    from workbench.data.coco import load_coco
    from workbench.data.yolo import coco_to_yolo
    from workbench.fileio import atomic_path

    root = prepared.root
    train_ann = root / "annotations" / "train.json"
    for ann, images in ((prepared.val_ann, prepared.val_images), (train_ann, prepared.train_images)):
        if ann.is_file():
            try:
                load_coco(ann, images, task=Task.SEG)
            except WorkbenchError as err:
                raise WorkbenchError(
                    f"a seg config needs masks: {err.message}", path=err.path or ann
                ) from None
    seg_dir = root / SEG_YOLO_DIR
    if not (seg_dir / "data.yaml").is_file():
        if not train_ann.is_file():
            raise WorkbenchError("seg training needs annotations/train.json with masks", path=root)
        with atomic_path(seg_dir) as tmp:
            splits = {"train": (train_ann, prepared.train_images)}
            if prepared.val_ann.is_file():
                splits["val"] = (prepared.val_ann, prepared.val_images)
            for split, (ann, images) in splits.items():
                coco_to_yolo(ann, images, tmp, Task.SEG, split, link="symlink")
            data = {
                "path": str(seg_dir.resolve()),
                "train": "images/train",
                "val": "images/val" if "val" in splits else "images/train",
                "names": {0: "person"},
            }
            (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dataclasses.replace(prepared, data_yaml=seg_dir / "data.yaml")
