"""Raw model outputs -> :class:`Detections` in original-image pixels.

:func:`decode` runs the decoder it is named (:data:`DECODERS`: ``yolo`` for a YOLOv8 head — detect,
pose, seg —, ``ssd`` for ST's SSD: three tensors of scores, offsets and anchors; a model family
names its decoder), then applies the confidence threshold, class-aware NMS (torchvision) and the
inverse letterbox/resize of the image's :class:`~workbench.preprocess.ImageTransform`. Unnamed, the
decoder is the one whose layout the outputs have.

Example:
    >>> # outputs, transform = TFLiteModel(path)(image)
    >>> # det = decode(outputs, "pose", transform, conf=0.001, iou=0.7, max_det=100)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from workbench.config import Task
from workbench.decode.detections import COCO80_TO_91, Detections, encode_masks
from workbench.decode.nms import MAX_NMS, box_iou, nms, select_candidates
from workbench.decode.ssd import decode_ssd, decode_ssd_boxes, is_ssd_layout
from workbench.decode.yolo import anchor_count, decode_yolo, expected_layout, is_normalized, layout_error
from workbench.errors import WorkbenchError
from workbench.preprocess import ImageTransform

__all__ = [
    "COCO80_TO_91",
    "DECODERS",
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
    "nms",
    "select_candidates",
]


# name -> decoder; each takes (outputs, task, transform) and the keyword options of :func:`decode`
DECODERS: dict[str, Callable[..., Detections]] = {"yolo": decode_yolo, "ssd": decode_ssd_boxes}


def decode(
    outputs: Sequence[np.ndarray],
    task: Task | str,
    transform: ImageTransform,
    *,
    decoder: str | None = None,
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
    """Decode one image's outputs with ``decoder``.

    Args:
        outputs: float (dequantized) model outputs for one image.
        task: detect, pose or seg (SSD layouts are detect only).
        transform: pre-processing geometry of the image.
        decoder: a name in :data:`DECODERS` (a model family's ``decoder``); default: ``ssd`` for
            ST's three-tensor SSD layout, else ``yolo``.
        conf, iou, max_det, max_nms: thresholds and caps (see :func:`decode_yolo`).
        normalized, nc, kpt_shape, multi_label: YOLO options (see :func:`decode_yolo`).
        classes: decode only these classes (filtered before NMS).

    Raises:
        WorkbenchError: an unknown decoder, or outputs that fit it not (the message lists seen and
            expected shapes).
    """
    name = decoder or ("ssd" if is_ssd_layout(outputs) else "yolo")
    if name not in DECODERS:
        raise WorkbenchError(f"unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}")
    return DECODERS[name](
        outputs,
        Task(task),
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
