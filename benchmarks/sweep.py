"""`make bench` (called by benchmarks/run.py): the report's executor, written to
benchmarks/results/sweep.json.

1. ``report_wall_seconds``: ``workbench report --config configs/default.yaml`` end to end in a
   fresh reports folder, after set-up (the synthetic set is generated first; target <= 180 s on
   2 cores).
2. ``speedup``: steps.quantize + steps.evaluate of that config, serially (``workers: 0``) and on
   a 2-worker LocalCluster, in this one run from the same retrained weights (target >= 1.7x).
   The serial path is not single-threaded (TF's converter, XNNPACK and torch use both cores), so
   ``scaling`` also compares the 2 workers with the same phase on a 1-worker LocalCluster: the
   same graph, the same per-worker settings (one thread, one-thread libraries), one process
   fewer. ``speedup`` stays the target; ``scaling`` says how much of it the graph itself gives
   (``--no-scaling`` skips that third run). ``phases_identical``: the three wrote the same files.
3. ``per_task_seconds`` from the serial run (Dask callbacks time every task) and the scale-out
   estimate they give for the issue's grid: 2693 COCO-Person val images x 240 cells (2 models x 3
   sizes x 4 schemes x 5 recipes x 2 calibration sizes) on 1, 8 and 64 workers.

Timings on a shared machine are inflated: the file records the load average before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workbench  # noqa: F401  (offline environment first)
from workbench import steps
from workbench.config import RunConfig
from workbench.fileio import write_json
from workbench.offline import REPO_ROOT
from workbench.plan import make_plan
from workbench.provenance import package_versions
from workbench.sweep.executor import SCHEDULER_ENV

RESULTS = REPO_ROOT / "benchmarks" / "results"
REPORT_TARGET_S = 180.0
SPEEDUP_TARGET = 1.7
GRID = {"images": 2693, "models": 2, "sizes": 3, "cells": 240, "workers": (1, 8, 64)}


def time_report(config: Path) -> float:
    with tempfile.TemporaryDirectory() as reports:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "workbench", "report", "--config", str(config), "--reports-dir", reports],
            check=True,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start


def time_phase(cfg: RunConfig, run_dir: Path, trained: Path) -> tuple[float, dict[str, float]]:
    """quantize + evaluate wall seconds, and each task's seconds when run serially.

    ``cfg.workers``: 0 serial in this process, N a new LocalCluster of N one-thread workers for each
    of the two steps (as ``steps.quantize``/``steps.evaluate`` open it outside a report)."""
    from dask.callbacks import Callback

    (run_dir / "results").mkdir(parents=True)
    shutil.copy(trained, run_dir / "results" / "retrain.json")
    starts: dict[str, float] = {}
    spent: dict[str, float] = {}

    def pretask(key, *_):
        starts[key] = time.perf_counter()

    def posttask(key, *_):
        spent[key] = time.perf_counter() - starts[key]

    start = time.perf_counter()
    with Callback(pretask=pretask, posttask=posttask):  # only the synchronous scheduler calls them
        plan = make_plan(cfg)
        steps.quantize(plan, run_dir)
        steps.evaluate(plan, run_dir)
    return time.perf_counter() - start, spent


def scale_out(t_export: float, t_convert: float, t_image: float, workers: int) -> float:
    """Wall seconds of the issue's grid on ``workers``: exports first (one per model and size, each
    a dependency of its 40 cells), then cells (convert + every image) in rounds of ``workers``."""
    exports = GRID["models"] * GRID["sizes"]
    cell = t_convert + GRID["images"] * t_image
    return math.ceil(exports / workers) * t_export + math.ceil(GRID["cells"] / workers) * cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "default.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-report", action="store_true", help="only the speed-up and per-task costs")
    parser.add_argument(
        "--no-scaling", action="store_true", help="skip the 1-worker run (no `scaling` figure)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "sweep.json", help="where to write the figures")
    args = parser.parse_args(argv)
    if os.environ.pop(SCHEDULER_ENV, None):  # every phase is timed on its own local cluster
        print(f"sweep: {SCHEDULER_ENV} ignored: the bench times local clusters", file=sys.stderr)
    cfg = RunConfig.from_yaml(args.config)
    plan = make_plan(cfg)  # set-up, untimed: the synthetic set is generated once and cached
    load_before = os.getloadavg()
    report_s = None if args.skip_report else time_report(args.config)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        steps.retrain(plan, tmp / "trained")  # set-up, untimed: both phases convert these weights
        trained = tmp / "trained" / "results" / "retrain.json"
        serial_s, spent = time_phase(cfg.replace(workers=0), tmp / "serial", trained)
        graph_s, _ = time_phase(cfg.replace(workers=args.workers), tmp / "graph", trained)
        phases = ["serial", "graph"]
        one_s = None
        if not args.no_scaling:
            one_s, _ = time_phase(cfg.replace(workers=1), tmp / "one", trained)
            phases.append("one")
        variants = steps.load_variants(tmp / "serial")
        identical = len({phase_files(tmp / phase) for phase in phases}) == 1

    def mean(prefix: str) -> float:
        values = [v for k, v in spent.items() if k.startswith(prefix)]
        return sum(values) / len(values)

    n_images = cfg.synth_val if cfg.eval_images is None else min(cfg.synth_val, cfg.eval_images)
    per_variant_image = sum(v for k, v in spent.items() if k.startswith("evaluate-")) / (
        len(variants) * n_images
    )
    # per converted file: the plain int8 task converts two (the second reusing the first's
    # calibration), so this is below what a sweep cell, which calibrates alone, costs
    t_export = mean("export-")
    t_convert = sum(v for k, v in spent.items() if k.startswith("convert-")) / len(variants)
    estimate = {
        str(w): round(scale_out(t_export, t_convert, per_variant_image, w), 1) for w in GRID["workers"]
    }
    speedup = serial_s / graph_s
    scaling = None if one_s is None else one_s / graph_s
    result = {
        "config": str(
            args.config.relative_to(REPO_ROOT) if args.config.is_relative_to(REPO_ROOT) else args.config
        ),
        "config_hash": cfg.hash,
        "variants": len(variants),
        "report_wall_seconds": None if report_s is None else round(report_s, 1),
        "report_target_seconds": REPORT_TARGET_S,
        "report_met": None if report_s is None else report_s <= REPORT_TARGET_S,
        "quantize_evaluate_serial_seconds": round(serial_s, 1),
        "quantize_evaluate_workers_seconds": round(graph_s, 1),
        "workers": args.workers,
        "speedup": round(speedup, 2),
        "speedup_target": SPEEDUP_TARGET,
        "speedup_met": speedup >= SPEEDUP_TARGET,
        "quantize_evaluate_one_worker_seconds": None if one_s is None else round(one_s, 1),
        "scaling": None if scaling is None else round(scaling, 2),
        "scaling_workers": [1, args.workers],
        "phases_identical": identical,
        "per_task_seconds": {k: round(v, 2) for k, v in sorted(spent.items())},
        "mean_export_seconds": round(t_export, 2),
        "mean_convert_seconds": round(t_convert, 2),
        "evaluate_seconds_per_variant_image": round(per_variant_image, 4),
        "scale_out_estimate_seconds": estimate,
        "scale_out_grid": {k: list(v) if isinstance(v, tuple) else v for k, v in GRID.items()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(args.out, result)
    report = "skipped" if report_s is None else f"{report_s:.0f} s (target {REPORT_TARGET_S:.0f})"
    scaled = (
        "" if one_s is None else f"; {one_s:.0f} s on 1 worker: {args.workers} workers scale {scaling:.2f}x"
    )
    print(
        f"sweep: report {report}; quantize+evaluate {serial_s:.0f} s serial, {graph_s:.0f} s on "
        f"{args.workers} workers = {speedup:.2f}x (target {SPEEDUP_TARGET}){scaled}; "
        f"scale-out estimate {estimate}" + ("" if identical else "; PHASES WROTE DIFFERENT FILES")
    )
    return 0 if result["speedup_met"] and result["report_met"] is not False and identical else 1


def phase_files(run_dir: Path) -> tuple:
    """sha256 of every converted file and every detections file of a phase, by relative path."""
    from workbench.fileio import sha256_file

    files = sorted(run_dir.glob("variants/**/*.tflite")) + sorted(run_dir.glob("eval/**/detections.json"))
    return tuple((str(p.relative_to(run_dir)), sha256_file(p)) for p in files)


if __name__ == "__main__":
    sys.exit(main())
