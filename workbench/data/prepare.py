"""Resolve a :class:`~workbench.config.RunConfig`'s dataset to files on disk.

``dataset: synthetic`` generates the synthetic people set into the project cache, keyed by its
parameters and the generator version (so a generator change yields a new folder, never a stale
one). Otherwise ``dataset`` names a folder laid out as the synthetic set is: ``images/{train,val}``,
``annotations/{train,val}.json`` and ``yolo/data.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.offline import REPO_ROOT, cache_dir
from workbench.provenance import dataset_hash


@dataclass
class PreparedDataset:
    """Paths of a dataset ready for training, calibration and evaluation."""

    root: Path
    data_yaml: Path | None  # None for evaluation-only datasets
    train_images: Path | None
    val_images: Path
    val_ann: Path
    fingerprint: str  # sha256 over the annotation files
    generator_version: str | None = None

    def __post_init__(self) -> None:
        for name in ("data_yaml", "val_ann"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise WorkbenchError(f"dataset is missing its {name.replace('_', ' ')}", path=path)
        for name in ("train_images", "val_images"):
            path = getattr(self, name)
            if path is not None and not path.is_dir():
                raise WorkbenchError(f"dataset is missing its {name.replace('_', ' ')} folder", path=path)

    @classmethod
    def for_evaluation(cls, ann: Path, images: Path, fingerprint: str) -> PreparedDataset:
        """A dataset used only to evaluate (e.g. COCO val2017 for zoo models): no training split."""
        return cls(
            root=images.parent,
            data_yaml=None,
            train_images=None,
            val_images=images,
            val_ann=ann,
            fingerprint=fingerprint,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def synthetic_dir(cfg: RunConfig) -> Path:
    from workbench.data.synth import GENERATOR_VERSION

    key = (
        f"synth-{cfg.synth_preset}-{cfg.synth_imgsz}-t{cfg.synth_train}-v{cfg.synth_val}"
        f"-s{cfg.seed}-g{GENERATOR_VERSION}"
    )
    return cache_dir() / "datasets" / key


def prepare_dataset(cfg: RunConfig, progress: bool = True) -> PreparedDataset:
    """Generate (or reuse) the synthetic set, or check a dataset folder; return its paths."""
    if cfg.dataset == "synthetic":
        from workbench.data.synth import GENERATOR_VERSION, generate_dataset

        root = synthetic_dir(cfg)
        if not (root / "dataset.json").is_file():
            generate_dataset(
                root,
                cfg.synth_train,
                cfg.synth_val,
                imgsz=cfg.synth_imgsz,
                seed=cfg.seed,
                preset=cfg.synth_preset,
                progress=progress,
            )
        version = GENERATOR_VERSION
    else:
        root = Path(cfg.dataset)
        if not root.is_absolute():
            root = (REPO_ROOT / root) if (REPO_ROOT / root).exists() else root.resolve()
        if not root.is_dir():
            raise WorkbenchError("dataset folder not found", path=root)
        version = None
    val_ann = Path(cfg.ann) if cfg.ann else root / "annotations" / "val.json"
    val_images = Path(cfg.images) if cfg.images else root / "images" / "val"
    train_ann = root / "annotations" / "train.json"
    fingerprint_files = [p for p in (train_ann, val_ann) if p.is_file()]
    return PreparedDataset(
        root=root,
        data_yaml=root / "yolo" / "data.yaml",
        train_images=root / "images" / "train",
        val_images=val_images,
        val_ann=val_ann,
        fingerprint=dataset_hash(fingerprint_files)[:16],
        generator_version=version,
    )
