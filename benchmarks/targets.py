"""`make bench` → benchmarks/results/targets.json: how good the ST targets' numbers are.

1. Latency: the leave-one-out median and max absolute % error of each fitted ST target over the
   figures ST publishes (target: median <= 25 % on each).
2. Memory: our activation arena (TFLite Micro's greedy planner, what ``sram_bytes`` reports for
   ST's targets) against ST's published RAM for ST's own files: N6 internal RAM (pose, seg; the
   zoo's files) and H7 activation RAM (SSD; the zoo's AI-ModelZoo 1.3 SSD files, which the card's
   newer files replaced: a stand-in until the ``.h5`` conversions are measured here).

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import workbench  # noqa: F401  (offline environment first)
from workbench.fileio import sha256_file, write_json
from workbench.inspect import activation_arena
from workbench.locations import zoo_dir
from workbench.offline import REPO_ROOT
from workbench.provenance import package_versions
from workbench.targets import get_target
from workbench.tflite_graph import read_graph

TARGET_MEDIAN_PCT = 25.0
# (zoo file, board, published KiB, what ST publishes), from the cards in ../shared/seeds
PUBLISHED_RAM = [
    ("pose_estimation/yolov8n_192_quant_pc_uf_pose_coco-st.tflite", "STM32N6", 477.56, "internal RAM"),
    ("pose_estimation/yolov8n_256_quant_pc_uf_pose_coco-st.tflite", "STM32N6", 1135.0, "internal RAM"),
    ("pose_estimation/yolov8n_320_quant_pc_uf_pose_coco-st.tflite", "STM32N6", 2264.27, "internal RAM"),
    ("segmentation/yolov8n_256_quant_pc_ii_seg_coco-st.tflite", "STM32N6", 855.0, "internal RAM"),
    ("segmentation/yolov8n_320_quant_pc_ii_seg_coco-st.tflite", "STM32N6", 1413.89, "internal RAM"),
    ("object_detection_ssd/ssd_mobilenet_v1_025_192_int8.tflite", "STM32H7", 266.3, "activation RAM"),
    ("object_detection_ssd/ssd_mobilenet_v1_025_224_int8.tflite", "STM32H7", 379.6, "activation RAM"),
    ("object_detection_ssd/ssd_mobilenet_v1_025_256_int8.tflite", "STM32H7", 456.1, "activation RAM"),
]


def latency_errors() -> dict:
    out = {}
    for name in ("stm32n6", "stm32mp2"):
        target = get_target(name)
        median = statistics.median(target.loo_errors)
        out[name] = {
            "model": target.model.describe(),
            "points": [
                {"file": p.file, "published_ms": p.ms, "loo_error_pct": round(e, 2)}
                for p, e in zip(target.points, target.loo_errors, strict=True)
            ],
            "loo_median_pct": round(median, 2),
            "loo_max_pct": round(max(target.loo_errors), 2),
            "target_median_pct": TARGET_MEDIAN_PCT,
            "met": median <= TARGET_MEDIAN_PCT,
        }
    return out


def memory_errors(root: Path) -> list[dict]:
    rows = []
    for name, board, published_kib, what in PUBLISHED_RAM:
        path = root / name
        if not path.is_file():
            rows.append({"file": name, "board": board, "error": f"not found under {root}"})
            continue
        arena_kib = activation_arena(read_graph(path)).arena_bytes / 1024
        rows.append({
            "file": name, "sha256": sha256_file(path), "board": board, "published": what,
            "published_kib": published_kib, "arena_kib": round(arena_kib, 1),
            "error_pct": round((arena_kib - published_kib) / published_kib * 100, 1),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "targets.json")
    args = parser.parse_args(argv)
    latency = latency_errors()
    result = {
        "latency": latency,
        "memory": memory_errors(zoo_dir() / "st"),
        "met": all(v["met"] for v in latency.values()),
        "packages": package_versions(),
    }
    write_json(args.out, result)
    for name, fit in latency.items():
        print(f"{name}: leave-one-out median {fit['loo_median_pct']} %, max {fit['loo_max_pct']} % "
              f"(target <= {TARGET_MEDIAN_PCT} %: {'met' if fit['met'] else 'missed'})")  # fmt: skip
    for row in result["memory"]:
        if "error" not in row:
            print(f"{row['board']} {row['published']} {row['file']}: published {row['published_kib']} KiB, "
                  f"arena {row['arena_kib']} KiB ({row['error_pct']:+.1f} %)")  # fmt: skip
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
