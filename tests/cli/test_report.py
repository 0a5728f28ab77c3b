"""`workbench report` end to end through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures" / "notebooks"
WORKBENCH = Path(sys.executable).parent / "workbench"


def workbench(args, cwd):
    # no activated venv on PATH: the kernel must still be this environment's python
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"
    return subprocess.run(
        [str(WORKBENCH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # three kernel starts and two CLI processes: ~15-25 s on a shared machine
@pytest.mark.skipif(not WORKBENCH.exists(), reason="console script not installed in this environment")
def test_report_fails_visibly_then_resumes(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(FIXTURES / "01_write.ipynb", notebooks)
    good = (FIXTURES / "02_results.ipynb").read_text()
    assert "fail = False" in good
    (notebooks / "02_results.ipynb").write_text(good.replace("fail = False", "fail = True"))
    (tmp_path / "cli.yaml").write_text("name: cli\nimgsz: [256]\n")
    args = ["report", "--config", "cli.yaml", "--reports-dir", "reports", "--notebooks-dir", "notebooks"]

    failed = workbench(args, tmp_path)
    assert failed.returncode == 2, failed.stderr
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("workbench report: error:")]
    assert (
        len(error_lines) == 1
        and "02_results.ipynb" in error_lines[0]
        and "failing on demand" in error_lines[0]
    )
    run_dir = next((tmp_path / "reports").glob("cli-*"))
    assert "FAILED at step <code>02_results</code>" in (run_dir / "index.html").read_text()
    assert "failed" in (tmp_path / "reports" / "index.html").read_text()
    assert (run_dir / "02_results.html").is_file()  # the partial notebook, readable in a browser

    (notebooks / "02_results.ipynb").write_text(good)  # the fix
    done = workbench([*args, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert [s["status"] for s in summary["steps"]] == ["cached", "ran"]
    page = (run_dir / "index.html").read_text()
    assert "FAILED" not in page and "Complete" in page and "tiny_256_int8-per-channel_uf" in page
    python = json.loads((run_dir / "out_01.json").read_text())["python"]
    assert Path(python).parent == WORKBENCH.parent
