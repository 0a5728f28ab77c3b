"""Channel splitting for per-tensor int8: one convolution becomes a few, each with its own weight scale.

Per-tensor int8 gives every output channel of a convolution the step of its widest channel
(``max |w| / 127``), so narrow channels keep a few levels. Measured on yolo11n-pose 256 with
int8 weights and float activations, that alone costs 0.026 AP (per-channel weights: 0.004), spread
over most of the network's 97 convolutions rather than a few (README).

This recipe sorts a convolution's output channels by their largest absolute weight and cuts them
into up to ``groups`` runs so that the summed quantization noise, ``sum_g n_g · step_g²``, is least
(:func:`channel_groups`, exact dynamic programme). Each run becomes its own convolution:

- ungrouped convolutions compute only their run's channels; the runs are concatenated and put back
  in the original channel order by one gather (:class:`SplitConv2d`): the same weights, MACs and
  outputs, one concatenation and one gather more per split;
- depthwise convolutions (each output channel reads its own input channel) keep every channel in
  each part, the others' weights zero, and the parts are summed: the MACs of a depthwise are few.

The float model is unchanged (both forms are exact); the file stays all-int8 and per-tensor,
which is what an NPU that is fast only per-tensor runs. A convolution is split only where that
lowers its noise by at least ``MIN_GAIN``.

Why 3 runs: with int8 weights and float activations (yolo11n-pose 256, 450 dev images), per-tensor
weights score 0.291, in 2 runs per conv 0.304, in 3 runs 0.314, per-channel 0.313, fp32 0.318.
"""

from __future__ import annotations

import numpy as np

SPLIT_GROUPS = 3
MIN_GAIN = 1.5  # split a conv only where it divides its per-tensor weight noise at least by this


def channel_groups(amax: np.ndarray, groups: int) -> list[np.ndarray]:
    """Channel indices in up to ``groups`` runs of ascending ``amax`` with least ``sum n · max²``.

    Example:
        >>> [g.tolist() for g in channel_groups(np.array([1.0, 8.0, 1.1, 9.0]), 2)]
        [[0, 2], [1, 3]]
    """
    order = np.argsort(amax, kind="stable")
    a = np.asarray(amax, dtype=np.float64)[order]
    n = len(a)
    groups = max(1, min(groups, n))
    # cost[g][j]: least noise of the first j sorted channels in g runs; a run's cost is its
    # length times the square of its last (largest) value
    cost = np.full((groups + 1, n + 1), np.inf)
    cut = np.zeros((groups + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for g in range(1, groups + 1):
        for j in range(g, n + 1):
            starts = np.arange(g - 1, j)
            candidates = cost[g - 1, starts] + (j - starts) * a[j - 1] ** 2
            best = int(np.argmin(candidates))
            cost[g, j], cut[g, j] = candidates[best], starts[best]
    g = int(np.argmin(cost[1:, n])) + 1  # fewer runs when more do not help
    bounds, j = [n], n
    for level in range(g, 0, -1):
        j = int(cut[level, j])
        bounds.append(j)
    bounds = bounds[::-1]
    return [order[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def contiguous_runs(amax: np.ndarray, groups: int) -> list[np.ndarray]:
    """Positions ``0..n-1`` cut into up to ``groups`` contiguous runs with least ``sum n · max²``.

    The channel order is fixed (shared with other writers of the same tensor, or pinned by a reader
    that cannot be permuted), so a run can only be a segment of it: each run then becomes one
    convolution whose output, concatenated with the others', is already in that order (no gather).
    Exact dynamic programme, O(groups · n²).

    Example:
        >>> [r.tolist() for r in contiguous_runs(np.array([1.0, 1.1, 8.0, 9.0]), 2)]
        [[0, 1], [2, 3]]
        >>> [r.tolist() for r in contiguous_runs(np.array([1.0, 8.0, 1.1, 9.0]), 2)]
        [[0], [1, 2, 3]]
    """
    a = np.asarray(amax, dtype=np.float64) ** 2
    n = len(a)
    groups = max(1, min(groups, n))
    # seg[i, j]: cost of the run i..j-1 (its length times its largest value squared)
    seg = np.full((n + 1, n + 1), np.inf)
    for i in range(n):
        running = np.maximum.accumulate(a[i:])
        seg[i, i + 1 :] = np.arange(1, n - i + 1) * running
    cost = np.full((groups + 1, n + 1), np.inf)
    cut = np.zeros((groups + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for g in range(1, groups + 1):
        for j in range(g, n + 1):
            starts = np.arange(g - 1, j)
            candidates = cost[g - 1, starts] + seg[starts, j]
            best = int(np.argmin(candidates))
            cost[g, j], cut[g, j] = candidates[best], starts[best]
    g = int(np.argmin(cost[1:, n])) + 1  # fewer runs when more do not help
    bounds, j = [n], n
    for level in range(g, 0, -1):
        j = int(cut[level, j])
        bounds.append(j)
    bounds = bounds[::-1]
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def noise_gain(amax: np.ndarray, runs: list[np.ndarray]) -> float:
    """Per-tensor weight noise of the whole conv divided by that of its runs (1.0: no gain)."""
    whole = len(amax) * float(np.max(amax)) ** 2
    split = sum(len(r) * float(np.max(amax[r])) ** 2 for r in runs)
    return whole / split if split > 0 else 1.0


def _split_module():
    import torch
    from torch import nn

    class SplitConv2d(nn.Module):
        """``conv`` as one convolution per run of output channels (see the module docstring)."""

        def __init__(self, conv: nn.Conv2d, runs: list[np.ndarray], restore: bool = True):
            super().__init__()
            self.depthwise = conv.groups > 1
            if conv.groups > 1 and conv.groups != conv.in_channels:
                raise ValueError("grouped convolutions other than depthwise are not split")
            self.parts = nn.ModuleList()
            for run in runs:
                index = torch.as_tensor(np.sort(run), dtype=torch.long)
                part = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels if self.depthwise else len(index),
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    bias=conv.bias is not None,
                )
                with torch.no_grad():
                    if self.depthwise:  # the other channels' weights and biases are zero
                        part.weight.zero_()
                        part.weight[index] = conv.weight[index]
                        if conv.bias is not None:
                            part.bias.zero_()
                            part.bias[index] = conv.bias[index]
                    else:
                        part.weight.copy_(conv.weight[index])
                        if conv.bias is not None:
                            part.bias.copy_(conv.bias[index])
                self.parts.append(part)
            order = torch.as_tensor(np.concatenate([np.sort(r) for r in runs]), dtype=torch.long)
            # concatenated → original order; None where the one consumer's input channels were permuted instead
            self.restore = torch.argsort(order) if restore and not self.depthwise else None

        def forward(self, x):
            if self.depthwise:
                return sum(part(x) for part in self.parts)
            y = torch.cat([part(x) for part in self.parts], 1)
            return y if self.restore is None else y.index_select(1, self.restore)

    return SplitConv2d


def split_model(model, groups: int = SPLIT_GROUPS, min_gain: float = MIN_GAIN) -> int:
    """Fold BatchNorm, then split every convolution whose per-tensor noise falls by ``min_gain``; the count.

    Where a split convolution's output has one reader, a convolution (:func:`conv_pairs`: a
    bottleneck's or a head branch's next conv), that reader's input channels are permuted to the
    concatenated order instead of gathering back to the original order.
    """
    import torch
    from torch import nn

    from workbench.recipes.equalize import conv_pairs

    split_conv = _split_module()
    model.fuse(verbose=False)
    outputs = _head_output_convs(model)
    consumer = {id(first): second for first, second in conv_pairs(model)}  # the only reader of first
    targets = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if not isinstance(child, nn.Conv2d) or id(child) in outputs:
                continue
            if child.groups > 1 and child.groups != child.in_channels:
                continue
            amax = child.weight.detach().abs().flatten(1).amax(1).double().numpy()
            runs = channel_groups(amax, groups)
            if len(runs) > 1 and noise_gain(amax, runs) >= min_gain:
                targets.append((parent, name, child, runs))
    for _parent, _name, child, runs in targets:  # consumers first take their permuted inputs
        reader = consumer.get(id(child))
        if reader is not None and child.groups == 1:
            order = np.concatenate([np.sort(r) for r in runs])
            with torch.no_grad():
                reader.weight.copy_(reader.weight[:, order])
    for parent, name, child, runs in targets:
        permuted = child.groups == 1 and id(child) in consumer
        setattr(parent, name, split_conv(child, runs, restore=not permuted))
    return len(targets)


def _head_output_convs(model) -> set[int]:
    """ids of the detection head's last convolutions: the split head cuts their rows by quantity
    itself (:func:`workbench.heads.split_head`), and its decode reads them as plain convolutions."""
    head = model.model[-1]
    return {
        id(branch[-1])
        for attr in ("cv2", "cv3", "cv4", "cv5")
        for branch in getattr(head, attr, ())
        if hasattr(branch, "__getitem__")
    }
