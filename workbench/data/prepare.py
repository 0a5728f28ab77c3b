"""Resolve a :class:`~workbench.config.RunConfig`'s dataset to files on disk.

``dataset: synthetic`` generates the synthetic people set into the project cache, keyed by its
parameters and the generator version (so a generator change yields a new folder, never a stale
one). ``dataset: coco`` takes COCO files as users have them (``ann`` + ``images`` to evaluate,
``train_ann`` + ``train_images`` to fine-tune, ``calib_dir`` to calibrate), found as given, from
the repository root or under ``WORKBENCH_DATA_DIR``; the YOLO copy Ultralytics trains on is made
in the project cache (keyed by the annotation files' content), never beside the user's data.
Otherwise ``dataset`` names a folder laid out as the synthetic set is: ``images/{train,val}``,
``annotations/{train,val}.json`` and ``yolo/data.yaml``, or an Ultralytics ``data.yaml`` (as
``workbench data convert`` writes one) to train on: it has no COCO annotations, so it trains
(Ultralytics scores its val split) but is not evaluated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.fileio import exclusive
from workbench.locations import resolve_data
from workbench.offline import REPO_ROOT, cache_dir
from workbench.provenance import dataset_hash

YOLO_DATA_YAML = ("yolo", "data.yaml")  # a dataset folder's YOLO copy, relative to the folder


@dataclass
class PreparedDataset:
    """Paths of a dataset ready for training, calibration and evaluation."""

    root: Path
    data_yaml: Path | None  # None for evaluation-only datasets
    train_images: Path | None
    val_images: Path
    val_ann: Path | None  # None for a data.yaml dataset (training only: no COCO annotations)
    fingerprint: str  # sha256 over the annotation files
    generator_version: str | None = None
    calib_images: Path | None = None  # calibration images (default: train_images)

    def __post_init__(self) -> None:
        if self.calib_images is None:
            self.calib_images = self.train_images
        self._check()

    def _check(self) -> None:
        for name in ("data_yaml", "val_ann"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise WorkbenchError(f"dataset is missing its {name.replace('_', ' ')}", path=path)
        for name in ("train_images", "val_images", "calib_images"):
            path = getattr(self, name)
            if path is not None and not path.is_dir():
                raise WorkbenchError(f"dataset is missing its {name.replace('_', ' ')} folder", path=path)

    @classmethod
    def for_evaluation(
        cls, ann: Path, images: Path, fingerprint: str, calib_images: Path | None = None
    ) -> PreparedDataset:
        """A dataset used only to evaluate (e.g. COCO val2017 for zoo models): no training split."""
        return cls(
            root=images.parent,
            data_yaml=None,
            train_images=None,
            val_images=images,
            val_ann=ann,
            fingerprint=fingerprint,
            calib_images=calib_images,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreparedDataset:
        """The inverse of :meth:`to_dict` (the files are checked again)."""
        text = ("fingerprint", "generator_version")
        return cls(**{k: v if k in text or v is None else Path(v) for k, v in values.items()})


def synthetic_dir(cfg: RunConfig) -> Path:
    from workbench.data.synth import GENERATOR_VERSION

    key = (
        f"synth-{cfg.synth_preset}-{cfg.synth_imgsz}-t{cfg.synth_train}-v{cfg.synth_val}"
        f"-s{cfg.seed}-g{GENERATOR_VERSION}"
    )
    return cache_dir() / "datasets" / key


def prepare_dataset(
    cfg: RunConfig, progress: bool = True, need_training: bool | None = None
) -> PreparedDataset:
    """Generate (or reuse) the synthetic set, or check a dataset folder; return its paths.

    ``need_training`` (default: ``cfg.epochs > 0``) makes a ``coco`` dataset's YOLO copy.
    """
    if cfg.dataset == "coco":
        return prepare_coco(cfg, cfg.epochs > 0 if need_training is None else need_training)
    if cfg.dataset == "synthetic":
        from workbench.data.synth import GENERATOR_VERSION, generate_dataset

        root = synthetic_dir(cfg)
        with exclusive(root):  # two runs of one machine need it at once: the second waits, then reuses it
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
    elif cfg.dataset.endswith((".yaml", ".yml")):
        return prepare_data_yaml(resolve_data(cfg.dataset), cfg.task.value)
    else:
        root = Path(cfg.dataset)
        if not root.is_absolute():
            root = (REPO_ROOT / root) if (REPO_ROOT / root).exists() else root.resolve()
        if not root.is_dir():
            raise WorkbenchError("dataset folder not found", path=root)
        version = None
    val_ann = resolve_data(cfg.ann) if cfg.ann else root / "annotations" / "val.json"
    val_images = resolve_data(cfg.images) if cfg.images else root / "images" / "val"
    train_ann = root / "annotations" / "train.json"
    fingerprint_files = [p for p in (train_ann, val_ann) if p.is_file()]
    return PreparedDataset(
        root=root,
        data_yaml=root.joinpath(*YOLO_DATA_YAML),
        train_images=root / "images" / "train",
        val_images=val_images,
        val_ann=val_ann,
        fingerprint=dataset_hash(fingerprint_files)[:16],
        generator_version=version,
        calib_images=resolve_data(cfg.calib_dir),
    )


def prepare_data_yaml(data_yaml: Path, task: str) -> PreparedDataset:
    """An Ultralytics ``data.yaml`` checked for what training on it needs: a mapping with an
    absolute (or no) ``path``, ``train`` and ``val`` image folders that exist, ``names``, and
    ``kpt_shape`` for pose. One error naming the file otherwise."""
    import yaml

    from workbench.safeparse import load_yaml

    if not data_yaml.is_file():
        raise WorkbenchError("data.yaml not found", path=data_yaml)
    try:
        data = load_yaml(data_yaml.read_bytes(), path=data_yaml)
    except yaml.YAMLError as err:
        raise WorkbenchError(f"not valid YAML: {str(err).splitlines()[0]}", path=data_yaml) from None

    def refuse(why: str) -> WorkbenchError:
        return WorkbenchError(
            f"not a usable Ultralytics data.yaml: {why} (`workbench data convert` writes one; or pass a "
            "dataset folder as `workbench data synth` writes them)",
            path=data_yaml,
        )

    if not isinstance(data, dict):
        raise refuse("not a mapping")
    missing = [key for key in ("train", "val", "names") if not data.get(key)]
    if missing:
        raise refuse(f"no {', '.join(missing)}")
    if task == "pose" and not data.get("kpt_shape"):
        raise refuse("no kpt_shape, which pose training needs")
    root = Path(str(data.get("path") or data_yaml.parent))
    if not root.is_absolute():  # Ultralytics reads a relative path under its own datasets folder
        raise refuse(f"relative path {str(root)!r}; write it absolute or leave it out")
    splits = {}
    for key in ("train", "val"):
        if not isinstance(data[key], str):
            raise refuse(f"{key} is not one folder")
        splits[key] = root / data[key]
        if not splits[key].is_dir():
            raise refuse(f"{key} images folder {splits[key]} not found")
    labels = sorted((root / "labels").rglob("*.txt")) if (root / "labels").is_dir() else []
    return PreparedDataset(
        root=root,
        data_yaml=data_yaml,
        train_images=splits["train"],
        val_images=splits["val"],
        val_ann=None,
        fingerprint=dataset_hash([data_yaml, *labels])[:16],
    )


def prepare_coco(cfg: RunConfig, need_training: bool) -> PreparedDataset:
    """COCO files as the user has them; a YOLO copy in the cache only when training needs one."""
    from workbench.data.coco import load_coco, require_image_files

    val_ann, val_images = resolve_data(cfg.ann), resolve_data(cfg.images)
    train_ann, train_images = resolve_data(cfg.train_ann), resolve_data(cfg.train_images)
    for path in (val_ann, val_images, train_ann, train_images, resolve_data(cfg.calib_dir)):
        if path is not None and not path.exists():
            raise WorkbenchError(
                "dataset path not found (as given, from the repository root, or under WORKBENCH_DATA_DIR)",
                path=path,
            )
    require_image_files(load_coco(val_ann, val_images, task=cfg.task))
    fingerprint_files = [p for p in (train_ann, val_ann) if p is not None]
    fingerprint = dataset_hash(fingerprint_files)[:16]
    data_yaml = None
    if need_training:
        if train_ann is None:
            raise WorkbenchError(
                "fine-tuning (epochs > 0) on a coco dataset needs train_ann and train_images"
            )
        data_yaml = yolo_copy(train_ann, train_images, val_ann, val_images, cfg.task, fingerprint)
    return PreparedDataset(
        root=val_images.parent,
        data_yaml=data_yaml,
        train_images=train_images,
        val_images=val_images,
        val_ann=val_ann,
        fingerprint=fingerprint,
        calib_images=resolve_data(cfg.calib_dir) or train_images,
    )


def yolo_copy(train_ann: Path, train_images: Path, val_ann: Path, val_images: Path, task, key: str) -> Path:
    """The Ultralytics YOLO copy of a COCO train/val pair, made once in the cache (images linked)."""
    from workbench.data.coco import load_coco
    from workbench.data.yolo import coco_to_yolo, write_data_yaml, yolo_class_names

    root = cache_dir() / "datasets" / f"coco-yolo-{task}-{key}"
    data_yaml = root / "data.yaml"
    with exclusive(root):
        if not data_yaml.is_file():
            coco_to_yolo(train_ann, train_images, root, task, split="train")
            coco_to_yolo(val_ann, val_images, root, task, split="val")
            names = yolo_class_names(load_coco(train_ann))
            write_data_yaml(root, {"train": "train", "val": "val"}, task, names=names)
    return data_yaml
