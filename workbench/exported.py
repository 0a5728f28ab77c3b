"""What an export leaves beside its SavedModel: :class:`ExportResult`, written as ``EXPORT_META``.

A low module on purpose: the export engine (:mod:`workbench.export`), the model families and
conversion (:mod:`workbench.quantize`) all read it, and none of them needs the others for that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import METRIC_OF_TASK
from workbench.errors import WorkbenchError
from workbench.recipes.edits import HEADS

EXPORT_META = "workbench_export.json"


@dataclass
class ExportResult:
    """A float SavedModel with normalized outputs and the metadata that travels with it."""

    saved_model: Path
    task: str
    imgsz: int
    names: dict[int, str]
    kpt_shape: list[int] | None
    normalized: bool
    weights: str
    weights_sha256: str
    seconds: float
    ultralytics: dict[str, Any] = field(default_factory=dict)
    # How images become the model input; quantize calibrates and the runtime feeds the same way.
    family: str = "yolo"
    preprocess: str = "letterbox"
    interpolation: str = "bilinear"
    input_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    head: str = "single"
    equalized: bool = False
    st_optimized: bool = False  # ST's per-tensor preparation (the st-optimize recipe)
    split_channels: float | None = (
        None  # min noise gain convolutions were split at (the split-channels recipe)
    )
    split_fine: bool = False  # the split's finer form (the split-channels-fine recipe)
    kpt_clip: list[float] | None = None
    kpt_percentile: float | None = None  # the percentile kpt_clip was taken at (the calib-percentile recipe)
    bias_corrected: str | None = None  # "<granularity>:<calibration digest>" (the bias-correct recipe)
    qat: str | None = None  # "<granularity>:<calibration digest>" (the qat recipe)
    calibration: str | None = None  # the images the edits learned from (calibration.calibration_fingerprint)

    def __post_init__(self) -> None:
        if self.task not in METRIC_OF_TASK:
            raise ValueError(f"unknown task {self.task!r}")
        if self.preprocess not in ("letterbox", "resize"):
            raise ValueError(f"preprocess must be letterbox or resize, got {self.preprocess!r}")
        lo, hi = (float(v) for v in self.input_range)
        if not lo < hi:
            raise ValueError(f"input_range must be increasing, got {self.input_range}")
        self.input_range = [lo, hi]
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["saved_model"] = str(self.saved_model)
        out["names"] = {str(k): v for k, v in self.names.items()}
        return out

    @classmethod
    def load(cls, saved_model: str | Path) -> ExportResult:
        """Read the metadata written beside a SavedModel by :func:`export_saved_model`."""
        meta_path = Path(saved_model) / EXPORT_META
        if not Path(saved_model).is_dir():
            raise WorkbenchError("SavedModel folder not found", path=saved_model)
        if not meta_path.is_file():
            raise WorkbenchError(f"no {EXPORT_META}: not exported by `workbench export`", path=saved_model)
        meta = json.loads(meta_path.read_text())
        meta["saved_model"] = Path(saved_model)
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
        return cls(**meta)
