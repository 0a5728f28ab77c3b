"""The export and convert jobs: keys, reuse, refusals, and the bytes of the path they replaced."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.tiny_tflite import _model
from workbench.config import Scheme
from workbench.errors import WorkbenchError
from workbench.exported import EXPORT_META, ExportResult
from workbench.fileio import sha256_file, write_json
from workbench.recipes.edits import ExportEdits

# sha256 of the files the code at the branch point of issue 18 (main 2376504) wrote for these
# conversions of tests/conftest.py's pose256 export (synthetic checkpoint at 256, synth_eval_set's
# 32 train images, 16 calibration images, uf), its recipe re-export already beside the export. (When
# quantize() had just made that re-export itself, it wrote Ultralytics' metadata keys in another
# order: same graph, other bytes. Now a conversion always reads the export from its folder.)
BRANCH_POINT_SHA256 = {
    (
        "int8-per-tensor",
        "split-levels+equalize",
    ): "41d811cbf2d922668c5c3b5c909df2d68d938a8f29dacd27af34ffe82601e7ee",
    ("int8-per-channel", "bias-correct"): "922c24b1e319c314b6e701cd885ea1380916261d37f46bce2933a5eee33e4d77",
}


def _write_export(folder, weights, **fields) -> ExportResult:
    """An export record (no graph) of ``weights``, with ``fields`` (head, equalized...) set."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = ExportResult(
        saved_model=folder, task="pose", imgsz=256, names={0: "person"}, kpt_shape=[17, 3],
        normalized=True, weights=str(weights), weights_sha256=sha256_file(weights), seconds=0.0, **fields,
    )  # fmt: skip
    record = meta.to_dict()
    record.pop("saved_model")
    write_json(folder / EXPORT_META, record)
    return meta


@pytest.fixture
def recorded_calls(monkeypatch):
    """Calls of the yolo family's export (which then returns a marker, exporting nothing)."""
    from workbench.families.yolo import YoloFamily

    calls = []
    monkeypatch.setattr(YoloFamily, "export", lambda self, *a, **k: calls.append((a, k)) or "exported")
    return calls


def test_export_job_reuses_an_export_only_for_the_same_weights_and_edits(tmp_path, recorded_calls):
    from workbench.jobs import export_job

    weights = tmp_path / "m.pt"
    weights.write_bytes(b"first weights")
    folder = tmp_path / "sm"
    _write_export(folder, weights)
    assert export_job(weights, 256, folder, family="yolo").saved_model == folder and not recorded_calls
    assert export_job(weights, 320, folder, family="yolo") == "exported"  # another size
    assert (
        export_job(weights, 256, folder, ExportEdits(equalize=True), family="yolo") == "exported"
    )  # other edits
    weights.write_bytes(b"replaced weights, same name")
    assert export_job(weights, 256, folder, family="yolo") == "exported"  # never the old weights' export
    assert len(recorded_calls) == 3


def test_a_recipe_never_re_exports_from_weights_replaced_since_the_export(tmp_path, recorded_calls):
    from workbench.jobs import recipe_export

    weights = tmp_path / "m.pt"
    weights.write_bytes(b"the exported weights")
    base = _write_export(tmp_path / "sm", weights)
    weights.write_bytes(b"another network under the same name")
    with pytest.raises(WorkbenchError, match="no longer the one this SavedModel was exported from"):
        recipe_export(base, "equalize", "int8-per-tensor")
    assert not recorded_calls and not (tmp_path / "sm+equalized").exists()


def test_export_job_of_edits_learned_from_images_is_keyed_by_the_images(tmp_path, recorded_calls):
    from workbench.calibration import calibration_fingerprint
    from workbench.jobs import export_job

    weights, images = tmp_path / "m.pt", tmp_path / "images"
    weights.write_bytes(b"weights")
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(bytes([i]) * 10)
    edits = ExportEdits(head="levels", bias_correct="per-tensor")
    fingerprint = calibration_fingerprint(images, edits.calibration_images(200))
    folder = tmp_path / "sm+levels-head+bc-per-tensor"
    _write_export(folder, weights, head="levels", bias_corrected="per-tensor:abcd", calibration=fingerprint)
    assert export_job(weights, 256, folder, edits, family="yolo", calib=images).saved_model == folder
    (images / "0.png").write_bytes(b"another image")
    assert export_job(weights, 256, folder, edits, family="yolo", calib=images) == "exported"
    assert recorded_calls[0][1]["edits"] == edits and recorded_calls[0][1]["calib"] == images


def test_conversion_refuses_an_export_without_the_recipes_edits(tmp_path):
    from workbench.quantize import checked_export
    from workbench.recipes import build_plan

    weights = tmp_path / "m.pt"
    weights.write_bytes(b"weights")
    plain, equalized = tmp_path / "plain", tmp_path / "plain+equalized"
    _write_export(plain, weights)
    _write_export(equalized, weights, equalized=True)
    for folder in (plain, equalized):
        for part in ("saved_model.pb", "variables/variables.index"):
            (folder / part).parent.mkdir(exist_ok=True)
            (folder / part).write_bytes(b"")
    int8, fp32 = Scheme.INT8_PER_TENSOR, Scheme.FP32
    plan = build_plan("equalize", 16, int8)
    with pytest.raises(WorkbenchError, match=r"has the edits \[none\], and equalize needs \[equalized\]"):
        checked_export(plain, plan, int8)
    assert checked_export(equalized, plan, int8).equalized
    with pytest.raises(WorkbenchError, match=r"has the edits \[equalized\], and a plain conversion needs"):
        checked_export(equalized, build_plan(None, 16, int8), int8)  # the file would not record it
    assert checked_export(equalized, build_plan(None, 16, fp32), fp32).equalized  # a float file of it: fine


def test_a_family_refuses_an_edit_it_cannot_make_before_loading_anything(tmp_path):
    from workbench.families import get_family

    with pytest.raises(WorkbenchError, match="the ssd family's export cannot make the edit.s. head, qat"):
        get_family("ssd").export(
            tmp_path / "absent_224.h5",
            224,
            tmp_path / "sm",
            edits=ExportEdits(head="split", qat="per-tensor"),
        )
    assert not (tmp_path / "sm").exists()


def test_convert_job_reuses_its_file_for_the_same_key_only(tmp_path, monkeypatch):
    """A second convert job of the same key returns the file there (no conversion); another scheme or
    a changed file converts again."""
    from workbench import jobs

    saved = tmp_path / "saved_model"
    _model().export(str(saved), format="tf_saved_model", verbose=False)
    weights = tmp_path / "tiny.pt"
    weights.write_bytes(b"tiny")
    _write_export(saved, weights)
    export = ExportResult.load(saved)
    converted = []
    quantize = jobs.quantize
    monkeypatch.setattr(jobs, "quantize", lambda *a, **k: converted.append(a[1]) or quantize(*a, **k))
    first = jobs.convert_job(export, "fp32", tmp_path / "v" / "fp32.tflite")
    again = jobs.convert_job(export, "fp32", tmp_path / "v" / "fp32.tflite")
    assert converted == ["fp32"] and again.sha256 == first.sha256 == sha256_file(first.path)
    jobs.convert_job(export, "fp16", tmp_path / "v" / "fp32.tflite")  # same file name, another key
    first.path.write_bytes(first.path.read_bytes() + b"\0")
    jobs.convert_job(export, "fp16", tmp_path / "v" / "fp32.tflite")  # the file changed since
    assert converted == ["fp32", "fp16", "fp16"]


@pytest.mark.slow
@pytest.mark.parametrize("scheme, recipes", list(BRANCH_POINT_SHA256))
def test_recipe_files_have_the_bytes_of_the_branch_point(pose256, synth_eval_set, tmp_path, scheme, recipes):
    """The export the family makes with the recipes' edits, then the conversion, write the bytes that
    quantize() re-exporting behind the caller's back wrote; the jobs' path writes them too."""
    from workbench.jobs import convert_job, quantize_with_recipes, recipe_export

    expected = BRANCH_POINT_SHA256[(scheme, recipes)]
    calib = {"calib": synth_eval_set.train_images, "calib_count": 16}
    one_off = quantize_with_recipes(
        pose256["saved_model"], scheme, tmp_path / "one-off.tflite", io="uf", recipes=recipes, **calib
    )
    assert one_off.sha256 == expected
    base = shutil.copytree(pose256["saved_model"], tmp_path / "sm")  # a fresh folder: exported again
    export = recipe_export(ExportResult.load(base), recipes, scheme, **calib)
    assert export.saved_model.name == "sm+" + ExportEdits.recorded(export).key
    assert (
        convert_job(export, scheme, tmp_path / "job.tflite", io="uf", recipes=recipes, **calib).sha256
        == expected
    )
    assert np.array_equal(np.fromfile(one_off.path, np.uint8), np.fromfile(tmp_path / "job.tflite", np.uint8))


def test_a_plain_export_is_made_once_per_session_and_copied(pose256, export_once_per_session, tmp_path):
    """tests/conftest.py's export memo: the same checkpoint bytes at the same size is pose256's
    export copied (no new export), recording the caller's weights path."""
    from tests.conftest import CHECKPOINT
    from workbench.export import export_saved_model

    weights = tmp_path / "same-bytes.pt"
    shutil.copyfile(CHECKPOINT, weights)
    before = dict(export_once_per_session)
    result = export_saved_model(weights, 256, tmp_path / "sm")
    assert export_once_per_session == before  # nothing exported again
    loaded = ExportResult.load(tmp_path / "sm")
    assert result.saved_model == tmp_path / "sm" and loaded.weights == str(weights.resolve())
    assert loaded.weights_sha256 == sha256_file(CHECKPOINT) and loaded.imgsz == 256
    original = pose256["saved_model"] / "saved_model.pb"
    assert (tmp_path / "sm" / "saved_model.pb").read_bytes() == original.read_bytes()
