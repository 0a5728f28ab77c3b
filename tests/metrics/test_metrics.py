"""Metrics: backends agree, OKS, ST's protocols on hand-checked cases."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.decode import Detections
from workbench.errors import WorkbenchError
from workbench.metrics import COCO_SIGMAS, CocoEvaluator, MetricResult, StEvaluator, oks, st_ap101, voc_ap

SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR")


def _both_backends(gt, iou_type, results_by_image):
    out = []
    for backend in ("faster", "pycocotools"):
        ev = CocoEvaluator(gt, iou_type, backend)
        for image_id, results in results_by_image.items():
            ev.update(image_id, results)
        out.append(ev.compute())
    return out


def _assert_agree(fast: MetricResult, ref: MetricResult):
    for key in SUMMARY:
        a, b = getattr(fast, key), getattr(ref, key)
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-6, (key, a, b)


def _perturbed_coco_results(gt: dict, rng, with_masks: bool):
    """Detections from the GT: jittered boxes (and shifted masks), random scores, misses and false alarms."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    cat_ids = [c["id"] for c in gt["categories"]]
    by_image = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        if ann["iscrowd"] or rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        box = [
            x + rng.normal(0, 0.08 * w),
            y + rng.normal(0, 0.08 * h),
            w * rng.uniform(0.8, 1.2),
            h * rng.uniform(0.8, 1.2),
        ]
        cat = ann["category_id"] if rng.random() > 0.05 else int(rng.choice(cat_ids))
        entry = {"category_id": cat, "bbox": [float(v) for v in box], "score": float(rng.uniform(0.05, 1))}
        if with_masks:
            from pycocotools import mask as mask_utils

            mask = np.roll(
                coco.annToMask(ann), (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1)
            )
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            entry["segmentation"] = rle
        by_image[ann["image_id"]].append(entry)
    for img in gt["images"]:  # false alarms
        for _ in range(3):
            w, h = rng.uniform(10, 120, 2)
            x, y = rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h)
            entry = {
                "category_id": int(rng.choice(cat_ids)),
                "bbox": [x, y, w, h],
                "score": float(rng.uniform(0, 0.6)),
            }
            if with_masks:
                from pycocotools import mask as mask_utils

                mask = np.zeros((img["height"], img["width"]), np.uint8)
                mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
                rle = mask_utils.encode(np.asfortranarray(mask))
                rle["counts"] = rle["counts"].decode("ascii")
                entry["segmentation"] = rle
            by_image[img["id"]].append(entry)
    return by_image


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_backends_agree_on_tiny_coco(tiny_coco, iou_type):
    gt = json.loads((tiny_coco / "instances_train2017_small.json").read_text())
    results = _perturbed_coco_results(gt, np.random.default_rng(0), with_masks=iou_type == "segm")
    fast, ref = _both_backends(gt, iou_type, results)
    _assert_agree(fast, ref)
    assert 0.2 < fast.AP < 0.95  # perturbed, not perfect, not empty
    assert fast.n_gt == sum(1 for a in gt["annotations"] if not a["iscrowd"])


def _synthetic_keypoint_gt(rng, n_images=8):
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.uniform(40, 200), rng.uniform(80, 300)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            v = rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5])
            kx, ky = rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17)
            kpts = np.stack([np.where(v > 0, kx, 0), np.where(v > 0, ky, 0), v], -1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h * 0.6,
                    "iscrowd": 0,
                    "keypoints": kpts.reshape(-1).round(2).tolist(),
                    "num_keypoints": int((v > 0).sum()),
                }
            )
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def test_backends_agree_on_keypoints():
    rng = np.random.default_rng(1)
    gt = _synthetic_keypoint_gt(rng)
    by_image = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        if rng.random() < 0.1:
            continue
        k = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        noise = rng.normal(0, rng.uniform(1, 15), (17, 2))
        pred = np.concatenate([k[:, :2] + noise, rng.uniform(0.3, 1, (17, 1))], -1)
        by_image[ann["image_id"]].append(
            {
                "category_id": 1,
                "keypoints": pred.reshape(-1).tolist(),
                "score": float(rng.uniform(0.1, 1)),
                "bbox": ann["bbox"],
            }
        )
    fast, ref = _both_backends(gt, "keypoints", by_image)
    _assert_agree(fast, ref)
    assert 0.2 < fast.AP < 0.95 and math.isnan(fast.APs)


def test_oks_matches_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(2)
    gt = _synthetic_keypoint_gt(rng, n_images=1)
    ann = gt["annotations"][0]
    gt_k = np.array(ann["keypoints"]).reshape(17, 3)
    preds = [gt_k[:, :2] + rng.normal(0, s, (17, 2)) for s in (0.5, 5, 20)]
    dts = [
        {
            "image_id": 1,
            "category_id": 1,
            "keypoints": np.c_[p, np.ones(17)].reshape(-1).tolist(),
            "score": 0.9,
        }
        for p in preds
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dts), "keypoints")
        ev.params.imgIds = [1]
        ev._prepare()
        reference = ev.computeOks(1, 1)  # (detections sorted by score, gts)
    ours = oks(np.stack(preds), gt_k, ann["area"])
    gt_index = [a["id"] for a in ev._gts[1, 1]].index(ann["id"])
    np.testing.assert_allclose(ours, reference[:, gt_index], rtol=1e-9)
    assert ours[0] > ours[1] > ours[2]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.sampled_from([0, 1, 2])),
        min_size=17,
        max_size=17,
    ),
    st.floats(1.0, 1e6),
)
def test_oks_of_a_prediction_equal_to_its_ground_truth_is_one(points, area):
    gt = np.array(points, dtype=float)
    if not (gt[:, 2] > 0).any():
        with pytest.raises(ValueError, match="no labelled keypoint"):
            oks(gt[:, :2], gt, area)
        return
    assert oks(gt[:, :2], gt, area) == pytest.approx(1.0)
    moved = gt[:, :2] + 3.0
    assert oks(moved, gt, area) < 1.0


def test_oks_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes disagree"):
        oks(np.zeros((16, 2)), np.ones((17, 3)), 10.0)
    assert len(COCO_SIGMAS) == 17


def test_metric_result_validation():
    r = MetricResult(0.5, 0.6, -1, -1, 0.4, 0.3, 0.7, "bbox")
    assert math.isnan(r.AP75) and r.to_dict()["AP75"] is None
    with pytest.raises(ValueError, match="not a fraction"):
        MetricResult(1.5, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, "bbox")
    with pytest.raises(ValueError, match="iou_type"):
        MetricResult(0.5, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, "mask")


def _boxes_gt(boxes_xyxy, width=100, height=100):
    anns = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1),
            "iscrowd": 0,
        }
        for i, (x1, y1, x2, y2) in enumerate(boxes_xyxy)
    ]
    return {
        "images": [{"id": 1, "file_name": "1.jpg", "width": width, "height": height}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }


def test_st_detection_matches_only_the_best_overlapping_ground_truth():
    """A detection whose best GT is taken is a false positive for ST; COCO matches it to the next GT."""
    gt = _boxes_gt([[0, 0, 10, 10], [5, 0, 15, 10]])
    det = Detections(np.array([[0, 0, 10, 10], [2, 0, 12, 10]]), np.array([0.9, 0.8]), np.zeros(2))
    st_ev, coco_ev = StEvaluator(gt, "detect", eval_iou=0.5), CocoEvaluator(gt, "bbox")
    st_ev.update(1, det)
    coco_ev.update(1, det)
    assert coco_ev.compute().AP50 == pytest.approx(1.0)
    result = st_ev.compute()
    assert result.AP50 == pytest.approx(0.5) and result.headline == "AP50" and result.protocol == "st"


def test_st_detection_voc_ap_by_hand():
    gt = _boxes_gt([[0, 0, 9, 9], [20, 0, 29, 9]])
    det = Detections(
        np.array([[0, 0, 9, 9], [2, 0, 11, 9], [20, 0, 29, 9]]), np.array([0.9, 0.8, 0.7]), np.zeros(3)
    )
    ev = StEvaluator(gt, "detect", eval_iou=0.4)
    ev.update(1, det)
    result = ev.compute()
    # TP, FP (its best GT is taken), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert result.extra["AP@0.4"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert result.headline == "AP@0.4" and result.AR == pytest.approx(1.0)


def test_st_pose_perfect_and_with_a_confident_false_positive():
    rng = np.random.default_rng(3)
    gt = _synthetic_keypoint_gt(rng, n_images=1)
    gt["annotations"] = anns = gt["annotations"][:2]
    assert len(anns) == 2
    kpts = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), 17, 3)
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
    perfect = Detections(boxes, np.linspace(0.9, 0.8, len(anns)), np.zeros(len(anns)), kpts)
    ev = StEvaluator(gt, "pose")
    ev.update(1, perfect)
    result = ev.compute()
    # ST (like Ultralytics) divides by n_gt + 1e-7, so recall stops short of 1: a perfect score is 0.995
    assert result.AP50 == pytest.approx(0.995, abs=1e-6) and result.AP == pytest.approx(0.995, abs=1e-6)
    assert result.headline == "AP50" and result.iou_type == "keypoints"
    far = kpts[:1].copy()
    far[..., :2] = 1.0  # a pose in the corner, far from both persons
    noisy = Detections(np.r_[[[0, 0, 2, 2]], boxes], np.r_[0.95, 0.9, 0.8], np.zeros(3), np.r_[far, kpts])
    ev.update(1, noisy)
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1: area 0.75, less the last half grid step at 2/3
    assert ev.compute().AP50 == pytest.approx(0.75 - 0.005 * 2 / 3, abs=1e-6)


def test_ap_integrals_by_hand():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert st_ap101(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.875)
    assert st_ap101(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 2 / 3])) == pytest.approx(0.75)


def test_coco_evaluator_errors_and_empty_detections():
    gt = _boxes_gt([[0, 0, 10, 10]])
    ev = CocoEvaluator(gt, "bbox")
    with pytest.raises(WorkbenchError, match="no images were evaluated"):
        ev.compute()
    with pytest.raises(WorkbenchError, match="image id 99 is not in the ground truth"):
        ev.update(99, [])
    ev.update(1, Detections.empty())
    result = ev.compute()
    assert result.AP == 0.0 and result.n_detections == 0 and result.n_gt == 1
    with pytest.raises(WorkbenchError, match="iou_type"):
        CocoEvaluator(gt, "mask")
    with pytest.raises(WorkbenchError, match="segmentation metric"):
        StEvaluator(gt, "seg")


def test_eighty_class_detections_on_person_only_gt_keep_persons():
    gt = _boxes_gt([[0, 0, 10, 10]])
    det = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.95]), np.array([0, 16]))
    ev = CocoEvaluator(gt, "bbox", category_map={0: 1})
    ev.update(1, det)
    result = ev.compute()
    assert result.n_detections == 1 and result.AP == pytest.approx(1.0)


def test_ultralytics_oks_area_rescales_only_the_area():
    from workbench.metrics import with_ultralytics_oks_area

    gt = {
        "images": [{"id": 1, "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 20], "area": 50.0}],
    }
    out = with_ultralytics_oks_area(gt)
    assert out["annotations"][0]["area"] == pytest.approx(0.53 * 200)
    assert {k: v for k, v in out["annotations"][0].items() if k != "area"} == {
        k: v for k, v in gt["annotations"][0].items() if k != "area"
    }
    assert gt["annotations"][0]["area"] == 50.0  # the input is left as it was


def _same_summary(a: MetricResult, b: MetricResult) -> bool:
    return all(
        getattr(a, k) == getattr(b, k) or (math.isnan(getattr(a, k)) and math.isnan(getattr(b, k)))
        for k in SUMMARY
    )


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_evaluation_edits_copies_only(iou_type, backend, monkeypatch):
    """The evaluators edit the entries they are given (ignore flags, ids, areas, RLEs): the
    evaluator hands them one-level copies (``editable_copy``) instead of deep copies, which must
    leave the caller's ground truth and detections untouched and give the deep copies' numbers."""
    import copy

    from workbench.metrics import coco as coco_module

    rng = np.random.default_rng(4)
    gt = _synthetic_keypoint_gt(rng)
    for ann in gt["annotations"]:  # polygons, as the synthetic people have: segm replaces them by RLEs
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    if iou_type == "keypoints":
        by_image = {img["id"]: [] for img in gt["images"]}
        for ann in gt["annotations"]:
            k = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
            pred = np.concatenate([k[:, :2] + rng.normal(0, 6, (17, 2)), rng.uniform(0.3, 1, (17, 1))], -1)
            by_image[ann["image_id"]].append(
                {"category_id": 1, "keypoints": pred.ravel().tolist(), "score": float(rng.uniform(0.1, 1))}
            )
    else:
        by_image = _perturbed_coco_results(gt, rng, with_masks=iou_type == "segm")
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(by_image)

    def evaluate() -> MetricResult:
        ev = CocoEvaluator(gt, iou_type, backend)
        for image_id, results in by_image.items():
            ev.update(image_id, results)
        return ev.compute(), ev.compute()  # a second pass sees what the first left behind

    first, second = evaluate()
    assert gt == gt_before and by_image == results_before
    assert _same_summary(first, second)
    monkeypatch.setattr(coco_module, "editable_copy", copy.deepcopy)
    reference, _ = evaluate()
    assert _same_summary(first, reference) and 0.05 < first.AP < 0.99
