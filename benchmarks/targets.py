"""`make bench` → benchmarks/results/targets.json: how good the ST targets' numbers are.

1. Latency: the leave-one-out median and max absolute % error of each fitted ST target over the
   figures ST publishes (target: median <= 25 % on each).
2. Memory: the ST targets' ``sram_bytes`` (our activation arena, TFLite Micro's greedy planner,
   plus a buffer per constant output on the N6 and H7) against every RAM figure ST publishes (:data:`workbench.targets.published.PUBLISHED_RAM`):
   N6 internal RAM (pose, seg: ST's zoo files; SSD: per-channel conversions of ST's ``.h5``, the
   sources of the card's int8 files) and H7 activation RAM (SSD, the same conversions); per board
   the range of published / estimate and the leave-one-out error of a one-factor scale.
   Flash: the targets' ``flash_bytes`` (the file's constants) against ST's "Weights Flash" of the
   same tables (:data:`workbench.targets.published.PUBLISHED_FLASH`).
3. Placement: the STM32MP2's majority engine (NPU or GPU, by MACs) of each of the 7 models ST
   publishes MP2 figures for, against ST's % NPU / % GPU (the same files).

The SSD conversions (export, then int8 per-channel with uint8 in / float out, calibrated on 4 COCO
person train images: placement and memory do not depend on the values) are kept in
``build/targets/`` and reused while the weights and images are unchanged (:mod:`workbench.jobs`).

Exit status 1 when a latency target is missed or a placement does not match.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import workbench  # noqa: F401  (offline environment first)
from workbench.fileio import write_json
from workbench.locations import data_dir, weights_dir, zoo_dir
from workbench.offline import REPO_ROOT
from workbench.provenance import package_versions
from workbench.targets import get_target
from workbench.targets.published import SSD, SSD_WEIGHTS, ZOO_FILES, flash_check, placement_check, ram_check

TARGET_MEDIAN_PCT = 25.0
SSD_SIZES = (192, 224, 256)
CALIB_COUNT = 4


def published_files(cache: Path) -> dict[tuple[str, int, str], Path]:
    """(model, imgsz, weights) -> the file each published figure is compared on: ST's zoo files
    (pose, seg) and the workbench's per-channel conversions of ST's SSD ``.h5`` (made once)."""
    from workbench.jobs import convert_weights

    files = {key: zoo_dir() / "st" / name for key, name in ZOO_FILES.items()}
    weights, calib = weights_dir() / SSD_WEIGHTS, data_dir() / "coco-person-train2017" / "images"
    for imgsz in SSD_SIZES:
        if Path(str(weights).format(imgsz=imgsz)).is_file() and calib.is_dir():
            files[(SSD, imgsz, "pc")] = convert_weights(
                str(weights), imgsz, "int8-per-channel", cache / f"ssd{imgsz}", io="uf", calib=calib,
                calib_count=CALIB_COUNT,
            ).path  # fmt: skip
    return files


def latency_errors() -> dict:
    out = {}
    for name in ("stm32n6", "stm32mp2", "stm32h7", "stm32mp157", "stm32mp135"):
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


def memory_summary(rows: list[dict]) -> dict:
    """Per board: the range and median of published / estimate, and the median absolute % error."""
    out = {}
    for board in sorted({r["board"] for r in rows if "error" not in r}):
        mine = [r for r in rows if r["board"] == board and "error" not in r]
        ratios = [r["published_over_estimate"] for r in mine]
        out[board] = {
            "rows": len(mine), "median_abs_error_pct": round(statistics.median(abs(r["error_pct"]) for r in mine), 1),
            "max_abs_error_pct": max(abs(r["error_pct"]) for r in mine),
            "published_over_estimate": {"min": min(ratios), "median": round(statistics.median(ratios), 3), "max": max(ratios)},
            "scale_fit_loo_pct": scale_fit_loo(mine),
        }  # fmt: skip
    return out


def scale_fit_loo(rows: list[dict]) -> dict:
    """Leave-one-out of the simplest allocation model, published = k x estimate (k: geometric mean
    of the other rows' ratios): whether one factor would turn the arena into ST's figure."""
    logs = [math.log(r["published_over_estimate"]) for r in rows]
    errors = []
    for i, row in enumerate(rows):
        k = math.exp(statistics.mean(v for j, v in enumerate(logs) if j != i))
        errors.append(abs(k * row["estimate_kib"] - row["published_kib"]) / row["published_kib"] * 100)
    return {"median": round(statistics.median(errors), 1), "max": round(max(errors), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "targets.json")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "build" / "targets")
    args = parser.parse_args(argv)
    latency = latency_errors()
    files = published_files(args.cache)
    per_channel = {(m, s): p for (m, s, w), p in files.items() if w == "pc"}
    memory, flash = ram_check(per_channel), flash_check(per_channel)
    placement = placement_check(get_target("stm32mp2"), files)
    placement_met = all(r.get("match") for r in placement)
    result = {
        "latency": latency,
        "memory": memory,
        "memory_summary": memory_summary(memory),
        "flash": flash,
        "flash_summary": memory_summary(flash),
        "placement_mp2": {"rows": placement, "all_match": placement_met},
        "met": all(v["met"] for v in latency.values()) and placement_met,
        "packages": package_versions(),
    }
    write_json(args.out, result)
    for name, fit in latency.items():
        print(f"{name}: leave-one-out median {fit['loo_median_pct']} %, max {fit['loo_max_pct']} % "
              f"(target <= {TARGET_MEDIAN_PCT} %: {'met' if fit['met'] else 'missed'})")  # fmt: skip
    for row in memory:
        if "error" not in row:
            print(f"{row['board']} {row['published']} {row['model']} {row['imgsz']}: published "
                  f"{row['published_kib']} KiB, estimate {row['estimate_kib']} KiB ({row['error_pct']:+.1f} %)")  # fmt: skip
    for board, summary in result["memory_summary"].items():
        print(f"{board} RAM: {summary}")
    for row in flash:
        if "error" not in row:
            print(f"{row['board']} {row['published']} {row['model']} {row['imgsz']}: published "
                  f"{row['published_kib']} KiB, estimate {row['estimate_kib']} KiB ({row['error_pct']:+.1f} %)")  # fmt: skip
    for row in placement:
        print(f"stm32mp2 {row['model']} {row['imgsz']} {row['weights']}: published {row['published_majority']}, "
              f"estimate {row.get('estimate_majority', row.get('error'))}")  # fmt: skip
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
