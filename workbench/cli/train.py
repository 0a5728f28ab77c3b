"""`workbench train`: fine-tune (or train) a model through its family, or pretrain from a config."""

from __future__ import annotations

from pathlib import Path

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model of any family (Ultralytics YOLO, ST's SSD), offline-safe; "
        "--epochs 0 keeps the weights",
    )
    p.add_argument(
        "--config", help="a RunConfig YAML: prepares its dataset and pretrains (e.g. configs/pretrain.yaml)"
    )
    p.add_argument(
        "--data",
        help="dataset: a folder laid out as `workbench data synth` writes one (images/, annotations/, "
        "yolo/data.yaml), its yolo/data.yaml, an Ultralytics data.yaml (as `workbench data convert` "
        "writes one), or `synthetic`",
    )
    p.add_argument(
        "--model",
        help="weights to start from (.pt, ST's SSD .h5; a path or a name under WORKBENCH_WEIGHTS_DIR) "
        "or a model .yaml (from scratch)",
    )
    p.add_argument(
        "--task",
        choices=["pose", "seg", "detect"],
        help="default: the family's first task (yolo pose, ssd detect)",
    )
    p.add_argument("--epochs", type=int, default=10, help="0 keeps the weights as they are")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (the family's weights land in it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.errors import WorkbenchError

    if args.config:
        from workbench.config import RunConfig
        from workbench.plan import pretrain_plan
        from workbench.pretrain import pretrain

        plan = pretrain_plan(RunConfig.from_yaml(args.config), args.config)
        result = pretrain(plan.config, plan.dataset)
        if args.json:
            print_json(result.to_dict())
        else:
            print(
                f"weights: {result.weights}  mAP50-95 {result.map50_95:.3f}  mAP50 {result.map50:.3f}  "
                f"({result.seconds:.0f} s)"
            )
        return 0
    missing = [f"--{k}" for k in ("data", "model", "out") if not getattr(args, k)]
    if missing:
        raise WorkbenchError(f"missing {', '.join(missing)} (or pass --config)")
    summary = retrain(args)
    if args.json:
        print_json(summary)
        return 0
    if args.epochs == 0:
        print(f"weights: {summary['weights_file']}  (kept as they are: 0 epochs)")
    else:
        val = summary["val"] or {}
        scores = "".join(f"  {key} {value:.3f}" for key, value in val.items() if isinstance(value, float))
        print(f"weights: {summary['weights_file']}{scores}  ({summary['train_seconds']:.0f} s)")
    return 0


def retrain(args) -> dict:
    """The family's own fine-tuning of ``args.model`` on ``args.data`` (a one-model plan)."""
    from workbench.plan import training_plan

    plan = training_plan(
        args.model,
        args.data,
        task=args.task,
        imgsz=args.imgsz,
        epochs=args.epochs,
        batch=args.batch,
        seed=args.seed,
    )
    family, cfg = plan.family, plan.config
    result = family.retrain(cfg, plan.weights, plan.dataset, Path(args.out))
    summary = {
        "family": family.name,
        "task": cfg.task.value,
        "epochs": args.epochs,
        "start": str(plan.weights),
        **result,
    }
    # the file of this image size (a family may name one weights file per size with a template)
    summary["weights_file"] = str(family.weights_for(result["weights"], args.imgsz))
    return summary
