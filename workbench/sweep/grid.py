"""A sweep config and its cells: a RunConfig with lists along axes, expanded to one RunConfig per cell.

An axis is one entry of :data:`AXES`: the sweep YAML's key, the RunConfig field it sets in each
cell, and whether the RunConfig field is itself a list (a cell holds a one-element list). Adding
an axis is one entry.

``recipes`` lists recovery-recipe sets (``split-levels+calib-mse``), with ``none`` for the plain
conversion. A recipe changes an int8 conversion only, so a cell pairing a recipe set with a float
scheme (or ``int16x8`` with per-tensor weights, which TF's 16x8 mode cannot convert, or
``split-channels`` with per-channel weights, which already have a scale per channel) is not
planned, as ``make report`` plans no such file.

Example:
    >>> sweep = SweepConfig.from_dict({"imgsz": [64, 96], "schemes": ["fp32", "int8-per-tensor"],
    ...                                "exclude": [{"imgsz": 96, "schemes": "fp32"}]})
    >>> [(c.values["imgsz"], c.values["schemes"]) for c in sweep.cells()]
    [(64, 'fp32'), (64, 'int8-per-tensor'), (96, 'int8-per-tensor')]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.config import RunConfig, _as_list
from workbench.errors import WorkbenchError
from workbench.safeparse import load_yaml

SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Axis:
    """One sweep axis: the YAML key, the RunConfig field of a cell, and whether that field is a list."""

    key: str
    field: str
    listed: bool


AXES: tuple[Axis, ...] = (
    Axis("model", "model", listed=False),
    Axis("imgsz", "imgsz", listed=True),
    Axis("schemes", "schemes", listed=True),
    Axis("calib_images", "calib_images", listed=False),
    Axis("datasets", "dataset", listed=False),
    Axis("recipes", "recipes", listed=True),
)
PLAIN = "none"  # the recipes axis value for a conversion without recipes
AXIS_KEYS = tuple(a.key for a in AXES)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its axis values, its single-valued RunConfig and content keys."""

    values: dict[str, Any]
    config: RunConfig
    weights_sha256: str
    weights: str = ""  # the weights file the model entry resolved to (found once, for every cell)
    family: str = ""  # its model family (as the plan named it)

    @property
    def key(self) -> str:
        """Content hash: the cell's config (every field but ``name``/``workers``, and the targets,
        whose figures are added to a stored row without converting again) and weights."""
        plain = self.config.replace(targets=[], target=None) if self.config.targets else self.config
        return _digest({"config": plain.hash, "weights": self.weights_sha256})

    @property
    def export_key(self) -> str:
        """Cells with the same weights, task and image size share one export."""
        return _digest(
            {"weights": self.weights_sha256, "task": self.config.task.value, "imgsz": self.config.imgsz[0]}
        )

    @property
    def variant(self) -> str:
        c = self.config
        scheme = c.schemes[0]
        io = c.io.value if scheme.is_int8 else "ff"
        recipe = f"+{c.recipes[0]}" if c.recipes else ""
        return f"{Path(c.models[0]).stem}_{c.imgsz[0]}_{scheme.value}{recipe}_{io}_c{c.calib_images}_{self.key[:8]}"


@dataclass
class SweepConfig:
    """A RunConfig's fields with lists along :data:`AXES`, plus ``exclude`` (partial cells to skip)."""

    base: dict[str, Any]
    axes: dict[str, list[Any]]
    exclude: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        for key, values in self.axes.items():
            if key not in AXIS_KEYS:
                raise WorkbenchError(
                    f"unknown sweep axis {key!r}; axes: {', '.join(AXIS_KEYS)}", path=self.source
                )
            if not values:
                raise WorkbenchError(f"axis {key} has no values", path=self.source)
            if len(set(map(str, values))) != len(values):
                raise WorkbenchError(f"axis {key} lists a value twice: {values}", path=self.source)
        for partial in self.exclude:
            if not isinstance(partial, Mapping) or not partial:
                raise WorkbenchError(
                    f"exclude entries must be mappings of axis: value, got {partial!r}", path=self.source
                )
            for key, value in partial.items():
                if key not in self.axes:
                    raise WorkbenchError(
                        f"exclude names {key!r}, not a swept axis ({', '.join(self.axes)})", path=self.source
                    )
                if str(value) not in map(str, self.axes[key]):
                    raise WorkbenchError(
                        f"exclude value {key}={value!r} is not on the axis {self.axes[key]}", path=self.source
                    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> SweepConfig:
        values = dict(values)
        exclude = values.pop("exclude", None) or []
        if not isinstance(exclude, list):
            raise WorkbenchError("exclude must be a list of partial cells", path=source)
        if "dataset" in values and "datasets" not in values:
            values["datasets"] = values.pop("dataset")
        axes = {
            a.key: [v for v in _as_list(values.pop(a.key)) if v is not None] for a in AXES if a.key in values
        }
        unknown = sorted(set(values) - set(RunConfig.field_names()))
        if unknown:
            raise WorkbenchError(
                f"unknown sweep key(s) {', '.join(unknown)}; axes: {', '.join(AXIS_KEYS)}, "
                f"other keys as a RunConfig: {', '.join(RunConfig.field_names())}",
                path=source,
            )
        return cls(values, axes, exclude, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        path = Path(path)
        if not path.is_file():
            raise WorkbenchError("sweep config file not found", path=path)
        try:
            values = load_yaml(path.read_text(), path) or {}
        except yaml.YAMLError as err:
            raise WorkbenchError(f"not valid YAML: {err}", path=path) from None
        if not isinstance(values, dict):
            raise WorkbenchError("sweep config must be a mapping of keys to values", path=path)
        return cls.from_dict(values, source=str(path))

    @property
    def name(self) -> str:
        name = str(self.base.get("name", "sweep"))
        if not SWEEP_NAME.fullmatch(name):  # it names a folder under <out_dir>/sweeps: no ../ escapes
            raise WorkbenchError(
                f"sweep name {name!r} cannot name a folder: use letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit)",
                path=self.source,
            )
        return name

    def cells(self) -> list[Cell]:
        """Every cell not excluded, in axis order; each value is validated as its RunConfig is built.

        Raises:
            WorkbenchError: an invalid axis value (named with its axis), before anything runs.
        """
        from workbench.plan import check_data_paths, resolve_models
        from workbench.recipes import applies

        keys = list(self.axes)
        weights: dict[str, tuple[str, str, str]] = {}  # model entry -> (weights file, sha256, family)
        cells = []
        for combo in itertools.product(*(self.axes[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            if any(all(str(values[k]) == str(v) for k, v in p.items()) for p in self.exclude):
                continue
            settings = dict(self.base)
            for axis in AXES:
                if axis.key in values:
                    settings[axis.field] = [values[axis.key]] if axis.listed else values[axis.key]
            if settings.get("recipes") == [PLAIN]:
                settings["recipes"] = []
            try:
                config = RunConfig.from_dict(settings)
                check_data_paths(config)
                if config.models[0] not in weights:
                    weights[config.models[0]] = _weights_file(resolve_models(config)[0], self.source)
            except WorkbenchError as err:
                where = ", ".join(f"{k}={v}" for k, v in values.items())
                raise WorkbenchError(f"cell ({where}): {err.message}", path=self.source) from None
            for name in ("imgsz", "schemes"):
                if len(getattr(config, name)) != 1:
                    raise WorkbenchError(
                        f"{name} must be swept as an axis (a list), got {getattr(config, name)}",
                        path=self.source,
                    )
            if config.recipes and not (
                config.schemes[0].is_int8 and applies(config.recipes[0], config.schemes[0].value)
            ):
                continue  # a recipe set this scheme cannot take (see the module docstring)
            path, sha256, family = weights[config.models[0]]
            cells.append(Cell(values, config, sha256, path, family))
        if not cells:
            raise WorkbenchError("the sweep has no cells (everything excluded)", path=self.source)
        return cells


def _weights_file(model, source: str | None) -> tuple[str, str, str]:
    """A resolved model entry's weights file, sha256 and family; zoo folders are for reports, not
    sweeps."""
    from workbench.fileio import sha256_file

    if model.kind != "ours" or not Path(model.path).is_file():
        raise WorkbenchError(
            f"model {model.entry!r}: a sweep converts weights files (.pt); zoo folders are compared by `workbench report`",
            path=source,
        )
    return model.path, sha256_file(model.path), model.family


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
