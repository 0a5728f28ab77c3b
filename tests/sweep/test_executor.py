"""The report's quantize and evaluate steps on a 2-worker LocalCluster write what the serial run
writes: the same .tflite bytes, the same detections, the same AP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from workbench import steps
from workbench.config import RunConfig
from workbench.plan import make_plan

CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "weights" / "yolov8n-pose-synth.pt"


def run_steps(run_dir: Path, workers: int) -> tuple[list, list]:
    cfg = RunConfig(
        model=str(CHECKPOINT),
        imgsz=[64],
        schemes=["fp32", "int8-per-channel", "int8-per-tensor"],
        recipes=["split-levels"],  # one task converts both int8 schemes on the shared re-export
        synth_preset="easy",
        synth_train=8,
        synth_val=8,
        synth_imgsz=96,
        epochs=0,
        calib_images=4,
        threads=2,  # the serial run's interpreters use 2 threads, the workers' 1
        workers=workers,
        bench_runs=3,
    )
    plan = make_plan(cfg)
    steps.retrain(plan, run_dir)
    variants, rows = steps.quantize(plan, run_dir), steps.evaluate(plan, run_dir).to_dict("records")
    if (
        workers == 0
    ):  # regression: a split head's file is no "same network" as the fp32 one; no SQNR, no failure
        timed = steps.benchmark(plan, run_dir).set_index("variant")["worst_sqnr_db"]
        assert all(timed[v.name] is None or timed[v.name] != timed[v.name] for v in variants if v.recipe)
        assert all(np.isfinite(timed[v.name]) for v in variants if v.scheme != "fp32" and not v.recipe)
    return variants, rows


def file_hashes(run_dir: Path) -> dict[str, str]:
    files = sorted(run_dir.glob("variants/**/*.tflite")) + sorted(run_dir.glob("eval/**/detections.json"))
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_cluster_steps_write_the_serial_files(tmp_path):
    serial_variants, serial_rows = run_steps(tmp_path / "serial", workers=0)
    graph_variants, graph_rows = run_steps(tmp_path / "graph", workers=2)
    assert [v.sha256 for v in graph_variants] == [v.sha256 for v in serial_variants]
    assert [v.name.split("_", 2)[2] for v in graph_variants] == [  # the serial order: scheme, recipe
        "fp32_ff", "int8-per-channel_uf", "int8-per-channel+split-levels_uf",
        "int8-per-tensor_uf", "int8-per-tensor+split-levels_uf",
    ]  # fmt: skip
    hashes = file_hashes(tmp_path / "serial")
    assert len(hashes) == 10 and file_hashes(tmp_path / "graph") == hashes
    drop = {"eval_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in graph_rows] == [
        {k: v for k, v in r.items() if k not in drop} for r in serial_rows
    ]
    assert all(r["n_images"] == 8 for r in serial_rows)
    assert all(r["ap"] is not None and 0 <= r["ap"] <= 1 for r in serial_rows)
