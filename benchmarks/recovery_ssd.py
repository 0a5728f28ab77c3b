"""`make bench-recovery`, SSD part: what the recovery recipes do on ST's SSD MobileNet v1 0.25 (issue 9).

ST's float ``st_ssd_mobilenet_v1_025_{192,224,256}.h5`` (``$WORKBENCH_WEIGHTS_DIR/st``, as ST ships
them: no fine-tuning) converted plain and with the recipes that apply to a Keras model
(``equalize``: exact cross-layer equalization; ``split-channels``; ``calib-mse``; ``weights-octav``),
calibrated on 200 ``coco-person-train2017`` images, box AP (COCO 0.50:0.95) on the 450 dev images with 95 % bootstrap
intervals over images, each variant − plain per-channel with a paired interval, and each file's
latency on this CPU (interleaved medians, 2 threads, SIMD flags recorded). Writes
``benchmarks/results/recovery_ssd.json``. No targets: the issue asks what the recipes do here.
Converted files are cached in ``.cache/recovery-ssd/<weights sha256>/<imgsz>/``. Skips (status 0)
without the weights or data.
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

SHARED = REPO_ROOT.parent / "shared"
WEIGHTS = Path(os.environ.get("WORKBENCH_WEIGHTS_DIR", SHARED / "weights")) / "st"
DATA = Path(os.environ.get("WORKBENCH_DATA_DIR", SHARED / "data"))
ANN = DATA / "coco-person-val2017-dev" / "instances_person.json"
CALIB = DATA / "coco-person-train2017" / "images"
SIZES = (192, 224, 256)
VARIANTS = [
    ("int8-per-channel", ()),
    ("int8-per-tensor", ()),
    ("int8-per-channel", ("equalize",)),
    ("int8-per-tensor", ("equalize",)),
    ("int8-per-channel", ("calib-mse", "weights-octav")),
    ("int8-per-tensor", ("calib-mse", "weights-octav")),
    ("int8-per-tensor", ("equalize", "calib-mse", "weights-octav")),
    ("int8-per-tensor", ("split-channels",)),
    ("int8-per-tensor", ("equalize", "split-channels")),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    h5 = {s: WEIGHTS / f"st_ssd_mobilenet_v1_025_{s}.h5" for s in sizes}
    missing = [p for p in (*h5.values(), ANN, CALIB) if not p.exists()]
    if missing:
        print(f"SSD recovery benchmark skipped: {', '.join(map(str, missing))} not found", file=sys.stderr)
        return 0

    from workbench.bench import bench_models, cpu_features, cpu_model
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner
    from workbench.jobs import export_job, quantize_with_recipes
    from workbench.metrics.bootstrap import ApBootstrap
    from workbench.plan import one_model_plan

    started = time.perf_counter()
    boot = ApBootstrap(ANN, "bbox", n_boot=args.n_boot)
    results = {}
    for imgsz in sizes:
        root = cache_dir() / "recovery-ssd" / sha256_file(h5[imgsz])[:12] / str(imgsz)
        saved = root / "saved_model"
        family = one_model_plan(h5[imgsz]).model.family
        export_job(h5[imgsz], imgsz, saved, family=family)  # the one there unless the weights changed
        dets, rows = {}, []
        for scheme, recipes in [("fp32", ()), *VARIANTS]:
            name = scheme + "".join(f"+{r}" for r in recipes)
            path, out = root / f"{name}.tflite", root / "eval" / name
            if not path.is_file():
                kw = {"calib": CALIB, "calib_count": 200, "recipes": recipes} if scheme != "fp32" else {}
                quantize_with_recipes(saved, scheme, path, io="uf", **kw)
            if not (out / "detections.json").is_file():
                settings = EvalSettings(ANN, ANN.parent / "images", "detect", progress=False)
                evaluate(evaluation_runner(path), settings, out_dir=out)
            dets[name] = json.loads((out / "detections.json").read_text())
            meta = json.loads((out / "metrics.json").read_text())
            ap = boot.interval(dets[name])
            row = {"variant": name, "scheme": scheme, "recipes": list(recipes), "AP": round(meta["AP"], 4)}
            row["AP_interval"] = [round(ap.low, 4), round(ap.high, 4)]
            if name != "int8-per-channel" and "int8-per-channel" in dets:
                diff = boot.difference(dets[name], dets["int8-per-channel"])
                row["minus_plain_pc"] = round(diff.estimate, 4)
                row["minus_plain_pc_interval"] = [round(diff.low, 4), round(diff.high, 4)]
            row["sha256"] = sha256_file(path)
            rows.append(row)
            print(f"{imgsz} {name:<48} AP {meta['AP']:.3f} {row.get('minus_plain_pc', '')}", flush=True)
        timed = bench_models([root / f"{row['variant']}.tflite" for row in rows], runs=30)
        for row, timing in zip(rows, timed, strict=True):
            row["latency_ms"] = round(timing.median_ms, 2)
        results[str(imgsz)] = {
            "weights": str(h5[imgsz]),
            "weights_sha256": sha256_file(h5[imgsz]),
            "rows": rows,
        }
    write_json(
        REPO_ROOT / "benchmarks" / "results" / "recovery_ssd.json",
        {
            "model": "ST SSD MobileNet v1 0.25 (float .h5 as shipped)",
            "metric": "COCO box AP (IoU 0.50:0.95), person",
            "dataset": str(ANN),
            "dataset_hash": dataset_hash(ANN)[:16],
            "calibration": f"{CALIB} (200 images)",
            "bootstrap": {"n_boot": args.n_boot, "confidence": 0.95, "resampled": "images"},
            "sizes": results,
            "latency": {
                "cpu": cpu_model(),
                "simd": cpu_features(),
                "threads": 2,
                "note": "interleaved medians per size on this CPU; they rank variants here, not on an NPU",
            },
            "seconds": round(time.perf_counter() - started, 1),
            "packages": package_versions(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
