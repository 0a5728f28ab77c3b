"""`workbench evaluate MODEL --task T --ann COCO.json --images DIR`: score one model on a COCO dataset.

MODEL is a converted ``.tflite`` (ours or a zoo's: its outputs say how to decode it) or float
weights, whose model family (``workbench.families``) says how to run them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from workbench.cli import print_json


def register(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score a .tflite or float weights (Ultralytics .pt, ...) on a COCO dataset (COCO or ST protocol)",
        description=__doc__,
    )
    parser.add_argument(
        "model", help=".tflite file, or float weights of a model family (Ultralytics .pt, ...)"
    )
    parser.add_argument(
        "--task", required=True, choices=["pose", "seg", "detect"], help="what the model predicts"
    )
    parser.add_argument("--ann", required=True, help="COCO ground-truth JSON")
    parser.add_argument("--images", required=True, help="folder the JSON's file_name entries are relative to")
    parser.add_argument(
        "--imgsz", type=int, help="input size (a .tflite's must match; float .pt default 640)"
    )
    parser.add_argument(
        "--protocol", default="coco", choices=["coco", "st"], help="scoring protocol (default coco)"
    )
    parser.add_argument(
        "--preprocess", choices=["letterbox", "resize"], help="override the .tflite pre-processing"
    )
    parser.add_argument(
        "--iou-type", choices=["keypoints", "segm", "bbox"], help="metric (default: the task's own)"
    )
    parser.add_argument("--conf", type=float, help="confidence threshold (default per protocol)")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold (default per protocol)")
    parser.add_argument("--max-det", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    parser.add_argument("--out", help="folder for detections.json and metrics.json")
    parser.add_argument(
        "--exif-transpose",
        action="store_true",
        help="apply EXIF orientation (for labels drawn on the displayed, rotated images)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner

    model = args.model
    if Path(model).suffix != ".tflite":  # float weights: a one-model plan (family, task, file)
        from workbench.plan import one_model_plan

        model = one_model_plan(model, task=args.task).weights
    settings = EvalSettings(
        args.ann,
        args.images,
        args.task,
        protocols=(args.protocol,),
        imgsz=args.imgsz,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        max_images=args.max_images,
        threads=args.threads,
        preprocess=args.preprocess,
        progress=not args.json,
        iou_type=args.iou_type,
        exif_transpose=args.exif_transpose,
    )
    result = evaluate(evaluation_runner(model), settings, out_dir=args.out)
    if args.json:
        print_json(result.to_dict())
        return 0
    head = result.metrics.get("extra", {}).get(result.headline, getattr(result, result.headline, None))
    print(
        f"{result.model}  [{result.protocol}, {result.iou_type}, {result.preprocess}, {result.n_images} images]"
    )
    for key in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
        value = getattr(result, key)
        print(f"  {key:5s} {'n/a' if math.isnan(value) else f'{value:.4f}'}")
    if result.headline not in ("AP", "AP50", "AP75"):
        print(f"  {result.headline} {head:.4f}  (the number ST's card quotes)")
    s = result.seconds
    print(
        f"  {result.n_detections} detections for {result.n_instances} instances; {s['wall']:.1f} s wall "
        f"(invoke {s['invoke']:.1f}, decode {s['decode']:.1f}, metric {s['metric']:.1f})"
    )
    if args.out:
        print(f"  wrote {args.out}/detections.json and metrics.json")
    return 0
