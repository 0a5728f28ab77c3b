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
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.config import IOType, RunConfig, Scheme, Task, resolve_path
from workbench.data.prepare import PreparedDataset, prepare_dataset
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file, write_json

RESULTS = "results"
METRIC_OF_TASK = {Task.POSE: "keypoints", Task.SEG: "segm", Task.DETECT: "bbox"}
# ST's naming: <arch>_<imgsz>_quant_<pc|pt>_<io>_<pose|seg|od>_<dataset>.tflite, and the SSD files.
_ZOO_YOLO = re.compile(
    r"(?P<arch>.+?)_(?P<imgsz>\d+)_quant_(?P<gran>pc|pt)_(?P<io>[uif]{2})_(?P<task>pose|seg|od)"
)
_ZOO_SSD = re.compile(r"(?P<arch>ssd_.+?)_(?P<imgsz>\d+)_int8")
_ZOO_TASK = {"pose": Task.POSE, "seg": Task.SEG, "od": Task.DETECT}


@dataclass
class Variant:
    """One model file to evaluate: a model at one image size in one scheme and I/O type."""

    name: str
    model: str
    source: str  # "ours" | "zoo"
    task: str
    imgsz: int
    scheme: str
    io: str
    path: str
    sha256: str
    size_bytes: int
    recipe: str = ""  # recovery recipes joined by "+" (workbench.recipes), "" for a plain conversion
    all_int8: bool | None = None  # every op on 8-bit integers (inspect.is_all_int8); None: not checked

    def __post_init__(self) -> None:
        Scheme(self.scheme), IOType(self.io), Task(self.task)
        if self.source not in ("ours", "zoo"):
            raise ValueError(f"source must be 'ours' or 'zoo', got {self.source!r}")


def _results_path(run_dir: str | Path, step: str) -> Path:
    return Path(run_dir) / RESULTS / f"{step}.json"


def read_step(run_dir: str | Path, step: str) -> Any:
    """The results a finished step wrote; a clear error if it has not run."""
    path = _results_path(run_dir, step)
    if not path.is_file():
        raise WorkbenchError(f"step {step!r} has no results yet: run its notebook first", path=path)
    return json.loads(path.read_text())


def is_zoo(cfg: RunConfig) -> bool:
    return resolve_path(cfg.model).is_dir()


def dataset_for(cfg: RunConfig) -> PreparedDataset:
    """The config's dataset; zoo runs only need the evaluation annotations and images."""
    if is_zoo(cfg):
        if not (cfg.ann and cfg.images):
            raise WorkbenchError("a zoo run needs `ann` (COCO JSON) and `images` (folder) in its config")
        ann, images = resolve_path(cfg.ann), resolve_path(cfg.images)
        for path in (ann, images):
            if not path.exists():
                raise WorkbenchError("dataset path not found", path=path)
        from workbench.provenance import dataset_hash

        return PreparedDataset.for_evaluation(ann, images, dataset_hash(ann)[:16])
    return prepare_dataset(cfg)


# ---- 01 retrain -------------------------------------------------------------------------------
def retrain(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` (a .pt) for ``cfg.epochs`` on the config's data; 0 epochs keeps it.

    A model ``.yaml`` trains from scratch with Ultralytics' defaults. Zoo runs skip training.
    """
    run_dir = Path(run_dir)
    dataset = dataset_for(cfg)
    if is_zoo(cfg):
        out = {
            "skipped": "zoo models are evaluated as shipped",
            "weights": None,
            "dataset": dataset.to_dict(),
        }
        write_json(_results_path(run_dir, "retrain"), out)
        return out
    from workbench.train import train_from_config

    start = resolve_path(cfg.model)
    if not start.exists() and start.suffix == ".pt":
        raise WorkbenchError("model weights not found (pass a local path: downloads are off)", path=start)
    out: dict[str, Any] = {"start": str(start), "epochs": cfg.epochs, "dataset": dataset.to_dict()}
    if cfg.epochs > 0:
        result = train_from_config(
            cfg, dataset.data_yaml, start if start.exists() else cfg.model, run_dir / "train"
        )
        # Ultralytics' own val of the new weights (conf 0.001, IoU 0.7, 100 dets); 03_evaluate
        # measures the converted files with the workbench's evaluator.
        out.update(
            weights=str(result.weights),
            train_seconds=result.seconds,
            val={"map50_95": result.map50_95, "map50": result.map50},
        )
    else:
        out.update(weights=str(start), train_seconds=0.0, val=None)
    out["weights_sha256"] = sha256_file(out["weights"])
    write_json(_results_path(run_dir, "retrain"), out)
    return out


# ---- 02 quantize ------------------------------------------------------------------------------
def zoo_variants(folder: str | Path, task: Task | None = None) -> list[Variant]:
    """ST zoo files in ``folder`` (recursively), parsed from their names; scheme from their weights.

    The name's ``pc``/``pt`` is what was asked for; several ``pc`` files hold per-tensor weights, so
    the scheme recorded is the one :func:`workbench.inspect.weight_granularity` finds.
    """
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.tflite_graph import read_graph

    variants = []
    for path in sorted(Path(folder).rglob("*.tflite")):
        match = _ZOO_YOLO.match(path.stem) or _ZOO_SSD.match(path.stem)
        if not match:
            continue
        parts = match.groupdict()
        file_task = _ZOO_TASK[parts["task"]] if "task" in parts else Task.DETECT
        if task is not None and file_task is not task:
            continue
        graph = read_graph(path)
        verdict = weight_granularity(graph).verdict
        scheme = {"per-channel": Scheme.INT8_PER_CHANNEL, "per-tensor": Scheme.INT8_PER_TENSOR}.get(
            verdict, Scheme.INT8_PER_CHANNEL
        )
        variants.append(
            Variant(
                name=path.stem,
                model=parts["arch"] + ("-st" if path.stem.endswith("-st") else ""),  # ST-retrained
                source="zoo",
                task=file_task.value,
                imgsz=int(parts["imgsz"]),
                scheme=scheme.value,
                io=parts.get("io", "uf"),
                path=str(path),
                sha256=sha256_file(path),
                size_bytes=path.stat().st_size,
                all_int8=is_all_int8(graph),
            )
        )
    if not variants:
        raise WorkbenchError(f"no zoo .tflite files for task {task.value if task else 'any'}", path=folder)
    return variants


def quantize(cfg: RunConfig, run_dir: str | Path) -> list[Variant]:
    """Export the retrained model at each image size and convert it to each scheme."""
    from workbench.export import export_saved_model
    from workbench.quantize import quantize as convert

    run_dir = Path(run_dir)
    if is_zoo(cfg):
        variants = zoo_variants(resolve_path(cfg.model), cfg.task)
    else:
        retrained = read_step(run_dir, "retrain")
        dataset = dataset_for(cfg)
        weights = Path(retrained["weights"])
        model_name = (
            weights.stem if weights.stem not in ("best", "last") else f"{resolve_path(cfg.model).stem}-ft"
        )
        variants = []
        per_size = sum(1 + len(cfg.recipes) * scheme.is_int8 for scheme in cfg.schemes)
        bar = tqdm(total=(per_size + 1) * len(cfg.imgsz), desc="export+quantize")
        for imgsz in cfg.imgsz:
            saved = export_saved_model(weights, imgsz, run_dir / "saved_models" / str(imgsz))
            bar.update()
            for scheme in cfg.schemes:
                io = cfg.io if scheme.is_int8 else IOType.FF
                # recipe variants: one more row per recipe entry for each int8 scheme
                for recipe in ["", *cfg.recipes] if scheme.is_int8 else [""]:
                    tag = f"{scheme.value}{'+' + recipe if recipe else ''}"
                    out = run_dir / "variants" / str(imgsz) / f"{tag}-{io.value}.tflite"
                    result = convert(
                        saved.saved_model,
                        scheme,
                        out,
                        io=io,
                        calib=dataset.train_images,
                        calib_count=cfg.calib_images,
                        recipes=recipe.split("+") if recipe else None,
                    )
                    variants.append(
                        Variant(
                            name=f"{model_name}_{imgsz}_{tag}_{result.io.value}",
                            model=model_name,
                            source="ours",
                            task=cfg.task.value,
                            imgsz=imgsz,
                            scheme=scheme.value,
                            io=result.io.value,
                            path=str(out),
                            sha256=result.sha256,
                            size_bytes=result.size_bytes,
                            recipe=recipe,
                            all_int8=result.all_int8,
                        )
                    )
                    bar.update()
        bar.close()
    write_json(_results_path(run_dir, "variants"), [asdict(v) for v in variants])
    return variants


def load_variants(run_dir: str | Path) -> list[Variant]:
    return [Variant(**v) for v in read_step(run_dir, "variants")]


# ---- 03 evaluate ------------------------------------------------------------------------------
def evaluate(cfg: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """COCO (or ST) AP of every variant on the evaluation split; one row per variant."""
    from workbench.evaluate import evaluate as evaluate_model

    run_dir = Path(run_dir)
    dataset = dataset_for(cfg)
    rows = []
    for variant in tqdm(load_variants(run_dir), desc="evaluate"):
        result = evaluate_model(
            variant.path,
            dataset.val_ann,
            dataset.val_images,
            variant.task,
            imgsz=variant.imgsz,
            protocol=cfg.protocol,
            max_images=cfg.eval_images,
            out_dir=run_dir / "eval" / variant.name,
            threads=cfg.threads,
            progress=False,
        )
        rows.append(
            {
                "variant": variant.name,
                "metric": result.iou_type,
                "ap": result.AP,
                "ap50": result.AP50,
                "ap75": result.AP75,
                "ar": result.AR,
                "n_images": result.n_images,
                "eval_seconds": result.seconds["wall"],
            }
        )
    write_json(_results_path(run_dir, "evaluate"), rows)
    return pd.DataFrame(rows)


# ---- 04 benchmark -----------------------------------------------------------------------------
def benchmark(cfg: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """Latency (LiteRT, ``cfg.threads``), size, activation arena and worst-layer SQNR vs fp32."""
    from workbench.bench import bench_models
    from workbench.inspect import inspect_model

    run_dir = Path(run_dir)
    variants = load_variants(run_dir)
    dataset = dataset_for(cfg)
    references = {v.imgsz: v.path for v in variants if v.scheme == Scheme.FP32.value}
    # interleaved, so the latency ratios between variants survive a busy machine
    timings = bench_models(
        [v.path for v in variants], threads=cfg.threads, runs=cfg.bench_runs, seed=cfg.seed
    )
    rows = []
    for variant, timing in zip(tqdm(variants, desc="inspect"), timings, strict=True):
        reference = references.get(variant.imgsz) if variant.scheme != Scheme.FP32.value else None
        info = inspect_model(
            variant.path,
            reference=reference,
            calib_images=dataset.val_images if reference else None,
            calib_count=4,
            threads=cfg.threads,
        )
        worst = info.sqnr[0] if info.sqnr else None
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
    dataset = dataset_for(cfg)
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
