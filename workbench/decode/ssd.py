"""SSD decoder for ST's model-zoo layout (SSD MobileNet v1 0.25, AI-ModelZoo 1.x).

The model emits three tensors: softmax ``scores (1, NA, C)`` with column 0 the background,
``offsets (1, NA, 4)`` and ``anchors (1, NA, 4)``, both as (x1, y1, x2, y2) corners normalized to
the input. Each corner is moved by its offset times the anchor's width (x) or height (y):

    x1 = a_x1 + o_x1 * (a_x2 - a_x1)        y1 = a_y1 + o_y1 * (a_y2 - a_y1)
    x2 = a_x2 + o_x2 * (a_x2 - a_x1)        y2 = a_y2 + o_y2 * (a_y2 - a_y1)

which is ST's ``decode_predictions`` (no variances, no clipping before the image border).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.config import Task
from workbench.decode.detections import Detections
from workbench.decode.nms import MAX_NMS, nms, select_candidates
from workbench.decode.yolo import layout_error
from workbench.preprocess import ImageTransform


def is_ssd_layout(outputs: Sequence[np.ndarray]) -> bool:
    """Three (1, NA, *) tensors with the same NA, at least two of them 4 wide.

    Example:
        >>> is_ssd_layout([np.zeros((1, 9, 2)), np.zeros((1, 9, 4)), np.zeros((1, 9, 4))])
        True
    """
    shapes = [np.shape(o) for o in outputs]
    return (
        len(shapes) == 3
        and all(len(s) == 3 and s[0] == 1 for s in shapes)
        and len({s[1] for s in shapes}) == 1
        and sum(s[2] == 4 for s in shapes) >= 2
    )


def _looks_like_anchors(corners: np.ndarray) -> bool:
    """Anchors are proper boxes inside (about) the unit square; offsets are small signed numbers."""
    return bool(
        (corners[:, 2] > corners[:, 0]).all()
        and (corners[:, 3] > corners[:, 1]).all()
        and corners.min() >= -0.5
        and corners.max() <= 1.5
    )


def split_ssd_outputs(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (NA, C), offsets (NA, 4), anchors (NA, 4)) from ST's three outputs in any order."""
    arrays = [np.asarray(o, dtype=np.float32)[0] for o in outputs]
    wide = [a for a in arrays if a.shape[1] != 4]
    if len(wide) == 1:
        scores = wide[0]
        corners = [a for a in arrays if a is not scores]
    else:  # 3 classes + background is also 4 wide: scores are the rows summing to 1
        sums = [float(np.abs(a.sum(1) - 1).max()) for a in arrays]
        scores = arrays[int(np.argmin(sums))]
        corners = [a for a in arrays if a is not scores]
    offsets, anchors = corners
    if _looks_like_anchors(offsets) and not _looks_like_anchors(anchors):
        offsets, anchors = anchors, offsets
    return scores, offsets, anchors


def decode_ssd(
    outputs: Sequence[np.ndarray],
    transform: ImageTransform,
    *,
    conf: float = 0.001,
    iou: float = 0.5,
    max_det: int = 100,
    max_nms: int = MAX_NMS,
    classes: Sequence[int] | None = None,
) -> Detections:
    """Decode ST's SSD outputs for one image into original-image detections.

    Every (anchor, class) pair above ``conf`` is a candidate, and NMS runs per class, as ST's
    ``do_nms``. Class 0 of the result is the first non-background class; ``classes`` keeps only
    those classes.

    Example:
        >>> # outputs, t = TFLiteModel("ssd_mobilenet_v1_025_256_int8.tflite", preprocess="resize")(image)
        >>> # det = decode_ssd(outputs, t, conf=0.001, iou=0.5)
    """
    if not is_ssd_layout(outputs):
        raise layout_error(Task.DETECT, outputs, transform.input_hw, "not SSD scores/offsets/anchors")
    scores, offsets, anchors = split_ssd_outputs(outputs)
    size = np.concatenate([anchors[:, 2:] - anchors[:, :2]] * 2, axis=1)
    corners = anchors + offsets * size
    h, w = transform.input_hw
    boxes_in = corners * np.array([w, h, w, h], dtype=np.float32)
    idx, labels, values = select_candidates(scores[:, 1:], conf, True, max_nms, classes)
    keep = nms(boxes_in[idx], values, labels, iou, max_det)
    return Detections(transform.inverse_boxes(boxes_in[idx][keep]), values[keep], labels[keep])


def decode_ssd_boxes(
    outputs: Sequence[np.ndarray],
    task: Task | str,
    transform: ImageTransform,
    *,
    conf: float = 0.001,
    iou: float = 0.5,
    max_det: int = 100,
    max_nms: int = MAX_NMS,
    classes: Sequence[int] | None = None,
    normalized: bool | None = None,
    nc: int | None = None,
    kpt_shape: tuple[int, int] | None = None,
    multi_label: bool = False,
) -> Detections:
    """:func:`decode_ssd` behind the decoders' common signature (:data:`workbench.decode.DECODERS`):
    an SSD only decodes boxes, and the YOLO options (``normalized``, ``nc``, ``kpt_shape``,
    ``multi_label``) do not apply to it."""
    if Task(task) is not Task.DETECT:
        raise layout_error(task, outputs, transform.input_hw, "an SSD layout only decodes boxes")
    return decode_ssd(
        outputs, transform, conf=conf, iou=iou, max_det=max_det, max_nms=max_nms, classes=classes
    )
