"""Decoders: round trips through fake raw outputs, NMS properties, layouts, Detections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.decode import (
    Detections,
    anchor_count,
    box_iou,
    decode,
    encode_masks,
    is_normalized,
    nms,
    select_candidates,
)
from workbench.errors import WorkbenchError
from workbench.preprocess import letterbox, resize

INPUT = 256
ORIG_HW = (300, 420)


def _transform(mode: str, orig_hw=ORIG_HW, size=INPUT):
    fn = letterbox if mode == "letterbox" else resize
    return fn(np.zeros((*orig_hw, 3), np.uint8), size)[1]


def _random_boxes(rng, n, orig_hw=ORIG_HW):
    """n boxes well inside the image, pairwise IoU < 0.3 so NMS keeps them all."""
    h, w = orig_hw
    boxes = []
    while len(boxes) < n:
        x1, y1 = rng.uniform(5, w * 0.7), rng.uniform(5, h * 0.7)
        b = np.array([x1, y1, x1 + rng.uniform(20, w * 0.25), y1 + rng.uniform(20, h * 0.25)])
        if not boxes or box_iou(b[None], np.array(boxes)).max() < 0.3:
            boxes.append(b)
    return np.array(boxes)


def _quantize(x: np.ndarray) -> np.ndarray:
    """int8 per-tensor round trip, as an int8-output model followed by the runtime's dequantize."""
    scale = (x.max() - x.min()) / 255.0
    zero_point = np.round(-128 - x.min() / scale)
    q = np.clip(np.round(x / scale) + zero_point, -128, 127)
    return ((q - zero_point) * scale).astype(np.float32)


def _yolo_raw(transform, boxes, classes, scores, nc, rng, kpts=None, normalized=True):
    """Encode original-image boxes (and keypoints) into a (1, 4+nc+3K, N) YOLOv8 output."""
    h, w = transform.input_hw
    n = anchor_count((h, w))
    k = 0 if kpts is None else kpts.shape[1]
    raw = np.zeros((4 + nc + 3 * k, n), np.float32)
    raw[0], raw[1] = rng.uniform(0, w, n), rng.uniform(0, h, n)  # background anchors: low scores
    raw[2], raw[3] = rng.uniform(4, 40, n), rng.uniform(4, 40, n)
    raw[4 : 4 + nc] = rng.uniform(0, 0.05, (nc, n))
    idx = rng.choice(n, len(boxes), replace=False)
    corners = transform.forward_points(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
    raw[0, idx], raw[1, idx] = (corners[:, 0] + corners[:, 2]) / 2, (corners[:, 1] + corners[:, 3]) / 2
    raw[2, idx], raw[3, idx] = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    raw[4 + classes, idx] = scores
    if kpts is not None:
        xy = transform.forward_points(kpts[..., :2])
        block = np.concatenate([xy, kpts[..., 2:]], axis=-1).reshape(len(boxes), -1)
        raw[4 + nc :, idx] = block.T
        rest = np.setdiff1d(np.arange(n), idx)
        raw[4 + nc :: 3, rest] = rng.uniform(0, w, (k, len(rest)))
        raw[5 + nc :: 3, rest] = rng.uniform(0, h, (k, len(rest)))
        raw[6 + nc :: 3, rest] = rng.uniform(0, 1, (k, len(rest)))
    if normalized:
        raw[[0, 2]] /= w
        raw[[1, 3]] /= h
        if k:
            raw[4 + nc :: 3] /= w
            raw[5 + nc :: 3] /= h
    return raw[None]


@pytest.mark.parametrize("mode", ["letterbox", "resize"])
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_pose_round_trip(mode, normalized, quantized, transposed):
    rng = np.random.default_rng(0)
    t = _transform(mode)
    boxes = _random_boxes(rng, 5)
    kpts = np.stack(
        [
            np.stack([rng.uniform(b[0], b[2], 17), rng.uniform(b[1], b[3], 17), rng.uniform(0.2, 1, 17)], -1)
            for b in boxes
        ]
    )
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
    raw = _yolo_raw(t, boxes, np.zeros(5, int), scores, 1, rng, kpts, normalized)
    step = 0.0
    if quantized and normalized:  # coordinates and scores share one int8 scale, as in a full-int8 head
        step = (raw.max() - raw.min()) / 255.0
        raw = _quantize(raw)
    elif quantized:  # pixel coordinates would crush the scores on a shared scale: quantize them apart
        coords = np.r_[0:4, 5:56:3, 6:56:3]
        probs = np.r_[4, 7:56:3]
        step = (raw[0, coords].max() - raw[0, coords].min()) / 255.0
        raw[0, coords], raw[0, probs] = _quantize(raw[0, coords]), _quantize(raw[0, probs])
    if transposed:
        raw = raw.transpose(0, 2, 1)
    det = decode([raw], "pose", t, conf=0.25, iou=0.7, max_det=100)
    unit = INPUT if normalized else 1.0
    tol = 2 * step * unit / min(t.scale_xy) + 1e-3
    assert len(det) == 5
    order = np.argsort(-scores)  # decode returns best first
    np.testing.assert_allclose(det.boxes, boxes[order], atol=tol)
    np.testing.assert_allclose(det.keypoints[..., :2], kpts[order][..., :2], atol=tol)
    prob_step = 0.01 if quantized else 1e-6
    np.testing.assert_allclose(det.keypoints[..., 2], kpts[order][..., 2], atol=prob_step)
    np.testing.assert_allclose(det.scores, scores[order], atol=prob_step)


@pytest.mark.parametrize("normalized", [True, False])
def test_detect_round_trip_keeps_classes(normalized):
    rng = np.random.default_rng(1)
    t = _transform("letterbox")
    boxes = _random_boxes(rng, 6)
    classes = np.array([0, 3, 7, 3, 1, 0])
    scores = np.linspace(0.9, 0.4, 6)
    raw = _yolo_raw(t, boxes, classes, scores, 8, rng, normalized=normalized)
    det = decode([raw], "detect", t, conf=0.25, iou=0.7)
    np.testing.assert_allclose(det.boxes, boxes, atol=1e-3)
    np.testing.assert_array_equal(det.classes, classes)
    only = decode([raw], "detect", t, conf=0.25, iou=0.7, classes=[3])
    np.testing.assert_array_equal(only.classes, [3, 3])


def test_conf_threshold_and_max_det():
    rng = np.random.default_rng(2)
    t = _transform("resize")
    boxes = _random_boxes(rng, 6)
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    raw = _yolo_raw(t, boxes, np.zeros(6, int), scores, 1, rng)
    assert len(decode([raw], "detect", t, conf=0.25)) == 4
    top = decode([raw], "detect", t, conf=0.05, max_det=2)
    np.testing.assert_allclose(top.scores, [0.9, 0.8], atol=1e-6)


def test_seg_mask_is_the_prototype_region_in_original_pixels():
    t = _transform("letterbox", orig_hw=(100, 80), size=64)
    rect = np.array([20.0, 30.0, 60.0, 80.0])  # x1, y1, x2, y2 in the original image
    gx, gy = np.meshgrid(np.arange(16) + 0.5, np.arange(16) + 0.5)  # proto cell centres, input/4 units
    ox, oy = np.split(t.inverse_points(np.stack([gx * 4, gy * 4], -1)), 2, axis=-1)
    inside = (
        (ox[..., 0] >= rect[0]) & (ox[..., 0] < rect[2]) & (oy[..., 0] >= rect[1]) & (oy[..., 0] < rect[3])
    )
    protos = np.zeros((1, 16, 16, 32), np.float32)
    protos[0, ..., 0] = np.where(inside, 8.0, -8.0)
    raw = np.zeros((1, 4 + 80 + 32, anchor_count((64, 64))), np.float32)
    box = t.forward_points(np.array([[rect[0] - 5, rect[1] - 5], [rect[2] + 5, rect[3] + 5]]))
    raw[0, :4, 7] = [*(box.mean(0) / 64), *((box[1] - box[0]) / 64)]
    raw[0, 4, 7] = 0.9
    raw[0, 84, 7] = 1.0
    for outputs in ([raw, protos], [protos.transpose(0, 3, 1, 2), raw]):  # either order, NHWC or NCHW
        det = decode(outputs, "seg", t, conf=0.25)
        assert det.masks.shape == (1, 100, 80)
        truth = np.zeros((100, 80), bool)
        truth[30:80, 20:60] = True
        iou = (det.masks[0] & truth).sum() / (det.masks[0] | truth).sum()
        assert iou > 0.85
        x1, y1, x2, y2 = det.boxes[0]
        ys, xs = np.nonzero(det.masks[0])
        assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2


def test_ssd_round_trip_any_output_order():
    rng = np.random.default_rng(3)
    t = _transform("resize")
    grid = (np.arange(8) + 0.5) / 8
    cx, cy = np.meshgrid(grid, grid)
    anchors = np.stack([cx - 0.1, cy - 0.12, cx + 0.1, cy + 0.12], -1).reshape(-1, 4).astype(np.float32)
    boxes = _random_boxes(rng, 3)
    idx = np.array([5, 30, 50])
    target = t.forward_points(boxes.reshape(-1, 2, 2)).reshape(-1, 4) / INPUT
    size = np.concatenate([anchors[:, 2:] - anchors[:, :2]] * 2, axis=1)
    offsets = rng.normal(0, 0.05, anchors.shape).astype(np.float32)
    offsets[idx] = (target - anchors[idx]) / size[idx]
    p = np.full(len(anchors), 0.01, np.float32)
    p[idx] = [0.9, 0.8, 0.7]
    scores = np.stack([1 - p, p], -1)
    outputs = [anchors[None], scores[None], offsets[None]]
    det = decode(outputs, "detect", t, conf=0.3, iou=0.5)
    np.testing.assert_allclose(det.boxes, boxes, atol=1e-3)
    np.testing.assert_array_equal(det.classes, [0, 0, 0])
    named = decode(outputs, "detect", t, decoder="ssd", conf=0.3, iou=0.5)  # as a family names it
    np.testing.assert_array_equal(named.boxes, det.boxes)
    with pytest.raises(WorkbenchError, match="1 prediction and 0 prototype tensors|split head needs"):
        decode(outputs, "detect", t, decoder="yolo", conf=0.3)  # the named decoder, not the layout's


def test_unknown_decoder_is_named_with_the_known_ones():
    with pytest.raises(WorkbenchError, match="unknown decoder 'detr'; known: ssd, yolo"):
        decode([np.zeros((1, 5, 10), np.float32)], "detect", _transform("letterbox"), decoder="detr")


def test_bad_layout_names_seen_and_expected_shapes():
    t = _transform("letterbox")
    n = anchor_count((INPUT, INPUT))
    with pytest.raises(WorkbenchError) as err:
        decode([np.zeros((1, 7, n), np.float32)], "pose", t)
    assert f"(1, 7, {n})" in str(err.value) and f"(1, 56, {n})" in str(err.value)
    with pytest.raises(WorkbenchError, match=r"prototypes \(1, 64, 64, nm\)"):
        decode([np.zeros((1, 116, n), np.float32)], "seg", t)
    with pytest.raises(WorkbenchError, match="SSD layout only decodes boxes"):
        decode([np.zeros((1, 9, 2)), np.zeros((1, 9, 4)), np.zeros((1, 9, 4))], "pose", t)


def test_is_normalized_heuristic():
    assert is_normalized(np.array([[0.5, 0.5, 0.1, 0.1], [1.2, 0.9, 0.3, 0.3]]))
    assert not is_normalized(np.array([[0.5, 0.5, 0.1, 0.1], [200.0, 90.0, 30, 30]]))


boxes_strategy = st.lists(
    st.tuples(
        st.floats(0, 100),
        st.floats(0, 100),
        st.floats(1, 60),
        st.floats(1, 60),
        st.floats(0.01, 1),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(boxes_strategy, st.floats(0.1, 0.9))
def test_nms_never_keeps_overlapping_boxes_of_one_class(rows, threshold):
    data = np.array(rows, dtype=np.float64)
    boxes = np.concatenate([data[:, :2], data[:, :2] + data[:, 2:4]], axis=1).astype(np.float32)
    scores, classes = data[:, 4].astype(np.float32), data[:, 5].astype(int)
    keep = nms(boxes, scores, classes, iou=threshold, max_det=1000)
    iou = box_iou(boxes[keep], boxes[keep])
    same = classes[keep][:, None] == classes[keep][None]
    np.fill_diagonal(same, False)
    assert not (iou[same] > threshold + 1e-5).any()
    assert (np.diff(scores[keep]) <= 0).all()  # best first
    dropped = np.setdiff1d(np.arange(len(boxes)), keep)
    for d in dropped:  # every dropped box was suppressed by a kept one of its class
        rivals = keep[classes[keep] == classes[d]]
        assert (box_iou(boxes[d][None], boxes[rivals]) > threshold - 1e-5).any()


def test_select_candidates_multi_label_and_best_class():
    scores = np.array([[0.1, 0.8, 0.6], [0.3, 0.2, 0.1], [0.05, 0.01, 0.02]])
    a, c, v = select_candidates(scores, 0.25)
    assert a.tolist() == [0, 1] and c.tolist() == [1, 0]
    a, c, v = select_candidates(scores, 0.25, multi_label=True)
    assert sorted(zip(a.tolist(), c.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 0)]
    assert v.tolist() == sorted(v.tolist(), reverse=True)
    a, c, _ = select_candidates(scores, 0.25, classes=[2])  # best class of anchor 0 is 1: dropped
    assert len(a) == 0
    a, _, v = select_candidates(scores, 0.25, multi_label=True, max_nms=2)  # cap keeps the best
    assert a.tolist() == [0, 0] and v.tolist() == pytest.approx([0.8, 0.6])


def test_detections_validation_and_selection():
    with pytest.raises(ValueError, match="differ in length"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="keypoints"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros(2), keypoints=np.zeros((2, 17, 2)))
    det = Detections(np.array([[0, 0, 5, 5], [1, 1, 9, 9]]), np.array([0.2, 0.9]), np.array([0, 2]))
    assert len(det.filter(min_score=0.5)) == 1 and det.filter(classes=[0]).classes.tolist() == [0]
    assert len(det[1]) == 1 and det.to_pandas().shape == (2, 6)


def test_to_coco_fields_and_rle_round_trip():
    from pycocotools import mask as mask_utils

    masks = np.zeros((1, 30, 40), bool)
    masks[0, 5:20, 10:30] = True
    kpts = np.arange(17 * 3, dtype=np.float32).reshape(1, 17, 3)
    det = Detections(np.array([[10, 5, 30, 20]]), np.array([0.87]), np.array([0]), kpts, masks)
    pose = det.to_coco(42, task="pose")[0]
    assert pose["image_id"] == 42 and pose["category_id"] == 1 and pose["bbox"] == [10.0, 5.0, 20.0, 15.0]
    assert pose["keypoints"] == kpts.reshape(-1).tolist()
    seg = det.to_coco(42, category_map={0: 7}, task="seg")[0]
    assert seg["category_id"] == 7
    np.testing.assert_array_equal(mask_utils.decode(seg["segmentation"]).astype(bool), masks[0])
    assert encode_masks(np.zeros((0, 3, 3), bool)) == []
    with pytest.raises(ValueError, match="no COCO category"):
        Detections(np.zeros((1, 4)), np.ones(1), np.array([5])).to_coco(1, category_map={0: 1})


def test_from_ultralytics_scales_masks_to_original():
    import torch
    from ultralytics.engine.results import Results

    boxes = torch.tensor([[8.0, 10.0, 40.0, 90.0, 0.9, 0.0]])
    kpts = torch.rand(1, 17, 3) * 50
    masks = torch.zeros(1, 64, 64)
    masks[0, 8:56, 20:44] = 1  # letterboxed 100x80 -> 64x64 has 6.4 px padding left/right
    result = Results(
        np.zeros((100, 80, 3), np.uint8),
        path="x.jpg",
        names={0: "person"},
        boxes=boxes,
        keypoints=kpts,
        masks=masks,
    )
    det = Detections.from_ultralytics(result)
    np.testing.assert_allclose(det.boxes, boxes[:, :4].numpy())
    np.testing.assert_allclose(det.keypoints, kpts.numpy(), rtol=1e-6)
    assert det.masks.shape == (1, 100, 80) and det.masks.any()
