"""The qat recipe: quantization-aware fine-tuning by self-distillation (workbench.recipes.qat)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.recipes import build_plan, parse_recipes

SHORT_STEPS = 25  # enough to see the error fall on the synthetic checkpoint; the recipe runs 300


def test_qat_plan_and_refusals():
    assert build_plan("split-levels,qat", 16, "int8-per-tensor").export.qat == "per-tensor"
    assert parse_recipes("qat,split-levels,calib-mse") == ["split-levels", "qat", "calib-mse"]
    with pytest.raises(WorkbenchError, match="qat leaves the weights on the converter's min/max int8 grid"):
        parse_recipes("qat,weights-octav")
    with pytest.raises(WorkbenchError, match="use qat without them"):
        parse_recipes("qat+bias-correct")


def _int8_output_error(model, images, per_channel: bool, teacher) -> float:
    """Mean squared error of ``model``'s distillation targets vs ``teacher``'s, weights rounded to int8."""
    import torch

    from workbench.recipes.qat import _distillation_targets
    from workbench.recipes.weight_rounding import fake_quantize_weights

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for conv in (m for m in rounded.modules() if isinstance(m, torch.nn.Conv2d)):
            w = conv.weight.double().numpy()
            conv.weight.copy_(torch.from_numpy(fake_quantize_weights(w, per_channel=per_channel)))
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(images).transpose(0, 3, 1, 2)))
        pairs = zip(_distillation_targets(rounded, x), _distillation_targets(teacher, x), strict=True)
        return float(np.mean([float(((s - t) ** 2).mean() / t.var()) for s, t in pairs]))


@pytest.fixture(scope="module")
def finetuned(synth_eval_set):
    """The synthetic checkpoint (BatchNorm folded) before and after a short per-tensor fine-tuning, twice."""
    from ultralytics import YOLO

    import workbench.recipes.qat as qat
    from tests.conftest import CHECKPOINT
    from workbench.calibration import calibration_batches

    images = calibration_batches(synth_eval_set.train_images, 128, 24)
    float_model = YOLO(str(CHECKPOINT)).model.fuse(verbose=False).eval()
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qat, "QAT_STEPS", SHORT_STEPS)
        for _ in range(2):
            model = copy.deepcopy(float_model)
            losses = qat.finetune_int8(model, images[:16], per_channel=False, progress=False)
            runs.append((model, losses))
    return float_model, runs, images[16:]


@pytest.mark.slow
def test_qat_weights_end_on_the_converters_int8_grid(finetuned):
    import torch

    from workbench.recipes.weight_rounding import fake_quantize_weights

    _, [(model, losses), _], _ = finetuned
    assert len(losses) == SHORT_STEPS and all(np.isfinite(losses))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and not any(p.requires_grad for p in model.parameters())
    for conv in convs:  # plain tensors again (no parametrization), already int8-exact
        assert not hasattr(conv, "parametrizations")
        w = conv.weight.detach().double().numpy()
        np.testing.assert_allclose(
            fake_quantize_weights(w, per_channel=False), w, rtol=0, atol=1e-6 * np.abs(w).max()
        )


@pytest.mark.slow
def test_qat_lowers_the_int8_error_on_held_out_images_and_is_deterministic(finetuned):
    import torch

    float_model, [(model, _), (again, _)], held_out = finetuned
    before = _int8_output_error(float_model, held_out, per_channel=False, teacher=float_model)
    after = _int8_output_error(model, held_out, per_channel=False, teacher=float_model)
    assert after < 0.9 * before, (before, after)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_qat_refuses_a_segmentation_checkpoint_before_exporting(tmp_path):
    from ultralytics import YOLO

    from workbench.families import get_family
    from workbench.recipes.edits import ExportEdits

    weights = tmp_path / "seg.pt"
    YOLO("yolov8n-seg.yaml").save(weights)  # an untrained architecture: the task is what matters
    with pytest.raises(WorkbenchError, match="qat distils the split head's outputs.*not seg$"):
        get_family("yolo").export(
            weights, 128, tmp_path / "sm", edits=ExportEdits(qat="per-tensor"), calib=tmp_path
        )
    assert not (tmp_path / "sm").exists()
