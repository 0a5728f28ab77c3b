"""What a worker runs: a shared export per (weights, task, imgsz), and one cell (convert →
evaluate → inspect) per grid point. Plain functions of picklable arguments, so Dask can ship them.

Timing is not measured here: latency runs alone after the grid (:func:`workbench.sweep.run.run_sweep`).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from workbench.config import METRIC_OF_TASK, IOType
from workbench.data.prepare import PreparedDataset
from workbench.exported import ExportResult
from workbench.jobs import convert_job, export_job, recipe_export
from workbench.sweep.grid import Cell


def export_task(weights: str, imgsz: int, folder: str, family: str) -> ExportResult:
    """The plain export of ``weights`` (of model ``family``) at ``imgsz`` in ``folder``
    (:func:`workbench.jobs.export_job`: the one already there if made from the same weights)."""
    return export_job(weights, imgsz, folder, family=family)


def cell_task(
    cell: Cell, export: ExportResult, dataset: PreparedDataset, sweep_dir: str, threads: int
) -> dict[str, Any]:
    """Convert, evaluate and inspect one cell; its row for the store (latency filled in later)."""
    from workbench.evaluate import EvalSettings, evaluate_protocols
    from workbench.families import evaluation_runner
    from workbench.inspect import inspect_model
    from workbench.provenance import package_versions

    cfg = cell.config
    scheme = cfg.schemes[0]
    io = cfg.io if scheme.is_int8 else IOType.FF
    out = Path(sweep_dir) / "variants" / f"{cell.key}.tflite"
    recipes = cfg.recipes[0] if cfg.recipes else None
    calib = {"calib": dataset.calib_images, "calib_count": cfg.calib_images}
    start = time.perf_counter()
    export = recipe_export(export, recipes, scheme, **calib)
    converted = convert_job(export, scheme, out, io=io, recipes=recipes, **calib)
    convert_seconds = time.perf_counter() - start
    settings = EvalSettings(
        dataset.val_ann,
        dataset.val_images,
        cfg.task,
        tuple(cfg.protocols),
        imgsz=cfg.imgsz[0],
        max_images=cfg.eval_images,
        threads=threads,
        progress=False,
    )
    results = evaluate_protocols(
        evaluation_runner(out), settings, out_dir=Path(sweep_dir) / "eval" / cell.key
    )
    first = results[cfg.protocols[0]]
    info = inspect_model(out, threads=threads)
    st = results.get("st")
    return {
        "cell": cell.key,
        "status": "ok",
        "variant": cell.variant,
        "model": Path(cfg.models[0]).stem,
        "source": "ours",
        "task": cfg.task.value,
        "imgsz": cfg.imgsz[0],
        "scheme": scheme.value,
        "recipe": cfg.recipes[0] if cfg.recipes else None,
        "all_int8": converted.all_int8,
        "io": converted.io.value,
        "metric": METRIC_OF_TASK[cfg.task.value],
        "protocol": first.protocol,
        "ap": first.AP,
        "ap50": first.AP50,
        "ap75": first.AP75,
        "ar": first.AR,
        "st_ap": st.metrics.get("extra", {}).get(st.headline, st.metrics.get(st.headline)) if st else None,
        "path": str(out.relative_to(sweep_dir)),  # the folder may move or be mounted elsewhere
        "model_sha256": converted.sha256,
        "size_bytes": converted.size_bytes,
        "activation_ram_bytes": info.arena.arena_bytes,
        "weight_granularity": info.weights.verdict,
        "config_hash": cfg.hash,
        "dataset_hash": dataset.fingerprint,
        "packages": json.dumps(package_versions(), sort_keys=True),
        "calib_images": cfg.calib_images,
        "dataset": cfg.dataset,
        "weights_sha256": cell.weights_sha256,
        "n_images": first.n_images,
        "convert_seconds": convert_seconds,
        "eval_seconds": first.seconds["wall"],
        "host": socket.gethostname(),
    }


def failed_row(cell: Cell, error: BaseException) -> dict[str, Any]:
    """The row of a cell that raised: its identity and the error, no figures."""
    cfg = cell.config
    return {
        "cell": cell.key,
        "status": "failed",
        "error": f"{type(error).__name__}: {error}".strip()[:2000],
        "variant": cell.variant,
        "model": Path(cfg.models[0]).stem,
        "source": "ours",
        "task": cfg.task.value,
        "imgsz": cfg.imgsz[0],
        "scheme": cfg.schemes[0].value,
        "recipe": cfg.recipes[0] if cfg.recipes else None,
        "io": cfg.io.value if cfg.schemes[0].is_int8 else IOType.FF.value,
        "metric": METRIC_OF_TASK[cfg.task.value],
        "config_hash": cfg.hash,
        "calib_images": cfg.calib_images,
        "dataset": cfg.dataset,
        "weights_sha256": cell.weights_sha256,
    }
