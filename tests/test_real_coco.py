"""Real models on real COCO (``../shared``): regressions of bugs seen on real files, bad input
refused before work starts, our conversion side by side with ST's files, and agreement with
Ultralytics' own val. Skipped, with the reason, where ``../shared`` lacks the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import steps
from workbench.cli import main
from workbench.config import RunConfig, resolve_path
from workbench.decode import Detections
from workbench.errors import WorkbenchError
from workbench.evaluate import evaluate
from workbench.locations import data_dir, weights_dir
from workbench.metrics.st import StEvaluator

DEV = "coco-person-val2017-dev"
TRAIN = "coco-person-train2017"
ST_POSE = "pose_estimation/yolov8n_256_quant_pc_uf_pose_coco-st.tflite"


@pytest.fixture(scope="session")
def coco_dev() -> Path:
    root = data_dir() / DEV
    if not (root / "person_keypoints.json").is_file():
        pytest.skip(f"{DEV} not found under {data_dir()} (set WORKBENCH_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def official_pose() -> Path:
    path = weights_dir() / "ultralytics" / "yolo11n-pose.pt"
    if not path.is_file():
        pytest.skip(f"yolo11n-pose.pt not found under {weights_dir()} (set WORKBENCH_WEIGHTS_DIR)")
    return path


def coco_slice(ann: Path, out: Path, n: int, pick=None) -> Path:
    """The first ``n`` images of a COCO file (or those ``pick`` accepts) with their annotations."""
    data = json.loads(ann.read_text())
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = [im for im in data["images"] if pick is None or pick(im, by_image.get(im["id"], []))][:n]
    keep = {im["id"] for im in images}
    data = dict(data, images=images, annotations=[a for a in data["annotations"] if a["image_id"] in keep])
    out.write_text(json.dumps(data))
    return out


# ---- bugs seen on real files -----------------------------------------------------------------
def test_st_pose_metric_scores_an_image_without_keypointed_persons():
    """Was: ValueError 'cannot reshape array of size 0' in StEvaluator._pose."""
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},
                   {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 80], "area": 2000,
                         "iscrowd": 0, "num_keypoints": 17,
                         "keypoints": [v for i in range(17) for v in (20 + i, 20 + 3 * i, 2)]}],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    truth = np.array(gt["annotations"][0]["keypoints"], dtype=np.float32).reshape(1, 17, 3)
    hit = Detections(np.array([[10, 10, 60, 90]], np.float32), np.array([0.9], np.float32),
                     np.zeros(1, int), keypoints=truth)  # fmt: skip
    alone = StEvaluator(gt, "pose")
    alone.update(1, hit)
    with_empty = StEvaluator(gt, "pose")
    with_empty.update(1, hit)
    false_alarm = Detections(hit.boxes, np.array([0.95], np.float32), np.zeros(1, int), keypoints=truth)
    with_empty.update(2, false_alarm)  # a detection on an image with nobody: a false positive
    assert alone.compute().AP50 > 0.99
    assert with_empty.compute().AP50 < alone.compute().AP50


def test_st_pose_protocol_runs_on_real_val2017(coco_dev, zoo_dir, tmp_path):
    ann = coco_slice(
        coco_dev / "person_keypoints.json", tmp_path / "slice.json", 12,
        pick=lambda im, anns: True,
    )  # fmt: skip
    data = json.loads(ann.read_text())
    keypointed = {a["image_id"] for a in data["annotations"] if a.get("num_keypoints", 0) > 0}
    assert len(keypointed) < len(data["images"]), "the slice must hold an image without keypointed persons"
    result = evaluate(
        zoo_dir / "st" / ST_POSE, ann, coco_dev / "images", "pose", protocol="st", progress=False
    )
    assert 0.0 < result.AP50 <= 1.0 and result.n_images == 12


def test_ssd_class_count_comes_from_the_scores_tensor_not_the_widest_output(zoo_dir, tiny_coco, tmp_path):
    """Was: nc = widest output - 1 = 3 (the 4-wide box tensor), so bicycle and car were scored: AP 0.095."""
    ssd = zoo_dir / "st" / "object_detection_ssd" / "ssd_mobilenet_v1_025_256_int8.tflite"
    ann = tiny_coco / "instances_train2017_small.json"
    images = tiny_coco / "train_2017_small"
    multi = evaluate(ssd, ann, images, "detect", progress=False)
    data = json.loads(ann.read_text())
    person_only = dict(
        data,
        categories=[c for c in data["categories"] if c["name"] == "person"],
        annotations=[a for a in data["annotations"] if a["category_id"] == 1],
    )
    (tmp_path / "person.json").write_text(json.dumps(person_only))
    person = evaluate(ssd, tmp_path / "person.json", images, "detect", progress=False)
    assert multi.AP == pytest.approx(person.AP, abs=1e-9)
    assert multi.AP > 0.15


def test_a_pose_file_is_refused_as_a_detector(zoo_dir, tiny_coco, capsys):
    """Was: --task detect read the 51 keypoint channels as classes and scored AP 0 with exit 0."""
    args = [
        "evaluate", str(zoo_dir / "st" / ST_POSE), "--task", "detect",
        "--ann", str(tiny_coco / "instances_train2017_small.json"),
        "--images", str(tiny_coco / "train_2017_small"),
    ]  # fmt: skip
    assert main(args) == 2
    assert "56-channel head" in capsys.readouterr().err
    with_boxes = evaluate(
        zoo_dir / "st" / ST_POSE, tiny_coco / "instances_train2017_small.json",
        tiny_coco / "train_2017_small", "pose", iou_type="bbox", progress=False,
    )  # fmt: skip
    assert with_boxes.AP > 0.2  # the supported way to score a pose file's boxes


# ---- bad input, before any work ----------------------------------------------------------------
def _coco_config(tmp_path: Path, **changes) -> RunConfig:
    cfg = RunConfig.from_yaml(resolve_path("configs/coco-person.yaml"), out_dir=str(tmp_path / "reports"))
    return cfg.replace(**changes)


def test_the_coco_person_config_resolves_everything(coco_dev, official_pose, zoo_dir, tmp_path):
    cfg = _coco_config(tmp_path)
    plan = steps.preflight(cfg)
    kinds = [(m.kind, m.name, m.family) for m in plan.models]
    assert kinds == [("ours", "yolo11n-pose", "yolo"), ("zoo", "pose_estimation", None)]
    dataset = plan.dataset
    assert dataset.val_ann == coco_dev / "person_keypoints.json"
    assert dataset.calib_images == data_dir() / TRAIN / "images" and dataset.data_yaml is None


def test_a_coco_file_without_a_person_category_is_refused(coco_dev, official_pose, tmp_path):
    data = json.loads((coco_dev / "person_keypoints.json").read_text())
    data["categories"] = [dict(c, name="human") for c in data["categories"]]
    bad = tmp_path / "no_person.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(WorkbenchError, match="no category named 'person'") as err:
        steps.preflight(_coco_config(tmp_path, ann=str(bad), model="yolo11n-pose.pt"))
    assert "no_person.json" in str(err.value)


def test_an_images_folder_missing_files_is_refused(coco_dev, official_pose, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((coco_dev / "images").iterdir())[:5]:
        (images / path.name).symlink_to(path)
    with pytest.raises(WorkbenchError, match=r"445 of 450 images named in person_keypoints.json are missing"):
        steps.preflight(_coco_config(tmp_path, images=str(images), model="yolo11n-pose.pt"))


def test_report_cli_refuses_bad_data_with_exit_2_and_no_run_folder(coco_dev, official_pose, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: c\nmodel: yolo11n-pose.pt\ndataset: coco\n"
        f"ann: {coco_dev / 'person_keypoints.json'}\nimages: {tmp_path / 'empty'}\nout_dir: {tmp_path / 'r'}\n"
    )
    (tmp_path / "empty").mkdir()
    assert main(["report", "--config", str(config)]) == 2
    assert "450 of 450 images" in capsys.readouterr().err and not (tmp_path / "r").exists()


# ---- ours beside ST's files, and Ultralytics' own val ------------------------------------------
@pytest.mark.slow
def test_ours_and_the_zoo_fill_one_table_with_both_protocols_and_intervals(
    coco_dev, official_pose, zoo_dir, tmp_path
):
    cfg = _coco_config(
        tmp_path, imgsz=[256], schemes=["fp32", "int8-per-channel"], eval_images=24, calib_images=16,
        bench_runs=3, model=["yolo11n-pose.pt", str(zoo_dir / "st" / "pose_estimation")],
    )  # fmt: skip
    run, plan = tmp_path / "run", steps.preflight(cfg)
    for step in (steps.retrain, steps.quantize, steps.evaluate, steps.benchmark, steps.compare):
        step(plan, run)
    table = pd.read_csv(run / "results.csv")
    assert sorted(table["source"]) == ["ours"] * 2 + ["zoo"] * 4
    assert table["st_ap"].between(0, 1).all() and table["ap"].between(0, 1).all()
    assert (table["ap_low"] <= table["ap"]).all() and (table["ap"] <= table["ap_high"]).all()
    diffs = pd.read_csv(run / "differences.csv").set_index(["comparison", "metric"])
    ours_vs_st = diffs.loc[("ours − yolov8n-st (int8-per-channel)", "ap")]
    assert ours_vs_st["low"] <= ours_vs_st["estimate"] <= ours_vs_st["high"]
    loss = diffs.loc[("int8-per-channel − fp32", "ap")]
    assert loss["estimate"] < 0  # int8 loses accuracy on real images: the effect users come to measure
    assert (run / "eval" / table["variant"][0] / "st" / "detections.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("imgsz", [256, 320])
def test_fp32_tflite_agrees_with_ultralytics_val_on_the_same_oks_scale(
    coco_dev, official_pose, imgsz, tmp_path
):
    from workbench.data.prepare import yolo_copy
    from workbench.export import export_saved_model
    from workbench.metrics.coco import with_ultralytics_oks_area
    from workbench.pretrain import ultralytics_val
    from workbench.provenance import dataset_hash
    from workbench.quantize import quantize

    # all 450 images: on a 120-image slice the two evaluators' small differences alone reached 0.012
    ann = coco_dev / "person_keypoints.json"
    data_yaml = yolo_copy(ann, coco_dev / "images", ann, coco_dev / "images", "pose", dataset_hash(ann)[:16])
    theirs = ultralytics_val(official_pose, data_yaml, imgsz)["map50_95"]
    saved = export_saved_model(official_pose, imgsz, tmp_path / "sm")
    fp32 = quantize(saved.saved_model, "fp32", tmp_path / "fp32.tflite").path
    scale = tmp_path / "ultralytics_oks_area.json"
    scale.write_text(json.dumps(with_ultralytics_oks_area(ann)))
    ours = evaluate(fp32, scale, coco_dev / "images", "pose", imgsz=imgsz, progress=False).AP
    assert ours == pytest.approx(theirs, abs=0.01), f"workbench {ours:.4f} vs Ultralytics val {theirs:.4f}"
