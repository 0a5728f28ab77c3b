"""Evaluator: input checks before inference, CLI contract, and real zoo models on tiny-coco."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.conftest import one_box_coco
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.evaluate import TIMING_KEYS, EvalResult, EvalSettings, evaluate
from workbench.families import evaluation_runner

ZOO = {
    "pose256": "pose_estimation/yolov8n_256_quant_pc_uf_pose_coco-st.tflite",
    "od256": "object_detection/yolov8n_256_quant_pc_uf_od_coco-person-st.tflite",
    "seg256": "segmentation/yolov8n_256_quant_pc_ii_seg_coco-st.tflite",
    "ssd256": "object_detection_ssd/ssd_mobilenet_v1_025_256_int8.tflite",
}


def run(model, ann, images, task, out_dir=None, **options) -> EvalResult:
    """Evaluate a model file as the callers do: its family's runner, the settings, one protocol."""
    return evaluate(evaluation_runner(model), EvalSettings(ann, images, task, **options), out_dir)


def test_pose_json_without_keypoints_is_refused_before_any_model_is_opened(tmp_path, monkeypatch):
    import workbench.runtime

    def fail(*args, **kwargs):
        raise AssertionError("the model was opened")

    monkeypatch.setattr(workbench.runtime, "TFLiteModel", fail)
    monkeypatch.setattr(workbench.runtime, "make_interpreter", fail)
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not a flatbuffer")
    ann, images = one_box_coco(tmp_path, write_image=False, name="boxes_only.json")
    start = time.perf_counter()
    with pytest.raises(WorkbenchError, match="boxes_only.json: annotation id 1 has no keypoints"):
        run(model, ann, images, "pose", out_dir=tmp_path / "out", progress=False)
    assert time.perf_counter() - start < 2.0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocols": ("voc",)}, "protocol must be one of coco, st"),
        ({"protocols": ("coco", "coco")}, r"protocol must be one of coco, st \(each once\)"),
        ({"task": "segment"}, "unknown task 'segment'"),
        ({"task": "seg", "protocols": "st"}, "protocol 'st' scores pose keypoints and detection boxes only"),
        ({"max_images": 0}, "max_images must be at least 1"),
        ({"conf": 1.5}, r"--conf must be a number within \[0, 1\]"),
        ({"preprocess": "crop"}, "preprocess must be one of"),
        ({"model": "missing.tflite"}, "missing.tflite: model file not found"),
        (
            {"model": "weights.onnx"},
            r"weights.onnx: model must be a .tflite or a family's float weights: .pt \(yolo\)",
        ),
        ({"protocols": ("coco", "st")}, "evaluate scores one protocol"),
    ],
)
def test_bad_arguments_fail_with_one_clear_message(tmp_path, kwargs, message):
    (tmp_path / "weights.onnx").write_bytes(b"x")
    (tmp_path / "m.tflite").write_bytes(b"x")
    ann, images = one_box_coco(tmp_path, write_image=False, name="boxes_only.json")
    args = {"model": "m.tflite", "task": "detect", **kwargs}
    with pytest.raises(WorkbenchError, match=message):
        run(tmp_path / args.pop("model"), ann, images, args.pop("task"), progress=False, **args)


def test_cli_error_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not a flatbuffer")
    ann, images = one_box_coco(tmp_path, write_image=False, name="boxes_only.json")
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            str(model),
            "--task",
            "pose",
            "--ann",
            str(ann),
            "--images",
            str(images),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has no keypoints" in err
    assert not out.exists()


def test_eval_result_validation():
    ok = dict(
        AP=0.5, AP50=0.7, AP75=0.5, APm=0.4, APl=0.6, AR=0.6, n_images=2, n_instances=3, n_detections=9,
        seconds=dict.fromkeys(TIMING_KEYS, 0.0), model="m.tflite", sha256="0" * 64, task="pose",
        protocol="coco", iou_type="keypoints",
    )  # fmt: skip
    assert EvalResult(**ok).to_dict()["AP"] == 0.5
    with pytest.raises(ValueError, match="not a fraction"):
        EvalResult(**{**ok, "AP": 2.0})
    with pytest.raises(ValueError, match="seconds lacks"):
        EvalResult(**{**ok, "seconds": {"wall": 1.0}})


def test_ultralytics_pt_runs_through_predict(person_gt, tmp_path):
    """An untrained pose net: scores are noise, but the .pt path must run end to end and write files."""
    from ultralytics import YOLO

    weights = tmp_path / "rand-pose.pt"
    YOLO("yolov8n-pose.yaml").save(weights)
    ann, images = person_gt
    result = run(
        weights,
        ann,
        images,
        "pose",
        imgsz=64,
        max_images=2,
        iou_type="bbox",
        out_dir=tmp_path / "o",
        progress=False,
    )
    assert result.n_images == 2 and result.preprocess == "letterbox" and result.imgsz == 64
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["sha256"] == result.sha256
    assert isinstance(json.loads((tmp_path / "o" / "detections.json").read_text()), list)


# ---- real models: ST's zoo on tiny-coco ------------------------------------------------------------
@pytest.mark.zoo
@pytest.mark.parametrize("name", ["pose256", "od256"])
def test_zoo_person_box_ap_is_sane(zoo_dir, person_gt, name):
    ann, images = person_gt
    task = "pose" if name.startswith("pose") else "detect"
    result = run(zoo_dir / "st" / ZOO[name], ann, images, task, iou_type="bbox", progress=False)
    assert result.preprocess == "letterbox" and result.n_images == 16 and result.n_instances == 32
    assert 0.30 <= result.AP <= 0.60, result.AP  # measured 0.43 (pose), 0.36 (od)
    assert set(result.seconds) == set(TIMING_KEYS) and result.seconds["invoke"] > 0


@pytest.mark.zoo
def test_zoo_wrong_geometry_scores_far_below(zoo_dir, person_gt):
    """The bound above means something: skipping the inverse resize collapses the same model's AP."""
    from workbench.data.coco import load_coco
    from workbench.data.images import load_image
    from workbench.decode import decode
    from workbench.metrics import CocoEvaluator
    from workbench.preprocess import ImageTransform
    from workbench.runtime import TFLiteModel

    ann, images = person_gt
    dataset = load_coco(ann, images)
    model = TFLiteModel(zoo_dir / "st" / ZOO["pose256"], preprocess="resize")
    right, wrong = CocoEvaluator(dataset, "bbox"), CocoEvaluator(dataset, "bbox")
    for entry in dataset.images:
        outputs, t = model(load_image(dataset.image_path(entry)))
        identity = ImageTransform(t.orig_hw, t.input_hw, (1.0, 1.0), (0.0, 0.0))
        right.update(entry["id"], decode(outputs, "pose", t, conf=0.001, iou=0.7, max_det=100))
        wrong.update(entry["id"], decode(outputs, "pose", identity, conf=0.001, iou=0.7, max_det=100))
    assert right.compute().AP >= 0.30 and wrong.compute().AP < 0.10


@pytest.mark.zoo
def test_zoo_seg_mask_ap_and_results_files(zoo_dir, person_gt, tmp_path):
    ann, images = person_gt
    result = run(zoo_dir / "st" / ZOO["seg256"], ann, images, "seg", out_dir=tmp_path, progress=False)
    assert result.iou_type == "segm" and 0.20 <= result.AP <= 0.55, result.AP  # measured 0.33
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert len(detections) == result.n_detections and {d["category_id"] for d in detections} == {1}
    assert all("counts" in d["segmentation"] for d in detections)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["AP"] == pytest.approx(result.AP) and saved["protocol"] == "coco"


@pytest.mark.zoo
def test_zoo_ssd_st_protocol_is_near_the_card(zoo_dir, person_gt):
    ann, images = person_gt
    result = run(zoo_dir / "st" / ZOO["ssd256"], ann, images, "detect", protocols="st", progress=False)
    assert result.headline == "AP@0.4" and result.iou == 0.5 and result.conf == 0.001
    card = result.metrics["extra"]["AP@0.4"]
    assert 0.35 <= card <= 0.65, card  # ST's card: 47.03 % on COCO person val; measured 0.48 here
    assert np.isnan(result.APm)


@pytest.mark.zoo
def test_zoo_cli_json_prints_one_object(zoo_dir, person_gt, capsys):
    ann, images = person_gt
    model = zoo_dir / "st" / ZOO["ssd256"]
    code = main(
        [
            "evaluate",
            str(model),
            "--task",
            "detect",
            "--ann",
            str(ann),
            "--images",
            str(images),
            "--max-images",
            "4",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_images"] == 4 and out["preprocess"] == "resize" and out["protocol"] == "coco"


@pytest.mark.zoo
def test_zoo_pose_keypoint_ap_on_synthetic_people(zoo_dir, tmp_path):
    """The only keypoint ground truth at hand: the generator's easy people, which ST's pose net finds."""
    from workbench.data.synth import generate_dataset

    data = generate_dataset(tmp_path / "synth", 1, 12, imgsz=256, seed=0, preset="easy", progress=False)
    model = zoo_dir / "st" / ZOO["pose256"]
    coco = run(model, data.ann("val"), data.images("val"), "pose", progress=False)
    st = run(model, data.ann("val"), data.images("val"), "pose", protocols="st", progress=False)
    assert coco.iou_type == st.iou_type == "keypoints" and (coco.iou, st.iou) == (0.7, 0.1)
    assert coco.AP50 >= 0.5 and st.AP50 >= 0.5, (coco.AP50, st.AP50)  # measured 1.00 / 0.995 on 16 images
    assert st.preprocess == "resize" and st.headline == "AP50"
