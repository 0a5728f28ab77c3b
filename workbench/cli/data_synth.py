"""`workbench data synth`: generate the synthetic people dataset.

Example:
    workbench data synth --out data/synth --train 512 --val 128 --imgsz 256 --seed 0 --preset easy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.errors import WorkbenchError


def _count(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None


def register(sub) -> None:
    from workbench.data.synth import PRESETS

    p = sub.add_parser("synth", help="generate synthetic people (COCO keypoints JSON + YOLO pose copy)")
    p.add_argument("--out", type=Path, required=True, help="output folder (written atomically)")
    p.add_argument("--train", type=_count, default=256, help="training images (default 256)")
    p.add_argument("--val", type=_count, default=64, help="validation images (default 64)")
    p.add_argument("--imgsz", type=_count, default=256, help="image side, multiple of 32 (default 256)")
    p.add_argument("--seed", type=_count, default=0, help="random seed (default 0)")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="standard", help="difficulty (default standard)"
    )
    p.add_argument("--force", action="store_true", help="regenerate even if an identical dataset exists")
    p.add_argument("--json", action="store_true", help="print the dataset summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.cli import print_json
    from workbench.data.synth import generate_dataset

    if args.train < 1:
        raise WorkbenchError(f"--train must be at least 1, got {args.train}")
    if args.val < 0:
        raise WorkbenchError(f"--val must not be negative, got {args.val}")
    ds = generate_dataset(
        args.out, args.train, args.val, imgsz=args.imgsz, seed=args.seed, preset=args.preset,
        force=args.force,
    )  # fmt: skip
    if args.json:
        print_json(ds.to_dict())
    else:
        print(
            f"{ds.root}: {ds.counts['train']} train / {ds.counts['val']} val images, "
            f"{ds.people['train']} / {ds.people['val']} people, preset {ds.preset}, "
            f"generator {ds.generator_version}, fingerprint {ds.fingerprint[:12]}\n"
            f"YOLO data: {ds.data_yaml}"
        )
    return 0
