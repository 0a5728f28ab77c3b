"""What an evaluation returns: :class:`EvalResult` per protocol, :class:`ProtocolResults` per pass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.config import PROTOCOLS

TIMING_KEYS = ("load", "preprocess", "invoke", "decode", "metric", "wall")
AP_KEYS = ("AP", "AP50", "AP75", "APm", "APl", "AR")


@dataclass
class EvalResult:
    """Scores and costs of one evaluation.

    AP fields follow :class:`~workbench.metrics.MetricResult` (NaN when undefined). ``seconds``
    holds summed stage times: ``load`` (image decoding) and ``preprocess`` run in worker threads
    and overlap ``invoke`` (model run incl. input quantization/output dequantization), ``decode``
    (NMS, inverse transform, masks) and ``metric`` (COCO/ST evaluation); ``wall`` is end to end.

    Example:
        >>> r = EvalResult(0.5, 0.7, 0.5, 0.4, 0.6, 0.6, n_images=2, n_instances=3, n_detections=9,
        ...                seconds={k: 0.0 for k in TIMING_KEYS}, model="m.tflite", sha256="0" * 64,
        ...                task="pose", protocol="coco", iou_type="keypoints")
        >>> r.to_dict()["AP50"]
        0.7
    """

    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    n_images: int
    n_instances: int
    n_detections: int
    seconds: dict[str, float]
    model: str
    sha256: str
    task: str
    protocol: str
    iou_type: str
    imgsz: int | None = None
    preprocess: str | None = None
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    headline: str = "AP"
    metrics: dict[str, Any] = field(default_factory=dict)
    exif_transpose: bool = False

    def __post_init__(self) -> None:
        for key in AP_KEYS:
            value = math.nan if getattr(self, key) is None else float(getattr(self, key))
            if not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise ValueError(f"{key} = {value} is not a fraction in [0, 1]")
            setattr(self, key, value)
        missing = [k for k in TIMING_KEYS if k not in self.seconds]
        if missing:
            raise ValueError(f"seconds lacks {', '.join(missing)}")
        if min(self.n_images, self.n_instances, self.n_detections) < 0:
            raise ValueError("counts must be non-negative")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds["wall"] if self.seconds["wall"] > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        out = asdict(self)
        for key in AP_KEYS:
            out[key] = None if math.isnan(out[key]) else out[key]
        return out

    def to_pandas(self):
        """One-row frame: scores, counts, stage seconds."""
        import pandas as pd

        row = {k: v for k, v in self.to_dict().items() if k not in ("seconds", "metrics")}
        row.update({f"s_{k}": v for k, v in self.seconds.items()})
        return pd.DataFrame([row])


class ProtocolResults(dict):
    """``{protocol: EvalResult}`` of one pass, with each protocol's COCO results list in ``detections``."""

    def __init__(self, results: dict[str, EvalResult], detections: dict[str, list[dict[str, Any]]]):
        super().__init__(results)
        self.detections = detections
