"""Train or fine-tune a YOLO model through Ultralytics, offline-safe.

From scratch (a model ``.yaml``) Ultralytics' defaults apply. Fine-tuning (a ``.pt``) uses defaults
that do not wreck a pretrained model on small data: SGD, ``lr0=1e-3`` and no warm-up. Ultralytics'
own defaults (auto-AdamW, warm-up bias lr 0.1) destroyed a pretrained model in one epoch here.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ULTRALYTICS_TASK
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file
from workbench.safeload import check_weights

# Applied only when starting from a .pt checkpoint; explicit overrides still win.
FINE_TUNE_DEFAULTS: dict[str, Any] = {
    "optimizer": "SGD",
    "lr0": 1e-3,
    "lrf": 1.0,
    "warmup_epochs": 0,
    "warmup_bias_lr": 0.0,
}
METRIC_KEYS = {
    "pose": ("metrics/mAP50-95(P)", "metrics/mAP50(P)"),
    "seg": ("metrics/mAP50-95(M)", "metrics/mAP50(M)"),
    "detect": ("metrics/mAP50-95(B)", "metrics/mAP50(B)"),
}


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        weights: the best checkpoint (``RUN/weights/best.pt``).
        map50_95: validation mAP50-95 of the task's main metric (pose: keypoints, seg: masks).
        map50: validation mAP50 of the same metric.
        seconds: wall time of the training call.
    """

    weights: Path
    run_dir: Path
    task: str
    epochs: int
    imgsz: int
    fine_tune: bool
    map50_95: float
    map50: float
    seconds: float
    weights_sha256: str
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.map50_95 <= 1.0 or not 0.0 <= self.map50 <= 1.0:
            raise ValueError(f"mAP out of [0, 1]: {self.map50_95}, {self.map50}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["weights"] = str(self.weights)
        out["run_dir"] = str(self.run_dir)
        return out


def train(
    data: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    task: str = "pose",
    epochs: int = 10,
    imgsz: int = 256,
    batch: int = 8,
    seed: int = 0,
    workers: int = 1,
    overrides: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` (an Ultralytics ``data.yaml``) and return the best checkpoint.

    Args:
        data: local path to a ``data.yaml``.
        model: a model ``.yaml`` (from scratch, e.g. ``yolov8n-pose.yaml``) or a local ``.pt`` (fine-tune).
        out: the run folder; weights land in ``out/weights/best.pt``.
        overrides: any further Ultralytics train arguments (they win over the defaults here).

    Example:
        >>> train("data/synth/yolo/data.yaml", "data/weights/yolov8n-pose-synth.pt", "runs/ft",
        ...       epochs=1, imgsz=256)  # doctest: +SKIP
    """
    data, out = Path(data), Path(out).resolve()
    if task not in ULTRALYTICS_TASK:
        raise WorkbenchError(f"unknown task {task!r}; expected one of {sorted(map(str, ULTRALYTICS_TASK))}")
    if not data.is_file():
        raise WorkbenchError("data.yaml not found", path=data)
    model_str = str(model)
    fine_tune = model_str.endswith(".pt")
    if fine_tune and not Path(model_str).is_file():
        raise WorkbenchError("weights file not found (pass a local path: downloads are off)", path=model_str)
    if not fine_tune and not model_str.endswith((".yaml", ".yml")):
        raise WorkbenchError("model must be a .pt checkpoint or a model .yaml", path=model_str)

    from ultralytics import YOLO

    args: dict[str, Any] = {
        "data": str(data.resolve()),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "device": "cpu",
        "workers": workers,
        "seed": seed,
        "deterministic": True,
        "project": str(out.parent),
        "name": out.name,
        "exist_ok": True,
        "amp": False,
        "plots": False,
        "val": False,  # validate once, after the last epoch: per-epoch val costs minutes on 2 cores
        "max_det": 100,  # that validation then uses the COCO protocol of `workbench evaluate`
        "verbose": False,
    }
    if fine_tune:
        args.update(FINE_TUNE_DEFAULTS)
    args.update(overrides or {})
    started = time.perf_counter()
    check_weights(model_str)
    yolo = YOLO(model_str, task=ULTRALYTICS_TASK[task])
    yolo.train(trainer=_validating_once(yolo.task_map[yolo.task]["trainer"]), **args)
    seconds = time.perf_counter() - started
    weights = out / "weights" / "best.pt"
    if not weights.is_file():
        weights = out / "weights" / "last.pt"
    metrics = getattr(yolo.trainer, "metrics", {}) or {}
    key95, key50 = METRIC_KEYS[task]
    return TrainResult(
        weights=weights,
        run_dir=out,
        task=task,
        epochs=epochs,
        imgsz=imgsz,
        fine_tune=fine_tune,
        map50_95=float(metrics.get(key95, 0.0)),
        map50=float(metrics.get(key50, 0.0)),
        seconds=round(seconds, 1),
        weights_sha256=sha256_file(weights),
        args={k: v for k, v in args.items() if k not in ("project", "name")},
    )


def _validating_once(trainer: type) -> type:
    """``trainer`` (Ultralytics' class for the task) without its second validation of the same weights.

    Ultralytics validates the EMA weights after the last epoch, saves them as ``best.pt`` (in fp16),
    then validates ``best.pt`` again in ``final_eval``: with ``val=False`` and one epoch, the same
    weights twice (6 s of a 45 s fine-tune on 2 cores). When the last validation was of the epoch
    saved as ``best.pt``, its metrics are kept and ``final_eval`` only strips the optimizer (the
    checkpoint written is the same); otherwise (``best.pt`` is an earlier epoch) it runs as usual.
    The kept metrics are of the fp32 EMA, whose fp16 copy ``best.pt`` holds (mAP within 1e-4).
    """

    class ValidatingOnce(trainer):
        _validated_epoch: int | None = None

        def validate(self):
            metrics, fitness = super().validate()
            self._validated_epoch = self.epoch
            return metrics, fitness

        def final_eval(self):
            from ultralytics.utils.torch_utils import strip_optimizer

            saved_best = self.fitness is not None and self.fitness == self.best_fitness
            if self._validated_epoch != self.epoch or not saved_best or not self.best.exists():
                return super().final_eval()
            ckpt = strip_optimizer(self.last) if self.last.exists() else {}
            strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})

    ValidatingOnce.__name__ = ValidatingOnce.__qualname__ = f"{trainer.__name__}ValidatingOnce"
    return ValidatingOnce


def train_from_config(cfg, data_yaml: str | Path, model: str | Path, out: str | Path) -> TrainResult:
    """:func:`train` with the task, epochs, image size, batch, seed and overrides of a ``RunConfig``."""
    return train(
        data_yaml,
        model,
        out,
        task=cfg.task.value,
        epochs=cfg.epochs,
        imgsz=cfg.train_imgsz or max(cfg.imgsz),
        batch=cfg.batch,
        seed=cfg.seed,
        overrides=cfg.train_args,
    )
