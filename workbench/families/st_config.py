"""ST's SSD config yaml (stm32ai-modelzoo): pre-processing, post-processing and anchors.

Two layouts exist: AI-ModelZoo 2.x (``preprocessing: {rescaling, resizing: {aspect_ratio,
interpolation}, color_mode}``, ``postprocessing``) and 1.x (``pre_processing: {rescaling, resizing:
bilinear, aspect_ratio, color_mode}``, ``post_processing``). Both read into :class:`StSsdConfig`.

``rescaling: {scale: 127.5, offset: -1}`` means ``pixel / 127.5 - 1`` (ST writes the divisor; a
``scale`` below 1 is taken as the multiplier itself), so the input range is [-1, 1].

Anchors: ST's SSD ``.h5`` files compute their anchors in the graph and output them. A model that
outputs only scores and boxes needs ``anchors:`` in its config: an (A, 4) list of normalized
(x1, y1, x2, y2) corners, or the path of a ``.npy`` holding one (relative to the yaml).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from workbench.errors import WorkbenchError
from workbench.families.base import Preprocessing
from workbench.safeparse import load_yaml


@dataclass(frozen=True)
class StSsdConfig:
    """The parts of ST's SSD config the workbench uses."""

    path: str
    preprocessing: Preprocessing
    color_mode: str
    conf: float
    nms_iou: float
    eval_iou: float
    anchors: np.ndarray | None = None  # (A, 4) from the yaml, when the model does not output them

    def __post_init__(self) -> None:
        if self.color_mode != "rgb":
            raise WorkbenchError(
                f"color_mode {self.color_mode!r} is not supported (rgb only)", path=self.path
            )
        if self.anchors is not None and (self.anchors.ndim != 2 or self.anchors.shape[1] != 4):
            raise WorkbenchError(
                f"anchors must be (A, 4) corners, got shape {self.anchors.shape}", path=self.path
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preprocessing"] = self.preprocessing.to_dict()
        out["anchors"] = None if self.anchors is None else int(len(self.anchors))
        return out


def config_beside(model: str | Path) -> Path:
    """ST's naming: ``<model stem>_config.yaml`` next to the model file."""
    model = Path(model)
    return model.with_name(f"{model.stem}_config.yaml")


def load_st_config(path: str | Path) -> StSsdConfig:
    """Read an ST SSD config yaml (2.x or 1.x layout); a clear error naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(
            "ST config yaml not found (expected <model>_config.yaml beside the model)", path=path
        )
    try:
        raw = load_yaml(path.read_text(), path)
    except yaml.YAMLError as err:
        raise WorkbenchError(f"not valid YAML: {err}", path=path) from None
    if not isinstance(raw, dict):
        raise WorkbenchError("ST config must be a mapping", path=path)
    pre = raw.get("preprocessing") or raw.get("pre_processing")
    post = raw.get("postprocessing") or raw.get("post_processing") or {}
    if not isinstance(pre, dict) or "rescaling" not in pre:
        raise WorkbenchError("has no preprocessing.rescaling section: not an ST SSD config", path=path)
    rescaling = pre["rescaling"]
    try:
        scale, offset = float(rescaling["scale"]), float(rescaling["offset"])
    except (KeyError, TypeError, ValueError):
        raise WorkbenchError(
            f"preprocessing.rescaling must have numeric scale and offset, got {rescaling!r}", path=path
        ) from None
    multiplier = 1.0 / scale if scale > 1 else scale
    resizing = pre.get("resizing", {})
    if isinstance(resizing, dict):  # 2.x
        interpolation = resizing.get("interpolation", "bilinear")
        aspect = resizing.get("aspect_ratio", "fit")
    else:  # 1.x: resizing is the interpolation, aspect_ratio beside it
        interpolation, aspect = resizing, "fit" if not pre.get("aspect_ratio") else "keep"
    if aspect != "fit":
        raise WorkbenchError(
            f"aspect_ratio {aspect!r} is not supported: ST's SSD stretches ('fit')", path=path
        )
    try:
        preprocessing = Preprocessing("resize", str(interpolation), (offset, offset + 255.0 * multiplier))
    except ValueError as err:
        raise WorkbenchError(f"preprocessing: {err}", path=path) from None
    return StSsdConfig(
        path=str(path),
        preprocessing=preprocessing,
        color_mode=str(pre.get("color_mode", "rgb")),
        conf=float(post.get("confidence_thresh", 0.001)),
        nms_iou=float(post.get("NMS_thresh", 0.5)),
        eval_iou=float(post.get("IoU_eval_thresh", 0.4)),
        anchors=_anchors(raw.get("anchors"), path),
    )


def _anchors(value: Any, path: Path) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, str):
        npy = (path.parent / value).resolve()
        if not npy.is_file():
            raise WorkbenchError(f"anchors file {value!r} not found", path=path)
        return np.load(npy).astype(np.float32)
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise WorkbenchError("anchors must be an (A, 4) list or a .npy path", path=path) from None
