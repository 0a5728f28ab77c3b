"""Diagnosis: output-scale audit, int8 rounding of outputs, and a damaged layer ranked first."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.diagnose import OutputAudit, output_role, rounded_outputs


def test_output_roles_from_channel_counts():
    assert output_role(56, 1, 1, (17, 3)) == "head"
    assert [output_role(c, 4, 1, (17, 3)) for c in (4, 1, 34, 17)] == ["boxes", "scores", "kpt_xy", "kpt_vis"]


def test_rounded_outputs_snap_to_the_int8_grid_and_clip():
    audit = [OutputAudit("o", (1, 2, 3), "head", 0.1, -28, {"coordinates": 25.6})]
    x = np.array([[[0.04, 0.06, 1.0], [-100.0, 100.0, 0.0]]], np.float32)
    (y,) = rounded_outputs(audit)([x])
    np.testing.assert_allclose(y, [[[0.0, 0.1, 1.0], [-10.0, 15.5, 0.0]]], atol=1e-6)
    other = np.ones((1, 5), np.float32)  # shapes the audit does not know pass through
    assert rounded_outputs(audit)([other])[0] is other


def _damaged_saved_model(folder):
    """conv → conv ("damaged") → conv: one dead output channel of the middle conv has weights 1000x
    the others, so one per-tensor weight scale rounds every other channel of that conv to zero."""
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="first")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="damaged")(x)
    out = keras.layers.Conv2D(4, 1, name="last")(x)
    model = keras.Model(inp, out)
    kernel, bias = model.get_layer("damaged").get_weights()
    kernel[..., 0] = np.abs(kernel[..., 0]) * 1000.0
    bias[0] = -1e9  # ReLU keeps that channel at 0: the activation range stays normal
    model.get_layer("damaged").set_weights([kernel, bias])
    model.export(str(folder), verbose=False)
    return folder


@pytest.mark.slow
def test_diagnosis_ranks_a_damaged_layer_first(tmp_path):
    from tests.tiny_tflite import calibration_images
    from workbench.diagnose import block_sensitivity
    from workbench.recipes.selective import SelectiveQuantizer

    saved = _damaged_saved_model(tmp_path / "saved")
    batches = list(calibration_images(8, seed=1))
    selective = SelectiveQuantizer(saved, batches, per_tensor=True)
    blocks = selective.blocks(block_size=1)
    assert len(blocks) >= 3
    base, scored = block_sensitivity(
        selective, blocks, lambda path: selective.output_sqnr(path.read_bytes(), batches[:4])
    )
    best, best_score = max(scored, key=lambda p: p[1])
    assert any("damaged" in n for n in best.nodes), [b.label for b, _ in scored]
    assert best_score > base + 10  # dB: keeping it in float is what restores the output


@pytest.mark.zoo
def test_outputs_only_ap_runs_the_rounding_on_every_image_through_the_family_runner(zoo_dir, tiny_coco):
    """What :func:`diagnose` scores as "fp32 with int8-rounded outputs only": the runner it gets
    applies the transform to each image's float outputs; rounding to a coarse grid costs AP."""
    from workbench.diagnose import audit_outputs
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner

    model = zoo_dir / "st" / "object_detection" / "yolov8n_256_quant_pc_uf_od_coco-person-st.tflite"
    settings = EvalSettings(
        tiny_coco / "instances_train2017_small.json", tiny_coco / "train_2017_small", "detect",
        max_images=6, progress=False,
    )  # fmt: skip
    calls = []

    def counted(transform):
        def apply(outputs):
            calls.append(len(outputs))
            return transform(outputs)

        return apply

    audit = audit_outputs(model)
    plain = evaluate(evaluation_runner(model), settings).AP
    same_grid = evaluate(evaluation_runner(model, output_transform=counted(rounded_outputs(audit))), settings)
    coarse = [OutputAudit(a.name, a.shape, a.role, 0.1, 0, {}) for a in audit]  # 0.1 of the input: 26 px
    coarser = evaluate(evaluation_runner(model, output_transform=rounded_outputs(coarse)), settings).AP
    assert calls == [1] * 6  # every image, its one output
    assert same_grid.AP == pytest.approx(plain, abs=1e-6)  # already on that grid: nothing changes
    assert coarser < plain - 0.05, (coarser, plain)


def test_mismatched_inputs_are_refused_before_any_evaluation(tmp_path):
    """Was: a --reference of another network was refused only after the whole loop, and a
    --saved-model of another network gave a wrong diagnosis with exit 0."""
    from tests.tiny_tflite import tiny_models, unrelated_model
    from workbench.diagnose import diagnose
    from workbench.errors import WorkbenchError

    def no_evaluation(*_args, **_kwargs):
        raise AssertionError("evaluated before the inputs were checked")

    tiny = tiny_models()
    common = dict(ann=tmp_path / "a.json", images=tmp_path, calib=tmp_path, runner_for=no_evaluation)
    with pytest.raises(WorkbenchError, match="reference"):
        diagnose(tiny["int8-per-channel"], unrelated_model(), saved_model=tmp_path, **common)
    with pytest.raises(
        WorkbenchError, match="not exported by `workbench export`|SavedModel folder not found"
    ):
        diagnose(tiny["int8-per-channel"], tiny["fp32"], saved_model=tmp_path / "sm", **common)
