"""`workbench train`: retrain or fine-tune through Ultralytics (or pretrain from a config)."""

from __future__ import annotations

from pathlib import Path

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a YOLO model (Ultralytics, offline-safe)")
    p.add_argument(
        "--config", help="a RunConfig YAML: prepares its dataset and pretrains (e.g. configs/pretrain.yaml)"
    )
    p.add_argument("--data", help="Ultralytics data.yaml (local path)")
    p.add_argument("--model", help="model .yaml (from scratch) or local .pt (fine-tune)")
    p.add_argument("--task", default="pose", choices=["pose", "seg", "detect"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (weights in OUT/weights/best.pt)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.errors import WorkbenchError

    if args.config:
        from workbench.config import RunConfig
        from workbench.pretrain import pretrain

        result = pretrain(RunConfig.from_yaml(args.config))
    else:
        missing = [f"--{k}" for k in ("data", "model", "out") if not getattr(args, k)]
        if missing:
            raise WorkbenchError(f"missing {', '.join(missing)} (or pass --config)")
        from workbench.config import validate_imgsz
        from workbench.train import train

        result = train(
            args.data,
            args.model,
            Path(args.out),
            task=args.task,
            epochs=args.epochs,
            imgsz=validate_imgsz(args.imgsz),
            batch=args.batch,
            seed=args.seed,
        )
    if args.json:
        print_json(result.to_dict())
    else:
        print(
            f"weights: {result.weights}  mAP50-95 {result.map50_95:.3f}  mAP50 {result.map50:.3f}  "
            f"({result.seconds:.0f} s)"
        )
    return 0
