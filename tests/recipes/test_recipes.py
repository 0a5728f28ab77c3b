"""Recovery recipes: registry, config, the split head's decode, and every recipe's file."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.recipes import RECIPES, build_plan, parse_recipes


def test_parse_recipes_orders_validates_and_rejects():
    assert parse_recipes("calib-all, split-head") == ["split-head", "calib-all"]
    assert parse_recipes(["split-head", "split-head"]) == ["split-head"]
    with pytest.raises(WorkbenchError, match="unknown recipe.*nope.*known: split-head"):
        parse_recipes("nope")
    with pytest.raises(WorkbenchError, match="cannot be combined"):
        parse_recipes("int16x8,float-fallback")
    with pytest.raises(WorkbenchError, match="split-channels-fine is split-channels with finer parts"):
        parse_recipes("split-channels+split-channels-fine")
    assert parse_recipes("split-channels-fine,equalize") == ["equalize", "split-channels-fine"]


def test_plan_composes_recipes():
    plan = build_plan("split-head,calib-all,int16x8", calib_count=50, scheme="int8-per-channel")
    export, conversion = plan.export, plan.conversion
    assert (export.head, conversion.activations, export.equalize, conversion.float_blocks) == (
        "split",
        "int16",
        False,
        0,
    )
    assert conversion.calib_count > 50 and plan.recipes == ("split-head", "calib-all", "int16x8")
    assert build_plan(None, 50, "fp32").to_dict()["recipes"] == []
    with pytest.raises(WorkbenchError, match="apply to int8 schemes, not fp16"):
        build_plan("equalize", 50, "fp16")


def _alone(name: str) -> list[str]:
    """The smallest valid recipe set holding ``name`` (calib-percentile only exists on a split head)."""
    return ["split-head", name] if name == "calib-percentile" else [name]


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_declares_its_families_schemes_and_edits(name):
    """Each entry's families are registered families that can make its export edits (the others refuse
    them, and the recipe), its schemes are int8 schemes, and its edits are one hashable value with a
    stable key, the same whatever order the set was named in."""
    from workbench.families import get_family, list_families
    from workbench.recipes import INT8_SCHEMES, check_family
    from workbench.recipes.edits import ConversionEdits, ExportEdits

    recipe = RECIPES[name]
    assert recipe.families and set(recipe.families) <= set(list_families())
    assert recipe.schemes and set(recipe.schemes) <= set(INT8_SCHEMES)
    assert recipe.export or recipe.conversion  # a recipe edits something
    for scheme in recipe.schemes:
        plan = build_plan(_alone(name), 16, scheme)
        assert isinstance(plan.export, ExportEdits) and isinstance(plan.conversion, ConversionEdits)
        again = build_plan(list(reversed(_alone(name))), 16, scheme)
        assert {plan.export: 1}[again.export] == 1 and plan.export.key == again.export.key
        assert (plan.export == ExportEdits()) is (not plan.export.key)
        assert set(plan.export.changed()) == set(
            RECIPES["split-head"].export if name == "calib-percentile" else ()
        ) | set(recipe.export)
        for family in list_families():
            if family in recipe.families:
                get_family(family).check_edits(plan.export, "m")
                check_family(plan.recipes, family)
            else:
                with pytest.raises(WorkbenchError, match=f"(does|do) not apply to {family} models"):
                    check_family(plan.recipes, family)
                if recipe.export:
                    with pytest.raises(WorkbenchError, match=f"the {family} family's export cannot make"):
                        get_family(family).check_edits(plan.export, "m")
    for scheme in set(INT8_SCHEMES) - set(recipe.schemes):
        with pytest.raises(WorkbenchError, match="per-(channel|tensor)"):
            build_plan(_alone(name), 16, scheme)


def test_export_edit_keys_are_stable_and_name_folders():
    """Folder names of recipe exports (``<export>+<key>``): fixed strings, distinct per edit set."""
    from workbench.recipes import export_edits

    assert export_edits("split-levels+equalize", "int8-per-tensor").key == "levels-head+equalized"
    assert export_edits("bias-correct", "int8-per-channel").key == "bc-per-channel"
    assert export_edits("split-head+calib-percentile", "int8-per-channel").key == "split-head+clip99.99"
    assert export_edits("calib-all,int16x8", "int8-per-channel").key == ""
    keys = {export_edits(_alone(n), s).key for n, r in RECIPES.items() if r.export for s in r.schemes}
    assert len(keys) == sum(
        len(r.schemes) if "<granularity>" in r.export.values() else 1 for r in RECIPES.values() if r.export
    )


def test_config_recipes_and_target_are_validated():
    cfg = RunConfig(recipes=["calib-all+split-head", "int16x8"], target="stm32mp2")
    assert cfg.recipes == ["split-head+calib-all", "int16x8"]
    assert cfg.hash != RunConfig().hash
    with pytest.raises(WorkbenchError, match="unknown recipe"):
        RunConfig(recipes=["magic"])
    with pytest.raises(WorkbenchError, match="'npu' is no longer accepted"):
        RunConfig(target="npu")


def test_split_head_assembly_matches_ultralytics_decode():
    """The float decode of split outputs equals Ultralytics' in-graph decode (normalized)."""
    import torch
    from ultralytics.utils.tal import dist2bbox, make_anchors

    from workbench.decode.yolo import assemble_split_head, level_sizes

    h = w = 64
    feats = [torch.zeros(1, 1, h // s, w // s) for s in (8, 16, 32)]
    anchors, strides = (a.transpose(0, 1) for a in make_anchors(feats, torch.tensor([8.0, 16.0, 32.0]), 0.5))
    n = anchors.shape[1]
    rng = np.random.default_rng(0)
    dist = rng.uniform(0, 15, (4, n)).astype(np.float32)
    scores = rng.uniform(0, 1, (1, n)).astype(np.float32)
    offsets = rng.normal(0, 1, (17, 2, n)).astype(np.float32)
    vis = rng.uniform(0, 1, (17, n)).astype(np.float32)
    box = dist2bbox(torch.from_numpy(dist)[None], anchors[None], xywh=True, dim=1)[0] * strides
    kpt = (torch.from_numpy(offsets) * 2.0 + (anchors - 0.5)) * strides  # (17, 2, n) pixels
    expected = torch.cat(
        [box, torch.from_numpy(scores), torch.cat([kpt, torch.from_numpy(vis)[:, None]], 1).reshape(51, n)]
    )
    expected = expected.numpy().T.copy()
    expected[:, [0, 2]] /= w
    expected[:, [1, 3]] /= h
    expected[:, 5::3] /= w
    expected[:, 6::3] /= h
    planes = [vis, dist, offsets.reshape(34, n), scores]  # any order: told apart by channel count
    got = assemble_split_head(planes, (h, w), nc=1, kpt_shape=(17, 3))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(WorkbenchError, match="channels"):
        assemble_split_head([dist, scores, vis[:16], offsets.reshape(34, n)], (h, w), 1, (17, 3))

    # split-levels: the same quantities as one plane per stride level, in any order
    bounds = np.cumsum([0, *level_sizes((h, w))])
    levels = [p[:, a:b] for p in planes for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    rng.shuffle(levels)
    np.testing.assert_allclose(
        assemble_split_head(levels, (h, w), nc=1, kpt_shape=(17, 3)), expected, atol=1e-5
    )
    with pytest.raises(WorkbenchError, match="cover levels"):  # a level missing is refused, not zero-filled
        assemble_split_head([p for p in levels if p.shape != (34, 4)], (h, w), 1, (17, 3))


# ---- converted files (slow) ------------------------------------------------------------------------
# each recipe alone (calib-percentile only exists on top of split-head); equalize also per-tensor;
# split-channels per-tensor only; SSD-only recipes (st-optimize) are tested on a Keras model
JOBS = [
    (n, "int8-per-channel") for n in RECIPES if n != "split-channels" and "yolo" in RECIPES[n].families
] + [
    ("equalize", "int8-per-tensor"),
    ("split-channels", "int8-per-tensor"),
]


_recipe_set = _alone


@pytest.fixture(scope="module")
def pose256_folders(pose256):
    return lambda: sorted(pose256["saved_model"].parent.iterdir())


@pytest.fixture(scope="module")
def recipe_files(pose256, synth_eval_set, converted):
    """Each recipe alone on the synthetic checkpoint at 256 (per-channel; equalize also per-tensor)."""
    import workbench.recipes.qat as qat

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qat, "QAT_STEPS", 10)  # the file's form is at stake here, not what fine-tuning gains
        return {
            (name, scheme): converted(
                pose256["saved_model"],
                scheme,
                io="uf",
                calib=synth_eval_set.train_images,
                calib_count=16,
                recipes=_recipe_set(name),
            )
            for name, scheme in JOBS
        }


@pytest.mark.slow
@pytest.mark.parametrize("name, scheme", JOBS)
def test_recipe_file_matches_its_record(recipe_files, pose256_folders, name, scheme):
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.runtime import TFLiteModel, read_tflite_metadata
    from workbench.tflite_graph import read_graph

    result = recipe_files[(name, scheme)]
    graph = read_graph(result.path)
    assert result.recipes == _recipe_set(name)
    assert read_tflite_metadata(result.path)["workbench"]["recipes"] == _recipe_set(name)
    assert result.all_int8 == is_all_int8(graph)
    assert result.granularity == weight_granularity(graph).verdict
    assert result.all_int8 is (name not in ("int16x8", "float-fallback"))
    expected = {"int8-per-channel": "per-channel", "int8-per-tensor": "per-tensor"}[scheme]
    assert result.granularity == expected
    model = TFLiteModel(result.path)
    outputs = model.run(np.full((1, 256, 256, 3), 0.5, np.float32))
    assert len(outputs) == {"split-head": 4, "split-levels": 12}.get(_recipe_set(name)[0], 1)
    assert all(np.isfinite(o).all() for o in outputs)
    if name == "calib-percentile":  # the clamp is in the graph: offsets stay within ±c, one step over at most
        from workbench.diagnose import audit_outputs
        from workbench.export import ExportResult

        folder = next(p for p in pose256_folders() if "+clip" in p.name)
        c = max(abs(v) for v in ExportResult.load(folder).kpt_clip)
        (audit,) = [a for a in audit_outputs(result.path) if a.role == "kpt_xy"]
        assert audit.scale * 254 <= 2 * c * 1.01  # the conv's int8 range is the clamp's, not the raw one
        xy = next(o for o in outputs if o.shape[1] == 34)
        assert np.abs(xy).max() <= c + audit.scale
    if name == "float-fallback":
        assert len(result.float_blocks) == 3
    if name == "qat":  # fine-tuned for this file's granularity, and recorded so
        from workbench.export import ExportResult

        folder = next(p for p in pose256_folders() if "+qat-" in p.name)
        assert ExportResult.load(folder).qat.startswith("per-channel:")


@pytest.fixture(scope="module")
def split_pc(pose256, synth_eval_set, converted):
    """The split-head per-channel file alone: ``recipe_files``' own file when it was built first."""
    return converted(
        pose256["saved_model"],
        "int8-per-channel",
        io="uf",
        calib=synth_eval_set.train_images,
        calib_count=16,
        recipes=["split-head"],
    )


@pytest.mark.slow
def test_split_head_detections_equal_single_head_within_quantization(pose256, split_pc, synth_eval_set):
    """fp32: identical detections; int8: same people, keypoints within the split outputs' steps."""
    from workbench.data.coco import load_coco
    from workbench.data.images import load_image
    from workbench.decode import decode
    from workbench.diagnose import audit_outputs
    from workbench.quantize import quantize
    from workbench.runtime import TFLiteModel

    split = split_pc
    saved_split = next(p for p in pose256["saved_model"].parent.iterdir() if p.name.endswith("+split-head"))
    fp32_split = quantize(saved_split, "fp32", split.path.with_name("split-fp32.tflite"))
    dataset = load_coco(synth_eval_set.val_ann, synth_eval_set.val_images, task="pose")

    images = [load_image(dataset.image_path(e)) for e in dataset.images[:8]]
    models = {k: TFLiteModel(p) for k, p in {
        "single": pose256["fp32"], "split": fp32_split.path, "split-int8": split.path,
    }.items()}  # fmt: skip
    kw = dict(conf=0.25, iou=0.7, max_det=100, nc=1, kpt_shape=(17, 3), normalized=True)
    steps = {a.role: a.px_per_step for a in audit_outputs(split.path)}
    worst_step = max(steps["kpt_xy"].values())
    errors = []
    for image in images:
        det = {}
        for key, model in models.items():
            outputs, transform = model(image)
            det[key] = decode(outputs, "pose", transform, **kw)
        assert len(det["single"]) == len(det["split"])
        np.testing.assert_allclose(det["split"].keypoints, det["single"].keypoints, atol=1e-2)
        if len(det["single"]) and len(det["split-int8"]):
            # each confident fp32 person: the closest int8 person's worst keypoint error, in input pixels
            gain = max(image.shape[:2]) / 256  # letterbox: original pixels per input pixel
            for kp in det["single"].keypoints[det["single"].scores > 0.5]:
                err = np.abs(det["split-int8"].keypoints[:, :, :2] - kp[None, :, :2]).max(axis=(1, 2)).min()
                errors.append(err / gain)
    # a few steps of the coarsest (stride 32) keypoint grid for the typical person
    assert errors and np.median(errors) <= 4 * worst_step, (np.median(errors), worst_step)


@pytest.mark.slow
def test_split_levels_keeps_the_detections_and_gives_each_level_a_finer_keypoint_step(
    pose256, split_pc, recipe_files, synth_eval_set, tmp_path
):
    """fp32: the 12-output file detects what the one-output file detects. int8: no keypoint-offset
    output is coarser than split-head's one shared scale (the concat across levels and the
    visibility logits set that one)."""
    from workbench.data.coco import load_coco
    from workbench.data.images import load_image
    from workbench.decode import decode
    from workbench.diagnose import audit_outputs
    from workbench.quantize import quantize
    from workbench.runtime import TFLiteModel

    saved = next(p for p in pose256["saved_model"].parent.iterdir() if p.name.endswith("+levels-head"))
    levels = TFLiteModel(quantize(saved, "fp32", tmp_path / "levels-fp32.tflite").path)
    single = TFLiteModel(pose256["fp32"])
    dataset = load_coco(synth_eval_set.val_ann, synth_eval_set.val_images, task="pose")
    kw = dict(conf=0.25, iou=0.7, max_det=100, nc=1, kpt_shape=(17, 3), normalized=True)
    people = 0
    for entry in dataset.images[:8]:
        image = load_image(dataset.image_path(entry))
        (a_out, a_tf), (b_out, b_tf) = levels(image), single(image)
        assert len(a_out) == 12
        a, b = decode(a_out, "pose", a_tf, **kw), decode(b_out, "pose", b_tf, **kw)
        assert len(a) == len(b)
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)
        people += len(a)
    assert people > 0
    shared = [x.scale for x in audit_outputs(split_pc.path) if x.role == "kpt_xy"]
    per_level = [x.scale for x in audit_outputs(recipe_files[("split-levels", "int8-per-channel")].path)
                 if x.role == "kpt_xy"]  # fmt: skip
    assert len(shared) == 1 and len(per_level) == 3
    assert max(per_level) <= shared[0]


def test_int16x8_takes_per_channel_weights_only(tmp_path):
    """Regression: `recipes: [split-head+int16x8]` failed a whole report at the per-tensor file (TF's
    16x8 mode: "Quantized dimension ... do not match"). quantize refuses the pair before any work;
    a report plans no such file."""
    from workbench.plan import conversion_groups, conversion_jobs
    from workbench.quantize import quantize

    with pytest.raises(WorkbenchError, match="per-channel weights only"):
        quantize(tmp_path / "none", "int8-per-tensor", tmp_path / "x.tflite", recipes=["int16x8"])
    cfg = RunConfig(
        imgsz=[256],
        schemes=["fp32", "int8-per-channel", "int8-per-tensor"],
        recipes=["split-head+int16x8", "split-levels"],
    )
    jobs = conversion_groups(conversion_jobs(cfg, ["m"]))
    planned = sorted((j.order, j.scheme, j.recipe) for members in jobs.values() for j in members)
    assert [(s, r) for _, s, r in planned] == [
        ("fp32", ""), ("int8-per-channel", ""), ("int8-per-channel", "split-head+int16x8"),
        ("int8-per-channel", "split-levels"), ("int8-per-tensor", ""), ("int8-per-tensor", "split-levels"),
    ]  # fmt: skip
    assert [o for o, _, _ in planned] == list(range(6))
    assert [(j.order, j.scheme, j.recipe) for j in jobs[("m", 256, "split-levels")]] == [
        (3, "int8-per-channel", "split-levels"),
        (5, "int8-per-tensor", "split-levels"),
    ]
