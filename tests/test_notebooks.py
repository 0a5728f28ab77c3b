"""The report notebooks: committed clean, and run end to end through papermill with shrunken
parameters (the pattern of recommenders/openvino_notebooks), asserting the results they record."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.pipeline import notebook_parameters, run_pipeline

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PIPELINE = sorted(NOTEBOOKS.glob("0[1-5]_*.ipynb"))
SCHEMES = ["fp32", "fp16", "int8-per-channel", "int8-per-tensor"]


def test_the_six_notebooks_exist():
    assert [p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb"))] == [
        "00_tour",
        "01_retrain",
        "02_quantize",
        "03_evaluate",
        "04_benchmark",
        "05_compare",
    ]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear outputs before commit"
            )


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_declare_config_and_run_dir_and_only_call_the_package(path):
    assert set(notebook_parameters(path)) == {"config", "run_dir"}
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # logic lives in workbench: no function or class definitions in notebooks
    assert "\ndef " not in code and not code.startswith("def ") and "\nclass " not in code
    assert any(c.cell_type == "markdown" and len(c.source) > 200 for c in nb.cells)


@pytest.fixture(scope="module")
def shrunken_run(tmp_path_factory):
    cfg = RunConfig(
        name="shrunk",
        imgsz=[192],
        schemes=SCHEMES,
        synth_preset="easy",
        synth_train=16,
        synth_val=12,
        epochs=1,
        train_imgsz=192,
        calib_images=8,
        bench_runs=5,
    )
    reports = tmp_path_factory.mktemp("reports")
    return cfg, reports, run_pipeline(cfg, PIPELINE, reports)


@pytest.mark.slow
def test_pipeline_records_every_scheme_with_sane_numbers(shrunken_run):
    cfg, _, result = shrunken_run
    assert [s.status for s in result.steps] == ["ran"] * 5
    table = pd.read_csv(result.run_dir / "results.csv")
    assert sorted(table["scheme"]) == sorted(SCHEMES)
    assert table["ap"].between(0, 1).all() and table["ap"].notna().all()
    assert (table["latency_ms_median"] > 0).all()
    assert (table["config_hash"] == cfg.hash).all() and table["model_sha256"].str.len().eq(64).all()
    size = table.set_index("scheme")["size_bytes"]
    assert size["int8-per-channel"] < 0.4 * size["fp32"] and size["int8-per-tensor"] < 0.4 * size["fp32"]
    granularity = table.set_index("scheme")["weight_granularity"]
    assert granularity["int8-per-channel"] == "per-channel" and granularity["int8-per-tensor"] == "per-tensor"
    assert (result.run_dir / "plots" / "frontier_keypoints.png").stat().st_size > 10_000
    # fp32 of a briefly fine-tuned pretrained model still finds the synthetic people
    assert table.set_index("scheme")["ap"]["fp32"] > 0.3
    for step in ("01_retrain", "05_compare"):
        assert (result.run_dir / f"{step}.html").is_file()


@pytest.mark.slow
def test_a_second_run_is_cached(shrunken_run):
    cfg, reports, first = shrunken_run
    again = run_pipeline(cfg, PIPELINE, reports)
    assert [s.status for s in again.steps] == ["cached"] * 5
    assert again.run_dir == first.run_dir


def test_unknown_parameter_fails_before_any_work(tmp_path):
    with pytest.raises(WorkbenchError, match="epoch_count"):
        run_pipeline(RunConfig(), PIPELINE, tmp_path, params_for=lambda stem: {"epoch_count": 3})
    assert list(tmp_path.iterdir()) == []


def test_missing_dataset_fails_before_any_work(tmp_path):
    cfg = RunConfig(dataset=str(tmp_path / "no-such-dataset"))
    with pytest.raises(WorkbenchError, match="no-such-dataset"):
        run_pipeline(cfg, PIPELINE, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()
