"""YOLOv8 heads (detect, pose, seg) from raw TFLite outputs to :class:`Detections`.

Layouts (channel-first as exported; the transposed (1, N, C) is accepted too):

- detect: ``(1, 4 + nc, N)``
- pose: ``(1, 4 + nc + K*D, N)`` with ``D`` = 3 (x, y, visibility) or 2
- seg: ``(1, 4 + nc + nm, N)`` plus prototypes ``(1, H/4, W/4, nm)`` (or channel-first)

``N`` is the anchor count, ``sum((H/s) * (W/s) for s in (8, 16, 32))``. Boxes are (cx, cy, w, h),
either normalized to the input size (our exports and ST's files) or in input pixels (Ultralytics'
default export); :func:`is_normalized` tells them apart when the metadata does not say.

Split heads (``workbench export`` with the ``split-head`` recipe) end before the decode: box
distances (1, 4, N), scores (1, nc, N), and for pose keypoint offsets (1, 2K, N) and visibilities
(1, K, N), all in stride units; :func:`assemble_split_head` decodes them into the one-tensor layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.config import Task
from workbench.decode.detections import Detections
from workbench.decode.nms import MAX_NMS, nms, select_candidates
from workbench.errors import WorkbenchError
from workbench.preprocess import ImageTransform

STRIDES = (8, 16, 32)
MASK_CHUNK = 16  # masks resampled to full image size per batch, to bound memory


def anchor_count(input_hw: tuple[int, int]) -> int:
    """Anchors of a YOLOv8 P3-P5 head for an input of ``input_hw``.

    Example:
        >>> anchor_count((256, 256))
        1344
    """
    h, w = input_hw
    return sum((h // s) * (w // s) for s in STRIDES)


def anchor_grid(input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (N, 2) in grid cells (x, y; + 0.5) and their strides (N,), as Ultralytics' ``make_anchors``.

    Example:
        >>> points, strides = anchor_grid((64, 64))
        >>> points[:2].tolist(), strides[[0, -1]].tolist()
        ([[0.5, 0.5], [1.5, 0.5]], [8.0, 32.0])
    """
    h, w = input_hw
    points, strides = [], []
    for s in STRIDES:
        ys, xs = np.meshgrid(np.arange(h // s) + 0.5, np.arange(w // s) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full(xs.size, float(s)))
    return np.concatenate(points).astype(np.float32), np.concatenate(strides).astype(np.float32)


def assemble_split_head(
    heads: Sequence[np.ndarray], input_hw: tuple[int, int], nc: int, kpt_shape: tuple[int, int] | None
) -> np.ndarray:
    """Decode a split head's outputs into (N, 4 + nc [+ K*D]) rows normalized to the input size.

    ``heads``: (C, N) arrays in any order, told apart by channel count (4 box distances, ``nc``
    scores, 2K keypoint offsets, K visibilities); boxes become (cx, cy, w, h) and keypoints
    (x, y[, v]) as Ultralytics decodes them in its graph.
    """
    heads = merge_levels(heads, input_hw)
    roles = {"box": 4, "scores": nc}
    if kpt_shape is not None:
        k, d = kpt_shape
        roles["kpt_xy"] = 2 * k
        if d == 3:
            roles["kpt_vis"] = k
    if len(set(roles.values())) != len(roles) or len(heads) != len(roles):
        raise WorkbenchError(
            f"cannot tell split-head outputs apart: channel counts {[h.shape[0] for h in heads]} "
            f"for roles {roles}"
        )
    by_channels = {h.shape[0]: h for h in heads}
    if set(by_channels) != set(roles.values()):
        raise WorkbenchError(
            f"split-head outputs have {sorted(by_channels)} channels, expected {sorted(roles.values())}"
        )
    part = {role: by_channels[c].T.astype(np.float32) for role, c in roles.items()}
    points, strides = anchor_grid(input_hw)
    scale = np.array([input_hw[1], input_hw[0]], np.float32)
    lt, rb = part["box"][:, :2], part["box"][:, 2:]
    centre = (points + (rb - lt) / 2) * strides[:, None] / scale
    size = (lt + rb) * strides[:, None] / scale
    columns = [centre, size, part["scores"]]
    if kpt_shape is not None:
        k, d = kpt_shape
        offsets = part["kpt_xy"].reshape(-1, k, 2)
        xy = (offsets * 2.0 + (points[:, None, :] - 0.5)) * strides[:, None, None] / scale
        if d == 3:
            xy = np.concatenate([xy, part["kpt_vis"][:, :, None]], axis=2)
        columns.append(xy.reshape(len(xy), -1))
    return np.ascontiguousarray(np.concatenate(columns, axis=1), dtype=np.float32)


def level_sizes(input_hw: tuple[int, int]) -> list[int]:
    """Anchors per stride level, stride 8 first.

    Example:
        >>> level_sizes((256, 256))
        [1024, 256, 64]
    """
    h, w = input_hw
    return [(h // s) * (w // s) for s in STRIDES]


def merge_levels(heads: Sequence[np.ndarray], input_hw: tuple[int, int]) -> list[np.ndarray]:
    """Join per-level (C, N_level) planes of one quantity into (C, N) in stride order.

    Planes that already span all N anchors pass through. A quantity must come either whole or as
    exactly one plane per level (the ``split-levels`` recipe); anything else is an error.
    """
    sizes, n = level_sizes(input_hw), anchor_count(input_hw)
    whole = [h for h in heads if h.shape[1] == n]
    by_channels: dict[int, dict[int, np.ndarray]] = {}
    for h in heads:
        if h.shape[1] == n:
            continue
        if h.shape[1] not in sizes:
            raise WorkbenchError(
                f"a split-head output has {h.shape[1]} anchors; expected {n} or one level of {sizes}"
            )
        planes = by_channels.setdefault(h.shape[0], {})
        if h.shape[1] in planes:
            raise WorkbenchError(f"two split-head outputs with {h.shape[0]} channels for one level")
        planes[h.shape[1]] = h
    merged = []
    for channels, planes in sorted(by_channels.items()):
        if sorted(planes) != sorted(sizes):
            raise WorkbenchError(
                f"split-head outputs with {channels} channels cover levels {sorted(planes, reverse=True)}, "
                f"not all of {sizes}"
            )
        merged.append(np.concatenate([planes[size] for size in sizes], axis=1))
    return whole + merged


def expected_layout(task: Task | str, input_hw: tuple[int, int]) -> str:
    """Human-readable description of the output shapes a task's decoder accepts."""
    task = Task(task)
    n = anchor_count(input_hw)
    h, w = input_hw
    if task is Task.POSE:
        return (
            f"one output (1, 4+nc+3K, {n}) such as (1, 56, {n}) for one class and 17 keypoints, or transposed"
        )
    if task is Task.SEG:
        return f"two outputs: (1, 4+nc+nm, {n}) such as (1, 116, {n}), and prototypes (1, {h // 4}, {w // 4}, nm)"
    return (
        f"one output (1, 4+nc, {n}) such as (1, 5, {n}) for one class, or transposed; "
        "or SSD scores (1, NA, C), offsets (1, NA, 4) and anchors (1, NA, 4)"
    )


def layout_error(
    task: Task | str, outputs: Sequence[np.ndarray], input_hw: tuple[int, int], detail: str
) -> WorkbenchError:
    """The error for outputs no decoder understands: names the shapes seen and the shapes expected."""
    shapes = ", ".join(str(tuple(np.shape(o))) for o in outputs) or "none"
    return WorkbenchError(
        f"{Task(task).value} model outputs [{shapes}] match no decoder ({detail}); expected {expected_layout(task, input_hw)}"
    )


def resolve_layout(
    outputs: Sequence[np.ndarray],
    task: Task | str,
    input_hw: tuple[int, int],
    nc: int | None = None,
    kpt_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, int, tuple[int, int] | None]:
    """Find prediction rows and prototypes among ``outputs`` and split the channels.

    Returns:
        (pred (N, C) anchors-first, protos (mh, mw, nm) or None, nc, kpt_shape or None).

    Raises:
        WorkbenchError: if the outputs do not fit the task's layout.
    """
    task = Task(task)
    arrays = [np.asarray(o) for o in outputs]
    heads = [a for a in arrays if a.ndim == 3 and a.shape[0] == 1]
    grids = [a for a in arrays if a.ndim == 4 and a.shape[0] == 1]
    want_grids = 1 if task is Task.SEG else 0
    n = anchor_count(input_hw)
    if task is not Task.SEG and len(heads) > 1 and len(heads) == len(arrays):
        if nc is None:
            raise layout_error(task, outputs, input_hw, "a split head needs the class count (metadata names)")
        if task is Task.POSE and kpt_shape is None:
            raise layout_error(task, outputs, input_hw, "a split pose head needs kpt_shape (metadata)")
        anchors = {n, *level_sizes(input_hw)}
        planes = [h[0] if h.shape[2] in anchors else h[0].T for h in heads]
        kpts = (int(kpt_shape[0]), int(kpt_shape[1])) if task is Task.POSE else None
        try:
            pred = assemble_split_head(planes, input_hw, nc, kpts)
        except WorkbenchError as err:
            raise layout_error(task, outputs, input_hw, err.message) from None
        return pred, None, nc, kpts
    if len(heads) != 1 or len(grids) != want_grids or len(arrays) != 1 + want_grids:
        raise layout_error(
            task, outputs, input_hw, f"{len(heads)} prediction and {len(grids)} prototype tensors"
        )
    head = heads[0][0]
    if head.shape[1] == n:
        pred = head.T
    elif head.shape[0] == n:
        pred = head
    else:  # other head strides: anchors outnumber channels
        pred = head.T if head.shape[1] >= head.shape[0] else head
    pred = np.ascontiguousarray(pred, dtype=np.float32)
    channels = pred.shape[1]

    protos = None
    if task is Task.SEG:
        grid = grids[0][0]
        h4, w4 = input_hw[0] // 4, input_hw[1] // 4
        if grid.shape[:2] == (h4, w4):
            protos = grid
        elif grid.shape[1:] == (h4, w4):
            protos = grid.transpose(1, 2, 0)
        else:
            raise layout_error(task, outputs, input_hw, f"prototypes are not on the {h4}x{w4} grid")
        protos = np.ascontiguousarray(protos, dtype=np.float32)
        extra = protos.shape[2]
    elif task is Task.POSE:
        if kpt_shape is None:
            classes = nc or 1
            if (channels - 4 - classes) % 3 or channels - 4 - classes < 3:
                raise layout_error(task, outputs, input_hw, f"{channels} channels are not 4 + {classes} + 3K")
            kpt_shape = ((channels - 4 - classes) // 3, 3)
        kpt_shape = (int(kpt_shape[0]), int(kpt_shape[1]))
        extra = kpt_shape[0] * kpt_shape[1]
    else:
        extra = 0
    found_nc = channels - 4 - extra
    if found_nc < 1 or (nc is not None and nc != found_nc):
        detail = f"{channels} channels leave {found_nc} classes" + (
            f", expected {nc}" if nc is not None else ""
        )
        raise layout_error(task, outputs, input_hw, detail)
    return pred, protos, found_nc, kpt_shape


def is_normalized(xywh: np.ndarray) -> bool:
    """Heuristic: box centres all within about two input sizes of 0 means normalized coordinates.

    Anchor centres span the whole input, so pixel coordinates reach tens or hundreds.

    Example:
        >>> is_normalized(np.array([[0.5, 0.4, 0.1, 0.2]])), is_normalized(np.array([[128.0, 64.0, 10, 20]]))
        (True, False)
    """
    xywh = np.asarray(xywh)
    return bool(len(xywh) == 0 or np.nanmax(np.abs(xywh[:, :2])) <= 2.0)


def decode_yolo(
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
    agnostic: bool = False,
    classes: Sequence[int] | None = None,
) -> Detections:
    """Decode one image's YOLOv8 outputs (float, dequantized) into original-image detections.

    Args:
        outputs: the model outputs for one image (batch 1).
        task: detect, pose or seg.
        transform: the pre-processing geometry (letterbox or resize) of this image.
        conf: confidence threshold (strict, as Ultralytics).
        iou: NMS IoU threshold.
        max_det: detections kept after NMS.
        max_nms: candidates entering NMS.
        normalized: coordinates are fractions of the input size; None = decide with :func:`is_normalized`.
        nc: number of classes if known (checked against the layout).
        kpt_shape: (K, D) keypoint shape if known; default assumes one class and D = 3.
        multi_label: every class above ``conf`` is a candidate (Ultralytics' val) instead of each
            anchor's best class (Ultralytics' predict).
        agnostic: class-agnostic NMS.
        classes: decode only these classes (filtered before NMS, like Ultralytics' ``classes``).

    Example:
        >>> # outputs, t = TFLiteModel("pose.tflite")(image)
        >>> # det = decode_yolo(outputs, "pose", t, conf=0.001, iou=0.7, max_det=100)
    """
    task = Task(task)
    h, w = transform.input_hw
    pred, protos, nc, kpt_shape = resolve_layout(outputs, task, (h, w), nc, kpt_shape)
    if normalized is None:
        normalized = is_normalized(pred[:, :4])
    gain = np.array([w, h], dtype=np.float32) if normalized else np.ones(2, dtype=np.float32)

    anchors, labels, scores = select_candidates(pred[:, 4 : 4 + nc], conf, multi_label, max_nms, classes)
    rows = pred[anchors]
    centre, size = rows[:, 0:2] * gain, rows[:, 2:4] * gain
    boxes_in = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    keep = nms(boxes_in, scores, None if agnostic else labels, iou, max_det)
    rows, labels, scores = rows[keep], labels[keep], scores[keep]
    boxes = transform.inverse_boxes(boxes_in[keep])

    keypoints = masks = None
    if task is Task.POSE:
        k, d = kpt_shape
        kp = rows[:, 4 + nc : 4 + nc + k * d].reshape(-1, k, d)
        xy = transform.inverse_points(kp[..., :2] * gain)
        h0, w0 = transform.orig_hw
        xy[..., 0] = xy[..., 0].clip(0, w0)
        xy[..., 1] = xy[..., 1].clip(0, h0)
        vis = kp[..., 2:3] if d == 3 else np.ones((*kp.shape[:2], 1), np.float32)
        keypoints = np.concatenate([xy, vis], axis=-1)
    elif task is Task.SEG:
        masks = _masks(rows[:, 4 + nc :], protos, boxes, transform)
    return Detections(boxes, scores, labels, keypoints, masks)


def _masks(
    coeffs: np.ndarray, protos: np.ndarray, boxes: np.ndarray, transform: ImageTransform
) -> np.ndarray:
    """Prototype masks at original size, as Ultralytics' ``process_mask_native``.

    Logits = coefficients x prototypes, resampled from the prototype grid to the original image
    (padding removed), thresholded at 0 (= sigmoid 0.5), then zeroed outside each box.
    """
    h0, w0 = transform.orig_hw
    mh, mw, nm = protos.shape
    logits = (coeffs @ protos.reshape(-1, nm).T).reshape(-1, mh, mw)
    masks = np.zeros((len(logits), h0, w0), dtype=bool)
    for start in range(0, len(logits), MASK_CHUNK):
        masks[start : start + MASK_CHUNK] = transform.inverse_mask(logits[start : start + MASK_CHUNK]) > 0
    cols, rows = np.arange(w0, dtype=np.float32), np.arange(h0, dtype=np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i] &= ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
    return masks
