"""`workbench export`: .pt → float SavedModel with normalized outputs."""

from __future__ import annotations

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("export", help="export .pt to a float TF SavedModel with normalized outputs")
    p.add_argument(
        "--weights", required=True, help=".pt checkpoint: a path, or a file name under WORKBENCH_WEIGHTS_DIR"
    )
    p.add_argument(
        "--allow-download", action="store_true", help="let Ultralytics download a release file of that name"
    )
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--out", required=True, help="SavedModel folder to write")
    p.add_argument(
        "--pixel-outputs",
        action="store_true",
        help="keep Ultralytics' pixel coordinates (float use only: int8 collapses their scores)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.export import export_saved_model
    from workbench.locations import resolve_weights, weights_file

    weights = weights_file(resolve_weights(args.weights, args.allow_download))
    result = export_saved_model(weights, args.imgsz, args.out, normalize=not args.pixel_outputs)
    if args.json:
        print_json(result.to_dict())
    else:
        print(
            f"saved model: {result.saved_model} (task {result.task}, imgsz {result.imgsz}, "
            f"{'normalized' if result.normalized else 'pixel'} outputs, {result.seconds:.0f} s)"
        )
    return 0
