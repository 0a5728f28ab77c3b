"""Weight rounding maths: how the TFLite converter's symmetric int8 rounds a weight tensor, and what
that costs each convolution of an Ultralytics model (per tensor, per channel, after ``split-channels``).

Used by the recipes that learn against that rounding (:mod:`.bias_correct`, :mod:`.qat`) and as a
teaching aid in the notebooks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.safeload import check_weights


def fake_quantize_weights(weights: np.ndarray, per_channel: bool, axis: int = 0) -> np.ndarray:
    """Symmetric int8 round trip of a weight tensor, as the TFLite converter quantizes weights.

    Per-channel takes one scale per slice along ``axis`` (output channels); per-tensor one scale.

    Example:
        >>> w = np.array([[1.0, -0.5], [0.01, 0.02]])
        >>> float(np.abs(fake_quantize_weights(w, per_channel=True) - w).max()) < 1e-3
        True
    """
    weights = np.asarray(weights, dtype=np.float64)
    reduce = tuple(i for i in range(weights.ndim) if i != axis) if per_channel else None
    scale = np.max(np.abs(weights), axis=reduce, keepdims=per_channel) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    return np.clip(np.round(weights / scale), -127, 127) * scale


def weight_quantization_error(weights_pt: str | Path, layers: int | None = None):
    """SQNR (dB) of int8 weights per-tensor, per-channel and per-tensor after ``split-channels``, for
    the first ``layers`` (default all) ungrouped convolutions.

    A teaching aid: shows how much resolution per-tensor weights lose where channel ranges differ,
    and how much the ``split-channels`` recipe's runs (:mod:`workbench.recipes.split_channels`,
    each run its own per-tensor scale) give back. Returns a DataFrame with one row per convolution
    (BatchNorm folded in, as at export).
    """
    import pandas as pd
    import torch
    from ultralytics import YOLO

    from workbench.recipes.split_channels import MIN_GAIN, SPLIT_GROUPS, channel_groups, noise_gain

    path = Path(weights_pt)
    if not path.is_file():
        raise WorkbenchError("weights file not found", path=path)
    check_weights(path)
    model = YOLO(str(path)).model.fuse()
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups == 1:
            w = module.weight.detach().numpy()
            ranges = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            signal = float(np.sum(w.astype(np.float64) ** 2))
            row = {
                "layer": name,
                "out_channels": w.shape[0],
                "channel_range_ratio": float(ranges.max() / max(ranges.min(), 1e-12)),
            }
            runs = channel_groups(ranges, SPLIT_GROUPS)
            if len(runs) == 1 or noise_gain(ranges, runs) < MIN_GAIN:
                runs = [np.arange(w.shape[0])]  # the recipe leaves this conv whole
            split = np.empty_like(w, dtype=np.float64)
            for run in runs:
                split[run] = fake_quantize_weights(w[run], per_channel=False)
            rounded = {
                "per_tensor_db": fake_quantize_weights(w, False),
                "per_channel_db": fake_quantize_weights(w, True),
                "split_channels_db": split,
            }
            for label, values in rounded.items():
                noise = float(np.sum((values - w) ** 2))
                row[label] = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
            rows.append(row)
            if layers is not None and len(rows) == layers:
                break
    return pd.DataFrame(rows).round(2)
