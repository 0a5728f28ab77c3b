"""The report's steps as plain functions: what each notebook calls, one per notebook.

Every step takes the run's :class:`~workbench.config.RunConfig` and run folder, writes its results
to ``<run_dir>/results/<step>.json`` (atomically) and returns them; the next step reads that file,
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
from workbench.data.prepare import PreparedDataset, prepare_dataset
from workbench.errors import WorkbenchError
from workbench.families import family_of
from workbench.fileio import sha256_file, write_csv, write_json
from workbench.locations import ModelSource, resolve_data, resolve_model
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


def model_sources(cfg: RunConfig) -> list[ModelSource]:
    """The config's models, resolved: our weights (found by name or path) and zoo folders."""
    return [resolve_model(entry, cfg.allow_download) for entry in cfg.models]


def is_zoo(cfg: RunConfig) -> bool:
    """Whether every model of the config is a folder of ready files (nothing to train or convert)."""
    return all(source.kind == "zoo" for source in model_sources(cfg))


def dataset_for(cfg: RunConfig, need_training: bool | None = None) -> PreparedDataset:
    """The config's dataset; a zoo-only run with ``ann``/``images`` needs nothing else."""
    if is_zoo(cfg) and cfg.dataset == "synthetic":
        if not (cfg.ann and cfg.images):
            raise WorkbenchError("a zoo run needs `ann` (COCO JSON) and `images` (folder) in its config")
        ann, images = resolve_data(cfg.ann), resolve_data(cfg.images)
        for path in (ann, images):
            if not path.exists():
                raise WorkbenchError("dataset path not found", path=path)
        from workbench.provenance import dataset_hash

        return PreparedDataset.for_evaluation(ann, images, dataset_hash(ann)[:16])
    ours = [s for s in model_sources(cfg) if s.kind == "ours"]
    if not ours:
        return prepare_dataset(cfg, need_training=need_training)
    return family_of(ours[0].path).dataset(cfg, need_training)


def preflight(cfg: RunConfig, source: str | None = None) -> None:
    """Every check that can fail before work starts: paths, weights, the evaluation data's fields
    and image files. A report calls it before its first notebook."""
    from workbench.data.coco import load_coco, require_image_files

    cfg.validate_paths(source)
    dataset = dataset_for(cfg, need_training=False)
    require_image_files(load_coco(dataset.val_ann, dataset.val_images, task=cfg.task))


# ---- 01 retrain -------------------------------------------------------------------------------
def retrain(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune each of our models for ``cfg.epochs`` on the config's data; 0 epochs keeps them.

    A model ``.yaml`` trains from scratch with Ultralytics' defaults. Zoo folders are evaluated as
    shipped. Writes ``{"models": [one record per model of ours], "dataset": ...}``.
    """
    run_dir = Path(run_dir)
    sources = model_sources(cfg)
    dataset = dataset_for(cfg)
    records = []
    for source in sources:
        if source.kind == "zoo":
            continue
        records.append(_retrain_one(cfg, source, dataset, run_dir))
    out = {
        "models": records,
        "zoo": [str(s.path) for s in sources if s.kind == "zoo"],
        "dataset": dataset.to_dict(),
    }
    write_json(_results_path(run_dir, "retrain"), out)
    return out


def _retrain_one(
    cfg: RunConfig, source: ModelSource, dataset: PreparedDataset, run_dir: Path
) -> dict[str, Any]:
    from workbench.locations import weights_file

    start = weights_file(source.path)
    family = family_of(start)
    out: dict[str, Any] = {
        "name": source.name,
        "family": family.name,
        "start": str(start),
        "epochs": cfg.epochs,
    }
    out.update(family.retrain(cfg, start, dataset, run_dir / "train" / source.name))
    if cfg.epochs > 0:
        out["name"] = f"{source.name}-ft"
    out["weights_sha256"] = {
        str(size): sha256_file(path) if path.is_file() else None
        for size in cfg.imgsz
        for path in [family.weights_for(out["weights"], size)]
    }
    return out


# ---- 02 quantize ------------------------------------------------------------------------------
def quantize(cfg: RunConfig, run_dir: str | Path) -> list[Variant]:
    """Export each of our models at each image size and convert it to each scheme; list zoo files.

    A Dask graph (:func:`workbench.sweep.executor.convert_variants`): exports first, then the
    conversions that depend on them, on ``cfg.workers``.
    """
    from workbench.sweep.executor import convert_variants
    from workbench.zoo import zoo_variants

    run_dir = Path(run_dir)
    retrained = read_step(run_dir, "retrain")
    variants: list[Variant] = []
    if retrained["models"]:
        dataset = dataset_for(cfg, need_training=False)
        variants += convert_variants(cfg, retrained["models"], dataset, run_dir)
    for folder in retrained["zoo"]:
        variants += zoo_variants(folder, cfg.task)
    write_json(_results_path(run_dir, "variants"), [asdict(v) for v in variants])
    return variants


def load_variants(run_dir: str | Path) -> list[Variant]:
    return [Variant(**v) for v in read_step(run_dir, "variants")]


# ---- 03 evaluate ------------------------------------------------------------------------------
def evaluate(cfg: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """AP of every variant on the evaluation split under each protocol; one row per variant.

    One inference pass per variant serves every protocol; the variants of one (model, imgsz) share
    the decoded, pre-processed images. The first protocol fills ``ap``,
    ``ap50``, ``ap75`` and ``ar``; ST's protocol adds ``st_ap`` (its headline: pose AP at OKS 0.5
    with NMS 0.1, detection AP at IoU 0.4 for SSD / 0.5 for YOLO). Detections of each protocol are
    kept in ``eval/<variant>/<protocol>/`` for the intervals of 05_compare.
    """
    from workbench.sweep.executor import evaluate_variants

    run_dir = Path(run_dir)
    dataset = dataset_for(cfg, need_training=False)
    # a Dask graph: the schemes of one (model, imgsz) share one pass over the decoded images
    rows = evaluate_variants(cfg, load_variants(run_dir), dataset, run_dir)
    write_json(_results_path(run_dir, "evaluate"), rows)
    return pd.DataFrame(rows)


# ---- 04 benchmark -----------------------------------------------------------------------------
def benchmark(cfg: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """Latency (LiteRT, ``cfg.threads``), size, activation arena and worst-layer SQNR vs fp32."""
    from workbench.bench import bench_models
    from workbench.inspect import inspect_model, same_network

    run_dir = Path(run_dir)
    variants = load_variants(run_dir)
    dataset = dataset_for(cfg, need_training=False)
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
    sqnr = _layer_sqnr(variants, references, dataset.val_images, cfg.threads)
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
def compare(cfg: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """Join the steps' results into ``results.csv`` (with provenance) and draw the plots."""
    from workbench.provenance import package_versions
    from workbench.report import plots
    from workbench.report.table import validate_results, write_results_csv

    run_dir = Path(run_dir)
    variants = pd.DataFrame([asdict(v) for v in load_variants(run_dir)])
    evaluated = pd.DataFrame(read_step(run_dir, "evaluate"))
    timed = pd.DataFrame(read_step(run_dir, "benchmark"))
    table = variants.merge(evaluated, left_on="name", right_on="variant").merge(timed, on="variant")
    dataset = dataset_for(cfg, need_training=False)
    if "coco" in cfg.protocols:  # intervals over images for every AP and every AP difference
        from workbench.differences import ap_differences

        intervals, differences = ap_differences(
            table, run_dir, dataset.val_ann, n_images=cfg.eval_images, seed=cfg.seed
        )
        table = table.merge(intervals, on="variant", how="left")
        write_csv(differences, run_dir / DIFFERENCES_CSV)
    table = table.rename(columns={"sha256": "model_sha256"}).drop(columns=["name"])
    table["config_hash"] = cfg.hash
    table["dataset_hash"] = dataset.fingerprint
    table["packages"] = json.dumps(package_versions(), sort_keys=True)
    table = validate_results(table)
    write_results_csv(table, run_dir / "results.csv")
    plots.write_all(table, run_dir / "plots", latency_budget_ms=cfg.latency_budget_ms)
    return table


def clean(run_dir: str | Path) -> None:
    """Remove a run's intermediate artefacts (saved models), keeping variants and results."""
    shutil.rmtree(Path(run_dir) / "saved_models", ignore_errors=True)
