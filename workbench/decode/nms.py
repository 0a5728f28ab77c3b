"""Candidate selection and class-aware NMS, with torchvision's implementation doing the suppression.

The order of operations follows Ultralytics' ``non_max_suppression``: confidence threshold first,
then at most ``max_nms`` candidates by score, then NMS, then the best ``max_det``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_NMS = 30000  # Ultralytics' cap on boxes entering NMS


def select_candidates(
    scores: np.ndarray,
    conf: float,
    multi_label: bool = False,
    max_nms: int = MAX_NMS,
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick (anchor, class) pairs scoring above ``conf``.

    Args:
        scores: (N, C) class scores per anchor.
        conf: keep scores strictly above this (as Ultralytics does).
        multi_label: every class above ``conf`` becomes a candidate (Ultralytics' val); otherwise
            only each anchor's best class (Ultralytics' predict).
        max_nms: keep at most this many candidates, the highest scoring.
        classes: keep only candidates of these classes (after the best-class choice, as Ultralytics).

    Returns:
        (anchor indices, class indices, scores) of the candidates, highest score first.

    Example:
        >>> select_candidates(np.array([[0.1, 0.8], [0.6, 0.7]]), 0.5, multi_label=True)[1].tolist()
        [1, 1, 0]
    """
    scores = np.asarray(scores, dtype=np.float32)
    if multi_label and scores.shape[1] > 1:
        anchors, labels = np.nonzero(scores > conf)
        values = scores[anchors, labels]
    else:
        labels = scores.argmax(1)
        values = scores[np.arange(len(scores)), labels]
        anchors = np.nonzero(values > conf)[0]
        labels, values = labels[anchors], values[anchors]
    if classes is not None:
        wanted = np.isin(labels, np.asarray(list(classes), dtype=np.int64))
        anchors, labels, values = anchors[wanted], labels[wanted], values[wanted]
    order = np.argsort(-values, kind="stable")[:max_nms]
    return anchors[order], labels[order], values[order]


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray | None = None,
    iou: float = 0.7,
    max_det: int = 300,
) -> np.ndarray:
    """Indices kept by class-aware NMS (``torchvision.ops.batched_nms``), best score first.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        classes: (N,) ints; None for class-agnostic NMS.
        iou: a box is dropped if its IoU with a kept, higher-scoring box of its class exceeds this.
        max_det: keep at most this many.

    Example:
        >>> nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.8, 0.7]), iou=0.5).tolist()
        [0, 2]
    """
    import torch
    import torchvision

    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    s = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    if classes is None:
        keep = torchvision.ops.nms(b, s, float(iou))
    else:
        keep = torchvision.ops.batched_nms(
            b, s, torch.as_tensor(np.asarray(classes, dtype=np.int64)), float(iou)
        )
    return keep[:max_det].numpy()


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, (N, 4) x (M, 4) -> (N, M).

    Example:
        >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2]])).round(3).tolist()
        [[0.333]]
    """
    a = np.asarray(a, dtype=np.float64)[:, None]
    b = np.asarray(b, dtype=np.float64)[None]
    wh = (np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
