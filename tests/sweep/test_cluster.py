"""A report's graph steps share one Dask cluster, closed before the latency step runs."""

from __future__ import annotations

import json
import os

import nbformat

from workbench.cluster import ReportCluster
from workbench.config import RunConfig
from workbench.graph import SCHEDULER_ENV
from workbench.pipeline import run_pipeline

# Each notebook records the scheduler its kernel was given, that cluster's worker processes, and
# which workers recorded by the first notebook are still alive.
RECORD = """
import json, os
from pathlib import Path

import psutil

address, pids = os.environ.get("WORKBENCH_SCHEDULER"), []
if address:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        pids = sorted(client.run(os.getpid).values())
first = Path(run_dir) / "01_quantize.json"
earlier = json.loads(first.read_text())["pids"] if first.is_file() else []
alive = [pid for pid in earlier if psutil.pid_exists(pid)]
Path(run_dir, NAME + ".json").write_text(json.dumps({"address": address, "pids": pids, "alive": alive}))
"""


def notebook(folder, name: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("config = None\nrun_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(f"NAME = {name!r}\n" + RECORD)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_graph_steps_share_one_cluster_closed_before_benchmark(tmp_path, monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    names = ["01_quantize", "02_evaluate", "03_benchmark"]
    notebooks = [notebook(tmp_path, name) for name in names]
    config = RunConfig(name="cluster", imgsz=[256], workers=2)
    with ReportCluster(config.workers) as cluster:
        result = run_pipeline(config, notebooks, tmp_path / "reports", step_context=cluster.step)
    seen = {name: json.loads((result.run_dir / f"{name}.json").read_text()) for name in names}
    quantize, evaluate, benchmark = (seen[n] for n in names)
    assert quantize["address"] and evaluate["address"] == quantize["address"]
    assert len(quantize["pids"]) == 2 and evaluate["pids"] == quantize["pids"]  # workers reused
    assert benchmark["address"] is None and benchmark["alive"] == []  # timed with no worker left
    assert SCHEDULER_ENV not in os.environ


def test_no_report_cluster_when_serial_or_given(monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    with ReportCluster(0) as cluster, cluster.step("02_quantize"):
        assert SCHEDULER_ENV not in os.environ  # workers: 0 runs in the kernel
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:1")
    with ReportCluster(None) as cluster, cluster.step("03_evaluate"):
        assert os.environ[SCHEDULER_ENV] == "tcp://127.0.0.1:1"  # the user's cluster stays in charge
