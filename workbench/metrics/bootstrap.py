"""Bootstrap intervals for COCO AP and for AP differences, resampling images.

On a few hundred images the AP of two variants can differ by noise alone (450 COCO-Person images:
about ±0.01). A 95 % interval over images tells a real difference from that noise.

How: pycocotools' ``COCOeval.evaluate()`` matches detections to ground truth once, image by image
(``evalImgs``). A bootstrap sample draws images with replacement; an image drawn k times counts k
times. Re-running COCO's ``accumulate`` with those counts as weights (weighted cumulative true and
false positives, weighted number of ground truths) gives the sample's AP without matching again,
so 1000 samples take seconds. With every weight 1 the AP equals COCO's to float precision (a test).

A difference between two variants uses the *same* image samples for both (a paired bootstrap), so
identical detections give exactly [0, 0].

Example:
    >>> # iv = bootstrap_ap_difference(gt, dets_int8, dets_fp32, "keypoints")
    >>> # iv.estimate, iv.low, iv.high   # int8 - fp32 with its 95 % interval
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

N_BOOT = 1000
CONFIDENCE = 0.95
_CHUNK = 100  # bootstrap samples computed together (memory: chunk x detections floats)


@dataclass
class Interval:
    """A point estimate with its bootstrap interval (``low`` ≤ ``estimate``-ish ≤ ``high``).

    ``excludes_zero`` is what a reader wants of a difference: True when the whole interval lies
    on one side of 0, i.e. the difference is larger than the noise of these images.
    """

    estimate: float
    low: float
    high: float
    n_boot: int
    confidence: float = CONFIDENCE
    n_images: int = 0

    def __post_init__(self) -> None:
        for key in ("estimate", "low", "high"):
            setattr(self, key, float(getattr(self, key)))
        if not self.low <= self.high:
            raise ValueError(f"interval low {self.low} > high {self.high}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), excludes_zero=self.excludes_zero)

    def __str__(self) -> str:
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


@dataclass
class _Matches:
    """Per-detection match flags of one model over a fixed image list (one category)."""

    det_image: np.ndarray  # (D,) image index of each detection, sorted by score descending
    tp: np.ndarray  # (T, D) matched and not ignored
    fp: np.ndarray  # (T, D) unmatched and not ignored
    n_gt: np.ndarray  # (n_images,) non-ignored ground truths per image


def _evaluate_images(gt: dict, results: list[dict], iou_type: str, img_ids: list[int], cat_ids: list[int]):
    """pycocotools' per-image matching, with the same ground-truth handling as CocoEvaluator."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from workbench.metrics.coco import _with_num_keypoints, editable_copy

    gt = _with_num_keypoints(gt) if iou_type == "keypoints" else gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = editable_copy(gt)
        coco_gt.createIndex()
        cats, imgs = set(cat_ids), set(img_ids)
        # loadRes and COCOeval set keys of each entry (area, id, ignore): one level deep is enough
        kept = [dict(r) for r in results if r["category_id"] in cats and r["image_id"] in imgs]
        coco_dt = coco_gt.loadRes(kept) if kept else COCO()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = list(img_ids)
        evaluator.params.catIds = list(cat_ids)
        if kept:
            evaluator.evaluate()
    return evaluator if kept else None


def _matches(evaluator, img_ids: list[int], cat_index: int, n_thresholds: int) -> _Matches:
    """Collect one category's area-'all' evalImgs into score-sorted arrays (COCO's accumulate)."""
    n_img = len(img_ids)
    scores, det_image, tps, fps = [], [], [], []
    n_gt = np.zeros(n_img)
    if evaluator is not None:
        max_det = evaluator.params.maxDets[-1]
        n_area = len(evaluator.params.areaRng)
        offset = cat_index * n_area * n_img  # evalImgs order: category, area range, image
        for i in range(n_img):
            e = evaluator.evalImgs[offset + i]
            if e is None:
                continue
            d_scores = np.asarray(e["dtScores"][:max_det])
            dtm = e["dtMatches"][:, :max_det]
            dt_ig = e["dtIgnore"][:, :max_det]
            n_gt[i] = np.count_nonzero(e["gtIgnore"] == 0)
            scores.append(d_scores)
            det_image.append(np.full(len(d_scores), i))
            tps.append(np.logical_and(dtm, np.logical_not(dt_ig)))
            fps.append(np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig)))
    if not scores:
        empty = np.zeros((n_thresholds, 0), bool)
        return _Matches(np.zeros(0, int), empty, empty, n_gt)
    scores_all = np.concatenate(scores)
    order = np.argsort(-scores_all, kind="mergesort")  # as COCO's accumulate
    return _Matches(
        det_image=np.concatenate(det_image)[order],
        tp=np.concatenate(tps, axis=1)[:, order],
        fp=np.concatenate(fps, axis=1)[:, order],
        n_gt=n_gt,
    )


def _weighted_ap(m: _Matches, weights: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """AP per (sample, IoU threshold) for image weights ``weights`` (S, n_images); NaN without GT."""
    n_samples = weights.shape[0]
    n_pos = weights @ m.n_gt  # (S,)
    out = np.full((n_samples, m.tp.shape[0]), np.nan)
    has_gt = n_pos > 0
    if not m.det_image.size:
        out[has_gt] = 0.0
        return out
    det_w = weights[:, m.det_image]  # (S, D)
    for t in range(m.tp.shape[0]):
        tp = np.cumsum(det_w * m.tp[t], axis=1)
        fp = np.cumsum(det_w * m.fp[t], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / n_pos[:, None]
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # COCO's envelope
        # One searchsorted for all rows: each row's recall lies in [0, 1], so offsetting row s by
        # 2s makes the flattened array sorted (rows without GT are NaN and skipped).
        rows = np.flatnonzero(has_gt)
        n_det = recall.shape[1]
        offset = 2.0 * np.arange(len(rows))[:, None]
        flat = (recall[rows] + offset).ravel()
        idx = np.searchsorted(flat, (rec_thrs[None, :] + offset).ravel(), side="left").reshape(len(rows), -1)
        local = idx - n_det * np.arange(len(rows))[:, None]
        ok = local < n_det  # past the row's last detection: that recall is never reached
        q = np.where(ok, precision[rows].ravel()[np.minimum(idx, flat.size - 1)], 0.0)
        out[rows, t] = q.mean(axis=1)
    return out


class ApBootstrap:
    """Resamples images for detection sets over the same ground truth, images and samples.

    Every set scored by one instance sees the same ``n_boot`` image samples (drawn from ``seed``),
    so any two can be differenced pairwise. Each set is matched once and its per-sample APs are
    cached, so a report's many differences cost one matching per variant.

    Args:
        gt: COCO ground-truth dict (or path / CocoDataset).
        iou_type: "keypoints", "bbox" or "segm".
        img_ids: the images evaluated (default: every image in ``gt``).
        cat_ids: categories evaluated (default: every category in ``gt``).
        n_boot: bootstrap samples.
        seed: seed of the image samples.
    """

    def __init__(
        self,
        gt: Any,
        iou_type: str,
        img_ids: Sequence[int] | None = None,
        cat_ids: Sequence[int] | None = None,
        n_boot: int = N_BOOT,
        seed: int = 0,
    ):
        from workbench.metrics.coco import IOU_TYPES, load_gt_dict

        if iou_type not in IOU_TYPES:
            raise WorkbenchError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
        if n_boot < 10:
            raise WorkbenchError(f"n_boot must be at least 10, got {n_boot}")
        self.gt, _ = load_gt_dict(gt)
        self.iou_type = iou_type
        self.img_ids = sorted(int(i) for i in (img_ids or [im["id"] for im in self.gt["images"]]))
        self.cat_ids = sorted(int(c) for c in (cat_ids or [c["id"] for c in self.gt["categories"]]))
        if not self.img_ids or not self.cat_ids:
            raise WorkbenchError("bootstrap needs at least one image and one category")
        self.n_boot = n_boot
        self.iou_thrs = np.linspace(0.5, 0.95, 10)
        self.rec_thrs = np.linspace(0.0, 1.00, 101)
        n = len(self.img_ids)
        rng = np.random.default_rng(seed)
        # row 0: every image once (the point estimate); then the bootstrap samples
        self._weights = np.vstack(
            [np.ones((1, n)), rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)]
        )
        self._cache: dict[int, tuple[list[dict], np.ndarray]] = {}

    def _ap_table(self, results: list[dict]) -> np.ndarray:
        """(1 + n_boot, IoU thresholds) AP averaged over categories; row 0 is the point estimate."""
        key = id(results)
        if key not in self._cache:  # the list is kept with its table, so its id stays unique
            evaluator = _evaluate_images(self.gt, results, self.iou_type, self.img_ids, self.cat_ids)
            per_cat = []
            for k in range(len(self.cat_ids)):
                matches = _matches(evaluator, self.img_ids, k, len(self.iou_thrs))
                per_cat.append(
                    np.concatenate(
                        [
                            _weighted_ap(matches, self._weights[i : i + _CHUNK], self.rec_thrs)
                            for i in range(0, len(self._weights), _CHUNK)
                        ]
                    )
                )
            stacked = np.stack(per_cat)  # categories without GT in a sample are NaN, as COCO's -1
            with warnings.catch_warnings():  # a sample with no GT in any category stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                table = np.nanmean(stacked, axis=0)
            self._cache[key] = (results, table)
        return self._cache[key][1]

    def _column(self, results: list[dict], iou: float | None) -> np.ndarray:
        table = self._ap_table(results)
        if iou is None:
            return table.mean(axis=1)
        return table[:, int(np.argmin(np.abs(self.iou_thrs - iou)))]

    def ap(self, results: list[dict], iou: float | None = None) -> float:
        """COCO AP (0.50:0.95, or at IoU/OKS ``iou``) of ``results`` with every image counted once."""
        return float(self._column(results, iou)[0])

    def interval(self, results: list[dict], iou: float | None = None) -> Interval:
        """The AP of ``results`` with its percentile bootstrap interval."""
        column = self._column(results, iou)
        return self._interval(column[0], column[1:])

    def difference(self, results_a: list[dict], results_b: list[dict], iou: float | None = None) -> Interval:
        """AP(a) − AP(b) with a paired bootstrap interval (both scored on the same image samples)."""
        column = self._column(results_a, iou) - self._column(results_b, iou)
        return self._interval(column[0], column[1:])

    def _interval(self, estimate: float, samples: np.ndarray) -> Interval:
        samples = samples[~np.isnan(samples)]
        if not samples.size or math.isnan(estimate):
            raise WorkbenchError("AP is undefined on these images (no ground truth)")
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = np.percentile(samples, [tail, 100 - tail])
        return Interval(estimate, low, high, self.n_boot, n_images=len(self.img_ids))
