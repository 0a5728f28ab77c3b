"""`workbench diagnose MODEL.tflite --reference FP32.tflite --ann --images`: where the int8 loss comes from."""

from __future__ import annotations

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("diagnose", help="per-block AP sensitivity and output-scale audit of an int8 .tflite")
    p.add_argument("model", help="int8 .tflite to diagnose")
    p.add_argument("--reference", required=True, help="fp32 .tflite converted from the same SavedModel")
    p.add_argument("--ann", required=True, help="COCO ground-truth JSON")
    p.add_argument("--images", required=True, help="image folder of --ann")
    p.add_argument("--saved-model", required=True, help="the SavedModel both files were converted from")
    p.add_argument("--calib", required=True, help="calibration images (as given to quantize)")
    p.add_argument("--calib-count", type=int, default=200)
    p.add_argument("--task", default="pose", choices=["pose", "detect"])
    p.add_argument("--slice", type=int, default=32, help="images per AP evaluation in the loop (default 32)")
    p.add_argument("--block-size", type=int, default=16, help="ops per block kept in float (1: per op)")
    p.add_argument("--top", type=int, default=5, help="blocks shown in the table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="also write the diagnosis as JSON to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.diagnose import diagnose
    from workbench.families import evaluation_runner
    from workbench.fileio import write_json

    result = diagnose(
        args.model,
        args.reference,
        args.ann,
        args.images,
        args.saved_model,
        args.calib,
        task=args.task,
        slice_images=args.slice,
        block_size=args.block_size,
        calib_count=args.calib_count,
        threads=args.threads,
        runner_for=evaluation_runner,
    )
    if args.out:
        write_json(args.out, result.to_dict())
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.table(args.top))
    return 0
