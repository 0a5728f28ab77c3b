"""RunPlan: a config resolved once (models, families, dataset, jobs), kept in ``<run>/plan.json``."""

from __future__ import annotations

import shutil

import pytest

import workbench.data.prepare
import workbench.locations
import workbench.plan
from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.plan import PLAN_JSON, RunPlan, load_plan, make_plan, plan_for

SYNTH = "data/weights/yolov8n-pose-synth.pt"


def small_config(**changes) -> RunConfig:
    values = dict(
        model=SYNTH, imgsz=[96, 128], schemes=["fp32", "int8-per-channel", "int8-per-tensor"],
        recipes=["split-channels", "calib-mse"], synth_train=4, synth_val=2, synth_imgsz=96, epochs=0,
    )  # fmt: skip
    values.update(changes)
    return RunConfig(**values)


@pytest.fixture(scope="module")
def plan() -> RunPlan:
    return make_plan(small_config())


def test_the_plan_lists_models_families_dataset_and_every_conversion(plan):
    (model,) = plan.models
    assert (model.kind, model.family, model.name) == ("ours", "yolo", "yolov8n-pose-synth")
    assert plan.dataset.val_ann.is_file() and plan.dataset.fingerprint
    assert [(j.model, j.imgsz) for j in plan.exports] == [
        ("yolov8n-pose-synth", 96),
        ("yolov8n-pose-synth", 128),
    ]
    names = [j.variant_name for j in plan.conversions if j.imgsz == 96]
    # split-channels is per-tensor only; calib-mse takes both int8 schemes; fp32 keeps float I/O
    assert names == [
        "yolov8n-pose-synth_96_fp32_ff",
        "yolov8n-pose-synth_96_int8-per-channel_uf",
        "yolov8n-pose-synth_96_int8-per-channel+calib-mse_uf",
        "yolov8n-pose-synth_96_int8-per-tensor_uf",
        "yolov8n-pose-synth_96_int8-per-tensor+split-channels_uf",
        "yolov8n-pose-synth_96_int8-per-tensor+calib-mse_uf",
    ]
    assert [j.order for j in plan.conversions] == list(range(len(plan.conversions)))


def test_a_fine_tuned_model_is_planned_under_its_new_name():
    plan = make_plan(small_config(epochs=1, recipes=[]))
    assert {j.model for j in plan.conversions} == {"yolov8n-pose-synth-ft"}


def test_plan_json_round_trips_and_is_read_without_resolving_again(plan, tmp_path, monkeypatch):
    path = plan.write(tmp_path)
    assert path == tmp_path / PLAN_JSON

    def no_resolving(*_args, **_kwargs):
        raise AssertionError("a step resolved the config again")

    for module, name in [
        (workbench.plan, "resolve_model"), (workbench.plan, "prepare_dataset"),
        (workbench.locations, "resolve_weights"), (workbench.data.prepare, "prepare_dataset"),
    ]:  # fmt: skip
        monkeypatch.setattr(module, name, no_resolving)
    loaded = load_plan(tmp_path)
    assert loaded == plan and loaded.to_dict() == plan.to_dict()
    assert plan_for(small_config(), tmp_path) == plan  # the notebooks' call: the same config reuses it


def test_a_plan_of_another_config_is_made_again(plan, tmp_path):
    plan.write(tmp_path)
    other = plan_for(small_config(imgsz=[96]), tmp_path)
    assert [j.imgsz for j in other.exports] == [96]
    assert load_plan(tmp_path) == other  # and written over the stale one


def test_two_weights_with_one_file_name_are_refused_before_any_work(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(SYNTH, tmp_path / folder / "best.pt")
    with pytest.raises(WorkbenchError, match="same variant names.*distinct file names"):
        make_plan(small_config(model=[str(tmp_path / "a" / "best.pt"), str(tmp_path / "b" / "best.pt")]))


def test_a_corrupt_or_missing_plan_is_one_clear_error(tmp_path):
    with pytest.raises(WorkbenchError, match="no plan yet"):
        load_plan(tmp_path)
    (tmp_path / PLAN_JSON).write_text("{not json")
    with pytest.raises(WorkbenchError, match="not a valid plan") as err:
        load_plan(tmp_path)
    assert str(err.value.path) == str(tmp_path / PLAN_JSON)


def test_the_plan_carries_the_board_figures_and_its_json_round_trips(tmp_path):
    board = tmp_path / "board.csv"
    board.write_text("file,target,ms,note\nm_96_int8-per-tensor_uf,stm32mp2,9.5,MP257F-DK2 @ 1.5 GHz\n")
    plan = make_plan(small_config(target="stm32mp2", measured_latency=str(board)))
    assert plan.targets == ("stm32mp2",)
    (row,) = plan.measured
    assert (row.file, row.target, row.ms, row.line, row.note) == (
        "m_96_int8-per-tensor_uf", "stm32mp2", 9.5, 2, "MP257F-DK2 @ 1.5 GHz",
    )  # fmt: skip
    plan.write(tmp_path)
    assert load_plan(tmp_path) == plan
