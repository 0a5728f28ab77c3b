"""`workbench quantize`: SavedModel → .tflite in fp32 | fp16 | int8-per-channel | int8-per-tensor.

The SavedModel's metadata names its model family (any registered one); recipes that change the
graph (``equalize``, ``split-channels``, ...) are that family's edits of the export.
"""

from __future__ import annotations

from workbench.cli import print_json
from workbench.config import IOType, Scheme


def register(sub) -> None:
    p = sub.add_parser("quantize", help="convert a SavedModel to .tflite in one numeric scheme")
    p.add_argument("--saved-model", required=True, help="folder written by `workbench export`")
    p.add_argument("--scheme", required=True, choices=[s.value for s in Scheme])
    p.add_argument(
        "--io",
        default="uf",
        choices=[i.value for i in IOType],
        help="uf: uint8 in/float out (zoo form), ii: int8/int8, ff: float/float",
    )
    p.add_argument("--calib", help="folder of calibration images (int8 schemes)")
    p.add_argument("--calib-count", type=int, default=200, help="number of calibration images (default 200)")
    p.add_argument("--out", required=True, help=".tflite file to write")
    p.add_argument(
        "--allow-unnormalized",
        action="store_true",
        help="convert a pixel-output SavedModel to int8 anyway (its scores collapse)",
    )
    p.add_argument(
        "--recipe",
        help="recovery recipe(s) for int8, comma-separated (`workbench recipes` lists them)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.errors import WorkbenchError
    from workbench.jobs import quantize_with_recipes
    from workbench.plan import exported_plan

    # the arguments first: they need no file
    if args.calib_count < 1:
        raise WorkbenchError(f"--calib-count must be an integer of at least 1, got {args.calib_count!r}")
    family = exported_plan(args.saved_model, args.recipe).family
    result = quantize_with_recipes(
        args.saved_model,
        args.scheme,
        args.out,
        io=args.io,
        calib=args.calib,
        calib_count=args.calib_count,
        allow_unnormalized=args.allow_unnormalized,
        recipes=args.recipe,
    )
    if args.json:
        print_json({"family": family.name, **result.to_dict()})
    else:
        print(
            f"{result.path}: {family.name} {result.scheme.value}-{result.io.value}, "
            f"{result.size_bytes / 1e6:.2f} MB, "
            f"calibrated on {result.calib_images} images, {result.seconds:.0f} s; "
            f"weights {result.granularity}, {'all-int8' if result.all_int8 else 'not all-int8'}"
            + (f", recipes {'+'.join(result.recipes)}" if result.recipes else "")
        )
    return 0
