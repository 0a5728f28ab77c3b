"""Pretrain the project's own checkpoint on synthetic people (``make pretrain``).

The checkpoint plays the part that ``yolov8n-pose.pt`` plays for users with internet: the start
for fine-tuning and the model the tests and default report quantize. Beside it, a JSON record
keeps what made it: generator version and sample fingerprint, seed, epochs, wall time, val AP,
config and package versions — so a test can tell when the generator has moved on.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.data.prepare import PreparedDataset
from workbench.fileio import atomic_path, sha256_file, write_json
from workbench.offline import REPO_ROOT
from workbench.safeload import check_weights
from workbench.train import TrainResult, train_from_config

# A small canonical sample whose annotation bytes identify the generator's behaviour.
SAMPLE = {"n_train": 8, "n_val": 4, "imgsz": 128, "seed": 0}


def generator_sample_fingerprint(preset: str) -> str:
    """sha256 of the annotation files of a small canonical synthetic sample for ``preset``."""
    from workbench.data.synth import generate_dataset

    with tempfile.TemporaryDirectory(prefix="wb-sample-") as tmp:
        root = Path(tmp) / "sample"
        generate_dataset(
            root,
            SAMPLE["n_train"],
            SAMPLE["n_val"],
            imgsz=SAMPLE["imgsz"],
            seed=SAMPLE["seed"],
            preset=preset,
            progress=False,
        )
        digest = hashlib.sha256()
        for split in ("train", "val"):
            digest.update((root / "annotations" / f"{split}.json").read_bytes())
            for image in sorted((root / "images" / split).iterdir()):
                digest.update(image.read_bytes())
        return digest.hexdigest()


@dataclass
class PretrainResult:
    weights: Path
    record: Path
    train: TrainResult
    val: dict[str, float]

    @property
    def map50_95(self) -> float:
        return self.val["map50_95"]

    @property
    def map50(self) -> float:
        return self.val["map50"]

    @property
    def seconds(self) -> float:
        return self.train.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": str(self.weights),
            "record": str(self.record),
            "train": self.train.to_dict(),
            "val": self.val,
        }


def ultralytics_val(
    weights: str | Path, data_yaml: str | Path, imgsz: int, *, task: str = "pose", batch: int = 8
) -> dict[str, float]:
    """Ultralytics' own val with the COCO protocol's thresholds (conf 0.001, IoU 0.7, 100 dets)."""
    from ultralytics import YOLO

    from workbench.config import ULTRALYTICS_TASK

    check_weights(weights)
    metrics = YOLO(str(weights), task=ULTRALYTICS_TASK[task]).val(
        data=str(data_yaml),
        imgsz=imgsz,
        batch=batch,
        conf=0.001,
        iou=0.7,
        max_det=100,
        device="cpu",
        plots=False,
        verbose=False,
        rect=False,
        workers=0,
    )
    main = {"pose": metrics.pose, "seg": getattr(metrics, "seg", None), "detect": metrics.box}[task]
    return {
        "map50_95": round(float(main.map), 6),
        "map50": round(float(main.map50), 6),
        "box_map50_95": round(float(metrics.box.map), 6),
    }


def pretrain(cfg: RunConfig, dataset: PreparedDataset) -> PretrainResult:
    """Train ``cfg.model`` from scratch on ``dataset`` (the synthetic set of the config's plan,
    :func:`workbench.plan.pretrain_plan`), and write checkpoint + record.

    Writes ``<cfg.out_dir>/<cfg.name>.pt`` and ``<cfg.out_dir>/<cfg.name>.json``.
    """
    from workbench.provenance import package_versions

    imgsz = cfg.train_imgsz or max(cfg.imgsz)
    out_dir = Path(cfg.out_dir)
    if not out_dir.is_absolute():
        out_dir = REPO_ROOT / out_dir
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-pretrain-") as tmp:
        result = train_from_config(cfg, dataset.data_yaml, cfg.model, Path(tmp) / "run")
        weights = out_dir / f"{cfg.name}.pt"
        with atomic_path(weights) as staged:
            shutil.copyfile(result.weights, staged)
    wall = time.perf_counter() - started
    val = ultralytics_val(weights, dataset.data_yaml, imgsz, task=cfg.task.value, batch=cfg.batch)
    record = {
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "task": cfg.task.value,
        "imgsz": imgsz,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "wall_seconds": round(wall, 1),
        "val": val,
        "val_protocol": "ultralytics val, conf 0.001, iou 0.7, max_det 100, synthetic val split",
        "dataset": {
            "generator_version": dataset.generator_version,
            "preset": cfg.synth_preset,
            "train": cfg.synth_train,
            "val": cfg.synth_val,
            "imgsz": cfg.synth_imgsz,
            "seed": cfg.seed,
            "fingerprint": dataset.fingerprint,
            "generator_sample_fingerprint": generator_sample_fingerprint(cfg.synth_preset),
        },
        "config": cfg.to_dict(),
        "config_hash": cfg.hash,
        "packages": package_versions(),
    }
    record_path = write_json(out_dir / f"{cfg.name}.json", record)
    result.weights = weights
    return PretrainResult(weights=weights, record=record_path, train=result, val=val)
