"""Export with normalized outputs, quantization schemes, and the pretrained checkpoint's record."""

import dataclasses
import json

import numpy as np
import pytest

from tests.conftest import CHECKPOINT
from workbench.cli import main
from workbench.data.images import load_image
from workbench.decode import decode
from workbench.errors import WorkbenchError
from workbench.export import ExportResult
from workbench.inspect import weight_granularity
from workbench.metrics.coco import with_ultralytics_oks_area
from workbench.runtime import TFLiteModel, read_tflite_metadata
from workbench.tflite_graph import read_graph

pytestmark = pytest.mark.slow
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _conv_weights(path):
    graph = read_graph(path)
    for op in graph.ops:
        if op.op in WEIGHT_OPS:
            weight = graph.tensors[op.inputs[1]]
            yield weight


def test_export_metadata_travels_with_the_saved_model(pose256):
    meta = ExportResult.load(pose256["saved_model"])
    assert meta.task == "pose" and meta.imgsz == 256 and meta.normalized
    assert meta.kpt_shape == [17, 3] and meta.names == {0: "person"}
    assert len(meta.weights_sha256) == 64


def test_tflite_carries_workbench_and_ultralytics_metadata(pose256):
    meta = read_tflite_metadata(pose256["int8-per-channel"])
    assert meta["task"] == "pose" and meta["kpt_shape"] == [17, 3] and meta["imgsz"] == [256, 256]
    assert meta["workbench"]["normalized"] is True
    assert meta["workbench"]["scheme"] == "int8-per-channel" and meta["workbench"]["io"] == "uf"
    assert meta["workbench"]["calib_images"] == 32


def test_outputs_are_normalized(pose256, synth_eval_set):
    model = TFLiteModel(pose256["fp32"])
    image = load_image(next(iter(sorted(synth_eval_set.val_images.iterdir()))))
    (raw,), _ = model(image)
    best = raw[0, :, raw[0, 4].argmax()]
    assert 0 < best[0] < 1 and 0 < best[1] < 1 and best[4] > 0.5
    assert np.all((best[5::3] > -0.1) & (best[5::3] < 1.1))


def test_per_tensor_file_has_one_scale_per_int8_conv_weight(pose256):
    weights = [w for w in _conv_weights(pose256["int8-per-tensor"]) if w.dtype == "int8"]
    assert len(weights) > 50
    assert all(w.scales_len == 1 for w in weights)


def test_per_channel_file_has_one_scale_per_output_channel(pose256):
    weights = [w for w in _conv_weights(pose256["int8-per-channel"]) if w.dtype == "int8"]
    assert len(weights) > 50
    for w in weights:
        assert w.scales_len == w.shape[w.quantized_dimension], w.name
    assert weight_granularity(read_graph(pose256["int8-per-channel"])).verdict == "per-channel"
    assert weight_granularity(read_graph(pose256["int8-per-tensor"])).verdict == "per-tensor"
    assert weight_granularity(read_graph(pose256["fp32"])).verdict == "float"


def test_int8_per_channel_keypoints_agree_with_fp32(pose256, synth_eval_set):
    fp32, int8 = TFLiteModel(pose256["fp32"]), TFLiteModel(pose256["int8-per-channel"])
    errors, top_scores, score_errors = [], [], []
    for path in sorted(synth_eval_set.val_images.iterdir()):
        image = load_image(path)
        ref = _decode(fp32, image, conf=0.25)
        got = _decode(int8, image, conf=0.001)
        if len(ref) == 0:
            continue
        top_scores.append(float(got.scores[0]) if len(got) else 0.0)
        score_errors.append(abs(top_scores[-1] - float(ref.scores[0])))
        for person in range(len(ref)):
            # the int8 detection nearest to this fp32 person
            centre = ref.boxes[person].reshape(2, 2).mean(0)
            match = np.argmin(np.linalg.norm(got.boxes.reshape(-1, 2, 2).mean(1) - centre, axis=1))
            visible = ref.keypoints[person, :, 2] > 0.5
            errors.extend(
                np.linalg.norm(got.keypoints[match, visible, :2] - ref.keypoints[person, visible, :2], axis=1)
            )
    assert len(top_scores) >= 150
    assert np.mean(errors) < 3.0, f"mean keypoint error int8 vs fp32 {np.mean(errors):.2f} px"
    # Collapsed scores (pixel coordinates sharing the output's scale) would round to 0 or 1.
    assert max(top_scores) - min(top_scores) > 0.05, f"top-1 scores collapsed: {sorted(set(top_scores))}"
    assert np.mean(score_errors) < 0.02, f"int8 top-1 scores off fp32's by {np.mean(score_errors):.3f}"


def _decode(model, image, conf):
    outputs, transform = model(image)
    return decode(outputs, "pose", transform, conf=conf)


def test_quantize_refuses_missing_calibration_and_leaves_nothing(pose256, tmp_path, capsys):
    out = tmp_path / "x.tflite"
    code = main(
        [
            "quantize",
            "--saved-model",
            str(pose256["saved_model"]),
            "--scheme",
            "int8-per-tensor",
            "--calib",
            str(tmp_path / "no-such-folder"),
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "no-such-folder" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(WorkbenchError, match="needs --calib"):
        from workbench.quantize import quantize

        quantize(pose256["saved_model"], "int8-per-channel", out)


def test_quantize_cli_json_and_float_schemes_keep_float_io(pose256, tmp_path, capsys):
    out = tmp_path / "fp16.tflite"
    assert (
        main(
            [
                "quantize",
                "--saved-model",
                str(pose256["saved_model"]),
                "--scheme",
                "fp16",
                "--io",
                "uf",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["io"] == "ff" and result["size_bytes"] == out.stat().st_size
    fp32_size = pose256["fp32"].stat().st_size
    assert 0.4 < out.stat().st_size / fp32_size < 0.6
    assert pose256["int8-per-channel"].stat().st_size / fp32_size < 0.4
    assert weight_granularity(read_graph(out)).verdict == "fp16"


def test_export_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert (
        main(
            [
                "export",
                "--weights",
                str(tmp_path / "none.pt"),
                "--imgsz",
                "256",
                "--out",
                str(tmp_path / "sm"),
            ]
        )
        == 2
    )
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "sm").exists()


def test_ultralytics_loads_our_float_file(pose256, synth_eval_set):
    from ultralytics import YOLO

    image = sorted(synth_eval_set.val_images.iterdir())[0]
    ours = _decode(TFLiteModel(pose256["fp32"]), load_image(image), conf=0.25)
    theirs = YOLO(str(pose256["fp32"]), task="pose").predict(str(image), imgsz=256, conf=0.25, verbose=False)[
        0
    ]
    assert len(theirs.boxes) == len(ours)
    np.testing.assert_allclose(np.sort(theirs.boxes.conf.numpy()), np.sort(ours.scores), atol=0.02)


def test_checkpoint_val_ap_is_reproduced_by_ultralytics_and_by_workbench_evaluate(
    pose256, synth_eval_set, checkpoint_record, tmp_path
):
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner
    from workbench.pretrain import ultralytics_val

    recorded = checkpoint_record["val"]["map50_95"]
    live = ultralytics_val(CHECKPOINT, synth_eval_set.data_yaml, 256)
    assert live["map50_95"] == pytest.approx(recorded, abs=0.002)
    settings = EvalSettings(
        synth_eval_set.val_ann, synth_eval_set.val_images, "pose", imgsz=256, progress=False
    )
    ours = evaluate(evaluation_runner(pose256["fp32"]), settings)
    assert ours.n_images == checkpoint_record["dataset"]["val"]
    # Same thresholds and the same OKS scale (Ultralytics': 0.53 x box area): the same AP.
    ultralytics_gt = tmp_path / "val_ultralytics_oks_area.json"
    ultralytics_gt.write_text(json.dumps(with_ultralytics_oks_area(synth_eval_set.val_ann)))
    same_scale = evaluate(
        evaluation_runner(pose256["fp32"]), dataclasses.replace(settings, ann=ultralytics_gt)
    )
    assert same_scale.AP == pytest.approx(live["map50_95"], abs=0.01)
    # COCO's own OKS scale (the silhouette area, ~0.39 x box area here) is stricter.
    assert live["map50_95"] - 0.05 < ours.AP < same_scale.AP


def test_checkpoint_record_matches_the_generator(checkpoint_record):
    """Fails when the synthetic generator changes in a way that makes the checkpoint's data stale."""
    from workbench.data.synth import GENERATOR_VERSION
    from workbench.fileio import sha256_file
    from workbench.pretrain import generator_sample_fingerprint

    data = checkpoint_record["dataset"]
    assert data["generator_version"] == GENERATOR_VERSION, (
        "generator version moved on: re-run `make pretrain`"
    )
    assert generator_sample_fingerprint(data["preset"]) == data["generator_sample_fingerprint"], (
        "the generator's output changed without a version bump, or the checkpoint is stale: re-run `make pretrain`"
    )
    assert sha256_file(CHECKPOINT) == checkpoint_record["weights_sha256"]
    assert checkpoint_record["val"]["map50_95"] >= 0.5


@pytest.fixture(scope="module")
def pixel_export(tmp_path_factory):
    """The checkpoint exported with Ultralytics' pixel outputs (small, to keep the export short)."""
    from workbench.export import export_saved_model

    return export_saved_model(
        CHECKPOINT, 128, tmp_path_factory.mktemp("pixel") / "saved_model", normalize=False
    )


def test_int8_of_pixel_outputs_is_refused_and_would_collapse_scores(
    pixel_export, synth_eval_set, tmp_path, capsys
):
    assert pixel_export.normalized is False
    out = tmp_path / "pixel-int8.tflite"
    args = ["quantize", "--saved-model", str(pixel_export.saved_model), "--scheme", "int8-per-channel"]
    args += ["--calib", str(synth_eval_set.train_images), "--calib-count", "8", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "pixel coordinates" in err and "every score collapses" in err and "--allow-unnormalized" in err
    assert not out.exists()

    assert main([*args, "--allow-unnormalized"]) == 0
    model = TFLiteModel(out)
    top_scores = []
    for path in sorted(synth_eval_set.val_images.iterdir())[:16]:
        outputs, transform = model(load_image(path))
        found = decode(outputs, "pose", transform, conf=0.001, normalized=False)
        top_scores.append(float(found.scores[0]) if len(found) else 0.0)
    # the trap the refusal guards against: no score survives on the shared pixel-sized scale
    assert max(top_scores) < 0.05, top_scores


def test_quantize_refuses_an_empty_calibration_folder(pose256, tmp_path, capsys):
    empty = tmp_path / "calib"
    empty.mkdir()
    out = tmp_path / "m.tflite"
    code = main(
        ["quantize", "--saved-model", str(pose256["saved_model"]), "--scheme", "int8-per-tensor"]
        + ["--calib", str(empty), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(empty) in err and "no images" in err
    assert not out.exists()


def test_imgsz_mismatches_are_named(pose256, pixel_export, synth_eval_set, tmp_path, capsys):
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner
    from workbench.inspect import inspect_model
    from workbench.quantize import quantize

    with pytest.raises(WorkbenchError, match="model input is 256x256, not the requested imgsz 320"):
        settings = EvalSettings(synth_eval_set.val_ann, synth_eval_set.val_images, "pose", imgsz=320)
        evaluate(evaluation_runner(pose256["fp32"]), settings)
    reference_128 = quantize(pixel_export.saved_model, "fp32", tmp_path / "fp32-128.tflite").path
    with pytest.raises(
        WorkbenchError,
        match=r"fp32-128.tflite: is not a reference of the same network: input shape \[\(1, 128, 128, 3\)\]",
    ):
        inspect_model(
            pose256["int8-per-channel"],
            reference=reference_128,
            calib_images=synth_eval_set.val_images,
            calib_count=1,
        )
    assert main(["export", "--weights", str(CHECKPOINT), "--imgsz", "250", "--out", str(tmp_path / "x")]) == 2
    assert "image size 250 must be a multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
