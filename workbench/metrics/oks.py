"""Object Keypoint Similarity, the keypoint analogue of box IoU (COCO's definition).

    OKS = mean over labelled keypoints i of exp(-d_i^2 / (2 * area * (2 * sigma_i)^2))

with ``d_i`` the distance between predicted and true keypoint, ``area`` the object's segment area
and ``sigma_i`` a per-keypoint tolerance (larger for hips than for eyes).
"""

from __future__ import annotations

import numpy as np

# COCO's per-keypoint sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = (
    np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
    )
    / 10.0
)


def oks(
    pred_kpts: np.ndarray,
    gt_kpts: np.ndarray,
    area: float,
    sigmas: np.ndarray = COCO_SIGMAS,
) -> float | np.ndarray:
    """OKS of one or more predicted poses against one ground-truth pose, as pycocotools computes it.

    Args:
        pred_kpts: (K, 2|3) or (M, K, 2|3) predicted (x, y[, score]); scores are ignored.
        gt_kpts: (K, 3) ground truth (x, y, v); only keypoints with v > 0 count.
        area: the ground-truth object's area in pixels^2.
        sigmas: (K,) per-keypoint sigmas.

    Returns:
        A float for one prediction, an (M,) array for several.

    Raises:
        ValueError: on mismatched shapes or a ground truth with no labelled keypoint.

    Example:
        >>> gt = np.array([[10.0, 10.0, 2]] * 17)
        >>> oks(gt[:, :2], gt, area=100.0)
        1.0
    """
    pred = np.asarray(pred_kpts, dtype=np.float64)
    gt = np.asarray(gt_kpts, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    single = pred.ndim == 2
    if single:
        pred = pred[None]
    if (
        gt.ndim != 2
        or gt.shape[1] != 3
        or pred.ndim != 3
        or pred.shape[1] != len(gt)
        or len(sigmas) != len(gt)
    ):
        raise ValueError(
            f"shapes disagree: pred {np.shape(pred_kpts)}, gt {gt.shape} (want (K, 3)), sigmas {sigmas.shape}"
        )
    visible = gt[:, 2] > 0
    if not visible.any():
        raise ValueError("the ground truth has no labelled keypoint (all v = 0)")
    d2 = ((pred[..., :2] - gt[None, :, :2]) ** 2).sum(-1)
    e = d2 / ((2 * sigmas) ** 2) / (area + np.spacing(1)) / 2
    values = np.exp(-e)[:, visible].mean(1)
    return float(values[0]) if single else values
