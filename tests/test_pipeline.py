"""Pipeline runner on two tiny fixture notebooks: caching, --force, failure, resume, validation.

Each papermill kernel start costs ~2-3 s, so the executions are shared: one module-scoped run
that later tests re-use (they leave it complete), and one copied run folder for failure/resume.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.pipeline import check_kernel, run_id_for, run_pipeline
from workbench.report import build_run_report, load_results

NOTEBOOKS = sorted((Path(__file__).parent / "fixtures" / "notebooks").glob("0*.ipynb"))
CONFIG = RunConfig(name="pipe", imgsz=[256])


def executions(run_dir: Path) -> list[str]:
    log = run_dir / ".executions.log"  # a dot-file: instrumentation, not a step output
    return log.read_text().split() if log.exists() else []


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    result = run_pipeline(CONFIG, NOTEBOOKS, reports)
    return reports, result


def test_first_run_executes_every_notebook_into_run_folder(completed):
    reports, result = completed
    run_dir = reports / f"pipe-{CONFIG.hash}"
    assert result.run_dir == run_dir and result.run_id == run_id_for(CONFIG)
    assert result.ran == ["01_write", "02_results"] and result.cached == []
    for name in ("01_write", "02_results"):
        assert (run_dir / f"{name}.ipynb").is_file()
        assert "<html" in (run_dir / f"{name}.html").read_text()[:2000].lower()
        record = json.loads((run_dir / "steps" / f"{name}.json").read_text())
        assert record["status"] == "done" and record["config_hash"] == CONFIG.hash
        assert record["seconds"] > 0
    record = json.loads((run_dir / "steps" / "01_write.json").read_text())
    assert record["outputs"] == ["out_01.json"]
    assert record["output_sha256"] == {"out_01.json": sha256_file(run_dir / "out_01.json")}
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    # the notebook received the config and ran on this environment's interpreter
    out = json.loads((run_dir / "out_01.json").read_text())
    assert out["config_hash"] == CONFIG.hash
    assert Path(out["python"]).absolute().parent == Path(sys.executable).absolute().parent
    assert len(load_results(run_dir)) == 3
    assert RunConfig.from_yaml(run_dir / "config.yaml").hash == CONFIG.hash


def test_rerun_with_same_config_is_cached(completed, capsys):
    reports, result = completed
    before = executions(result.run_dir)
    t0 = time.perf_counter()
    again = run_pipeline(CONFIG, NOTEBOOKS, reports)
    elapsed = time.perf_counter() - t0
    assert again.cached == ["01_write", "02_results"] and again.ran == []
    assert executions(result.run_dir) == before
    assert elapsed < 2.0, f"cached re-run took {elapsed:.1f} s: did a kernel start?"
    assert f"step 01_write: cached (config {CONFIG.hash}), use --force to redo" in capsys.readouterr().err


def test_force_reruns_every_step(completed):
    reports, result = completed
    before = executions(result.run_dir)
    again = run_pipeline(CONFIG, NOTEBOOKS, reports, force=True)
    assert again.ran == ["01_write", "02_results"]
    assert executions(result.run_dir) == before + ["01_write", "02_results"]


def test_failure_keeps_partial_notebook_then_resumes(completed, tmp_path):
    reports, result = completed
    # a copy of the finished run: step 01 stays cached, step 02 re-runs because its parameters change
    shutil.copytree(reports, tmp_path / "reports")
    reports, run_dir = tmp_path / "reports", tmp_path / "reports" / result.run_id
    before = executions(run_dir)
    (run_dir / "index.html").write_text("a report from the previous, complete run")

    def fail_02(name):
        return {"fail": True} if name == "02_results" else {}

    with pytest.raises(WorkbenchError) as err:
        run_pipeline(CONFIG, NOTEBOOKS, reports, params_for=fail_02)
    message = str(err.value)
    assert "02_results.ipynb" in message and "cell [" in message and "failing on demand" in message
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == "02_results"
    assert not (run_dir / "steps" / "02_results.json").exists()
    assert (run_dir / "steps" / "01_write.json").exists()
    assert executions(run_dir) == before + ["02_results"]
    partial = nbformat.read(run_dir / "02_results.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in partial.cells for o in c.get("outputs", []))
    assert not (run_dir / "index.html").exists()  # the stale complete page is gone
    assert "FAILED at step <code>02_results</code>" in build_run_report(run_dir).read_text()

    resumed = run_pipeline(CONFIG, NOTEBOOKS, reports)
    assert resumed.cached == ["01_write"] and resumed.ran == ["02_results"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"


def test_unknown_parameter_is_refused_before_any_work(tmp_path):
    with pytest.raises(WorkbenchError) as err:
        run_pipeline(CONFIG, NOTEBOOKS, tmp_path / "reports", params_for=lambda name: {"epochz": 3})
    message = str(err.value)
    assert "01_write.ipynb" in message and "epochz" in message and "valid: config, run_dir" in message
    assert not (tmp_path / "reports").exists()


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    bare = tmp_path / "01_bare.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), bare)
    with pytest.raises(WorkbenchError, match="01_bare.ipynb: has no 'parameters' cell"):
        run_pipeline(CONFIG, [bare], tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


def test_missing_dataset_or_notebook_is_refused_before_any_work(tmp_path):
    config = CONFIG.replace(dataset=str(tmp_path / "no-such-dataset"))
    with pytest.raises(WorkbenchError, match="dataset .*no-such-dataset.* not found"):
        run_pipeline(config, NOTEBOOKS, tmp_path / "reports")
    with pytest.raises(WorkbenchError, match="04_missing.ipynb: notebook not found"):
        run_pipeline(CONFIG, [*NOTEBOOKS, tmp_path / "04_missing.ipynb"], tmp_path / "reports")
    with pytest.raises(WorkbenchError, match="tag 'a b' cannot name a run folder"):
        run_pipeline(CONFIG, NOTEBOOKS, tmp_path / "reports", tag="a b")
    assert not (tmp_path / "reports").exists()


def test_kernel_resolves_to_this_environment():
    python = check_kernel("python3")
    assert Path(python).absolute().parent == Path(sys.executable).absolute().parent
    with pytest.raises(WorkbenchError, match="kernel 'no-such-kernel' not found"):
        check_kernel("no-such-kernel")


def test_cache_is_invalidated_by_any_change_to_its_inputs(completed):
    from workbench.stepcache import is_cached as _is_cached

    _, result = completed
    executed = result.run_dir / "01_write.ipynb"
    record = json.loads((result.run_dir / "steps" / "01_write.json").read_text())
    expected = {k: record[k] for k in ("config_hash", "notebook_sha256", "params_hash")}
    assert _is_cached(record, expected, executed) is None
    assert _is_cached(None, expected, executed) == "not run yet"
    assert _is_cached(record, {**expected, "config_hash": "x"}, executed) == "config changed"
    assert _is_cached(record, {**expected, "notebook_sha256": "x"}, executed) == "notebook changed"
    assert _is_cached(record, {**expected, "params_hash": "x"}, executed) == "parameters changed"
    assert _is_cached({**record, "outputs": ["gone.json"]}, expected, executed) == "output gone.json missing"
    assert _is_cached(record, expected, executed.with_name("nope.ipynb")) == "executed notebook missing"
