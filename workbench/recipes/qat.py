"""Quantization-aware fine-tuning by self-distillation, on a fused Ultralytics model before export.

Per-tensor int8 gives every output channel of a convolution the step of its widest channel, so
narrow channels keep a few levels; no range setting gives them back. Fine-tuning with the int8
weights in the forward pass lets the network move its weights to where that grid costs least.

- Every ``nn.Conv2d`` weight is fake-quantized as the TFLite converter will quantize it (symmetric
  int8, max-abs scale, per tensor or per channel: :func:`workbench.recipes.weight_rounding.fake_quantize_weights`),
  with a straight-through gradient.
- The target is the float model itself on the calibration images (random horizontal flips), so no
  labels are needed and 400 images do not pull the network away from what COCO taught it: the
  student matches the teacher's neck features and its pre-decode outputs per stride level (boxes and
  keypoint offsets in stride units, scores, visibilities), each error scaled by the teacher's variance.
- At the end the weights are snapped to their int8 grid, so the converter's rounding loses nothing.

Steps, batch, learning rate and thread count are fixed (``QAT_*``), so a recipe name means one file.
Measured on yolo11n-pose 256 per-tensor (split-levels + calib-mse, README): lr 1e-5 gains +0.003 to
+0.009 AP, the spread of two runs that differ only in float summation order; 3e-5 and 1e-4 lose AP.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

QAT_IMAGES = 400
QAT_STEPS = 300
QAT_BATCH = 8
QAT_LR = 1e-5
QAT_THREADS = (
    1  # fixed, as float sums (hence the file) depend on it; a 2-thread pool crawls beside other jobs
)
QAT_TASKS = ("pose", "detect")


def _fake_quant(per_channel: bool):
    import torch

    class FakeQuant(torch.nn.Module):
        """int8 round trip in the forward pass, identity in the backward pass."""

        def forward(self, w):
            a = w.detach().abs()
            scale = (a.amax(dim=tuple(range(1, w.dim())), keepdim=True) if per_channel else a.max()) / 127.0
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)
            q = torch.clamp(torch.round(w / scale), -127, 127) * scale
            return w + (q - w).detach()

    return FakeQuant()


def _distillation_targets(model, x):
    """Neck features (the head's inputs) and the split head's per-level outputs for batch ``x``."""
    from workbench.heads import split_head

    features = []
    hook = model.model[-1].register_forward_pre_hook(lambda _m, args: features.extend(args[0]))
    try:
        with split_head(levels=True):
            outputs = model(x)[0]
    finally:
        hook.remove()
    return [*features, *outputs]


def finetune_int8(
    model, batches: Sequence[np.ndarray], per_channel: bool, progress: bool = True
) -> list[float]:
    """Fold BatchNorm, fine-tune every conv under int8 weights towards the float model, snap; the losses.

    ``batches`` are (1, S, S, 3) calibration images in the model's input range.
    """
    import torch
    from torch.nn.utils import parametrize
    from tqdm.auto import tqdm

    model.fuse(verbose=False)
    model.eval()  # BatchNorm is folded; eval keeps the head's inference path the export takes
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    for p in model.parameters():
        p.requires_grad_(True)
    for conv in convs:
        parametrize.register_parametrization(conv, "weight", _fake_quant(per_channel))
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate(batches).transpose(0, 3, 1, 2)))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=QAT_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, QAT_STEPS)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(QAT_THREADS)
    losses = []
    try:
        for _ in tqdm(range(QAT_STEPS), desc="qat", disable=not progress, mininterval=5):
            pick = torch.randint(0, len(images), (QAT_BATCH,), generator=generator)
            flip = torch.rand(QAT_BATCH, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], images[pick].flip(3), images[pick])
            with torch.no_grad():
                targets = _distillation_targets(teacher, x)
            outputs = _distillation_targets(model, x)
            loss = sum(
                ((s - t) ** 2).mean() / (t.var() + 1e-8) for s, t in zip(outputs, targets, strict=True)
            )
            loss = loss / len(targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
        for conv in convs:  # keeps the snapped (int8-grid) weight
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        for p in model.parameters():
            p.requires_grad_(False)
    return losses
