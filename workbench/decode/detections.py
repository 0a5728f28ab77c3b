"""`Detections`: what every decoder returns, in original-image pixels, and its COCO results form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.config import Task

# Index i of the 80 training classes -> COCO category id (the 2017 80-of-91 mapping).
COCO80_TO_91 = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
]  # fmt: skip


@dataclass
class Detections:
    """Detections of one image, in original-image pixels.

    Attributes:
        boxes: (N, 4) float32 xyxy.
        scores: (N,) float32 confidences.
        classes: (N,) int64 class indices of the model (0-based).
        keypoints: (N, K, 3) float32 (x, y, score), or None.
        masks: (N, H, W) bool at original-image size, or None.

    Example:
        >>> d = Detections(np.array([[10, 20, 30, 60]]), np.array([0.9]), np.array([0]))
        >>> len(d), d.to_coco(7)[0]["bbox"]
        (1, [10.0, 20.0, 20.0, 40.0])
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    keypoints: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes).astype(np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.classes) != n:
            raise ValueError(
                f"boxes ({n}), scores ({len(self.scores)}) and classes ({len(self.classes)}) differ in length"
            )
        if not np.isfinite(self.boxes).all() or not np.isfinite(self.scores).all():
            raise ValueError("boxes and scores must be finite")
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if self.keypoints.ndim != 3 or self.keypoints.shape[0] != n or self.keypoints.shape[2] != 3:
                raise ValueError(f"keypoints must be ({n}, K, 3), got {self.keypoints.shape}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.ndim != 3 or self.masks.shape[0] != n:
                raise ValueError(f"masks must be ({n}, H, W), got {self.masks.shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Detections:
        """Select detections by slice, integer array or boolean mask (always returns Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.classes[index],
            None if self.keypoints is None else self.keypoints[index],
            None if self.masks is None else self.masks[index],
        )

    def filter(self, min_score: float | None = None, classes: Sequence[int] | None = None) -> Detections:
        """Keep detections scoring at least ``min_score`` and/or of the given classes."""
        keep = np.ones(len(self), dtype=bool)
        if min_score is not None:
            keep &= self.scores >= min_score
        if classes is not None:
            keep &= np.isin(self.classes, np.asarray(list(classes)))
        return self[keep]

    @classmethod
    def empty(cls, num_keypoints: int | None = None, mask_hw: tuple[int, int] | None = None) -> Detections:
        """No detections, with keypoint/mask arrays of the right trailing shape when given."""
        kpts = None if num_keypoints is None else np.zeros((0, num_keypoints, 3), np.float32)
        masks = None if mask_hw is None else np.zeros((0, *mask_hw), bool)
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), kpts, masks)

    # ---- conversion ----------------------------------------------------------------------
    def category_ids(self, category_map: Mapping[int, int] | Sequence[int] | None = None) -> np.ndarray:
        """COCO category id of each detection; ``category_map`` defaults to :data:`COCO80_TO_91`.

        Raises:
            ValueError: if a class index has no entry in the map.
        """
        table = COCO80_TO_91 if category_map is None else category_map
        try:
            return np.array([int(table[int(c)]) for c in self.classes], dtype=np.int64)
        except (KeyError, IndexError):
            missing = sorted({int(c) for c in self.classes} - set(_keys(table)))
            raise ValueError(f"class index(es) {missing} have no COCO category in the map") from None

    def to_coco(
        self,
        image_id: int,
        category_map: Mapping[int, int] | Sequence[int] | None = None,
        task: Task | str = Task.DETECT,
    ) -> list[dict[str, Any]]:
        """COCO results entries: ``bbox`` (xywh) always, plus ``keypoints`` (pose) or RLE ``segmentation`` (seg).

        Keypoints are written as (x, y, v) with v the predicted keypoint score, as Ultralytics does.

        Args:
            image_id: COCO image id.
            category_map: class index -> category id (mapping or sequence); default :data:`COCO80_TO_91`,
                which also maps a person-only model's class 0 to person (1).
            task: which extra fields to write.
        """
        task = Task(task)
        if len(self) == 0:  # Ultralytics gives no masks/keypoints arrays for an empty result
            return []
        cats = self.category_ids(category_map)
        xywh = self.boxes.astype(np.float64).copy()
        xywh[:, 2:] -= xywh[:, :2]
        rles = None
        if task is Task.SEG:
            if self.masks is None:
                raise ValueError("seg results need masks, but these detections have none")
            rles = encode_masks(self.masks)
        if task is Task.POSE and self.keypoints is None:
            raise ValueError("pose results need keypoints, but these detections have none")
        out = []
        for i in range(len(self)):
            entry = {
                "image_id": int(image_id),
                "category_id": int(cats[i]),
                "bbox": [round(float(v), 3) for v in xywh[i]],
                "score": round(float(self.scores[i]), 5),
            }
            if task is Task.POSE:
                entry["keypoints"] = [round(float(v), 3) for v in self.keypoints[i].reshape(-1)]
            if rles is not None:
                entry["segmentation"] = rles[i]
            out.append(entry)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (masks as COCO RLE), for JSON."""
        out: dict[str, Any] = {
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "classes": self.classes.tolist(),
        }
        if self.keypoints is not None:
            out["keypoints"] = self.keypoints.tolist()
        if self.masks is not None:
            out["masks"] = encode_masks(self.masks)
        return out

    def to_pandas(self):
        """One row per detection: x1, y1, x2, y2, score, class."""
        import pandas as pd

        frame = pd.DataFrame(self.boxes, columns=["x1", "y1", "x2", "y2"])
        frame["score"] = self.scores
        frame["class"] = self.classes
        return frame

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """Convert one ``ultralytics.engine.results.Results`` (boxes, keypoints, masks) to Detections.

        Masks not already at the original image size (``retina_masks=False``) are rescaled with
        Ultralytics' own letterbox-aware ``scale_masks``.

        Example:
            >>> # r = YOLO("yolov8n-pose.pt").predict(image, rect=False)[0]
            >>> # det = Detections.from_ultralytics(r)
        """
        boxes = result.boxes
        keypoints = masks = None
        if getattr(result, "keypoints", None) is not None:
            kp = result.keypoints.data.cpu().numpy()
            if kp.shape[-1] == 2:  # (x, y) only: no visibility channel
                kp = np.concatenate([kp, np.ones((*kp.shape[:-1], 1), kp.dtype)], axis=-1)
            keypoints = kp
        if getattr(result, "masks", None) is not None:
            data = result.masks.data
            h0, w0 = result.orig_shape
            if tuple(data.shape[1:]) != (h0, w0):
                from ultralytics.utils.ops import scale_masks

                data = scale_masks(data[None].float(), (h0, w0))[0] > 0.5
            masks = data.cpu().numpy().astype(bool)
        return cls(
            boxes.xyxy.cpu().numpy(),
            boxes.conf.cpu().numpy(),
            boxes.cls.cpu().numpy(),
            keypoints,
            masks,
        )


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLE (``counts`` as str) for each of (N, H, W) bool masks."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _keys(table: Mapping[int, int] | Sequence[int]) -> list[int]:
    return list(table.keys()) if isinstance(table, Mapping) else list(range(len(table)))
