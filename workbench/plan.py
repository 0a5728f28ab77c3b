"""`RunPlan`: a :class:`~workbench.config.RunConfig` resolved once, before any work starts.

Resolving a config means finding each model (weights by name under ``WORKBENCH_WEIGHTS_DIR``, zoo
folders), asking the family registry which family each belongs to, preparing the dataset (the
synthetic set generated or reused, COCO files checked, annotation files hashed) and listing the
export and conversion jobs. :func:`make_plan` does it once; every step, notebook and sweep cell
then reads the plan (``<run>/plan.json``), so no step scans a folder or hashes a dataset again.

The CLI verbs consume a one-model plan (:class:`ModelPlan`: :func:`one_model_plan`,
:func:`training_plan`). Only this module and ``workbench.families`` call the resolvers
(``resolve_model``, ``resolve_weights``, ``prepare_dataset``, ``family_of``);
``tests/test_layout.py`` checks it.

Example:
    >>> from workbench.config import RunConfig
    >>> plan = make_plan(RunConfig(synth_train=8, synth_val=4, imgsz=[192]))  # doctest: +SKIP
    >>> [job.variant_name for job in plan.conversions]  # doctest: +SKIP
    ['yolov8n-pose-synth-ft_192_fp32_ff', 'yolov8n-pose-synth-ft_192_int8-per-channel_uf']
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import IOType, RunConfig, Scheme, Task, resolve_path
from workbench.data.prepare import PreparedDataset, prepare_dataset
from workbench.errors import WorkbenchError
from workbench.fileio import write_json
from workbench.locations import ModelSource, resolve_data, resolve_model
from workbench.targets.measured import BoardLatency, read_measured_latency

if TYPE_CHECKING:
    from workbench.families import ModelFamily

PLAN_JSON = "plan.json"
PLAN_VERSION = 1


@dataclass(frozen=True)
class ModelEntry:
    """One ``model:`` entry resolved: our weights (with their family) or a zoo folder."""

    entry: str  # as the config names it
    kind: str  # "ours" | "zoo"
    path: str  # the weights file (or template, or a name Ultralytics may download) or the folder
    family: str | None  # the family of our weights; None for a zoo folder
    by_name: bool = False  # ``path`` is a release name Ultralytics downloads (``allow_download``)

    def __post_init__(self) -> None:
        if self.kind not in ("ours", "zoo"):
            raise ValueError(f"kind must be 'ours' or 'zoo', got {self.kind!r}")
        if (self.kind == "ours") != (self.family is not None):
            raise ValueError(f"our weights name their family and zoo folders none: {self}")

    @property
    def source(self) -> ModelSource:
        return ModelSource(self.entry, self.kind, self.path if self.by_name else Path(self.path))

    @property
    def name(self) -> str:
        return self.source.name


@dataclass(frozen=True)
class ExportJob:
    """One float export: a model of ours at one image size (recipes that edit the graph export
    again inside their conversion job, from this job's weights)."""

    model: str  # the model's name in variant names (``-ft`` once fine-tuned)
    imgsz: int


@dataclass(frozen=True)
class ConversionJob:
    """One ``.tflite`` to write from an export: scheme, I/O types and recipe set.

    ``group`` names the task that runs it: the plain int8 schemes of one export share a task
    (they calibrate once), each recipe set has its own (its re-export is shared by its schemes).
    """

    order: int  # the serial order: model, imgsz, scheme, recipe
    model: str
    imgsz: int
    scheme: str
    io: str
    recipe: str  # "" for a plain conversion
    group: str

    def __post_init__(self) -> None:
        Scheme(self.scheme), IOType(self.io)

    @property
    def tag(self) -> str:
        return self.scheme + (f"+{self.recipe}" if self.recipe else "")

    @property
    def variant_name(self) -> str:
        return f"{self.model}_{self.imgsz}_{self.tag}_{self.io}"

    def path(self, run_dir: str | Path) -> Path:
        """Where the file is written in a run folder."""
        return Path(run_dir) / "variants" / self.model / str(self.imgsz) / f"{self.tag}-{self.io}.tflite"


@dataclass(frozen=True)
class RunPlan:
    """Everything a run resolved from its config: models, dataset, jobs, targets."""

    config: RunConfig
    models: tuple[ModelEntry, ...]
    dataset: PreparedDataset
    exports: tuple[ExportJob, ...]
    conversions: tuple[ConversionJob, ...]
    targets: tuple[str, ...] = field(default=())
    measured: tuple[BoardLatency, ...] = field(default=())  # the measured_latency CSV's rows, validated

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a plan has at least one model")
        names = [job.variant_name for job in self.conversions]
        if len(set(names)) != len(names):
            raise WorkbenchError(
                "two models of the config would write the same variant names "
                f"({sorted({n for n in names if names.count(n) > 1})[:3]}): give the weights distinct file names"
            )

    @property
    def ours(self) -> tuple[ModelEntry, ...]:
        return tuple(m for m in self.models if m.kind == "ours")

    @property
    def zoo(self) -> tuple[ModelEntry, ...]:
        return tuple(m for m in self.models if m.kind == "zoo")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "config": self.config.to_dict(),
            "config_hash": self.config.hash,
            "models": [asdict(m) for m in self.models],
            "dataset": self.dataset.to_dict(),
            "exports": [asdict(j) for j in self.exports],
            "conversions": [asdict(j) for j in self.conversions],
            "targets": list(self.targets),
            "measured": [m.to_dict() for m in self.measured],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> RunPlan:
        if data.get("version") != PLAN_VERSION:
            raise WorkbenchError(
                f"plan version {data.get('version')!r}, expected {PLAN_VERSION}", path=source
            )
        return cls(
            config=RunConfig.from_dict(data["config"], source=str(source) if source else None),
            models=tuple(ModelEntry(**m) for m in data["models"]),
            dataset=PreparedDataset.from_dict(data["dataset"]),
            exports=tuple(ExportJob(**j) for j in data["exports"]),
            conversions=tuple(ConversionJob(**j) for j in data["conversions"]),
            targets=tuple(data["targets"]),
            measured=tuple(BoardLatency(**m) for m in data.get("measured", [])),
        )

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / PLAN_JSON
        write_json(path, self.to_dict())
        return path


def make_plan(cfg: RunConfig, source: str | None = None, need_training: bool | None = None) -> RunPlan:
    """Resolve ``cfg`` once: models (and their families), the dataset, the jobs.

    ``need_training`` (default: ``cfg.epochs > 0``) prepares what fine-tuning needs (a COCO
    dataset's YOLO copy); a sweep, which only converts, passes ``False``.

    Raises:
        WorkbenchError: a model or data path not found (naming ``source``, the config file).
    """
    from workbench.targets import get_target

    if cfg.dataset.endswith((".yaml", ".yml")):
        raise WorkbenchError(
            "a data.yaml dataset is for `workbench train` only: a run evaluates on COCO annotations "
            "(dataset: synthetic, coco, or a dataset folder)",
            path=source,
        )
    for name in cfg.targets:  # an unknown name is refused with the valid list, before any work
        try:
            get_target(name)
        except WorkbenchError as err:
            raise WorkbenchError(err.message, path=source) from None
    measured: list[BoardLatency] = []
    if cfg.measured_latency:  # untrusted: every row checked (format, target) before any work
        measured = read_measured_latency(resolve_path(cfg.measured_latency), cfg.targets)
    models = resolve_models(cfg, source)
    check_data_paths(cfg, source)
    dataset = _dataset(cfg, models, need_training)
    names = [_trained_name(cfg, m) for m in models if m.kind == "ours"]
    return RunPlan(
        config=cfg,
        models=tuple(models),
        dataset=dataset,
        exports=tuple(ExportJob(name, imgsz) for name in names for imgsz in cfg.imgsz),
        conversions=conversion_jobs(cfg, names),
        targets=tuple(cfg.targets),
        measured=tuple(measured),
    )


def resolve_models(cfg: RunConfig, source: str | None = None) -> list[ModelEntry]:
    """Each ``model:`` entry found (paths, names under WORKBENCH_WEIGHTS_DIR / WORKBENCH_ZOO_DIR)
    and our weights' family named; an error naming ``source`` otherwise."""
    from workbench.families import family_of

    models = []
    for entry in cfg.models:
        try:
            resolved = resolve_model(entry, cfg.allow_download)
            family = family_of(resolved.path).name if resolved.kind == "ours" else None
        except WorkbenchError as err:
            raise WorkbenchError(err.message, path=source or err.path) from None
        by_name = isinstance(resolved.path, str)
        models.append(ModelEntry(entry, resolved.kind, str(resolved.path), family, by_name))
    return models


def check_data_paths(cfg: RunConfig, source: str | None = None) -> None:
    """Raise unless every dataset path the config names is found (as given, from the repository
    root, or under WORKBENCH_DATA_DIR)."""
    named = [("dataset", cfg.dataset)] if cfg.dataset not in ("synthetic", "coco") else []
    keys = ("ann", "images", "train_ann", "train_images", "calib_dir")
    named += [(key, getattr(cfg, key)) for key in keys if getattr(cfg, key)]
    for key, value in named:
        if not resolve_data(value).exists():
            raise WorkbenchError(
                f"{key} {value!r} not found (as given, from the repository root, or under WORKBENCH_DATA_DIR)",
                path=source,
            )


def _trained_name(cfg: RunConfig, model: ModelEntry) -> str:
    """The model's name in variant names: fine-tuned weights are ``<name>-ft``."""
    return f"{model.name}-ft" if cfg.epochs > 0 else model.name


def _dataset(cfg: RunConfig, models: list[ModelEntry], need_training: bool | None) -> PreparedDataset:
    """The config's dataset; a zoo-only run with ``ann``/``images`` needs nothing else."""
    from workbench.families import get_family

    ours = [m for m in models if m.kind == "ours"]
    if not ours and cfg.dataset == "synthetic":
        if not (cfg.ann and cfg.images):
            raise WorkbenchError("a zoo run needs `ann` (COCO JSON) and `images` (folder) in its config")
        ann, images = resolve_data(cfg.ann), resolve_data(cfg.images)
        for path in (ann, images):
            if not path.exists():
                raise WorkbenchError("dataset path not found", path=path)
        from workbench.provenance import dataset_hash

        return PreparedDataset.for_evaluation(ann, images, dataset_hash(ann)[:16])
    if not ours:
        return prepare_dataset(cfg, need_training=False)
    return get_family(ours[0].family).dataset(cfg, need_training)


def conversion_jobs(cfg: RunConfig, models: list[str]) -> tuple[ConversionJob, ...]:
    """One job per (model, imgsz, scheme, recipe) the config asks for, in the serial order; a recipe
    set is skipped for a scheme it does not apply to (int16x8 per-tensor, split-channels
    per-channel)."""
    from workbench.recipes import applies

    jobs = []
    for model in models:
        for imgsz in cfg.imgsz:
            for scheme in cfg.schemes:
                io = cfg.io if scheme.is_int8 else IOType.FF
                for recipe in ["", *cfg.recipes] if scheme.is_int8 else [""]:
                    if recipe and not applies(recipe, scheme.value):
                        continue
                    group = recipe or ("int8" if scheme.is_int8 else scheme.value)
                    jobs.append(ConversionJob(len(jobs), model, imgsz, scheme.value, io.value, recipe, group))
    return tuple(jobs)


def conversion_groups(jobs: tuple[ConversionJob, ...]) -> dict[tuple[str, int, str], list[ConversionJob]]:
    """The jobs by the task that runs them: ``(model, imgsz, group)`` → jobs in serial order."""
    groups: dict[tuple[str, int, str], list[ConversionJob]] = {}
    for job in jobs:
        groups.setdefault((job.model, job.imgsz, job.group), []).append(job)
    return groups


def load_plan(run_dir: str | Path) -> RunPlan:
    """The plan a run folder holds (written by the report's preflight)."""
    path = Path(run_dir) / PLAN_JSON
    if not path.is_file():
        raise WorkbenchError("run folder has no plan yet: run `workbench report` or its preflight", path=path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError) as err:
        raise WorkbenchError(f"not a valid plan: {err}", path=path) from None
    return RunPlan.from_dict(data, source=path)


def plan_for(cfg: RunConfig, run_dir: str | Path) -> RunPlan:
    """The run folder's plan when it was made from ``cfg``; otherwise ``cfg`` resolved now and
    written there (a notebook run on its own)."""
    path = Path(run_dir) / PLAN_JSON
    if path.is_file():
        plan = load_plan(run_dir)
        if plan.config.to_dict() == cfg.to_dict():
            return plan
    plan = make_plan(cfg)
    plan.write(run_dir)
    return plan


@dataclass(frozen=True)
class ModelPlan:
    """A one-model plan, what a CLI verb consumes: the weights found once and their family, and
    for training its one-model config and dataset."""

    model: ModelEntry
    weights: Path | str  # the file to load: a release name downloaded, a model .yaml as given
    config: RunConfig | None = None
    dataset: PreparedDataset | None = None

    @property
    def family(self) -> ModelFamily:
        from workbench.families import get_family

        return get_family(self.model.family)


def one_model_plan(model: str | Path, *, allow_download: bool = False, task: str | None = None) -> ModelPlan:
    """``model`` (float weights: a path, a name under WORKBENCH_WEIGHTS_DIR, a model ``.yaml``)
    resolved once: its family first (a file no family takes is refused before any search), the
    task checked against the family when given, then the file found (downloaded when allowed).

    Raises:
        WorkbenchError: no family takes the file, the family does not do ``task``, or not found.
    """
    from workbench.families import family_of
    from workbench.locations import resolve_weights, weights_file

    family = family_of(model)
    if task is not None:
        family.check_task(Task(task), model)
    resolved = resolve_weights(str(model), allow_download)
    entry = ModelEntry(str(model), "ours", str(resolved), family.name, isinstance(resolved, str))
    return ModelPlan(entry, weights_file(resolved))


def exported_plan(saved_model: str | Path, recipes: str | None = None) -> ModelPlan:
    """The one-model plan of a ``workbench export`` SavedModel (``workbench quantize``): the weights
    and family its metadata records, ``recipes`` parsed first (they need no file).

    Raises:
        WorkbenchError: an unknown recipe, a folder without readable metadata, or of a family this
            installation does not know.
    """
    from workbench.exported import ExportResult
    from workbench.families import get_family
    from workbench.recipe_names import parse_recipes

    if recipes is not None:
        parse_recipes(recipes)
    try:
        export = ExportResult.load(saved_model)
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # JSON or fields not ours
        raise WorkbenchError(
            f"unreadable export metadata ({type(err).__name__}: {err}); re-run `workbench export`",
            path=saved_model,
        ) from None
    try:
        family = get_family(export.family)
    except WorkbenchError as err:
        raise WorkbenchError(err.message, path=saved_model) from None
    entry = ModelEntry(str(export.weights), "ours", str(export.weights), family.name)
    return ModelPlan(entry, Path(export.weights))


def training_plan(
    model: str | Path,
    data: str | Path,
    *,
    task: str | None = None,
    imgsz: int,
    epochs: int,
    batch: int,
    seed: int,
) -> ModelPlan:
    """The one-model plan ``workbench train`` fine-tunes by: ``model`` resolved, its config (the
    family's first task unless ``task`` is given) and ``data`` prepared by the family.

    ``data``: ``synthetic``, a dataset folder, its ``yolo/data.yaml``, or an Ultralytics
    ``data.yaml`` such as ``workbench data convert`` writes (:func:`dataset_entry`).
    """
    found = one_model_plan(model)
    family = found.family
    cfg = RunConfig(
        name="train",
        task=task or family.tasks[0].value,
        model=str(found.weights),
        imgsz=[imgsz],
        dataset=dataset_entry(data),
        epochs=epochs,
        batch=batch,
        seed=seed,
    )
    return ModelPlan(found.model, found.weights, cfg, family.dataset(cfg, need_training=epochs > 0))


def pretrain_plan(cfg: RunConfig, source: str | None = None) -> RunPlan:
    """The plan of ``workbench train --config`` (pretraining): the config's model architecture
    and its training dataset, resolved once."""
    return make_plan(cfg, source, need_training=True)


def dataset_entry(data: str | Path) -> str:
    """A config's ``dataset:`` for ``--data``: ``synthetic``; a dataset folder, or the folder whose
    ``yolo/data.yaml`` was named (a family trains from the folder's COCO files or its YOLO copy);
    any other ``data.yaml`` as it is (an Ultralytics dataset, checked when it is prepared)."""
    from workbench.data.prepare import YOLO_DATA_YAML

    if str(data) == "synthetic":
        return "synthetic"
    path = Path(data)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise WorkbenchError("data.yaml not found", path=path)
        root = path.resolve().parent.parent
        if path.resolve() == root.joinpath(*YOLO_DATA_YAML) and (root / "annotations").is_dir():
            return str(root)
        return str(path.resolve())
    if not path.is_dir():
        raise WorkbenchError(
            "dataset folder not found (pass a folder, its yolo/data.yaml, a data.yaml, or synthetic)",
            path=path,
        )
    return str(path.resolve())
