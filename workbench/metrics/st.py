"""ST's evaluation protocols, reimplemented from ST's own evaluation code so zoo numbers can be compared.

ST's model cards quote:

- pose (YOLOv8n pose): "AP0.5", NMS IoU 0.1, score threshold 0.001 — computed by
  stm32ai-modelzoo-services ``pose_estimation`` (``multi_pose_oks_mAP`` + ``compute_ap``).
- detection: SSD MobileNet v1 "AP" at EVAL_IOU 0.4, NMS 0.5, score 0.001; YOLOv8n person
  detection at EVAL_IOU 0.5, NMS 0.5, score 0.001, 100 detections — a Pascal-VOC style AP
  (Padilla's ``Evaluator.GetPascalVOCMetrics``, every-point interpolation).

Differences from COCO, for pose (:meth:`StEvaluator.compute` with ``task="pose"``):

1. Coordinates are divided by the image width and height before comparing; OKS uses the
   ground-truth *box* area in those normalized units times 0.53 (COCO: the segment area in pixels).
2. Each labelled keypoint is weighted by its visibility value v (1 or 2), not counted once.
3. Matching ignores confidence: each prediction picks the ground truth it overlaps best (by OKS),
   and each ground truth keeps the one prediction with the highest OKS among those that picked it
   (COCO: greedy in confidence order). A match counts at threshold t if OKS > t (COCO: >=).
4. No crowd regions and no "ignore" ground truth: crowd annotations are dropped (as in the
   YOLO-format labels ST trains on); persons without labelled keypoints are not counted as positives.
5. AP is the area under the precision envelope sampled at 101 recall points by linear
   interpolation and integrated with the trapezoid rule (COCO: step lookup, mean of 101 points).
   Recall is TP / (n_gt + 1e-7), so it never reaches 1 and a perfect result scores 0.995 (the same
   quirk as Ultralytics' ``compute_ap``, which ST's code follows). No per-size APs, no per-image
   detection cap beyond the NMS ``max_det``.

Differences from COCO, for detection (``task="detect"``):

1. Boxes (ground truth and detections) are rounded to whole pixels and clipped to [0, W-1] x
   [0, H-1], and IoU uses the inclusive-pixel convention: area = (x2 - x1 + 1) * (y2 - y1 + 1).
2. One IoU threshold (0.4 for SSD, 0.5 for YOLOv8 in ST's cards) with IoU >= t (COCO: 10 thresholds).
3. Each detection, in confidence order, is compared only with the ground truth it overlaps most;
   if that one is already matched the detection is a false positive (COCO falls through to the
   next-best unmatched ground truth).
4. Crowd annotations are dropped (not "ignore" regions); no area ranges; no detection cap.
5. AP is every-point interpolated (VOC 2010+) per class, then averaged over the classes seen in
   ground truth or detections (a class with no ground truth scores 0).

:class:`StEvaluator` reports ``AP`` as the mean over thresholds 0.50:0.95 (like COCO's AP) and the
card's number under :attr:`MetricResult.headline` (``AP50`` for pose and YOLO detection, ``AP@0.4``
for SSD).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workbench.config import Task
from workbench.decode.detections import Detections
from workbench.errors import WorkbenchError
from workbench.metrics.coco import default_category_map, load_gt_dict
from workbench.metrics.oks import COCO_SIGMAS
from workbench.metrics.result import MetricResult

THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
ST_AREA_FACTOR = 0.53  # ST's multi_pose_oks_mAP scales the box area by this
ST_EPS = 1e-7
# NMS/score settings of ST's cards (the detection eval IoU is the model family's: 0.4 SSD, 0.5 YOLOv8).
ST_SETTINGS = {
    Task.POSE: {"conf": 0.001, "iou": 0.1, "max_det": 100},
    Task.DETECT: {"conf": 0.001, "iou": 0.5, "max_det": 100},
}


# ---- AP integrals ----------------------------------------------------------------------------------
def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Every-point interpolated AP (Pascal VOC 2010+), as Padilla's ``CalculateAveragePrecision``.

    Example:
        >>> voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
        0.75
    """
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[change] - mrec[change - 1]) * mpre[change]))


def st_ap101(recall: np.ndarray, precision: np.ndarray) -> float:
    """ST pose AP: precision envelope, linear interpolation at 101 recall points, trapezoid integral.

    Example:
        >>> round(st_ap101(np.array([0.5, 1.0]), np.array([1.0, 0.5])), 4)
        0.875
    """
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    _, first = np.unique(mrec, return_index=True)
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec[first], mpre[first]), x))


# ---- geometry ----------------------------------------------------------------------------------------
def st_pixel_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes as ST's metric sees them: corner rounded, size rounded, clipped to [0, W-1] x [0, H-1].

    Example:
        >>> st_pixel_boxes(np.array([[-3.2, 1.5, 10.4, 99.0]]), 50, 60).tolist()
        [[0.0, 2.0, 11.0, 59.0]]
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x1, y1 = np.round(xyxy[:, 0]), np.round(xyxy[:, 1])
    x2 = x1 + np.round(xyxy[:, 2] - xyxy[:, 0])
    y2 = y1 + np.round(xyxy[:, 3] - xyxy[:, 1])
    x1, y1 = np.maximum(x1, 0), np.maximum(y1, 0)
    x2, y2 = np.minimum(x2, width - 1), np.minimum(y2, height - 1)
    return np.stack([x1, y1, x2, y2], axis=1)


def inclusive_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU with inclusive pixel bounds (+1), as Padilla's ``Evaluator.iou``.

    Example:
        >>> inclusive_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9]])).tolist()
        [[0.5]]
    """
    a = np.asarray(a, dtype=np.float64)[:, None]
    b = np.asarray(b, dtype=np.float64)[None]
    disjoint = (
        (a[..., 0] > b[..., 2]) | (b[..., 0] > a[..., 2]) | (a[..., 3] < b[..., 1]) | (a[..., 1] > b[..., 3])
    )
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    iou = inter / (area_a + area_b - inter)
    return np.where(disjoint, 0.0, np.maximum(iou, 0.0))


def st_oks_matrix(
    gt: np.ndarray, area: np.ndarray, pred: np.ndarray, sigmas: np.ndarray = COCO_SIGMAS
) -> np.ndarray:
    """(N, M) OKS of ST's metric: visibility-weighted, area = normalized box area x 0.53.

    Args:
        gt: (N, K, 3) normalized ground-truth keypoints (x/W, y/H, v).
        area: (N,) normalized box areas (w/W * h/H).
        pred: (M, K, >=2) normalized predicted keypoints.
    """
    d2 = ((gt[:, None, :, :2] - pred[None, :, :, :2]) ** 2).sum(-1)
    z = -d2 / ((2 * sigmas) ** 2 * (area[:, None, None] * ST_AREA_FACTOR + ST_EPS) * 2)
    weight = gt[:, None, :, 2]
    return (np.exp(z) * weight).sum(-1) / (weight.sum(-1) + ST_EPS)


def st_match(oks: np.ndarray) -> np.ndarray:
    """OKS of each prediction's match (0 if unmatched), following ST's ``matching_predictions``.

    Each prediction picks its best ground truth; each ground truth keeps the picking prediction
    with the highest OKS. Ties go to the lower index. A prediction whose favourite is taken stays
    unmatched even if another ground truth is free (below: prediction 1).

    Example:
        >>> st_match(np.array([[0.9, 0.8], [0.1, 0.7]])).tolist()
        [0.9, 0.0]
    """
    n, m = oks.shape
    matched = np.zeros(m)
    if n == 0 or m == 0:
        return matched
    best_gt = oks.argmax(0)
    for g in range(n):
        picks = np.nonzero(best_gt == g)[0]
        if len(picks):
            winner = picks[np.argmax(oks[g, picks])]
            matched[winner] = oks[g, winner]
    return matched


# ---- evaluator -----------------------------------------------------------------------------------
class StEvaluator:
    """ST's pose or detection metric over a COCO ground truth (see the module docstring).

    Args:
        gt: COCO ground truth (path, dict, ``CocoDataset`` or COCO object).
        task: "pose" or "detect".
        eval_iou: detection IoU threshold of the headline AP (0.4 SSD, 0.5 YOLOv8).
        category_map: model class index -> category id (default as :class:`CocoEvaluator`).
        sigmas: per-keypoint sigmas for pose.

    Example:
        >>> # ev = StEvaluator("person_keypoints_val2017.json", "pose")
        >>> # ev.update(image_id, detections); ev.compute().AP50
    """

    def __init__(
        self,
        gt: Any,
        task: Task | str,
        eval_iou: float = 0.5,
        category_map: Mapping[int, int] | Sequence[int] | None = None,
        sigmas: np.ndarray = COCO_SIGMAS,
    ):
        self.task = Task(task)
        if self.task is Task.SEG:
            raise WorkbenchError("protocol 'st' covers pose and detect; ST publishes no segmentation metric")
        self.gt, self.source = load_gt_dict(gt)
        self.eval_iou = float(eval_iou)
        if category_map is None:
            category_map = default_category_map(self.gt)
        elif not isinstance(category_map, Mapping):
            category_map = dict(enumerate(category_map))
        self.category_map = {int(k): int(v) for k, v in category_map.items()}
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self._images = {img["id"]: img for img in self.gt.get("images", [])}
        self._gt_by_image: dict[int, list[dict]] = {i: [] for i in self._images}
        for ann in self.gt.get("annotations", []):
            if not ann.get("iscrowd") and ann["category_id"] in set(self.category_map.values()):
                self._gt_by_image.setdefault(ann["image_id"], []).append(ann)
        self._dets: dict[int, Detections] = {}

    def update(self, image_id: int, detections: Detections) -> None:
        """Add one image's detections (classes without a category are dropped)."""
        image_id = int(image_id)
        if image_id not in self._images:
            raise WorkbenchError(f"image id {image_id} is not in the ground truth", path=self.source)
        if self.task is Task.POSE and detections.keypoints is None and len(detections):
            raise WorkbenchError("ST pose metric needs keypoints, but the detections have none")
        self._dets[image_id] = detections.filter(classes=list(self.category_map))

    def compute(self) -> MetricResult:
        if not self._dets:
            raise WorkbenchError("no images were evaluated", path=self.source)
        return self._pose() if self.task is Task.POSE else self._detect()

    # ---- pose ----------------------------------------------------------------------------------
    def _pose(self) -> MetricResult:
        matched, conf, n_gt = [], [], 0
        for image_id, det in self._dets.items():
            img = self._images[image_id]
            norm = np.array([img["width"], img["height"]], dtype=np.float64)
            anns = [a for a in self._gt_by_image[image_id] if "keypoints" in a]
            # an image without keypointed persons still has (false-positive) detections to score
            gt = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(
                len(anns), len(self.sigmas), 3
            )
            n_gt += int((gt.reshape(len(anns), -1) != 0).any(1).sum()) if len(anns) else 0
            if not len(det):
                continue
            gt[..., :2] /= norm
            area = np.array([a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64) / norm.prod()
            pred = det.keypoints.astype(np.float64).copy()
            pred[..., :2] /= norm
            oks = st_oks_matrix(gt, area, pred, self.sigmas) if len(anns) else np.zeros((0, len(det)))
            matched.append(st_match(oks))
            conf.append(det.scores)
        aps, recall50 = self._curve(matched, conf, n_gt, lambda m, t: m > t, st_ap101)
        return self._result(aps, recall50, n_gt, headline="AP50", extra={})

    # ---- detection -----------------------------------------------------------------------------
    def _detect(self) -> MetricResult:
        classes = sorted(
            {
                a["category_id"]
                for anns in self._gt_by_image.values()
                for a in anns
                if a["image_id"] in self._dets
            }
            | {c for d in self._dets.values() for c in d.category_ids(self.category_map).tolist()}
        )
        thresholds = sorted({*THRESHOLDS.tolist(), self.eval_iou})
        per_class: list[dict[float, float]] = []
        recall_at_eval: list[float] = []
        n_gt_total = 0
        for cat in classes:
            ious, conf, n_gt = [], [], 0
            for image_id, det in self._dets.items():
                img = self._images[image_id]
                w, h = img["width"], img["height"]
                xywh = [a["bbox"] for a in self._gt_by_image[image_id] if a["category_id"] == cat]
                gt_xyxy = np.array(
                    [[x, y, x + bw, y + bh] for x, y, bw, bh in xywh], dtype=np.float64
                ).reshape(-1, 4)
                n_gt += len(gt_xyxy)
                keep = det.category_ids(self.category_map) == cat
                if not keep.any():
                    continue
                order = np.argsort(-det.scores[keep], kind="stable")
                boxes = st_pixel_boxes(det.boxes[keep][order], w, h)
                iou = (
                    inclusive_iou(boxes, st_pixel_boxes(gt_xyxy, w, h))
                    if len(gt_xyxy)
                    else np.zeros((len(boxes), 0))
                )
                ious.append(iou)
                conf.append(det.scores[keep][order])
            n_gt_total += n_gt
            aps: dict[float, float] = {}
            for t in thresholds:
                tp = [_voc_greedy(iou, t) for iou in ious]
                ap, recall = _pr_ap(tp, conf, n_gt, voc_ap)
                aps[t] = ap
                if t == self.eval_iou:
                    recall_at_eval.append(recall)
            per_class.append(aps)
        mean = {t: float(np.mean([c[t] for c in per_class])) if per_class else 0.0 for t in thresholds}
        ap_list = [mean[float(t)] for t in THRESHOLDS]
        recall = float(np.mean(recall_at_eval)) if recall_at_eval else 0.0
        key = f"AP@{self.eval_iou:g}"
        extra = {} if self.eval_iou in (0.5, 0.75) else {key: mean[self.eval_iou]}
        headline = {0.5: "AP50", 0.75: "AP75"}.get(self.eval_iou, key)
        return self._result(ap_list, recall, n_gt_total, headline=headline, extra=extra)

    # ---- shared ----------------------------------------------------------------------------------
    def _curve(self, matched, conf, n_gt, is_tp, integrate) -> tuple[list[float], float]:
        aps, recall50 = [], 0.0
        for t in THRESHOLDS:
            tp = [is_tp(m, t) for m in matched]
            ap, recall = _pr_ap(tp, conf, n_gt, integrate)
            aps.append(ap)
            if t == 0.5:
                recall50 = recall
        return aps, recall50

    def _result(
        self, aps: list[float], recall: float, n_gt: int, headline: str, extra: dict[str, float]
    ) -> MetricResult:
        n_det = sum(len(d) for d in self._dets.values())
        nan = math.nan
        return MetricResult(
            float(np.mean(aps)), aps[0], aps[5], nan, nan, nan, recall,
            iou_type="keypoints" if self.task is Task.POSE else "bbox",
            protocol="st",
            backend="st",
            n_images=len(self._dets),
            n_gt=n_gt,
            n_detections=n_det,
            headline=headline,
            extra=extra,
        )  # fmt: skip


def _voc_greedy(iou: np.ndarray, threshold: float) -> np.ndarray:
    """TP flags of one image's detections (confidence order) under Padilla's matching."""
    tp = np.zeros(len(iou), dtype=bool)
    if iou.shape[1] == 0:
        return tp
    taken = np.zeros(iou.shape[1], dtype=bool)
    best = iou.argmax(1)
    for d, g in enumerate(best):
        if iou[d, g] > 0 and iou[d, g] >= threshold and not taken[g]:
            tp[d] = taken[g] = True
    return tp


def _pr_ap(tp_parts, conf_parts, n_gt, integrate) -> tuple[float, float]:
    """AP and final recall from per-image TP flags and confidences, sorted by confidence overall."""
    if not tp_parts or n_gt == 0:
        return 0.0, 0.0
    tp = np.concatenate(tp_parts).astype(np.float64)
    conf = np.concatenate(conf_parts)
    order = np.argsort(-conf, kind="stable")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    if integrate is st_ap101:
        precision, recall = ctp / (ctp + cfp + ST_EPS), ctp / (n_gt + ST_EPS)
    else:
        precision, recall = ctp / (ctp + cfp), ctp / n_gt
    return integrate(recall, precision), float(recall[-1]) if len(recall) else 0.0
