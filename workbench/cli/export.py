"""`workbench export`: float weights → float SavedModel with normalized outputs, by the model's family."""

from __future__ import annotations

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export float weights of any model family (Ultralytics .pt, ST's SSD .h5) to a float TF "
        "SavedModel with normalized outputs",
    )
    p.add_argument(
        "--weights",
        required=True,
        help="weights file (Ultralytics .pt, ST's SSD .h5, ...): a path, or a file name under "
        "WORKBENCH_WEIGHTS_DIR",
    )
    p.add_argument(
        "--allow-download", action="store_true", help="let Ultralytics download a release file of that name"
    )
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--out", required=True, help="SavedModel folder to write")
    p.add_argument(
        "--pixel-outputs",
        action="store_true",
        help="keep the model's pixel coordinates (float use only: int8 collapses their scores; "
        "families whose export has that form)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from workbench.config import validate_imgsz
    from workbench.plan import one_model_plan

    imgsz = validate_imgsz(args.imgsz)
    plan = one_model_plan(args.weights, allow_download=args.allow_download)
    result = plan.family.export(plan.weights, imgsz, Path(args.out), normalize=not args.pixel_outputs)
    if args.json:
        print_json(result.to_dict())
    else:
        print(
            f"saved model: {result.saved_model} ({result.family} family, task {result.task}, imgsz "
            f"{result.imgsz}, {'normalized' if result.normalized else 'pixel'} outputs, {result.seconds:.0f} s)"
        )
    return 0
