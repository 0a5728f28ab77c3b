"""ST's SSD MobileNet v1 0.25 through the pipeline: .h5 → SavedModel → .tflite, scored on real COCO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.families import get_family
from workbench.locations import data_dir, weights_dir

# found through the settings (WORKBENCH_WEIGHTS_DIR, WORKBENCH_DATA_DIR); tests skip without them
H5 = weights_dir() / "st" / "st_ssd_mobilenet_v1_025_{imgsz}.h5"
DEV = data_dir() / "coco-person-val2017-dev"
TRAIN = data_dir() / "coco-person-train2017"


@pytest.fixture(scope="module")
def shared_ssd():
    needed = [Path(str(H5).format(imgsz=224)), DEV / "instances_person.json", TRAIN / "instances_person.json"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        pytest.skip(
            f"SSD weights / COCO person data not found: {', '.join(missing)} (set WORKBENCH_WEIGHTS_DIR / WORKBENCH_DATA_DIR)"
        )


@pytest.fixture(scope="module")
def ssd224(shared_ssd, st_ssd_converted):
    """ST's 224 .h5 exported and converted to fp32 and int8 per-channel (uint8 in, float out;
    calibrated on 100 COCO person train images), shared with the targets tests."""
    from workbench.exported import ExportResult

    files = {scheme: st_ssd_converted(224, scheme) for scheme in ("fp32", "int8-per-channel")}
    return {"export": ExportResult.load(files["fp32"].path.parent / "saved_model"), **files}


@pytest.mark.slow
def test_fp32_file_detects_what_the_keras_model_detects(ssd224):
    from workbench.data.images import list_images, load_image
    from workbench.decode.ssd import decode_ssd
    from workbench.families.ssd import load_ssd
    from workbench.runtime import TFLiteModel

    assert (ssd224["export"].preprocess, ssd224["export"].input_range) == ("resize", [-1.0, 1.0])
    keras = load_ssd(str(H5).format(imgsz=224))
    tflite = TFLiteModel(ssd224["fp32"].path)
    for path in list_images(DEV / "images", 8):
        x01, transform = tflite.preprocess(load_image(path))
        ours = decode_ssd(tflite.run(x01), transform, conf=0.01, iou=0.5)
        theirs = decode_ssd(
            [np.asarray(o) for o in keras(x01 * 2 - 1, training=False)], transform, conf=0.01, iou=0.5
        )
        assert len(ours) == len(theirs) > 0
        np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-4)
        # boxes are in original pixels: 1e-4 of the input side, mapped back
        np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1e-4 * max(transform.orig_hw))


@pytest.mark.slow
def test_our_int8_per_channel_224_scores_within_001_of_st_file(ssd224, zoo_dir):
    """Same images, same protocol: ours (from the 2.x .h5, calibrated on 100 COCO person train
    images) against ST's 1.3 int8 file; measured 0.184 vs 0.186 box AP, 0.191 vs 0.186 AP@0.4."""
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner

    st_file = zoo_dir / "st" / "object_detection_ssd" / "ssd_mobilenet_v1_025_224_int8.tflite"
    ann, images = DEV / "instances_person.json", DEV / "images"
    for protocol in ("coco", "st"):
        settings = EvalSettings(ann, images, "detect", protocols=protocol, progress=False)
        ours = evaluate(evaluation_runner(ssd224["int8-per-channel"].path), settings)
        theirs = evaluate(evaluation_runner(st_file), settings)
        assert ours.n_images == theirs.n_images == 450
        key = "AP" if protocol == "coco" else "AP@0.4"
        a, b = (r.AP if key == "AP" else r.metrics["extra"][key] for r in (ours, theirs))
        assert 0.1 < a and abs(a - b) <= 0.01, (protocol, a, b)


@pytest.mark.slow
def test_equalize_recipe_keeps_the_ssd_and_gives_an_all_int8_per_tensor_file(ssd224, tmp_path):
    """The SSD family's equalize: the same float network (exact for ReLU6 with moved caps), and an
    all-int8 per-tensor file; the YOLO head recipes are refused with one clear error, no file."""
    from workbench.errors import WorkbenchError
    from workbench.jobs import quantize_with_recipes
    from workbench.quantize import quantize
    from workbench.runtime import TFLiteModel

    saved = ssd224["export"].saved_model
    with pytest.raises(
        WorkbenchError, match="split-head does not apply to ssd models .its recipes: equalize"
    ):
        quantize_with_recipes(
            saved, "int8-per-tensor", tmp_path / "x.tflite", calib=TRAIN / "images", recipes=["split-head"]
        )
    assert not (tmp_path / "x.tflite").exists()

    result = quantize_with_recipes(
        saved, "int8-per-tensor", tmp_path / "eq.tflite", io="uf", calib=TRAIN / "images", calib_count=16,
        recipes=["equalize"],
    )  # fmt: skip
    assert (result.all_int8, result.granularity, result.recipes) == (True, "per-tensor", ["equalize"])
    folder = next(p for p in Path(saved).parent.iterdir() if p.name.endswith("+equalized"))
    plain, equalized = (
        TFLiteModel(ssd224["fp32"].path),
        TFLiteModel(quantize(folder, "fp32", tmp_path / "f.tflite").path),
    )
    x01 = np.random.default_rng(0).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    for a, b in zip(plain.run(x01), equalized.run(x01), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.slow
def test_split_channels_keeps_the_ssd_and_gives_an_all_int8_per_tensor_file(ssd224, tmp_path):
    """split-channels on ST's SSD: BatchNorm folded into the parts, the same float network, a
    per-tensor all-int8 file with more convolutions, and per-channel refused (no file)."""
    from workbench.errors import WorkbenchError
    from workbench.jobs import quantize_with_recipes
    from workbench.quantize import quantize
    from workbench.runtime import TFLiteModel
    from workbench.tflite_graph import read_graph

    saved = ssd224["export"].saved_model
    with pytest.raises(WorkbenchError, match="use it with int8-per-tensor"):
        quantize_with_recipes(
            saved, "int8-per-channel", tmp_path / "x.tflite", calib=TRAIN / "images", recipes="split-channels"
        )
    assert not (tmp_path / "x.tflite").exists()
    result = quantize_with_recipes(
        saved, "int8-per-tensor", tmp_path / "sc.tflite", io="uf", calib=TRAIN / "images", calib_count=16,
        recipes=["split-channels"],
    )  # fmt: skip
    assert (result.all_int8, result.granularity) == (True, "per-tensor")
    ops = read_graph(result.path).op_histogram()
    assert ops["CONV_2D"] > read_graph(ssd224["int8-per-channel"].path).op_histogram()["CONV_2D"]
    assert "ADD_N" not in ops  # depthwise parts are summed with int8 ADDs
    folder = next(p for p in Path(saved).parent.iterdir() if "+split-channels" in p.name)
    plain, split = (
        TFLiteModel(ssd224["fp32"].path),
        TFLiteModel(quantize(folder, "fp32", tmp_path / "f.tflite").path),
    )
    x01 = np.random.default_rng(0).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    for a, b in zip(plain.run(x01), split.run(x01), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.slow
def test_split_channels_fine_export_keeps_the_ssd_and_splits_its_narrow_convs(
    shared_ssd, tmp_path, monkeypatch
):
    """split-channels-fine on ST's 192 .h5: the exported SavedModel computes what the .h5 computes
    (1e-4), records its edits, and its split has more parts than split-channels' 3 and reaches the
    narrow convs that split-channels leaves whole (16 channels or fewer: no aligned cut)."""
    import workbench.recipes.split_channels_keras as split_module
    from workbench.exported import ExportResult
    from workbench.families.ssd import load_ssd
    from workbench.offline import import_tensorflow
    from workbench.recipes import export_edits
    from workbench.recipes.edits import ExportEdits
    from workbench.recipes.split_channels import ALIGN, SPLIT_GROUPS

    tf = import_tensorflow()
    seen = {}

    def spy(model, **kwargs):  # the split the export makes, as it made it
        seen.update(model=model, split=real(model, **kwargs))
        return seen["split"]

    real = split_module.split_keras_model
    monkeypatch.setattr(split_module, "split_keras_model", spy)
    weights = str(H5).format(imgsz=192)
    edits = export_edits("split-channels-fine", "int8-per-tensor")
    get_family("ssd").export(weights, 192, tmp_path / "fine", edits=edits)
    assert ExportEdits.recorded(ExportResult.load(tmp_path / "fine")) == edits
    assert edits.key.endswith("-fine") and edits.key != export_edits("split-channels", "int8-per-tensor").key
    x = np.random.default_rng(0).uniform(-1, 1, (1, 192, 192, 3)).astype(np.float32)
    served = tf.saved_model.load(str(tmp_path / "fine")).signatures["serving_default"](images=tf.constant(x))
    for name, theirs in zip(("a_scores", "b_boxes"), load_ssd(weights)(x, training=False)[:2], strict=True):
        np.testing.assert_allclose(served[name].numpy(), np.asarray(theirs), atol=1e-4)
    model, split = seen["model"], seen["split"]
    narrow = [n for n in split if type(model.get_layer(n)).__name__ == "Conv2D"
              and model.get_layer(n).get_weights()[0].shape[3] <= ALIGN]  # fmt: skip
    assert narrow and max(len(runs) for runs in split.values()) > SPLIT_GROUPS


@pytest.mark.slow
def test_one_fine_tuning_step_lowers_the_loss_on_a_fixed_batch(shared_ssd):
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()
    import tf_keras

    from workbench.families.ssd import SsdFamily, load_ssd
    from workbench.families.ssd_train import CocoBoxes, make_step, model_anchors, ssd_loss

    weights = str(H5).format(imgsz=192)
    model = load_ssd(weights)
    data = CocoBoxes(
        TRAIN / "instances_person.json", TRAIN / "images", 192, SsdFamily().preprocessing(weights)
    )
    with_people = [i for i, e in enumerate(data.entries) if data.dataset.annotations_by_image[e["id"]]][:4]
    x, cls, off = data.batch(np.array(with_people), np.zeros(4, bool), model_anchors(model))
    assert (cls > 0).sum() >= 4  # every image has matched people
    step = make_step(model, tf_keras.optimizers.Adam(learning_rate=1e-4))
    before, conf, loc = (float(v) for v in step(tf.constant(x), tf.constant(cls), tf.constant(off)))
    scores, offsets = model(x, training=False)[:2]
    after = float(ssd_loss(scores, offsets, tf.constant(cls), tf.constant(off))[0])
    assert before > 0 and conf > 0 and loc > 0
    assert after < before, (before, after)


@pytest.mark.slow
def test_ssd_config_runs_through_the_steps_beside_st_files(shared_ssd, zoo_dir, tmp_path):
    """configs/ssd-coco-person.yaml, cut down: ST's 192 .h5 as shipped in fp32 and int8-pc, ST's
    int8 SSD files beside it, 16 images; both protocols fill the table."""
    import pandas as pd

    from workbench import steps
    from workbench.config import RunConfig, resolve_path

    cfg = RunConfig.from_yaml(
        resolve_path("configs/ssd-coco-person.yaml"),
        imgsz=[192],
        schemes=["fp32", "int8-per-channel"],
        epochs=0,
        calib_images=8,
        eval_images=16,
        bench_runs=3,
    )
    plan = steps.preflight(cfg)
    retrained = steps.retrain(plan, tmp_path)
    assert [m["family"] for m in retrained["models"]] == ["ssd"]
    variants = steps.quantize(plan, tmp_path)
    assert {v.source for v in variants} == {"ours", "zoo"} and len(variants) == 2 + 3
    steps.evaluate(plan, tmp_path)
    steps.benchmark(plan, tmp_path)
    table = steps.compare(plan, tmp_path).set_index("variant")
    ours = table.loc["st_ssd_mobilenet_v1_025_192_int8-per-channel_uf"]
    assert 0.0 < ours["ap"] <= 1.0 and 0.0 < ours["st_ap"] <= 1.0
    assert len(pd.read_csv(tmp_path / "results.csv")) == 5
