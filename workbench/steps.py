"""The report's steps as plain functions: what each notebook calls, one per notebook.

Every step takes the run's :class:`~workbench.plan.RunPlan` (its config resolved once by
:func:`preflight`, kept in ``<run_dir>/plan.json``) and run folder, writes its results to
``<run_dir>/results/<step>.json`` (atomically) and returns them; the next step reads that file,
never live objects, so each notebook can run in a fresh kernel.

=============== ================================================= ==============================
step            does                                              writes
=============== ================================================= ==============================
``retrain``     prepare the dataset; fine-tune (or train) model   ``train/``, ``retrain.json``
``quantize``    export per image size, convert per scheme         ``variants/``, ``variants.json``
``evaluate``    COCO AP of every variant on the val split         ``eval/``, ``evaluate.json``
``benchmark``   latency, size, activation RAM, per-layer SQNR     ``benchmark.json``
``compare``     the results table with provenance, plots, Pareto  ``results.csv``, ``plots/``
=============== ================================================= ==============================

A config whose ``model`` is a folder of ``.tflite`` files (e.g. ST's zoo) skips training and
conversion: ``quantize`` lists those files as the variants.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.config import RunConfig, Scheme
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file, write_csv, write_json
from workbench.plan import ModelEntry, RunPlan, make_plan
from workbench.recipes import applies
from workbench.safeload import check_weights
from workbench.variant import Variant

RESULTS = "results"
DIFFERENCES_CSV = "differences.csv"  # every AP difference the report states, with its interval


def _results_path(run_dir: str | Path, step: str) -> Path:
    return Path(run_dir) / RESULTS / f"{step}.json"


def read_step(run_dir: str | Path, step: str) -> Any:
    """The results a finished step wrote; a clear error if it has not run."""
    path = _results_path(run_dir, step)
    if not path.is_file():
        raise WorkbenchError(f"step {step!r} has no results yet: run its notebook first", path=path)
    return json.loads(path.read_text())


def preflight(cfg: RunConfig, source: str | None = None) -> RunPlan:
    """Every check that can fail before work starts (paths, weights, the evaluation data's fields
    and image files), and the config resolved once: the run's :class:`~workbench.plan.RunPlan`.
    A report calls it before its first notebook and writes the plan into the run folder."""
    from workbench.data.coco import load_coco, require_image_files

    for recipe in cfg.recipes:  # the CLI refuses such a pair; a config must not silently add no rows
        if not any(s.is_int8 and applies(recipe, s.value) for s in cfg.schemes):
            raise WorkbenchError(
                f"recipes: {recipe!r} applies to none of the schemes {[s.value for s in cfg.schemes]}",
                path=source,
            )
    plan = make_plan(cfg, source)
    for model in plan.ours:  # a weights file whose loading runs code: refused before any work
        check_weights(model.path, trust=cfg.trust_weights or None)
    require_image_files(load_coco(plan.dataset.val_ann, plan.dataset.val_images, task=cfg.task))
    return plan


# ---- 01 retrain -------------------------------------------------------------------------------
def retrain(plan: RunPlan, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune each of our models for ``cfg.epochs`` on the config's data; 0 epochs keeps them.

    A model ``.yaml`` trains from scratch with Ultralytics' defaults. Zoo folders are evaluated as
    shipped. Writes ``{"models": [one record per model of ours], "dataset": ...}``.
    """
    run_dir = Path(run_dir)
    records = [_retrain_one(plan, model, run_dir) for model in plan.ours]
    out = {
        "models": records,
        "zoo": [model.path for model in plan.zoo],
        "dataset": plan.dataset.to_dict(),
    }
    write_json(_results_path(run_dir, "retrain"), out)
    return out


def _retrain_one(plan: RunPlan, model: ModelEntry, run_dir: Path) -> dict[str, Any]:
    from workbench.families import get_family
    from workbench.locations import weights_file

    cfg, source = plan.config, model.source
    start = weights_file(source.path)
    family = get_family(model.family)
    out: dict[str, Any] = {
        "name": source.name,
        "family": family.name,
        "start": str(start),
        "epochs": cfg.epochs,
    }
    out.update(family.retrain(cfg, start, plan.dataset, run_dir / "train" / source.name))
    if cfg.epochs > 0:
        out["name"] = f"{source.name}-ft"
    out["weights_sha256"] = {
        str(size): sha256_file(path) if path.is_file() else None
        for size in cfg.imgsz
        for path in [family.weights_for(out["weights"], size)]
    }
    return out


# ---- 02 quantize ------------------------------------------------------------------------------
def quantize(plan: RunPlan, run_dir: str | Path) -> list[Variant]:
    """Export each of our models at each image size and convert it to each scheme; list zoo files.

    A Dask graph (:func:`workbench.graph.convert_variants`): exports first, then the
    conversions that depend on them, on ``cfg.workers``.
    """
    from workbench.graph import convert_variants
    from workbench.zoo import zoo_variants

    run_dir = Path(run_dir)
    retrained = read_step(run_dir, "retrain")
    variants: list[Variant] = []
    if retrained["models"]:
        variants += convert_variants(plan, retrained["models"], run_dir)
    for folder in retrained["zoo"]:
        variants += zoo_variants(folder, plan.config.task)
    write_json(_results_path(run_dir, "variants"), [asdict(v) for v in variants])
    return variants


def load_variants(run_dir: str | Path) -> list[Variant]:
    return [Variant(**v) for v in read_step(run_dir, "variants")]


# ---- 03 evaluate ------------------------------------------------------------------------------
def evaluate(plan: RunPlan, run_dir: str | Path) -> pd.DataFrame:
    """AP of every variant on the evaluation split under each protocol; one row per variant.

    One inference pass per variant serves every protocol; the variants of one (model, imgsz) share
    the decoded, pre-processed images. The first protocol fills ``ap``,
    ``ap50``, ``ap75`` and ``ar``; ST's protocol adds ``st_ap`` (its headline: pose AP at OKS 0.5
    with NMS 0.1, detection AP at IoU 0.4 for SSD / 0.5 for YOLO). Detections of each protocol are
    kept in ``eval/<variant>/<protocol>/`` for the intervals of 05_compare.
    """
    from workbench.graph import evaluate_variants

    run_dir = Path(run_dir)
    # a Dask graph: the schemes of one (model, imgsz) share one pass over the decoded images
    rows = evaluate_variants(plan.config, load_variants(run_dir), plan.dataset, run_dir)
    write_json(_results_path(run_dir, "evaluate"), rows)
    return pd.DataFrame(rows)


# ---- 04 benchmark -----------------------------------------------------------------------------
def benchmark(plan: RunPlan, run_dir: str | Path) -> pd.DataFrame:
    """Latency (LiteRT, ``cfg.threads``), size, activation arena and worst-layer SQNR vs fp32."""
    from workbench.bench import bench_models
    from workbench.inspect import inspect_model, same_network

    run_dir, cfg = Path(run_dir), plan.config
    variants = load_variants(run_dir)
    # SQNR against our fp32 file of the same model and size; zoo files have no float reference
    fp32 = {(v.model, v.imgsz): v.path for v in variants if v.scheme == Scheme.FP32.value}
    references = {}
    for variant in variants:
        reference = fp32.get((variant.model, variant.imgsz)) if variant.scheme != Scheme.FP32.value else None
        if reference and variant.recipe and not same_network(variant.path, reference):
            reference = (
                None  # a recipe that changed the outputs (split-head) has no fp32 file of its own here
            )
        if reference:
            references[variant.name] = reference
    # interleaved, so the latency ratios between variants survive a busy machine
    timings = bench_models(
        [v.path for v in variants], threads=cfg.threads, runs=cfg.bench_runs, seed=cfg.seed
    )
    sqnr = _layer_sqnr(variants, references, plan.dataset.val_images, cfg.threads)
    rows = []
    for variant, timing in zip(tqdm(variants, desc="inspect"), timings, strict=True):
        info = inspect_model(variant.path, threads=cfg.threads)
        layers = sqnr.get(variant.name)
        worst = layers[0] if layers else None
        rows.append(
            {
                "variant": variant.name,
                "latency_ms_median": timing.median_ms,
                "latency_ms_p90": timing.p90_ms,
                "latency_ms_min": timing.min_ms,
                "threads": timing.threads,
                "cpu": timing.cpu,
                "activation_ram_bytes": info.arena.arena_bytes,
                "weight_granularity": info.weights.verdict,
                "worst_sqnr_db": worst.sqnr_db if worst else None,
                "worst_sqnr_layer": f"{worst.op_index}:{worst.op}" if worst else None,
            }
        )
    if plan.targets:  # latency, memory and placement on each deployment target (workbench.targets)
        from workbench.targets.columns import target_columns

        for row, extra in zip(
            rows, target_columns([v.path for v in variants], plan.targets, timings), strict=True
        ):
            row.update(extra)
    write_json(_results_path(run_dir, "benchmark"), rows)
    return pd.DataFrame(rows)


def _layer_sqnr(
    variants: list[Variant], references: dict[str, str], images: Path, threads: int, count: int = 4
) -> dict[str, list]:
    """Per-layer SQNR of each variant named in ``references`` against its reference, on the first
    ``count`` images: the variants of one reference (the schemes of one export) run together, so
    the reference runs once per image (:func:`workbench.sqnr.layer_sqnr_many`)."""
    from workbench.data.images import list_images, load_image
    from workbench.sqnr import layer_sqnr_many

    groups: dict[str, list[Variant]] = {}
    for variant in variants:
        if variant.name in references:
            groups.setdefault(references[variant.name], []).append(variant)
    if not groups:
        return {}
    decoded = [load_image(p) for p in list_images(images, count)]
    out = {}
    for reference, members in groups.items():
        layers = layer_sqnr_many([v.path for v in members], reference, decoded, threads=threads)
        out.update({v.name: result for v, result in zip(members, layers, strict=True)})
    return out


# ---- 05 compare -------------------------------------------------------------------------------
def compare(plan: RunPlan, run_dir: str | Path) -> pd.DataFrame:
    """Join the steps' results into ``results.csv`` (with provenance) and draw the plots."""
    from workbench.provenance import package_versions
    from workbench.report import plots
    from workbench.report.table import validate_results, write_results_csv

    run_dir, cfg, dataset = Path(run_dir), plan.config, plan.dataset
    variants = pd.DataFrame([asdict(v) for v in load_variants(run_dir)])
    evaluated = pd.DataFrame(read_step(run_dir, "evaluate"))
    timed = pd.DataFrame(read_step(run_dir, "benchmark"))
    table = variants.merge(evaluated, left_on="name", right_on="variant").merge(timed, on="variant")
    if "coco" in cfg.protocols:  # intervals over images for every AP and every AP difference
        from workbench.differences import ap_differences

        intervals, differences = ap_differences(
            table, run_dir, dataset.val_ann, n_images=cfg.eval_images, seed=cfg.seed
        )
        table = table.merge(intervals, on="variant", how="left")
        write_csv(differences, run_dir / DIFFERENCES_CSV)
    if plan.measured:  # board owners' figures replace the estimates of the files they name
        from workbench.targets.measured import apply_measured

        records = table.to_dict("records")
        apply_measured(
            records,
            plan.measured,
            [{"variant": r["variant"], "path": r["path"], "sha256": r["sha256"]} for r in records],
        )
        table = pd.DataFrame(records)
    table = table.rename(columns={"sha256": "model_sha256"}).drop(columns=["name"])
    table["config_hash"] = cfg.hash
    table["dataset_hash"] = dataset.fingerprint
    table["packages"] = json.dumps(package_versions(), sort_keys=True)
    table = validate_results(table)
    write_results_csv(table, run_dir / "results.csv")
    plots.write_all(table, run_dir / "plots", latency_budget_ms=cfg.latency_budget_ms, target=cfg.target)
    return table


def clean(run_dir: str | Path) -> None:
    """Remove a run's intermediate artefacts (saved models), keeping variants and results."""
    shutil.rmtree(Path(run_dir) / "saved_models", ignore_errors=True)
