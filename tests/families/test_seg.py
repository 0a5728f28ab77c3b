"""YOLOv8n-seg through the pipeline on a tiny synthetic set: train, export, convert, mask AP."""

from __future__ import annotations

import pytest

from workbench.config import RunConfig
from workbench.families import get_family


@pytest.mark.slow
def test_seg_trains_exports_converts_and_scores_masks(tmp_path):
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner
    from workbench.quantize import quantize

    cfg = RunConfig(
        task="seg",
        model="yolov8n-seg.yaml",
        imgsz=[128],
        dataset="synthetic",
        synth_preset="easy",
        synth_train=8,
        synth_val=8,
        synth_imgsz=128,
        epochs=1,
        batch=4,
        train_args={"mosaic": 0.0, "plots": False},
    )
    family = get_family("yolo")
    dataset = family.dataset(cfg)
    trained = family.retrain(cfg, "yolov8n-seg.yaml", dataset, tmp_path / "train")
    export = family.export(trained["weights"], 128, tmp_path / "saved_model")
    assert export.task == "seg" and export.normalized
    sizes, aps = {}, {}
    for scheme in ("fp32", "int8-per-channel", "int8-per-tensor"):
        result = quantize(
            export.saved_model,
            scheme,
            tmp_path / f"{scheme}.tflite",
            calib=dataset.train_images,
            calib_count=8,
        )
        settings = EvalSettings(dataset.val_ann, dataset.val_images, "seg", progress=False)
        scored = evaluate(evaluation_runner(result.path), settings)
        assert scored.iou_type == "segm" and scored.n_images == 8
        sizes[scheme], aps[scheme] = result.size_bytes, scored.AP
    assert all(0.0 <= ap <= 1.0 for ap in aps.values()), aps
    assert (
        sizes["int8-per-channel"] < 0.4 * sizes["fp32"] and sizes["int8-per-tensor"] < 0.4 * sizes["fp32"]
    ), sizes
