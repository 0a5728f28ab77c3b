"""The report's conversions and evaluations as local Dask graphs (``steps.quantize`` and
``steps.evaluate`` delegate here), on the same cluster code as ``workbench sweep``.

- quantize: one export task per (model, imgsz); after it, one task per float scheme, one that
  converts the plain int8 schemes in turn (they share one calibration, and the calibration images
  decoded once: :mod:`workbench.calibration`), and one per recipe entry that converts every int8 scheme with
  that recipe in turn (they share the recipe's re-export, which two tasks must not write at once).
- evaluate: one task per (model, imgsz) of ours, which runs every scheme's file over the images
  in one pass (:func:`workbench.evaluate.evaluate_models`: each image is decoded and pre-processed
  once); one task per zoo file.

The jobs themselves (an export, a recipe's export, a conversion, each cached by its key) are
:mod:`workbench.jobs`, which the sweep's cells (:mod:`workbench.sweep.tasks`) run too.

``cfg.workers`` picks the executor: ``None`` a LocalCluster with one process per core (or the
scheduler in ``WORKBENCH_SCHEDULER``), ``0`` Dask's synchronous scheduler in this process. Both
run the same graph, so both write the same files (tests/sweep/test_executor.py checks the bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from workbench.cluster import SCHEDULER_ENV
from workbench.config import RunConfig
from workbench.data.prepare import PreparedDataset
from workbench.plan import RunPlan, conversion_groups
from workbench.variant import Variant


def evaluate_variants(
    cfg: RunConfig, variants: list[Variant], dataset: PreparedDataset, run_dir: Path
) -> list[dict[str, Any]]:
    """Evaluation rows of ``variants`` (in their order); schemes of one (model, imgsz) share a pass."""
    from dask import delayed

    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, v in enumerate(variants):
        groups[(v.model, v.imgsz) if v.source == "ours" else (v.name,)].append(index)
    threads = cfg.threads if cfg.workers == 0 else 1  # a worker has one core
    tasks = [
        delayed(_evaluate_group, pure=True)(
            cfg,
            [variants[i] for i in members],
            dataset,
            str(run_dir),
            threads,
            dask_key_name=f"evaluate-{'-'.join(map(str, group))}-{_folder_tag(run_dir)}",
        )  # fmt: skip
        for group, members in groups.items()
    ]
    rows: list[dict[str, Any] | None] = [None] * len(variants)
    for members, group_rows in zip(groups.values(), compute(tasks, cfg.workers, "evaluate"), strict=True):
        for index, row in zip(members, group_rows, strict=True):
            rows[index] = row
    return rows


def convert_variants(plan: RunPlan, records: list[dict[str, Any]], run_dir: Path) -> list[Variant]:
    """Variants of our models (``records`` from step 01), in the plan's serial order: model,
    imgsz, scheme, recipe."""
    from dask import delayed

    from workbench.jobs import export_job

    cfg, tag = plan.config, _folder_tag(run_dir)
    exports = {
        (record["name"], imgsz): delayed(export_job, pure=True)(
            record["weights"],
            imgsz,
            str(run_dir / "saved_models" / record["name"] / str(imgsz)),
            family=record["family"],
            dask_key_name=f"export-{record['name']}-{imgsz}-{tag}",
        )
        for record in records
        for imgsz in cfg.imgsz
    }
    records_by_name = {r["name"]: r for r in records}
    groups = conversion_groups(plan.conversions)
    tasks = [
        delayed(_convert_group, pure=True)(
            cfg,
            records_by_name[name],
            imgsz,
            exports[(name, imgsz)],
            [(job.order, job.scheme, job.recipe) for job in members],
            plan.dataset,
            str(run_dir),
            dask_key_name=f"convert-{name}-{imgsz}-{group}-{tag}",
        )
        for (name, imgsz, group), members in groups.items()
    ]
    ordered: list[Variant | None] = [None] * len(plan.conversions)
    for members, variants in zip(groups.values(), compute(tasks, cfg.workers, "convert"), strict=True):
        for job, variant in zip(members, variants, strict=True):
            ordered[job.order] = variant
    return ordered


def compute(tasks: list, workers: int | None, desc: str) -> list:
    """Results of ``tasks`` (Dask delayed), in order, with a progress bar over them."""
    import dask

    if workers == 0:
        from dask.callbacks import Callback

        with tqdm(total=len(tasks), desc=desc) as bar:
            keys = {t.key for t in tasks}

            def done(key, *_):
                if key in keys:
                    bar.update()

            with Callback(posttask=done):
                return list(dask.compute(*tasks, scheduler="sync"))
    from distributed import as_completed

    with _client(workers) as client:
        futures = client.compute(tasks)
        for _ in tqdm(as_completed(futures), total=len(futures), desc=desc):
            pass
        return client.gather(futures)


def _folder_tag(run_dir: Path) -> str:
    """Part of every key: a shared scheduler may hold the same step of another run folder."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


@contextlib.contextmanager
def _client(workers: int | None):
    from workbench.cluster import open_client

    with open_client(os.environ.get(SCHEDULER_ENV), workers) as client:
        yield client


# ---- task functions (run on workers) -------------------------------------------------------------
def _evaluate_group(
    cfg: RunConfig, variants: list[Variant], dataset: PreparedDataset, run_dir: str, threads: int
) -> list[dict[str, Any]]:
    from workbench.evaluate import EvalSettings, evaluate_models
    from workbench.families import evaluation_runner

    settings = EvalSettings(
        dataset.val_ann,
        dataset.val_images,
        variants[0].task,
        tuple(cfg.protocols),
        imgsz=variants[0].imgsz,
        max_images=cfg.eval_images,
        threads=threads,
        progress=False,
    )
    passes = evaluate_models(
        [evaluation_runner(v.path) for v in variants],
        settings,
        out_dirs=[Path(run_dir) / "eval" / v.name for v in variants],
    )
    rows = []
    for variant, results in zip(variants, passes, strict=True):
        first = results[cfg.protocols[0]]
        row = {
            "variant": variant.name,
            "protocol": first.protocol,
            "metric": first.iou_type,
            "ap": first.AP,
            "ap50": first.AP50,
            "ap75": first.AP75,
            "ar": first.AR,
            "n_images": first.n_images,
            "preprocess": first.preprocess,
            "eval_seconds": first.seconds["wall"],
        }
        if "st" in results:
            st = results["st"]
            row["st_ap"] = st.metrics.get("extra", {}).get(st.headline, st.metrics.get(st.headline))
        rows.append(row)
    return rows


def _convert_group(
    cfg: RunConfig,
    record: dict[str, Any],
    imgsz: int,
    saved,
    members: list[tuple[int, str, str]],
    dataset: PreparedDataset,
    run_dir: str,
) -> list[Variant]:
    from workbench.calibration import share_images

    with share_images():  # the int8 schemes of this task calibrate on images decoded once
        return [
            _convert_one(cfg, record, imgsz, saved, scheme_name, recipe, dataset, run_dir)
            for _, scheme_name, recipe in members
        ]


def _convert_one(
    cfg: RunConfig,
    record: dict[str, Any],
    imgsz: int,
    saved,
    scheme_name: str,
    recipe: str,
    dataset: PreparedDataset,
    run_dir: str,
) -> Variant:
    from workbench.config import IOType, Scheme
    from workbench.jobs import convert_job, recipe_export

    scheme, name = Scheme(scheme_name), record["name"]
    io = cfg.io if scheme.is_int8 else IOType.FF
    tag = scheme.value + (f"+{recipe}" if recipe else "")
    out = Path(run_dir) / "variants" / name / str(imgsz) / f"{tag}-{io.value}.tflite"
    calib = {"calib": dataset.calib_images, "calib_count": cfg.calib_images}
    export = recipe_export(saved, recipe or None, scheme, **calib)  # shared by this task's schemes
    result = convert_job(export, scheme, out, io=io, recipes=recipe or None, **calib)
    return Variant(
        name=f"{name}_{imgsz}_{tag}_{result.io.value}",
        model=name,
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
