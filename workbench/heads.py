"""Ultralytics Detect/Pose heads changed for export, as context managers.

:func:`normalized_head` (every export: coordinates divided by the image size in the graph) and
:func:`split_head` (the ``split-head`` / ``split-levels`` recipes: outputs before the decode). Here,
below both :mod:`workbench.export` and the recipes, because the export engine and
:mod:`workbench.recipes.qat` (which distils the split head's outputs) both use them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from workbench.safeload import check_weights


@contextlib.contextmanager
def normalized_head() -> Iterator[None]:
    """Temporarily make Detect/Pose heads (and subclasses: Segment) decode to normalized coordinates."""
    from ultralytics.nn.modules import Detect, Pose
    from ultralytics.utils.export import tensorflow as tfx

    saved = (Detect._get_decode_boxes, Pose.kpts_decode)

    def kpts_decode(self, kpts):
        return tfx._tf_kpts_decode(self, kpts, is_pose26=False)

    Detect._get_decode_boxes = tfx._tf_decode_boxes
    Pose.kpts_decode = kpts_decode
    try:
        yield
    finally:
        Detect._get_decode_boxes, Pose.kpts_decode = saved


@contextlib.contextmanager
def split_head(kpt_clip: Sequence[float] | None = None, levels: bool = False) -> Iterator[None]:
    """Temporarily make Detect/Pose heads stop before the decode, with one output per quantity.

    Outputs, each (1, C, N) over the N anchors of strides 8/16/32 and each with its own int8 scale
    once quantized: box distances left/top/right/bottom from the anchor in stride units (the DFL
    expectation, 0..reg_max-1), class scores (sigmoid), and for pose the keypoint offsets
    (1, 2K, N) before ``(2·v + anchor − 0.5)·stride`` and their visibilities (1, K, N, sigmoid).
    Every output is then in units of its anchor's stride, so int8 rounding costs the same fraction
    of a small person as of a large one; :func:`workbench.decode.yolo.assemble_split_head` finishes
    the decode in float, as NPU deployments do. ``kpt_clip`` = (low, high) clamps the keypoint
    offsets in the graph (the ``calib-percentile`` recipe), so min/max calibration sees that range.

    ``levels=True`` (the ``split-levels`` recipe) goes further: no concatenation across the three
    stride levels (an int8 CONCATENATION gives its inputs one shared scale, so the level with the
    widest range sets the step of all three), and the keypoint conv is cut in two, x/y rows and
    visibility rows, so the visibility logits no longer set the offsets' scale. The outputs are
    then 4 (detect: 2) per level, (1, C, N_level) each, stride 8 first; the float maths is unchanged.
    """
    import torch
    from ultralytics.nn.modules import Detect, Pose

    saved = (Detect._inference, Pose._inference, Detect.forward_head, Pose.forward_head)

    def detect_inference(self, x):
        if levels:
            return tuple(
                out
                for box, score in zip(x["boxes"], x["scores"], strict=True)
                for out in (self.dfl(box), score.sigmoid())
            )
        return self.dfl(x["boxes"]), x["scores"].sigmoid()

    def clip(xy):
        if kpt_clip is None:
            return xy
        # c·clamp(x/c, −1, 1), not clamp(x, lo, hi): the converter folds 1/c into the conv and fuses
        # the clamp as RELU_N1_TO_1, so the conv's own int8 range becomes ±c; a bare clamp is a
        # MINIMUM/MAXIMUM pair that keeps the conv's full range
        c = max(abs(float(v)) for v in kpt_clip)
        return (xy / c).clamp(-1.0, 1.0) * c

    def pose_inference(self, x):
        if levels:  # per level: box, scores, offsets[, visibilities]
            detect = detect_inference(self, x)
            return tuple(
                out
                for i, (xy, vis) in enumerate(x["kpts"])
                for out in (*detect[2 * i : 2 * i + 2], clip(xy), *(() if vis is None else (vis.sigmoid(),)))
            )
        bs, (k, d) = x["kpts"].shape[0], self.kpt_shape
        kpts = x["kpts"].view(bs, k, d, -1)
        xy = kpts[:, :, :2].reshape(bs, 2 * k, -1)
        outputs = (*detect_inference(self, x), clip(xy))
        return (*outputs, kpts[:, :, 2].sigmoid()) if d == 3 else outputs

    def detect_levels(self, x, box_head=None, cls_head=None):
        if box_head is None or cls_head is None:
            return {}
        bs = x[0].shape[0]
        return {
            "boxes": [box_head[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)],
            "scores": [cls_head[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)],
            "feats": x,
        }

    def pose_levels(self, x, box_head, cls_head, pose_head):
        preds = detect_levels(self, x, box_head, cls_head)
        if pose_head is not None:
            bs, (k, d) = x[0].shape[0], self.kpt_shape
            rows = torch.arange(k * d).view(k, d)
            xy_rows, vis_rows = rows[:, :2].reshape(-1), rows[:, 2] if d == 3 else None
            preds["kpts"] = []
            for i in range(self.nl):
                *body, last = pose_head[i]
                feat = torch.nn.Sequential(*body)(x[i])
                xy = torch.nn.functional.conv2d(feat, last.weight[xy_rows], last.bias[xy_rows])
                vis = None
                if vis_rows is not None:
                    vis = torch.nn.functional.conv2d(feat, last.weight[vis_rows], last.bias[vis_rows]).view(
                        bs, k, -1
                    )
                preds["kpts"].append((xy.view(bs, 2 * k, -1), vis))
        return preds

    Detect._inference, Pose._inference = detect_inference, pose_inference
    if levels:
        Detect.forward_head, Pose.forward_head = detect_levels, pose_levels
    try:
        yield
    finally:
        Detect._inference, Pose._inference, Detect.forward_head, Pose.forward_head = saved


def keypoint_offset_percentiles(
    weights: str | Path, batches: Sequence[Any], percentile: float, equalize: bool = False
) -> list[float]:
    """(low, high) percentiles of a pose model's split-head keypoint offsets over ``batches``.

    Runs the float PyTorch model on the calibration inputs ((1, S, S, 3) in [0, 1]); the values
    are what :func:`split_head`'s ``kpt_clip`` takes.
    """
    import numpy as np
    import torch
    from ultralytics import YOLO

    check_weights(weights)
    model = YOLO(str(weights)).model.float().eval()
    if equalize:
        from workbench.recipes.equalize import equalize_model

        equalize_model(model)
    values = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a multi-threaded pool ran 15x slower here beside other jobs on 2 cores
    try:
        with torch.no_grad(), split_head():
            for batch in batches:
                outputs, _ = model(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))
                values.append(outputs[2].numpy().ravel())
    finally:
        torch.set_num_threads(threads)
    low, high = np.percentile(np.concatenate(values), [100 - percentile, percentile])
    return [round(float(low), 4), round(float(high), 4)]
