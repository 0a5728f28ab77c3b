"""Bootstrap intervals over images: COCO's AP exactly at unit weights, [0, 0] for identical
detections, an interval excluding 0 for a real degradation, and one that straddles 0 for noise."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.metrics import CocoEvaluator
from workbench.metrics.bootstrap import ApBootstrap, Interval


def _people(n_images: int = 80, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(1, 3)):
            x, y = rng.uniform(50, 400), rng.uniform(50, 250)
            w, h = rng.uniform(60, 150), rng.uniform(120, 200)
            kpts = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2.0)], axis=1)
            anns.append({
                "id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h],
                "area": w * h * 0.5, "iscrowd": 0, "num_keypoints": 17,
                "keypoints": kpts.ravel().round(2).tolist(),
            })  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _detections(gt: dict, jitter_px: float, seed: int) -> list[dict]:
    """Each person found, keypoints moved by ``jitter_px`` (normal), plus one false positive per image."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in gt["annotations"]:
        kpts = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        kpts[:, :2] += rng.normal(0, jitter_px, (17, 2))
        out.append({"image_id": ann["image_id"], "category_id": 1, "bbox": ann["bbox"],
                    "score": float(rng.uniform(0.3, 1.0)), "keypoints": kpts.ravel().tolist()})  # fmt: skip
    for img in gt["images"]:
        kpts = np.stack([rng.uniform(0, 600, 17), rng.uniform(0, 400, 17), np.ones(17)], axis=1)
        out.append({"image_id": img["id"], "category_id": 1, "bbox": [0, 0, 50, 50],
                    "score": float(rng.uniform(0.0, 0.6)), "keypoints": kpts.ravel().tolist()})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def gt():
    return _people()


def test_unit_weights_give_cocos_own_ap(gt):
    dets = _detections(gt, 4.0, seed=1)
    evaluator = CocoEvaluator(gt, "keypoints", backend="pycocotools")
    for img in gt["images"]:
        evaluator.update(img["id"], [d for d in dets if d["image_id"] == img["id"]])
    coco = evaluator.compute()
    boot = ApBootstrap(gt, "keypoints", n_boot=50)
    assert boot.ap(dets) == pytest.approx(coco.AP, abs=1e-12)
    assert boot.ap(dets, iou=0.5) == pytest.approx(coco.AP50, abs=1e-12)
    assert 0.2 < coco.AP < 0.95  # the fixture is neither trivial nor hopeless


def test_identical_detections_give_exactly_zero(gt):
    dets = _detections(gt, 4.0, seed=1)
    same = [dict(d) for d in dets]
    iv = ApBootstrap(gt, "keypoints", n_boot=200).difference(dets, same)
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0) and not iv.excludes_zero


def test_jittered_keypoints_give_an_interval_that_excludes_zero(gt):
    boot = ApBootstrap(gt, "keypoints", n_boot=300)
    good, jittered = _detections(gt, 3.0, seed=1), _detections(gt, 9.0, seed=1)
    iv = boot.difference(jittered, good)
    assert iv.estimate < 0 and iv.high < 0 and iv.excludes_zero
    assert iv.low <= iv.estimate <= iv.high


def test_noise_alone_gives_an_interval_that_contains_zero(gt):
    boot = ApBootstrap(gt, "keypoints", n_boot=300)
    a, b = _detections(gt, 4.0, seed=1), _detections(gt, 4.0, seed=2)  # same model quality, new noise
    iv = boot.difference(a, b)
    assert iv.low < 0 < iv.high and not iv.excludes_zero


def test_interval_of_one_ap_brackets_it_and_is_seeded(gt):
    dets = _detections(gt, 4.0, seed=1)
    one = ApBootstrap(gt, "keypoints", n_boot=200, seed=3).interval(dets)
    two = ApBootstrap(gt, "keypoints", n_boot=200, seed=3).interval(dets)
    assert one == two and one.low < one.estimate < one.high and one.n_images == len(gt["images"])


def test_interval_rejects_an_inverted_range():
    with pytest.raises(ValueError, match="low"):
        Interval(0.1, 0.2, 0.1, n_boot=10)


def test_bootstrap_leaves_ground_truth_and_detections_as_they_were(gt, monkeypatch):
    """pycocotools edits the entries it evaluates; the bootstrap gives it one-level copies
    (``editable_copy``) and must score as on deep copies, leaving the caller's dicts alone."""
    import copy

    from workbench.metrics import coco as coco_module

    dets = _detections(gt, 4.0, seed=5)
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    shallow = ApBootstrap(gt, "keypoints", n_boot=50, seed=1).interval(dets)
    assert gt == gt_before and dets == dets_before
    monkeypatch.setattr(coco_module, "editable_copy", copy.deepcopy)
    assert ApBootstrap(gt, "keypoints", n_boot=50, seed=1).interval(dets) == shallow
