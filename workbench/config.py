"""`RunConfig`: the one object that flows to every step.

Loaded from YAML (:meth:`RunConfig.from_yaml`), papermill parameters (:meth:`RunConfig.from_params`)
or keyword arguments; validated in ``__post_init__``; hashed by content (:attr:`RunConfig.hash`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import WorkbenchError
from workbench.recipe_names import parse_recipes
from workbench.safeparse import load_yaml


class Task(StrEnum):
    POSE = "pose"
    SEG = "seg"
    DETECT = "detect"


class Scheme(StrEnum):
    """Numeric format of a converted model."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8_PER_CHANNEL = "int8-per-channel"
    INT8_PER_TENSOR = "int8-per-tensor"

    @property
    def is_int8(self) -> bool:
        return self in (Scheme.INT8_PER_CHANNEL, Scheme.INT8_PER_TENSOR)


class IOType(StrEnum):
    """Input/output tensor types, in ST's two-letter naming: input letter then output letter."""

    UF = "uf"  # uint8 in, float out: the zoo's deployment form
    II = "ii"  # int8 in, int8 out
    FF = "ff"  # float in, float out


IMGSZ_MIN, IMGSZ_MAX, IMGSZ_STRIDE = 64, 1280, 32
PROTOCOLS = ("coco", "st")  # evaluation protocols: COCO's, and ST's model-zoo one
# The one definition of each task vocabulary: the COCO iou type that scores a task, and Ultralytics'
# name for it (keys are Task members, equal to their plain strings).
METRIC_OF_TASK = {Task.POSE: "keypoints", Task.SEG: "segm", Task.DETECT: "bbox"}
TASK_OF_METRIC = {metric: task for task, metric in METRIC_OF_TASK.items()}
METRICS = tuple(METRIC_OF_TASK.values())
ULTRALYTICS_TASK = {Task.POSE: "pose", Task.SEG: "segment", Task.DETECT: "detect"}
TASK_OF_ULTRALYTICS = {name: task for task, name in ULTRALYTICS_TASK.items()}
# `target:` names a deployment target (workbench.targets; checked against the registry by the plan).
# Its old values are refused with the target that replaces them, rather than guessed.
RETIRED_TARGETS = {
    "npu": "name a board: stm32mp2 (its NPU runs per-tensor int8; what `npu` meant), stm32n6 or ethos-u55-256",
    "cpu": "name `host` (this machine's CPU, measured) or leave `target` unset",
}
# fields added after configs were hashed: part of the hash only when set, so older configs keep theirs
HASHED_WHEN_SET = ("targets", "measured_latency")


def validate_imgsz(value: Any, source: str | None = None) -> int:
    """Return ``value`` as an int if it is a multiple of 32 within [64, 1280]; raise otherwise."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"image size {value!r} is not an integer", path=source) from None
    if size != value and not (isinstance(value, str) and value.strip() == str(size)):
        raise WorkbenchError(f"image size {value!r} is not an integer", path=source)
    if not (IMGSZ_MIN <= size <= IMGSZ_MAX) or size % IMGSZ_STRIDE:
        raise WorkbenchError(
            f"image size {size} must be a multiple of {IMGSZ_STRIDE} within [{IMGSZ_MIN}, {IMGSZ_MAX}]",
            path=source,
        )
    return size


@dataclass
class RunConfig:
    """Everything a run needs; every reported number is traceable to its :attr:`hash`.

    Example:
        >>> cfg = RunConfig(imgsz=[256], schemes=["fp32", "int8-per-tensor"])
        >>> cfg.schemes
        [<Scheme.FP32: 'fp32'>, <Scheme.INT8_PER_TENSOR: 'int8-per-tensor'>]
        >>> len(cfg.hash)
        12
    """

    name: str = "default"
    task: Task = Task.POSE
    # One entry or a list. Each is weights to start from (a .pt path, or a file name found under
    # WORKBENCH_WEIGHTS_DIR; a model .yaml trains from scratch), or a folder of ready .tflite
    # files (e.g. ST's zoo, also found under WORKBENCH_ZOO_DIR), evaluated as shipped beside ours.
    model: str | list[str] = "data/weights/yolov8n-pose-synth.pt"
    allow_download: bool = False  # let Ultralytics fetch a weights name found nowhere locally
    trust_weights: bool = False  # load weights files whose loading runs code (workbench.safeload)
    imgsz: list[int] = field(default_factory=lambda: [256])
    schemes: list[Scheme] = field(default_factory=lambda: [Scheme.FP32, Scheme.INT8_PER_CHANNEL])
    io: IOType = IOType.UF
    # Dataset: "synthetic" generates one; "coco" takes the COCO files named below (paths as given,
    # from the repository root, or under WORKBENCH_DATA_DIR); otherwise a folder laid out as the
    # synthetic set (images/{train,val}, annotations/{train,val}.json, yolo/data.yaml).
    dataset: str = "synthetic"
    synth_train: int = 256
    synth_val: int = 64
    synth_imgsz: int = 256
    synth_preset: str = "standard"
    ann: str | None = None  # COCO JSON used for evaluation (derived for synthetic data)
    images: str | None = None  # image folder used for evaluation (derived for synthetic data)
    train_ann: str | None = None  # COCO JSON to fine-tune on (dataset: coco; YOLO copy made in the cache)
    train_images: str | None = None  # its image folder
    calib_dir: str | None = None  # calibration images (default: the training images)
    epochs: int = 1
    train_args: dict[str, Any] = field(default_factory=dict)  # extra Ultralytics train arguments
    train_imgsz: int | None = None  # defaults to the largest of imgsz
    batch: int = 8
    calib_images: int = 200
    eval_images: int | None = None  # None: all
    protocol: str | list[str] = "coco"  # "coco", "st" or both: each a set of result columns
    latency_budget_ms: float | None = None  # the report recommends the best variant within it
    # Recovery recipes for int8 schemes (workbench.recipes): each entry one recipe or several
    # joined by "+", e.g. ["split-head", "split-head+calib-all"]; each adds a row per int8 scheme.
    recipes: list[str] = field(default_factory=list)
    # The deployment target the report answers for (a `targets` name; added to `targets` if absent):
    # its latency is the frontier's axis and the recommendation's, e.g. stm32n6. None: this CPU.
    target: str | None = None
    # Deployment targets (workbench.targets, `workbench targets` lists them) whose latency, memory and
    # op placement the benchmark step adds to every variant, e.g. [host, ethos-u55-256, stm32mp2, stm32n6]
    targets: list[str] = field(default_factory=list)
    # Latencies measured on boards by their owners: a CSV of file (name or sha256), target, ms
    # (workbench.targets.measured); each replaces the estimate of that file on that target.
    measured_latency: str | None = None
    threads: int = 2
    bench_runs: int = 30
    seed: int = 0
    out_dir: str = "reports"
    # Conversions and evaluations run as a Dask graph on this many local worker processes
    # (None: one per core; 0: serially in this process). Results do not depend on it.
    workers: int | None = None

    def __post_init__(self) -> None:
        self.task = _enum(Task, self.task, "task")
        self.io = _enum(IOType, self.io, "io")
        self.schemes = [_enum(Scheme, s, "schemes") for s in _as_list(self.schemes)]
        self.imgsz = [validate_imgsz(s) for s in _as_list(self.imgsz)]
        if not self.imgsz:
            raise WorkbenchError("imgsz must name at least one image size")
        if not self.schemes:
            raise WorkbenchError("schemes must name at least one scheme")
        for key in ("imgsz", "schemes"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise WorkbenchError(f"{key} lists a value twice: {[str(v) for v in values]}")
        if self.train_imgsz is not None:
            self.train_imgsz = validate_imgsz(self.train_imgsz)
        self.synth_imgsz = validate_imgsz(self.synth_imgsz)
        for key in ("epochs", "batch", "calib_images", "threads", "bench_runs", "synth_train", "synth_val"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)  # YAML's `true` is an int to Python
                or not isinstance(value, int)
                or value < 0
                or (value == 0 and key not in ("epochs", "synth_val"))
            ):
                raise WorkbenchError(f"{key} must be a positive integer, got {value!r}")
        protocols = _as_list(self.protocol)
        if (
            not protocols
            or any(p not in PROTOCOLS for p in protocols)
            or len(set(protocols)) != len(protocols)
        ):
            raise WorkbenchError(
                f"protocol must be one or both of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )
        models = _as_list(self.model)
        if not models or not all(isinstance(m, str) and m.strip() for m in models):
            raise WorkbenchError(
                f"model must name weights or a zoo folder (or a list of them), got {self.model!r}"
            )
        if len(set(models)) != len(models):
            raise WorkbenchError(f"model lists an entry twice: {self.model!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise WorkbenchError(f"workers must be 0 (serial) or a positive integer, got {self.workers!r}")
        if not isinstance(self.allow_download, bool):
            raise WorkbenchError(f"allow_download must be true or false, got {self.allow_download!r}")
        if self.dataset == "coco" and not (self.ann and self.images):
            raise WorkbenchError("dataset: coco needs `ann` (COCO JSON) and `images` (folder) for evaluation")
        if bool(self.train_ann) != bool(self.train_images):
            raise WorkbenchError("train_ann and train_images go together: name both or neither")
        self.recipes = ["+".join(parse_recipes(str(r))) for r in _as_list(self.recipes)]
        if "" in self.recipes or len(set(self.recipes)) != len(self.recipes):
            raise WorkbenchError(f"recipes must be distinct, non-empty recipe names, got {self.recipes}")
        self.targets = [str(t) for t in _as_list(self.targets)]
        if "" in self.targets or len(set(self.targets)) != len(self.targets):
            raise WorkbenchError(f"targets must be distinct target names, got {self.targets}")
        if self.target is not None:
            if not isinstance(self.target, str) or not self.target.strip():
                raise WorkbenchError(f"target must name a deployment target, got {self.target!r}")
            if self.target in RETIRED_TARGETS:
                raise WorkbenchError(
                    f"target: {self.target!r} is no longer accepted: {RETIRED_TARGETS[self.target]}"
                )
            if self.target not in self.targets:  # the report needs its columns: measured like the others
                self.targets.append(self.target)
        if self.measured_latency is not None and not (
            isinstance(self.measured_latency, str) and self.measured_latency.strip()
        ):
            raise WorkbenchError(f"measured_latency must name a CSV file, got {self.measured_latency!r}")

    @property
    def models(self) -> list[str]:
        """``model`` as a list (a config may name one model or several)."""
        return [m.strip() for m in _as_list(self.model)]

    @property
    def protocols(self) -> list[str]:
        """``protocol`` as a list; the first is the report's headline AP."""
        return _as_list(self.protocol)

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> RunConfig:
        """Build from a mapping; an unknown key is an error that lists the valid ones."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise WorkbenchError(
                f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(cls.field_names())}",
                path=source,
            )
        try:
            return cls(**dict(values))
        except WorkbenchError as err:
            raise WorkbenchError(err.message, path=source or err.path) from None
        except TypeError as err:
            raise WorkbenchError(str(err), path=source) from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Load a YAML file; ``overrides`` win over the file's values."""
        path = Path(path)
        if not path.is_file():
            raise WorkbenchError("config file not found", path=path)
        try:
            values = load_yaml(path.read_text(), path)
        except yaml.YAMLError as err:
            raise WorkbenchError(f"not valid YAML: {err}", path=path) from None
        if values is None:
            raise WorkbenchError(
                "is empty; a config names at least its `name` (see configs/default.yaml)", path=path
            )
        if not isinstance(values, dict):
            raise WorkbenchError("config must be a mapping of keys to values", path=path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RunConfig:
        """Build from papermill parameters: a ``config`` dict (or YAML path) plus loose overrides."""
        params = dict(params)
        base = params.pop("config", None)
        if isinstance(base, (str, Path)) and base:
            return cls.from_yaml(base, **params)
        values = dict(base or {})
        values.update(params)
        return cls.from_dict(values, source="papermill parameters")

    # ---- identity ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["task"] = self.task.value
        out["io"] = self.io.value
        out["schemes"] = [s.value for s in self.schemes]
        return out

    @property
    def hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON of the config (``name``, ``workers`` and
        ``trust_weights``, which change no result, excluded; fields added later count only when set)."""
        content = {
            k: v
            for k, v in self.to_dict().items()
            if k not in ("name", "workers", "trust_weights") and not (k in HASHED_WHEN_SET and not v)
        }
        if self.measured_latency:  # its rows change results: the file's content counts, not its name only
            content["measured_latency"] = [
                self.measured_latency,
                _file_digest(resolve_path(self.measured_latency)),
            ]
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=True)


def resolve_path(path: str | Path) -> Path:
    """``path`` as given if it exists (or is absolute), else relative to the repository root.

    Notebooks run in ``notebooks/`` and the CLI wherever the user is; configs name paths from the
    repository root (``data/weights/...``), so both resolve the same way.
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return Path(__file__).resolve().parent.parent / path


def _file_digest(path: Path) -> str | None:
    """sha256 of a small input file (None when absent: the plan refuses it with its name)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _enum(kind: type[StrEnum], value: Any, key: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(v.value for v in kind)
        raise WorkbenchError(f"{key}: {value!r} is not one of {valid}") from None


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]
