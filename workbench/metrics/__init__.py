"""Metrics: COCO AP/AR (faster-coco-eval, pycocotools cross-check), OKS, and ST's protocols.

Example:
    >>> # ev = CocoEvaluator("instances_val2017.json", "bbox"); ev.update(image_id, detections)
    >>> # ev.compute().AP
"""

from workbench.metrics.coco import (
    CocoEvaluator,
    default_category_map,
    load_gt_dict,
    with_ultralytics_oks_area,
)
from workbench.metrics.oks import COCO_SIGMAS, oks
from workbench.metrics.result import MetricResult
from workbench.metrics.st import ST_SETTINGS, StEvaluator, inclusive_iou, st_ap101, voc_ap

__all__ = [
    "COCO_SIGMAS",
    "CocoEvaluator",
    "MetricResult",
    "ST_SETTINGS",
    "StEvaluator",
    "default_category_map",
    "inclusive_iou",
    "load_gt_dict",
    "oks",
    "st_ap101",
    "voc_ap",
    "with_ultralytics_oks_area",
]
