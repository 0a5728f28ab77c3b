"""TFLiteModel on real converted models and ST zoo files; metadata round trip."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_tflite import calibration_images, tiny_models
from workbench.errors import WorkbenchError
from workbench.runtime import TFLiteModel, read_tflite_metadata, write_tflite_metadata


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


def _outputs_by_shape(model: TFLiteModel, x: np.ndarray) -> dict[tuple, np.ndarray]:
    return {o.shape: o for o in model.run(x)}


def test_int8_models_agree_with_float_under_the_raw_code_input_rule(tiny):
    """uint8 and int8 inputs fed raw pixel codes give the float model's outputs (to int8 precision)."""
    x = calibration_images(4, seed=5)
    fp32, uf, ii = (TFLiteModel(tiny[k]) for k in ("fp32", "int8-per-channel", "int8-ii"))
    assert (uf.input.dtype, ii.input.dtype) == ("uint8", "int8")
    assert ii.outputs[0].dtype == "int8" and ii.outputs[0].scale is not None
    for xi in x:
        ref = _outputs_by_shape(fp32, xi)
        for model in (uf, ii):
            got = _outputs_by_shape(model, xi)
            for shape, r in ref.items():
                assert got[shape].dtype == np.float32
                err = np.abs(got[shape] - r).max()
                assert err < 0.05 * np.abs(r).max(), (model.path.name, shape, err)


def test_input_codes(tiny):
    x = np.full((1, 32, 32, 3), 0.5, np.float32)
    x[0, 0, 0] = [0.0, 1.0, 0.2]
    uf, ii, fp32 = (TFLiteModel(tiny[k]) for k in ("int8-per-channel", "int8-ii", "fp32"))
    assert uf.quantize_input(x)[0, 0, 0].tolist() == [0, 255, 51]
    assert uf.quantize_input(x)[0, 1, 1, 0] == 128  # round(127.5) half-to-even
    assert ii.quantize_input(x)[0, 0, 0].tolist() == [-128, 127, -77]
    assert fp32.quantize_input(x).dtype == np.float32 and np.array_equal(fp32.quantize_input(x), x)


def test_float_input_range_from_metadata(tiny, tmp_path):
    path = shutil.copy(tiny["fp32"], tmp_path / "m.tflite")
    write_tflite_metadata(path, {"workbench": {"input_range": [-1, 1], "preprocess": "resize"}})
    model = TFLiteModel(path)
    assert model.preprocess_mode == "resize"
    x = np.linspace(0, 1, 32 * 32 * 3, dtype=np.float32).reshape(1, 32, 32, 3)
    np.testing.assert_allclose(model.quantize_input(x), 2 * x - 1, atol=1e-6)


def test_same_metadata_gives_the_same_file_bytes(tiny, tmp_path, monkeypatch):
    """A zip entry stamped with the wall clock made two conversions of one config differ."""
    import time

    first, second = (shutil.copy(tiny["fp32"], tmp_path / f"{n}.tflite") for n in ("a", "b"))
    write_tflite_metadata(first, {"imgsz": [32, 32]})
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda *_: time.gmtime(later))
    write_tflite_metadata(second, {"imgsz": [32, 32]})
    assert Path(first).read_bytes() == Path(second).read_bytes()


def test_metadata_round_trip_replaces_and_keeps_model_intact(tiny, tmp_path):
    path = shutil.copy(tiny["int8-per-channel"], tmp_path / "m.tflite")
    x = calibration_images(1, seed=3)[0]
    before = TFLiteModel(path).run(x)
    assert read_tflite_metadata(path) == {}
    write_tflite_metadata(path, {"imgsz": [32, 32], "workbench": {"preprocess": "letterbox"}})
    write_tflite_metadata(path, {"imgsz": [32, 32], "workbench": {"preprocess": "resize", "scheme": "x"}})
    meta = read_tflite_metadata(path)
    assert meta["workbench"] == {"preprocess": "resize", "scheme": "x"}
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["metadata.json"]  # replaced, not duplicated
    model = TFLiteModel(path)
    assert model.metadata == meta and model.preprocess_mode == "resize"
    for a, b in zip(before, model.run(x), strict=True):
        np.testing.assert_array_equal(a, b)
    # Ultralytics reads it the same way
    from ultralytics.nn.backends.base import BaseBackend

    assert BaseBackend.read_metadata(path) == meta


def test_input_quantization_mismatch_warns(tiny, tmp_path):
    path = shutil.copy(tiny["int8-per-channel"], tmp_path / "m.tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TFLiteModel(path)  # 1/255, zp 0 matches [0, 1]: silent
    write_tflite_metadata(path, {"workbench": {"input_range": [-1, 1]}})
    with pytest.warns(UserWarning, match=r"maps pixel codes onto \[0, 1\]"):
        TFLiteModel(path)


def test_call_preprocesses_and_returns_geometry(tiny):
    model = TFLiteModel(tiny["fp32"])
    image = np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)
    x, t = model.preprocess(image)
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert t.pad_xy == (0.0, 8.0)  # letterbox by default
    outputs, t2 = model(image)
    assert t2 == t and len(outputs) == 2 and model.last_invoke_ms > 0


def test_bad_inputs_raise_clear_errors(tiny, tmp_path):
    with pytest.raises(WorkbenchError, match="missing.tflite: model file not found"):
        TFLiteModel(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(WorkbenchError, match="junk.tflite: not a loadable TFLite model"):
        TFLiteModel(junk)
    model = TFLiteModel(tiny["fp32"])
    with pytest.raises(WorkbenchError, match=r"input must have shape \(1, 32, 32, 3\)"):
        model.run(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(WorkbenchError, match="preprocess must be one of"):
        TFLiteModel(tiny["fp32"], preprocess="crop")


@pytest.mark.zoo
def test_zoo_files_load_with_their_quantization(zoo_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both input conventions are recognised as sensible
        ssd = TFLiteModel(zoo_dir / "st/object_detection_ssd/ssd_mobilenet_v1_025_192_int8.tflite")
        seg = TFLiteModel(zoo_dir / "st/segmentation/yolov8n_256_quant_pc_ii_seg_coco-st.tflite")
    assert (ssd.input.dtype, ssd.input.zero_point) == ("uint8", 127)
    assert abs(ssd.input.scale - 1 / 127.5) < 1e-6
    assert ssd.metadata == {} and ssd.preprocess_mode == "letterbox"
    assert ssd.input_hw == (192, 192)
    image = np.full((120, 160, 3), 128, np.uint8)
    outputs, _ = ssd(image)
    assert [o.shape for o in outputs] == [(1, 3830, 2), (1, 3830, 4), (1, 3830, 4)]
    scores = outputs[0][0]
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=0.02)  # softmax over (background, person)
    seg_out, _ = seg(image)
    assert [o.shape for o in seg_out] == [(1, 116, 1344), (1, 64, 64, 32)]
    assert all(o.dtype == np.float32 for o in seg_out)
