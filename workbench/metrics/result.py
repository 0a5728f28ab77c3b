"""`MetricResult`: the summary numbers of one evaluation, whatever the protocol."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR")


@dataclass
class MetricResult:
    """AP/AR summary of one evaluation. Undefined values (COCO's -1) are NaN.

    Attributes:
        AP: the protocol's main AP (COCO: mean over IoU/OKS 0.50:0.95).
        AP50, AP75: AP at IoU/OKS 0.50 and 0.75.
        APs, APm, APl: AP for small, medium, large objects (COCO only).
        AR: COCO: AR at 100 detections (bbox/segm) or 20 (keypoints); ST: final recall.
        iou_type: "bbox", "segm" or "keypoints".
        protocol: "coco" or "st".
        backend: "faster", "pycocotools" or "st".
        n_images, n_gt, n_detections: what was evaluated.
        headline: the key of the number the protocol's reference tables quote (e.g. "AP50").
        extra: further numbers (e.g. ST's AP at its own IoU threshold).

    Example:
        >>> r = MetricResult(0.5, 0.7, 0.55, float("nan"), 0.4, 0.6, 0.62, "bbox")
        >>> r.to_dict()["AP50"], r.headline_value
        (0.7, 0.5)
    """

    AP: float
    AP50: float
    AP75: float
    APs: float
    APm: float
    APl: float
    AR: float
    iou_type: str
    protocol: str = "coco"
    backend: str = "faster"
    n_images: int = 0
    n_gt: int = 0
    n_detections: int = 0
    headline: str = "AP"
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in SUMMARY_KEYS:
            value = float(getattr(self, key))
            if value < 0:  # COCO marks "no ground truth in this range" with -1
                value = math.nan
            if value > 1 + 1e-9:
                raise ValueError(f"{key} = {value} is not a fraction in [0, 1]")
            setattr(self, key, value)
        if self.iou_type not in ("bbox", "segm", "keypoints"):
            raise ValueError(f"iou_type must be bbox, segm or keypoints, got {self.iou_type!r}")
        if self.headline not in SUMMARY_KEYS and self.headline not in self.extra:
            raise ValueError(f"headline {self.headline!r} names no value")

    @property
    def headline_value(self) -> float:
        return (
            float(self.extra[self.headline])
            if self.headline in self.extra
            else float(getattr(self, self.headline))
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; NaN becomes None."""
        out = asdict(self)
        for key in SUMMARY_KEYS:
            out[key] = None if math.isnan(out[key]) else out[key]
        out["extra"] = {k: (None if math.isnan(v) else v) for k, v in self.extra.items()}
        return out

    def to_pandas(self):
        """One-row frame of the summary numbers."""
        import pandas as pd

        row = {k: getattr(self, k) for k in SUMMARY_KEYS}
        row.update(iou_type=self.iou_type, protocol=self.protocol, backend=self.backend, **self.extra)
        return pd.DataFrame([row])
