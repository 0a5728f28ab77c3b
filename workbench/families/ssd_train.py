"""Fine-tune ST's SSD in tf_keras: anchor matching and the SSD loss with hard-negative mining.

Targets (per image): every anchor whose best IoU with a ground-truth box reaches
:data:`MATCH_IOU` is positive, and each ground-truth box also claims its best anchor (so small
people are never left unmatched). Positives regress the corner offsets that
:func:`workbench.decode.ssd.decode_ssd` decodes: ``(gt - anchor) / anchor size`` per corner.

Loss (Liu et al., SSD, 2016): cross-entropy of the model's softmax over positives and the hardest
``NEG_RATIO`` x as many negatives, plus smooth-L1 of the positives' offsets, divided by the number
of positives. ST's own training uses a focal loss over all anchors instead of hard-negative mining
(stm32ai-modelzoo ``training/loss.py``); either trains the same head.

Batch normalization runs in inference mode: its statistics from ST's large-batch training are
kept, which small fine-tuning batches would otherwise overwrite.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, sha256_file

MATCH_IOU = 0.5
NEG_RATIO = 3
LOC_WEIGHT = 1.0
DEFAULT_LR = 1e-4


@dataclass
class FineTuneResult:
    """One fine-tuning run of an SSD ``.h5``."""

    weights: str
    source: str
    epochs: int
    batch: int
    lr: float
    images: int
    steps: int
    loss_per_epoch: list[float]
    first_batch_loss: float
    last_batch_loss: float
    seconds: float
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps < 1:
            raise ValueError("a fine-tuning run has at least one epoch and one step")
        if not all(np.isfinite(self.loss_per_epoch)):
            raise ValueError(f"loss is not finite: {self.loss_per_epoch}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- targets --------------------------------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy.

    Example:
        >>> iou_matrix(np.array([[0, 0, 1, 1.0]]), np.array([[0, 0, 1, 0.5]])).round(2).tolist()
        [[0.5]]
    """
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def encode(gt: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Corner offsets that move ``anchors`` onto ``gt`` (both (A, 4) normalized xyxy)."""
    size = np.concatenate([anchors[:, 2:] - anchors[:, :2]] * 2, axis=1)
    return ((gt - anchors) / size).astype(np.float32)


def match(anchors: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class target (A,) (0 = background) and offset target (A, 4) for one image.

    Example:
        >>> anchors = np.array([[0, 0, .5, .5], [.5, .5, 1, 1]], np.float32)
        >>> cls, off = match(anchors, np.array([[0, 0, .4, .5]]), np.array([1]))
        >>> cls.tolist(), off[0].round(2).tolist()
        ([1, 0], [0.0, 0.0, -0.2, 0.0])
    """
    n = len(anchors)
    if len(boxes) == 0:
        return np.zeros(n, np.int32), np.zeros((n, 4), np.float32)
    iou = iou_matrix(anchors, boxes)
    best_gt, best_iou = iou.argmax(1), iou.max(1)
    positive = best_iou >= MATCH_IOU
    for g, a in enumerate(iou.argmax(0)):  # each box claims its best anchor
        best_gt[a], positive[a] = g, True
    cls = np.where(positive, labels[best_gt], 0).astype(np.int32)
    return cls, encode(boxes[best_gt], anchors)


# ---- loss -----------------------------------------------------------------------------------------
def ssd_loss(scores, offsets, cls_target, box_target):
    """(total, confidence, localization) SSD loss of a batch, each a scalar tensor.

    ``scores`` are the model's softmax probabilities (B, A, C); ``offsets`` (B, A, 4).
    """
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()

    positive = tf.cast(cls_target > 0, tf.float32)
    n_pos = tf.reduce_sum(positive, axis=1)
    prob = tf.gather(scores, cls_target, axis=2, batch_dims=2)
    ce = -tf.math.log(tf.clip_by_value(prob, 1e-7, 1.0))
    neg_ce = ce * (1.0 - positive)
    n_neg = tf.minimum(NEG_RATIO * tf.maximum(n_pos, 1.0), tf.reduce_sum(1.0 - positive, axis=1))
    rank = tf.argsort(tf.argsort(-neg_ce, axis=1, stable=True), axis=1, stable=True)
    hard = tf.cast(tf.cast(rank, tf.float32) < n_neg[:, None], tf.float32) * (1.0 - positive)
    conf = tf.reduce_sum(ce * positive) + tf.reduce_sum(ce * hard)
    diff = tf.abs(offsets - box_target)
    smooth = tf.where(diff < 1.0, 0.5 * diff**2, diff - 0.5)
    loc = tf.reduce_sum(tf.reduce_sum(smooth, axis=2) * positive)
    norm = tf.maximum(tf.reduce_sum(n_pos), 1.0)
    return (conf + LOC_WEIGHT * loc) / norm, conf / norm, loc / norm


# ---- data -----------------------------------------------------------------------------------------
class CocoBoxes:
    """Images of a COCO file prepared as the model expects, with normalized person boxes."""

    def __init__(
        self, ann: str | Path, images: str | Path, imgsz: int, preprocessing, max_images: int | None = None
    ):
        from workbench.config import Task
        from workbench.data.coco import load_coco

        self.dataset = load_coco(ann, images, task=Task.DETECT)
        self.entries = list(self.dataset.images)[:max_images] if max_images else list(self.dataset.images)
        if not self.entries:
            raise WorkbenchError("has no images to fine-tune on", path=ann)
        self.imgsz, self.pre = imgsz, preprocessing
        person = {c["id"] for c in self.dataset.categories if c.get("name") == "person"}
        self.category = person or {c["id"] for c in self.dataset.categories}

    def __len__(self) -> int:
        return len(self.entries)

    def item(self, index: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        from workbench.data.images import load_image
        from workbench.preprocess import resize

        entry = self.entries[index]
        image, _ = resize(load_image(self.dataset.image_path(entry)), self.imgsz, self.pre.interpolation)
        lo, hi = self.pre.input_range
        x = (lo + image.astype(np.float32) / 255.0 * (hi - lo)).astype(np.float32)
        w, h = entry["width"], entry["height"]
        boxes = []
        for ann in self.dataset.annotations_by_image[entry["id"]]:
            bx, by, bw, bh = ann["bbox"]
            if ann.get("iscrowd") or ann["category_id"] not in self.category or bw < 1 or bh < 1:
                continue
            boxes.append([bx / w, by / h, (bx + bw) / w, (by + bh) / h])
        boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
        if flip:
            x = x[:, ::-1]
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)
        return x, boxes

    def batch(self, indices: np.ndarray, flips: np.ndarray, anchors: np.ndarray):
        xs, cls, off = [], [], []
        for i, f in zip(indices, flips, strict=True):
            x, boxes = self.item(int(i), bool(f))
            c, o = match(anchors, boxes, np.ones(len(boxes), np.int64))
            xs.append(x), cls.append(c), off.append(o)
        return np.stack(xs), np.stack(cls), np.stack(off)


# ---- training -------------------------------------------------------------------------------------
def model_anchors(model) -> np.ndarray:
    """The (A, 4) anchors the model outputs (they do not depend on the image)."""
    size = model.inputs[0].shape[1]
    return np.asarray(model(np.zeros((1, size, size, 3), np.float32), training=False)[2][0])


def make_step(model, optimizer):
    """A compiled training step: (x, cls, off) -> (total, conf, loc) before the update."""
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()

    @tf.function(reduce_retracing=True)
    def step(x, cls, off):
        with tf.GradientTape() as tape:
            scores, offsets = model(x, training=False)[:2]
            total, conf, loc = ssd_loss(scores, offsets, cls, off)
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return total, conf, loc

    return step


def fine_tune(
    weights: str | Path,
    ann: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    epochs: int = 1,
    batch: int = 16,
    seed: int = 0,
    lr: float = DEFAULT_LR,
    max_images: int | None = None,
    progress: bool = True,
) -> FineTuneResult:
    """Fine-tune an SSD ``.h5`` on a COCO box dataset with Adam; writes ``out`` (.h5) atomically.

    Horizontal flips are the only augmentation; the order of images and flips depends on ``seed``.
    """
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()

    from workbench.families.ssd_model import load_ssd
    from workbench.families.st_config import config_beside, load_st_config

    if epochs < 1 or batch < 1:
        raise WorkbenchError(f"epochs and batch must be positive, got {epochs} and {batch}")
    config = load_st_config(config_beside(weights))
    model = load_ssd(weights, config)
    imgsz = int(model.inputs[0].shape[1])
    data = CocoBoxes(ann, images, imgsz, config.preprocessing, max_images)
    anchors = model_anchors(model) if config.anchors is None else config.anchors
    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    import tf_keras

    optimizer = tf_keras.optimizers.Adam(learning_rate=lr)
    step = make_step(model, optimizer)
    started = time.perf_counter()
    per_epoch, first, steps = [], None, 0
    n_batches = int(np.ceil(len(data) / batch))
    bar = tqdm(total=epochs * n_batches, desc=f"fine-tune SSD {imgsz}", disable=not progress)
    for _ in range(epochs):
        order, flips = rng.permutation(len(data)), rng.random(len(data)) < 0.5
        losses = []
        for b in range(n_batches):
            sl = slice(b * batch, (b + 1) * batch)
            x, cls, off = data.batch(order[sl], flips[sl], anchors)
            total, _, _ = step(tf.constant(x), tf.constant(cls), tf.constant(off))
            losses.append(float(total))
            first = losses[0] if first is None else first
            steps += 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            bar.update()
        per_epoch.append(float(np.mean(losses)))
    bar.close()
    out = Path(out)
    with atomic_path(out) as tmp:
        model.save(str(tmp), save_format="h5", include_optimizer=False)
    return FineTuneResult(
        weights=str(out),
        source=str(weights),
        epochs=epochs,
        batch=batch,
        lr=lr,
        images=len(data),
        steps=steps,
        loss_per_epoch=per_epoch,
        first_batch_loss=float(first),
        last_batch_loss=losses[-1],
        seconds=round(time.perf_counter() - started, 1),
        sha256=sha256_file(out),
    )
