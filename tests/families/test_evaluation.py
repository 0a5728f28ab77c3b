"""Evaluation through the family registry: every family's float-weights runner, its claim on a bare
.tflite, what it tells the generic .tflite runner, and the numbers of the evaluation path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import one_box_coco
from workbench.config import PROTOCOLS, Task
from workbench.decode import DECODERS
from workbench.errors import WorkbenchError
from workbench.evaluate import EvalRunner, EvalSettings, TFLiteRunner, evaluate, evaluate_protocols
from workbench.families import evaluation_runner, get_family, list_families, tflite_family
from workbench.locations import data_dir, weights_dir

DEV = data_dir() / "coco-person-val2017-dev"
SSD_H5 = weights_dir() / "st" / "st_ssd_mobilenet_v1_025_{imgsz}.h5"

# A bare .tflite's outputs (as zero arrays) and input size, per family: what ST's zoo files look like.
BARE_OUTPUTS = {
    "yolo": ([np.zeros((1, 56, 1344), np.float32)], (256, 256)),  # pose head: 4 box + 1 score + 17x3
    "ssd": ([np.zeros((1, 3069, 2)), np.zeros((1, 3069, 4)), np.zeros((1, 3069, 4))], (256, 256)),
}


@pytest.mark.parametrize("name", list_families())
def test_family_float_weights_get_its_runner_and_a_bad_file_is_one_error(name, tmp_path):
    family = get_family(name)
    assert family.weights_suffixes, f"{name} names no float weights its runner evaluates"
    weights = tmp_path / f"broken{family.weights_suffixes[0]}"
    weights.write_bytes(b"not weights")
    runner = evaluation_runner(weights)
    assert isinstance(runner, EvalRunner) and not isinstance(runner, TFLiteRunner)
    assert type(runner) is type(family.evaluation_runner(weights))
    ann, images = one_box_coco(tmp_path)
    with pytest.raises(WorkbenchError) as caught:
        evaluate(runner, EvalSettings(ann, images, family.tasks[0], iou_type="bbox", progress=False))
    # one line naming the file at fault: the weights, or what the family reads beside them
    assert str(caught.value).startswith(str(tmp_path / "broken")) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", list_families())
def test_family_claims_its_bare_tflite_layout_and_no_other(name):
    outputs, input_hw = BARE_OUTPUTS[name]
    claimants = [other for other in list_families() if get_family(other).claims_outputs(outputs, input_hw)]
    assert claimants == [name]
    assert tflite_family(Path("bare.tflite"), {}, outputs, input_hw) is get_family(name)


@pytest.mark.parametrize("name", list_families())
def test_recorded_family_wins_over_the_layout(name):
    other = next(o for o in BARE_OUTPUTS if o != name)
    outputs, input_hw = BARE_OUTPUTS[other]
    recorded = {"workbench": {"family": name}}
    assert tflite_family(Path("ours.tflite"), recorded, outputs, input_hw) is get_family(name)


def test_outputs_no_family_reads_are_refused_with_their_shapes():
    with pytest.raises(
        WorkbenchError, match=r"odd.tflite: records no model family, and its outputs \[\(1, 7\)\]"
    ):
        tflite_family(Path("odd.tflite"), {}, [np.zeros((1, 7))], (256, 256))


@pytest.mark.parametrize("name", list_families())
def test_family_tells_the_tflite_runner_its_decoder_preprocessing_and_st_iou(name):
    family = get_family(name)
    assert family.decoder in DECODERS
    assert 0.0 < family.st_eval_iou < 1.0
    assert {family.default_preprocess(p) for p in PROTOCOLS} <= {"letterbox", "resize"}
    outputs, input_hw = BARE_OUTPUTS[name]
    assert family.output_classes(outputs, {}, family.tasks[0], input_hw) >= 1


def test_family_evaluation_settings_are_those_of_st_cards_and_conventions():
    yolo, ssd = get_family("yolo"), get_family("ssd")
    assert (yolo.st_eval_iou, ssd.st_eval_iou) == (0.5, 0.4)
    assert [yolo.default_preprocess(p) for p in ("coco", "st")] == ["letterbox", "resize"]
    assert [ssd.default_preprocess(p) for p in ("coco", "st")] == ["resize", "resize"]
    with pytest.raises(WorkbenchError, match="an SSD model cannot be evaluated as pose"):
        ssd.output_classes(BARE_OUTPUTS["ssd"][0], {}, Task.POSE, (256, 256))
    with pytest.raises(WorkbenchError, match="56-channel head"):
        yolo.output_classes(BARE_OUTPUTS["yolo"][0], {}, Task.DETECT, (256, 256))


def test_settings_are_frozen_and_normalized_once():
    import dataclasses

    settings = EvalSettings("val.json", "val", "detect", protocols="st")
    assert settings.protocols == ("st",) and settings.iou_type == "bbox" and settings.ann == Path("val.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_det = 5
    assert dataclasses.replace(settings, max_images=4).max_images == 4
    with pytest.raises(WorkbenchError, match="imgsz must be a positive integer"):
        EvalSettings("val.json", "val", "detect", imgsz=0)


# ---- numbers: a .tflite scores as at the branch point; the float SSD .h5 is sane ------------------
# Measured with the evaluator before the families took over its runners (commit 2376504): tiny-coco
# restricted to persons, ST's zoo files, both protocols in one pass.
BRANCH_POINT = {
    "object_detection_ssd/ssd_mobilenet_v1_025_256_int8.tflite": {
        "coco": (
            0.18930932026999706,
            1600,
            "85b7291ff5435245bde83c4266f238810cffa7abcdd4a44929c64b80dd58b59f",
        ),
        "st": (0.17811790224960014, 1555, "d2f047f3508905c5673dd1789fc3f1a1b43495abf10cf425573501c75482d7a3"),
    },
    "object_detection/yolov8n_256_quant_pc_uf_od_coco-person-st.tflite": {
        "coco": (0.3644826501059503, 178, "61a438a1dafb717ef9ba96f2f4f4c23dca125a3a6f3d757218c32bba6018b582"),
        "st": (0.36422686863594445, 118, "69255f33d9a59dc713c806e22e747f281f48161252a3ca601d4c4e78a27d2628"),
    },
}


@pytest.mark.zoo
@pytest.mark.parametrize("model", list(BRANCH_POINT))
def test_tflite_ap_and_detections_are_those_of_the_branch_point(zoo_dir, person_gt, tmp_path, model):
    ann, images = person_gt
    settings = EvalSettings(ann, images, "detect", protocols=("coco", "st"), progress=False)
    results = evaluate_protocols(
        evaluation_runner(zoo_dir / "st" / model), settings, out_dir=tmp_path / "out"
    )
    for protocol, (ap, n_detections, sha256) in BRANCH_POINT[model].items():
        written = (tmp_path / "out" / protocol / "detections.json").read_bytes()
        assert results[protocol].AP == pytest.approx(ap, abs=1e-12), protocol
        assert results[protocol].n_detections == n_detections
        assert hashlib.sha256(written).hexdigest() == sha256, protocol


@pytest.mark.slow
def test_float_ssd_h5_scores_a_sane_ap_near_st_int8_file(zoo_dir):
    """ST's float .h5 (tf_keras, its config's pre-processing, the SSD decoder) on 8 real COCO person
    images, against ST's int8 file of the same size on the same images."""
    weights = Path(str(SSD_H5).format(imgsz=192))
    if not weights.is_file() or not (DEV / "instances_person.json").is_file():
        pytest.skip(
            f"ST's SSD .h5 or COCO person data not found ({weights}, {DEV}); see ../shared/weights/MANIFEST.md"
        )
    settings = EvalSettings(
        DEV / "instances_person.json", DEV / "images", "detect", ("coco", "st"), max_images=8, progress=False
    )
    float_h5 = evaluate_protocols(evaluation_runner(weights), settings)
    int8 = evaluate_protocols(
        evaluation_runner(zoo_dir / "st" / "object_detection_ssd" / "ssd_mobilenet_v1_025_192_int8.tflite"),
        settings,
    )
    assert float_h5["coco"].preprocess == "resize" and float_h5["coco"].imgsz == 192
    card = float_h5["st"].metrics["extra"]["AP@0.4"]
    assert 0.05 < float_h5["coco"].AP < 0.6 and 0.2 < card < 0.9, (float_h5["coco"].AP, card)
    assert abs(float_h5["coco"].AP - int8["coco"].AP) < 0.1, (float_h5["coco"].AP, int8["coco"].AP)
