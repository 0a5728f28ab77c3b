"""Range setting through ai-edge-quantizer (calib-mse, weights-octav) on the tiny real model."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.recipes import build_plan, parse_recipes
from workbench.recipes.ranges import mse_range


def test_mse_range_clips_a_sparse_tail_and_keeps_a_dense_one():
    dense = np.full(2048, 50.0)
    assert mse_range(dense, -1.0, 3.0) == (-1.0, 3.0)  # uniform: clipping only adds error
    tail = np.r_[np.full(1024, 100.0), np.zeros(1023), 1.0]  # all mass in the lower half, one outlier
    lo, hi = mse_range(tail, 0.0, 8.0)
    assert lo == 0.0 and 4.0 <= hi < 8.0
    lo, hi = mse_range(tail[::-1].copy(), -8.0, 0.0)  # mirrored: the low end moves, 0 stays inside
    assert -8.0 < lo <= -4.0 and hi == 0.0
    assert mse_range(np.zeros(2048), 0.0, 1.0) == (0.0, 1.0)  # nothing seen: the range is kept


def test_range_recipes_plan_and_refusals():
    plan = build_plan("split-levels,weights-octav,calib-mse", 16, "int8-per-tensor").conversion
    assert (plan.activation_ranges, plan.weight_ranges, plan.ranges_by_library) == ("mse", "octav", True)
    assert not build_plan("split-levels,calib-all", 16, "int8-per-tensor").conversion.ranges_by_library
    with pytest.raises(WorkbenchError, match="calib-mse cannot be combined with int16x8"):
        parse_recipes("calib-mse,int16x8")
    with pytest.raises(WorkbenchError, match="weights-octav cannot be combined"):
        parse_recipes("weights-octav,float-fallback")


@pytest.fixture(scope="module")
def tiny_ranges():
    """The tiny model quantized per-tensor with each range setting (and mse twice, for determinism)."""
    from tests.tiny_tflite import calibration_images, tiny_models
    from workbench.recipes.ranges import quantize_with_ranges

    float_model = tiny_models()["fp32"].read_bytes()
    batches = list(calibration_images(16, seed=1))
    settings = {"minmax": ("minmax", "minmax"), "mse": ("mse", "minmax"), "octav": ("minmax", "octav")}
    files = {
        key: quantize_with_ranges(float_model, batches, per_tensor=True, activation_ranges=a, weight_ranges=w)
        for key, (a, w) in settings.items()
    }
    files["mse-again"] = quantize_with_ranges(float_model, batches, per_tensor=True, activation_ranges="mse")
    files["mse-pc"] = quantize_with_ranges(float_model, batches, per_tensor=False, activation_ranges="mse")
    return float_model, batches, files


def _tensors(model: bytes) -> dict[str, dict]:
    from ai_edge_litert.interpreter import Interpreter

    return {d["name"]: d for d in Interpreter(model_content=model).get_tensor_details()}


@pytest.mark.slow
def test_range_setting_files_are_int8_deterministic_and_close_to_float(tiny_ranges, tmp_path):
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.runtime import TFLiteModel
    from workbench.tflite_graph import read_graph

    float_model, batches, files = tiny_ranges
    assert files["mse"] == files["mse-again"]
    (tmp_path / "fp32.tflite").write_bytes(float_model)
    reference = TFLiteModel(tmp_path / "fp32.tflite")
    for key, model in files.items():
        path = tmp_path / f"{key}.tflite"
        path.write_bytes(model)
        graph = read_graph(path)
        assert is_all_int8(graph), key
        assert weight_granularity(graph).verdict == ("per-channel" if key == "mse-pc" else "per-tensor")
        got, want = TFLiteModel(path).run(batches[0]), reference.run(batches[0])
        for g, w in zip(sorted(got, key=np.size), sorted(want, key=np.size), strict=True):
            sqnr = 10 * np.log10(np.sum(w**2) / max(np.sum((g - w) ** 2), 1e-20))
            assert sqnr > 15, (key, sqnr)  # a quantized copy of the same network, not noise


@pytest.mark.slow
def test_calib_mse_narrows_inner_ranges_and_keeps_outputs(tiny_ranges):
    from ai_edge_litert.interpreter import Interpreter

    _, _, files = tiny_ranges
    plain, mse = _tensors(files["minmax"]), _tensors(files["mse"])
    outputs = {d["name"] for d in Interpreter(model_content=files["mse"]).get_output_details()}
    narrower = 0
    for name, t in mse.items():
        scales = t["quantization_parameters"]["scales"]
        if t["dtype"] != np.int8 or len(scales) != 1 or t["shape"].size != 4 or "images" in name:
            continue  # activations only (weights and the fixed input scale aside)
        before = plain[name]["quantization_parameters"]["scales"][0]
        if name in outputs:
            assert scales[0] == before, name
        else:
            assert scales[0] <= before * (1 + 1e-6), name
            narrower += scales[0] < before * 0.999
    assert narrower >= 1


@pytest.mark.slow
def test_weights_octav_clips_per_tensor_weights(tiny_ranges):
    """OCTAV's clip is below max|w| (where min/max puts it) for some convolution of the tiny model."""
    _, _, files = tiny_ranges
    plain, octav = _tensors(files["minmax"]), _tensors(files["octav"])
    weights = [
        n for n, t in plain.items() if t["dtype"] == np.int8 and ("convolution" in n or "depthwise" in n)
    ]
    assert weights
    smaller = [
        n
        for n in weights
        if octav[n]["quantization_parameters"]["scales"][0] < plain[n]["quantization_parameters"]["scales"][0]
    ]
    assert smaller, "OCTAV changed no convolution's weight scale"


def test_bias_correction_cancels_the_mean_shift_of_int8_weights():
    """After correction, the conv with int8 weights has the float conv's mean output per channel on
    the calibration inputs (exactly: the shift is linear in the inputs)."""
    import torch

    from workbench.recipes.bias_correct import correct_biases
    from workbench.recipes.weight_rounding import fake_quantize_weights

    class Net(torch.nn.Sequential):
        def fuse(self, verbose=False):  # Ultralytics' models fold BatchNorm here; nothing to fold
            return self

    torch.manual_seed(0)
    net = Net(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 1, bias=False))
    with torch.no_grad():  # uneven channels: per-tensor rounding shifts the small ones' means
        net[0].weight *= torch.tensor([0.01, 0.05, 0.2, 1.0, 3.0, 0.02])[:, None, None, None]
    batches = [np.random.default_rng(i).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32) for i in range(4)]
    x = torch.from_numpy(np.concatenate(batches).transpose(0, 3, 1, 2))
    float_mean = net[0](x).mean(dim=(0, 2, 3)).detach()
    w_q = torch.from_numpy(fake_quantize_weights(net[0].weight.detach().double().numpy(), per_channel=False))
    plain_q_mean = torch.nn.functional.conv2d(x.double(), w_q, net[0].bias.double(), padding=1).mean(
        dim=(0, 2, 3)
    )
    assert (plain_q_mean - float_mean).abs().max() > 1e-4  # there is a shift to cancel
    assert correct_biases(net, batches, per_channel=False) == 2
    assert net[2].bias is not None  # a conv without bias gets one
    corrected = torch.nn.functional.conv2d(x.double(), w_q, net[0].bias.double(), padding=1).mean(
        dim=(0, 2, 3)
    )
    torch.testing.assert_close(corrected.float(), float_mean, atol=1e-6, rtol=0)
