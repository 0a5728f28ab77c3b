"""Raw model outputs -> :class:`Detections` in original-image pixels.

:func:`decode` picks the decoder from the output layout: ST's SSD (three tensors: scores, offsets,
anchors) or a YOLOv8 head (detect, pose, seg), then applies the confidence threshold, class-aware
NMS (torchvision) and the inverse letterbox/resize of the image's
:class:`~workbench.preprocess.ImageTransform`.

Example:
    >>> # outputs, transform = TFLiteModel(path)(image)
    >>> # det = decode(outputs, "pose", transform, conf=0.001, iou=0.7, max_det=100)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.config import Task
from workbench.decode.detections import COCO80_TO_91, Detections, encode_masks
from workbench.decode.nms import MAX_NMS, box_iou, nms, select_candidates
from workbench.decode.ssd import decode_ssd, is_ssd_layout
from workbench.decode.yolo import anchor_count, decode_yolo, expected_layout, is_normalized, layout_error
from workbench.preprocess import ImageTransform

__all__ = [
    "COCO80_TO_91",
    "Detections",
    "MAX_NMS",
    "anchor_count",
    "box_iou",
    "decode",
    "decode_ssd",
    "decode_yolo",
    "encode_masks",
    "expected_layout",
    "is_normalized",
    "is_ssd_layout",
    "layout_error",
    "model_family",
    "nms",
    "select_candidates",
]


def model_family(outputs: Sequence[np.ndarray]) -> str:
    """ "ssd" for ST's three-tensor SSD layout, else "yolo"."""
    return "ssd" if is_ssd_layout(outputs) else "yolo"


def decode(
    outputs: Sequence[np.ndarray],
    task: Task | str,
    transform: ImageTransform,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    max_nms: int = MAX_NMS,
    normalized: bool | None = None,
    nc: int | None = None,
    kpt_shape: tuple[int, int] | None = None,
    multi_label: bool = False,
    classes: Sequence[int] | None = None,
) -> Detections:
    """Decode one image's outputs with the decoder their layout calls for.

    Args:
        outputs: float (dequantized) model outputs for one image.
        task: detect, pose or seg (SSD layouts are detect only).
        transform: pre-processing geometry of the image.
        conf, iou, max_det, max_nms: thresholds and caps (see :func:`decode_yolo`).
        normalized, nc, kpt_shape, multi_label: YOLO options (see :func:`decode_yolo`).
        classes: decode only these classes (filtered before NMS).

    Raises:
        WorkbenchError: outputs that fit no decoder (the message lists seen and expected shapes).
    """
    task = Task(task)
    if is_ssd_layout(outputs):
        if task is not Task.DETECT:
            raise layout_error(task, outputs, transform.input_hw, "an SSD layout only decodes boxes")
        return decode_ssd(
            outputs, transform, conf=conf, iou=iou, max_det=max_det, max_nms=max_nms, classes=classes
        )
    return decode_yolo(
        outputs,
        task,
        transform,
        conf=conf,
        iou=iou,
        max_det=max_det,
        max_nms=max_nms,
        normalized=normalized,
        nc=nc,
        kpt_shape=kpt_shape,
        multi_label=multi_label,
        classes=classes,
    )
