"""`make bench-recovery`: how much int8 keypoint AP each recovery recipe gets back (issue 9).

yolo11n-pose (``$WORKBENCH_WEIGHTS_DIR/ultralytics/yolo11n-pose.pt``) at 256 on the COCO-Person dev
set (``$WORKBENCH_DATA_DIR/coco-person-val2017-dev``, 450 val2017 images), calibrated on
``coco-person-train2017``. For fp32, plain int8 per-channel / per-tensor and every recipe set:
COCO keypoint AP with a 95 % bootstrap interval over images, and AP − fp32 with a paired interval
(:mod:`workbench.metrics.bootstrap`). Writes ``benchmarks/results/recovery.json`` with the best
all-int8 per-channel and per-tensor variants, the CLI line that reproduces each, and the targets:

- best all-int8 per-channel within 0.02 AP of fp32;
- best all-int8 per-tensor within 0.01 AP of the best all-int8 per-channel.
- issue 20, for the recommended split-channels file (:data:`SPLIT_RECOMMENDED`) against plain
  per-tensor: no GATHER, no op on Vela's CPU list beyond plain per-tensor's, Vela U55-256 NPU time
  ≤ 1.10×, host latency ≤ 1.3×, keypoint AP ≥ 0.300.

Every row also carries what the file costs to run: its op count, its latency on this CPU (median
of interleaved invokes, XNNPACK, 2 threads, the CPU's SIMD flags recorded), the ops Arm Vela leaves
on the CPU of an Ethos-U55-256 and Vela's NPU time, and where the STM32MP2 rules place each op
(:mod:`workbench.targets`). ``--quick`` runs the focused subset (:data:`QUICK`): plain files, the
best calibrated ones, and split-channels at the :data:`SPLIT_SETTINGS` of its ``min_gain`` knob.

Converted files are cached in ``.cache/recovery/<weights sha256>/`` (``--force`` rebuilds them).
Exit status 1 when a target is missed; skips (status 0, a message) when the weights or data are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import workbench  # noqa: F401  (offline environment first)
from workbench.fileio import sha256_file, write_json
from workbench.offline import REPO_ROOT, cache_dir
from workbench.provenance import dataset_hash, package_versions

RESULTS = REPO_ROOT / "benchmarks" / "results"
SHARED = REPO_ROOT.parent / "shared"
WEIGHTS = (
    Path(os.environ.get("WORKBENCH_WEIGHTS_DIR", SHARED / "weights")) / "ultralytics" / "yolo11n-pose.pt"
)
DATA = Path(os.environ.get("WORKBENCH_DATA_DIR", SHARED / "data"))
DEV = DATA / "coco-person-val2017-dev"
CALIB = DATA / "coco-person-train2017" / "images"
IMGSZ = 256
PC_TO_FP32 = 0.02
PT_TO_PC = 0.01
SCHEMES = {"pc": "int8-per-channel", "pt": "int8-per-tensor"}
# (scheme key, recipes): plain, each recipe alone, and combinations on top of split-head (most telling first).
VARIANTS = [
    *((s, ()) for s in SCHEMES),
    *((s, ("split-head",)) for s in SCHEMES),
    *((s, ("split-levels",)) for s in SCHEMES),
    *((s, ("calib-all",)) for s in SCHEMES),
    *((s, ("split-levels", "calib-all")) for s in SCHEMES),
    *((s, ("split-levels", "calib-percentile")) for s in SCHEMES),
    *((s, ("split-levels", "calib-mse")) for s in SCHEMES),
    *((s, ("split-levels", "weights-octav")) for s in SCHEMES),
    *((s, ("split-levels", "calib-mse", "weights-octav")) for s in SCHEMES),
    ("pt", ("split-levels", "bias-correct")),
    ("pt", ("split-levels", "calib-mse", "bias-correct")),
    *((s, ("split-levels", "calib-mse", "weights-octav", "bias-correct")) for s in SCHEMES),
    ("pt", ("split-channels",)),
    ("pt", ("split-levels", "split-channels")),
    *(("pt", ("split-levels", f"split-channels@{g:g}", "calib-mse")) for g in (2.0, 3.0, 5.0)),
    ("pt", ("split-levels", "split-channels", "calib-mse")),
    ("pt", ("split-levels", "split-channels", "calib-mse", "weights-octav")),
    ("pt", ("split-levels", "qat")),
    *((s, ("split-levels", "qat", "calib-mse")) for s in SCHEMES),
    ("pt", ("equalize",)),
    ("pt", ("split-levels", "equalize")),
    ("pc", ("split-head", "int16x8")),
    ("pc", ("split-levels", "int16x8")),
    *((s, ("split-head", "float-fallback")) for s in SCHEMES),
    ("pc", ("equalize",)),
    ("pc", ("int16x8",)),
    *((s, ("float-fallback",)) for s in SCHEMES),
]
SPLIT_SETTINGS = (1.5, 2.0, 3.0, 5.0)  # split-channels' min_gain: the frontier of AP against cost
QUICK = [
    *((s, ()) for s in SCHEMES),
    *((s, ("split-levels", "calib-mse")) for s in SCHEMES),
    *(
        ("pt", ("split-levels", "split-channels" if g == 1.5 else f"split-channels@{g:g}", "calib-mse"))
        for g in SPLIT_SETTINGS
    ),
]


def _split_setting(recipes: tuple[str, ...]) -> tuple[tuple[str, ...], float | None]:
    """``split-channels@G`` (a benchmark-only spelling: the recipe at ``min_gain`` G) → the recipe
    names and G; None when the recipe's own setting is meant."""
    setting = None
    for r in recipes:
        if r.startswith("split-channels@"):
            setting = float(r.partition("@")[2])
    return tuple("split-channels" if r.startswith("split-channels@") else r for r in recipes), setting


def convert(saved: Path, scheme: str, path: Path, recipes: tuple[str, ...], calib_count: int):
    """The variant's file: :func:`quantize_with_recipes`, or for a split-channels knob setting its
    export made with that ``min_gain`` (:class:`~workbench.recipes.edits.ExportEdits`) and converted."""
    from dataclasses import replace

    from workbench.jobs import export_job, quantize_with_recipes
    from workbench.plan import one_model_plan
    from workbench.quantize import quantize
    from workbench.recipes import build_plan

    names, setting = _split_setting(recipes)
    if setting is None:
        return quantize_with_recipes(
            saved, scheme, path, io="uf", calib=CALIB, calib_count=calib_count, recipes=names
        )
    edits = replace(build_plan(names, calib_count, scheme).export, split_channels=setting)
    folder = saved.parent / f"{saved.name}+{edits.key}"
    family = one_model_plan(WEIGHTS).model.family
    export_job(WEIGHTS, IMGSZ, folder, edits, family=family, calib=CALIB, calib_count=calib_count)
    return quantize(folder, scheme, path, io="uf", calib=CALIB, calib_count=calib_count, recipes=names)


def cost_columns(path: Path) -> dict:
    """Op count, Vela Ethos-U55-256 (ops it leaves on the CPU, NPU time) and STM32MP2 placement."""
    from collections import Counter

    from workbench.targets import get_target
    from workbench.tflite_graph import read_graph

    graph = read_graph(path)
    vela = get_target("ethos-u55-256").estimate(path)
    mp2 = get_target("stm32mp2").estimate(path)
    engines = Counter(p.engine for p in mp2.placement)
    return {
        "ops": len(graph.ops),
        "gather_ops": graph.op_histogram().get("GATHER", 0),
        "u55_256_cpu_ops": dict(Counter(vela.fallback_ops)),
        "u55_256_npu_ms": None if vela.latency_ms is None else round(vela.latency_ms, 2),
        "u55_256_error": vela.error,
        "mp2_engines": dict(engines),
        "mp2_unknown_ops": sorted({p.op for p in mp2.placement if p.engine == "unknown"}),
        "mp2_error": mp2.error,
    }


def cli_line(scheme: str, recipes: tuple[str, ...], calib_count: int) -> str:
    recipe = f" --recipe {','.join(recipes)}" if recipes else ""
    return (
        f"workbench export --weights {WEIGHTS} --imgsz {IMGSZ} --out build/sm{IMGSZ} && "
        f"workbench quantize --saved-model build/sm{IMGSZ} --scheme {scheme} --io uf --calib {CALIB} "
        f"--calib-count {calib_count}{recipe} --out m.tflite"
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=None, help="evaluate the first N dev images (default all)"
    )
    parser.add_argument("--calib-count", type=int, default=200)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--only", help="comma-separated variant names to (re)run, e.g. pt+split-head")
    parser.add_argument("--quick", action="store_true", help="only the focused subset (QUICK, ~30 min)")
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per file for latency_ms")
    parser.add_argument("--force", action="store_true", help="re-convert and re-evaluate cached variants")
    parser.add_argument(
        "--cached-only", action="store_true", help="report the variants already converted, convert nothing"
    )
    return parser.parse_args()


def _targets(rows: list[dict], boot, evaluated, root: Path) -> tuple[dict | None, dict | None, dict]:
    """The best all-int8 row of each scheme and the two targets (per-channel near fp32, per-tensor
    near the best per-channel)."""

    def best(scheme: str) -> dict | None:
        pool = [r for r in rows if r["scheme"] == scheme and r["all_int8"]]
        return max(pool, key=lambda r: r["AP"]) if pool else None

    best_pc, best_pt = best(SCHEMES["pc"]), best(SCHEMES["pt"])
    pt_vs_pc = None
    if best_pc and best_pt:
        pt_vs_pc = boot.difference(
            evaluated(best_pt["variant"], root / f"{best_pt['variant']}.tflite")["detections"],
            evaluated(best_pc["variant"], root / f"{best_pc['variant']}.tflite")["detections"],
        )
    targets = {
        "pc_within_0.02_of_fp32": {
            "value": best_pc["minus_fp32"] if best_pc else None,
            "target": f">= -{PC_TO_FP32}",
            "met": bool(best_pc and best_pc["minus_fp32"] >= -PC_TO_FP32),
        },
        "pt_within_0.01_of_best_pc": {
            "value": round(pt_vs_pc.estimate, 4) if pt_vs_pc else None,
            "interval": [round(pt_vs_pc.low, 4), round(pt_vs_pc.high, 4)] if pt_vs_pc else None,
            "target": f">= -{PT_TO_PC}",
            "met": bool(pt_vs_pc and pt_vs_pc.estimate >= -PT_TO_PC),
        },
    }
    return best_pc, best_pt, targets


def main() -> int:
    args = _arguments()
    missing = [p for p in (WEIGHTS, DEV / "person_keypoints.json", CALIB) if not p.exists()]
    if missing:
        print(f"recovery benchmark skipped: {', '.join(map(str, missing))} not found", file=sys.stderr)
        return 0

    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner
    from workbench.jobs import export_job
    from workbench.metrics.bootstrap import ApBootstrap
    from workbench.plan import one_model_plan

    root = cache_dir() / "recovery" / sha256_file(WEIGHTS)[:12] / str(IMGSZ)
    saved = root / "saved_model"
    family = one_model_plan(WEIGHTS).model.family
    export_job(WEIGHTS, IMGSZ, saved, family=family)  # the one there unless the weights changed
    ann, images = DEV / "person_keypoints.json", DEV / "images"

    def evaluated(name: str, path: Path) -> dict:
        out = root / "eval" / name
        if args.force or not (out / "metrics.json").is_file():
            settings = EvalSettings(ann, images, "pose", imgsz=IMGSZ, max_images=args.images, progress=False)
            evaluate(evaluation_runner(path), settings, out_dir=out)
        return {
            "metrics": json.loads((out / "metrics.json").read_text()),
            "detections": json.loads((out / "detections.json").read_text()),
        }

    started = time.perf_counter()
    fp32_path = root / "fp32.tflite"
    if args.force or not fp32_path.is_file():
        convert(saved, "fp32", fp32_path, (), args.calib_count)
    fp32 = evaluated("fp32", fp32_path)
    img_ids = _image_ids(ann, args.images)
    boot = ApBootstrap(ann, "keypoints", img_ids=img_ids, n_boot=args.n_boot)
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for key, recipes in QUICK if args.quick else VARIANTS:
        scheme = SCHEMES[key]
        name = key + "".join(f"+{r}" for r in recipes)
        path = root / f"{name}.tflite"
        record = root / f"{name}.json"
        if not record.is_file() and (args.cached_only or (only is not None and name not in only)):
            continue
        if not record.is_file() or args.force or (only is not None and name in only):
            t0 = time.perf_counter()
            result = convert(saved, scheme, path, recipes, args.calib_count)
            write_json(record, dict(result.to_dict(), convert_seconds=round(time.perf_counter() - t0, 1)))
            (root / "eval" / name / "metrics.json").unlink(missing_ok=True)  # stale once re-converted
        conv = json.loads(record.read_text())
        ev = evaluated(name, path)
        ap = boot.interval(ev["detections"])
        diff = boot.difference(ev["detections"], fp32["detections"])
        rows.append(
            {
                "variant": name,
                "scheme": scheme,
                "recipes": list(recipes),
                "all_int8": conv["all_int8"],
                "granularity": conv["granularity"],
                "io": conv["io"],
                "float_blocks": conv.get("float_blocks", []),
                "calib_images": conv["calib_images"],
                "AP": round(ev["metrics"]["AP"], 4),
                "AP_interval": [round(ap.low, 4), round(ap.high, 4)],
                "minus_fp32": round(diff.estimate, 4),
                "minus_fp32_interval": [round(diff.low, 4), round(diff.high, 4)],
                "size_bytes": conv["size_bytes"],
                "sha256": conv["sha256"],
                "convert_seconds": conv.get("convert_seconds"),
                "cli": None if _split_setting(recipes)[1] else cli_line(scheme, recipes, args.calib_count),
            }
        )
        print(f"{name:<32} AP {ev['metrics']['AP']:.3f}  vs fp32 {diff}  all-int8 {conv['all_int8']}")

    fp32_ap = boot.interval(fp32["detections"])
    from workbench.bench import bench_models, cpu_features, cpu_model

    timed = bench_models([fp32_path, *(root / f"{r['variant']}.tflite" for r in rows)], runs=args.runs)
    for row, timing in zip(rows, timed[1:], strict=True):
        row["latency_ms"] = round(timing.median_ms, 2)
        row.update(cost_columns(root / f"{row['variant']}.tflite"))

    best_pc, best_pt, targets = _targets(rows, boot, evaluated, root)
    targets.update(split_channels_targets(rows))
    out = {
        "model": "yolo11n-pose",
        "weights_sha256": sha256_file(WEIGHTS),
        "imgsz": IMGSZ,
        "dataset": str(DEV),
        "dataset_hash": dataset_hash(ann)[:16],
        "n_images": len(img_ids),
        "metric": "COCO keypoint AP (OKS 0.50:0.95)",
        "bootstrap": {"n_boot": args.n_boot, "confidence": 0.95, "resampled": "images"},
        "calibration": str(CALIB),
        "fp32": {
            "AP": round(fp32["metrics"]["AP"], 4),
            "AP_interval": [round(fp32_ap.low, 4), round(fp32_ap.high, 4)],
            "latency_ms": round(timed[0].median_ms, 2),
        },
        "latency": {
            "cpu": cpu_model(),
            "simd": cpu_features(),
            "threads": timed[0].threads,
            "runs": args.runs,
            "note": "interleaved medians on this CPU; they rank variants here and do not predict an NPU",
        },
        "variants": rows,
        "best_all_int8_per_channel": best_pc,
        "best_all_int8_per_tensor": best_pt,
        "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
        "packages": package_versions(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(RESULTS / "recovery.json", out)
    for key, t in targets.items():
        print(f"target {key}: {t['value']} ({t['target']}) {'met' if t['met'] else 'MISSED'}")
    return 0 if all(t["met"] for t in targets.values()) else 1


SPLIT_RECOMMENDED = "pt+split-levels+split-channels+calib-mse"


def split_channels_targets(rows: list[dict]) -> dict:
    """Issue 20's targets for the recommended split-channels file against plain per-tensor."""
    by_name = {r["variant"]: r for r in rows}
    row, plain = by_name.get(SPLIT_RECOMMENDED), by_name.get("pt")
    if row is None or plain is None or row.get("u55_256_npu_ms") is None or not plain.get("u55_256_npu_ms"):
        return {}
    npu = row["u55_256_npu_ms"] / plain["u55_256_npu_ms"]
    host = row["latency_ms"] / plain["latency_ms"]
    extra_cpu = sorted(set(row["u55_256_cpu_ops"]) - set(plain["u55_256_cpu_ops"]))
    return {
        "split_no_gather": {"value": row["gather_ops"], "target": "== 0", "met": row["gather_ops"] == 0},
        "split_no_new_u55_cpu_ops": {"value": extra_cpu, "target": "[]", "met": not extra_cpu},
        "split_u55_npu_vs_pt": {"value": round(npu, 3), "target": "<= 1.10", "met": npu <= 1.10},
        "split_host_latency_vs_pt": {"value": round(host, 3), "target": "<= 1.3", "met": host <= 1.3},
        "split_keypoint_ap": {
            "value": row["AP"],
            "interval": row["AP_interval"],
            "target": ">= 0.300",
            "met": row["AP"] >= 0.300,
        },
    }


def _image_ids(ann: Path, limit: int | None) -> list[int]:
    """The ids evaluate() scores: the JSON's images in order, the first ``limit`` of them."""
    images = json.loads(ann.read_text())["images"]
    return sorted(im["id"] for im in images[:limit])


if __name__ == "__main__":
    sys.exit(main())
