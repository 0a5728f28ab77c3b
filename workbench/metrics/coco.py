"""COCO evaluation: faster-coco-eval by default, pycocotools as a cross-check.

:class:`CocoEvaluator` collects detections image by image and computes the standard COCO summary
(``stats``) for ``bbox``, ``segm`` or ``keypoints``. Only the images that were updated are
evaluated, and only the categories the model can predict (the values of ``category_map``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.config import TASK_OF_METRIC
from workbench.decode.detections import COCO80_TO_91, Detections
from workbench.errors import WorkbenchError
from workbench.metrics.result import MetricResult

IOU_TYPES = ("bbox", "segm", "keypoints")
BACKENDS = ("faster", "pycocotools")
# Ultralytics' val scales OKS by 0.53 x the box area (COCO persons fill about 53 % of their box);
# COCO scales it by the annotation's own (segment) area.
ULTRALYTICS_OKS_AREA = 0.53


def load_gt_dict(gt: Any) -> tuple[dict[str, Any], str | None]:
    """The COCO ground-truth dict from a path, a dict, a ``CocoDataset`` or a COCO API object.

    Paths are validated with :func:`workbench.data.coco.load_coco` (a bad file names itself).
    Returns the dict and its source path (None if not from a file).
    """
    if isinstance(gt, (str, Path)):
        from workbench.data.coco import load_coco

        return load_coco(gt).to_dict(), str(gt)
    if isinstance(gt, Mapping):
        return dict(gt), None
    if hasattr(gt, "to_dict") and hasattr(gt, "annotations"):  # CocoDataset
        return gt.to_dict(), str(getattr(gt, "path", None))
    if isinstance(getattr(gt, "dataset", None), dict):  # pycocotools / faster_coco_eval COCO
        return gt.dataset, None
    raise WorkbenchError(
        f"ground truth must be a COCO JSON path, dict or COCO object, not {type(gt).__name__}"
    )


def editable_copy(gt: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a COCO dict that pycocotools and faster-coco-eval may edit, for a fraction of
    ``copy.deepcopy``'s cost (0.36 s per evaluation for 200 synthetic val images with polygons).

    Their COCO index and evaluators set keys of the entries (``ignore``, ``id``, ``area``, an RLE
    replacing a polygon, ``fp``/``fn`` marks), never edit a value inside one, so each image,
    annotation and category dict is copied one level deep and everything else deeply
    (tests/metrics/test_metrics.py checks that an evaluation leaves the original unchanged).
    """
    return {
        key: [dict(e) if isinstance(e, dict) else copy.deepcopy(e) for e in value]
        if isinstance(value, list)
        else copy.deepcopy(value)
        for key, value in gt.items()
    }


def default_category_map(gt: dict[str, Any], nc: int | None = None) -> dict[int, int]:
    """Model class index -> GT category id.

    One-class models map class 0 to the ``person`` category (or the only category); 80-class models
    use the standard 80 -> 91 COCO mapping. Classes whose category the GT lacks are left out, so
    their detections are dropped (e.g. a COCO-80 seg model on person-only ground truth).

    Example:
        >>> default_category_map({"categories": [{"id": 1, "name": "person"}]}, nc=80)
        {0: 1}
    """
    cats = gt.get("categories", [])
    ids = {c["id"] for c in cats}
    if nc == 1 or (nc is None and len(cats) == 1):
        person = [c["id"] for c in cats if c.get("name") == "person"]
        return {0: (person or sorted(ids))[0]} if ids else {}
    if nc in (None, 80) and ids <= set(COCO80_TO_91):
        return {i: c for i, c in enumerate(COCO80_TO_91) if c in ids}
    ordered = sorted(ids)
    return {i: c for i, c in enumerate(ordered[: nc or len(ordered)])}


class CocoEvaluator:
    """Accumulate detections and compute COCO AP/AR.

    Args:
        gt: COCO ground truth (JSON path, dict, ``CocoDataset`` or COCO object).
        iou_type: "bbox", "segm" or "keypoints".
        backend: "faster" (faster-coco-eval) or "pycocotools".
        category_map: model class index -> category id; default :func:`default_category_map`.
        kpt_oks_sigmas: per-keypoint sigmas for non-COCO skeletons (default COCO's 17).

    Example:
        >>> # ev = CocoEvaluator("person_keypoints_val2017.json", "keypoints")
        >>> # for image_id, det in ...: ev.update(image_id, det)
        >>> # ev.compute().AP
    """

    def __init__(
        self,
        gt: Any,
        iou_type: str = "bbox",
        backend: str = "faster",
        category_map: Mapping[int, int] | Sequence[int] | None = None,
        kpt_oks_sigmas: Sequence[float] | None = None,
    ):
        if iou_type not in IOU_TYPES:
            raise WorkbenchError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
        if backend not in BACKENDS:
            raise WorkbenchError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.gt, self.source = load_gt_dict(gt)
        self.iou_type = iou_type
        self.backend = backend
        if category_map is None:
            category_map = default_category_map(self.gt)
        elif not isinstance(category_map, Mapping):
            category_map = dict(enumerate(category_map))
        self.category_map = {int(k): int(v) for k, v in category_map.items()}
        self.kpt_oks_sigmas = None if kpt_oks_sigmas is None else [float(s) for s in kpt_oks_sigmas]
        self._image_ids: set[int] = {img["id"] for img in self.gt.get("images", [])}
        self._evaluated: set[int] = set()
        self.results: list[dict[str, Any]] = []

    def update(self, image_id: int, detections: Detections | Sequence[dict[str, Any]]) -> None:
        """Add one image's detections (``Detections`` or COCO result dicts); classes without a category are dropped."""
        image_id = int(image_id)
        if image_id not in self._image_ids:
            raise WorkbenchError(f"image id {image_id} is not in the ground truth", path=self.source)
        if isinstance(detections, Detections):
            kept = detections.filter(classes=list(self.category_map))
            entries = kept.to_coco(image_id, self.category_map, TASK_OF_METRIC[self.iou_type])
        else:
            entries = [dict(d, image_id=image_id) for d in detections]
        self._evaluated.add(image_id)
        self.results.extend(entries)

    @property
    def image_ids(self) -> list[int]:
        return sorted(self._evaluated)

    def category_ids(self) -> list[int]:
        """Categories evaluated: those the model predicts that the GT has."""
        gt_ids = {c["id"] for c in self.gt.get("categories", [])}
        return sorted(set(self.category_map.values()) & gt_ids)

    def compute(self) -> MetricResult:
        """Run the COCO evaluation on the images updated so far."""
        if not self._evaluated:
            raise WorkbenchError("no images were evaluated", path=self.source)
        cat_ids = self.category_ids()
        if not cat_ids:
            raise WorkbenchError(
                "no category of the model's classes is in the ground truth", path=self.source
            )
        img_ids = self.image_ids
        gt_anns = [
            a
            for a in self.gt.get("annotations", [])
            if a["image_id"] in self._evaluated and a["category_id"] in cat_ids
        ]
        if self.iou_type == "keypoints":
            gt_anns = [a for a in gt_anns if a.get("num_keypoints", _labelled(a)) > 0 or a.get("iscrowd")]
        n_gt = sum(1 for a in gt_anns if not a.get("iscrowd"))
        n_det = sum(1 for r in self.results if r["category_id"] in cat_ids)
        if not n_det:
            return self._result([0.0] * 12, img_ids, n_gt, 0)
        stats = self._run(img_ids, cat_ids)
        return self._result(stats, img_ids, n_gt, n_det)

    def _run(self, img_ids: list[int], cat_ids: list[int]) -> list[float]:
        results = [dict(r) for r in self.results if r["category_id"] in cat_ids]  # loadRes edits entries
        gt = _with_num_keypoints(self.gt) if self.iou_type == "keypoints" else self.gt
        with contextlib.redirect_stdout(io.StringIO()):
            if self.backend == "faster":
                from faster_coco_eval import COCO, COCOeval_faster

                coco_gt = COCO(editable_copy(gt))
                coco_dt = coco_gt.loadRes(results)
                evaluator = COCOeval_faster(
                    coco_gt, coco_dt, self.iou_type, kpt_oks_sigmas=self.kpt_oks_sigmas
                )
            else:
                import numpy as np
                from pycocotools.coco import COCO
                from pycocotools.cocoeval import COCOeval

                coco_gt = COCO()
                coco_gt.dataset = editable_copy(gt)
                coco_gt.createIndex()
                coco_dt = coco_gt.loadRes(results)
                evaluator = COCOeval(coco_gt, coco_dt, self.iou_type)
                if self.kpt_oks_sigmas is not None:
                    evaluator.params.kpt_oks_sigmas = np.array(self.kpt_oks_sigmas)
            evaluator.params.imgIds = img_ids
            evaluator.params.catIds = cat_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return [float(s) for s in evaluator.stats]

    def _result(self, stats: list[float], img_ids: list[int], n_gt: int, n_det: int) -> MetricResult:
        if self.iou_type == "keypoints":  # [AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl]
            ap, ap50, ap75, apm, apl, ar = stats[0], stats[1], stats[2], stats[3], stats[4], stats[5]
            aps = math.nan
        else:  # [AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl]
            ap, ap50, ap75, aps, apm, apl, ar = (
                stats[0],
                stats[1],
                stats[2],
                stats[3],
                stats[4],
                stats[5],
                stats[8],
            )
        return MetricResult(
            ap, ap50, ap75, aps, apm, apl, ar,
            iou_type=self.iou_type,
            protocol="coco",
            backend=self.backend,
            n_images=len(img_ids),
            n_gt=n_gt,
            n_detections=n_det,
        )  # fmt: skip


def with_ultralytics_oks_area(gt: Any) -> dict[str, Any]:
    """A copy of the ground truth whose ``area`` is the OKS scale Ultralytics' val uses.

    COCO keypoint AP divides keypoint distances by the annotation's segment area; Ultralytics' val
    uses 0.53 x box area instead. On real COCO persons the two nearly agree. The synthetic people are
    thin-limbed (their silhouettes fill about 39 % of the box), so there COCO's OKS is stricter and
    its AP lower (the pretrained checkpoint: 0.663 vs Ultralytics' 0.686). Score against this copy to
    compare with an Ultralytics val number on equal terms.

    Example:
        >>> gt = {"annotations": [{"bbox": [0, 0, 10, 20], "area": 50.0}]}
        >>> with_ultralytics_oks_area(gt)["annotations"][0]["area"]
        106.0
    """
    gt, _ = load_gt_dict(gt)
    anns = [
        dict(a, area=round(a["bbox"][2] * a["bbox"][3] * ULTRALYTICS_OKS_AREA, 6)) for a in gt["annotations"]
    ]
    return dict(gt, annotations=anns)


def _labelled(ann: dict[str, Any]) -> int:
    return sum(1 for v in (ann.get("keypoints") or [])[2::3] if v > 0)


def _with_num_keypoints(gt: dict[str, Any]) -> dict[str, Any]:
    """COCO keypoint eval ignores GT with ``num_keypoints`` 0 and needs the field; fill it where missing."""
    anns = [
        a if "num_keypoints" in a else dict(a, num_keypoints=_labelled(a)) for a in gt.get("annotations", [])
    ]
    return dict(gt, annotations=anns)
