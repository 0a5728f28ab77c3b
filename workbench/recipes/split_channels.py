"""Channel splitting for per-tensor int8: one convolution becomes a few, each with its own weight scale.

Per-tensor int8 gives every output channel of a convolution the step of its widest channel
(``max |w| / 127``), so narrow channels keep a few levels. Measured on yolo11n-pose 256 with
int8 weights and float activations, that alone costs 0.026 AP (per-channel weights: 0.004), spread
over most of the network's 97 convolutions rather than a few (README).

A convolution's output channels are cut into up to ``groups`` runs so that the summed quantization
noise, ``sum_g n_g · step_g²``, is least; each run becomes its own convolution with its own scale:

- ungrouped convolutions: a run is a *contiguous segment* of the conv's output order
  (:func:`contiguous_runs`, exact dynamic programme), and the parts are concatenated, nothing more
  (:func:`_run_module`). The order itself is free: the conv's weight rows and its readers' weight
  columns are permuted together. Where tensors meet (residual adds, concatenations, chunk splits)
  the writers of one *channel space* share one order (:mod:`workbench.recipes.channel_spaces`,
  :func:`_choose_order`); spaces read by a reshape, attention or an output keep the identity. No
  GATHER, and no op kind a plain per-tensor file lacks (CONV_2D and CONCATENATION only): an NPU
  that takes the plain file takes this one (the former path restored the order with 55 GATHERs,
  which Arm Vela runs on the CPU);
- depthwise convolutions (each output channel reads its own input channel) keep every channel in
  each part, the other runs' weights zero, and the parts are summed: the runs need not be
  contiguous (:func:`channel_groups`), and the MACs of a depthwise are few.

The float model is unchanged (tested to 1e-4 on yolo11n-pose); the file stays all-int8 and
per-tensor. Ungrouped runs start only at multiples of :data:`ALIGN` (16) channels: Ethos-U computes
output depth in blocks of 16, so a 5-channel run costs a whole block (Vela U55-256 NPU time 1.19× →
1.07× plain per-tensor, AP 0.301 → 0.302; docs/recipes.md). A convolution is split only where that
divides its noise by at least ``min_gain`` (the
cost knob: fewer splits, fewer ops; :data:`MIN_GAIN` is the recipe's setting, an
:class:`~workbench.recipes.edits.ExportEdits` ``split_channels`` value another).

What sharing orders costs, measured on yolo11n-pose (:class:`SplitReport`, noise in ``sum n·step²``
summed over the 97 convolutions): unsplit 1.687, split freely into 3 runs 0.394, split along the
shared orders 0.456 (+16 %), at ``min_gain`` 1.5 0.465 (84 convolutions split). Of the +0.062:
the 9 spaces with several writers (C3k2 residuals, C2PSA) +0.040, from +7 % (layer 2) to +172 %
(layer 10: C2PSA's cv1, attention proj and ffn share one order); the attention's qkv, read by a
reshape and so kept in the identity order, +0.009 (+200 %); chunk boundaries the rest.

Why 3 runs: with int8 weights and float activations (yolo11n-pose 256, 450 dev images), per-tensor
weights score 0.291, in 2 runs per conv 0.304, in 3 runs 0.314, per-channel 0.313, fp32 0.318.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

SPLIT_GROUPS = 3
MIN_GAIN = 1.5  # split a conv only where it divides its per-tensor weight noise at least by this
ALIGN = 16  # cut an ungrouped conv's runs only at multiples of this many channels (Ethos-U OFM blocks)
RUN_PENALTY = 0.0  # each run beyond the first costs this fraction of the conv's unsplit noise


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


def contiguous_runs(amax: np.ndarray, groups: int, align: int = 1, penalty: float = 0.0) -> list[np.ndarray]:
    """Positions ``0..n-1`` cut into up to ``groups`` contiguous runs with least ``sum n · max²``.

    The channel order is fixed (shared with other writers of the same tensor, or pinned by a reader
    that cannot be permuted), so a run can only be a segment of it: each run then becomes one
    convolution whose output, concatenated with the others', is already in that order (no gather).
    Exact dynamic programme, O(groups · n²). ``align``: runs start only at multiples of it (the
    last run ends at ``n``), so that every run but the last fills whole NPU output blocks;
    ``penalty``: each run beyond the first adds that fraction of the unsplit cost (fewer runs).

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
    align = max(1, int(align))
    cost = np.full((groups + 1, n + 1), np.inf)
    cut = np.zeros((groups + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for g in range(1, groups + 1):
        for j in range(g, n + 1):
            if j % align and j != n:
                continue  # a run may end only on a block boundary, or at the end
            starts = np.arange(0, j, align)
            candidates = cost[g - 1, starts] + seg[starts, j]
            best = int(np.argmin(candidates))
            cost[g, j], cut[g, j] = candidates[best], starts[best]
    extra = penalty * (seg[0, n] if n else 0.0) * np.arange(groups)
    g = int(np.argmin(cost[1:, n] + extra)) + 1  # fewer runs when more do not help
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


def run_cost(amax: np.ndarray, runs: list[np.ndarray]) -> float:
    """``sum n · max²`` of ``runs`` of ``amax`` (the rounding noise up to the constant ``1/127²``)."""
    return float(sum(len(r) * float(np.max(amax[r])) ** 2 for r in runs))


@dataclass
class SplitReport:
    """What :func:`split_model` did, and what sharing orders cost: per writer its noise ``sum n·step²``
    unsplit, split freely (:func:`channel_groups`) and split along its shared order (the file's)."""

    min_gain: float
    groups: int
    convs: dict[str, dict[str, float]] = field(default_factory=dict)  # name → whole/free/shared/runs
    spaces: list[dict[str, object]] = field(default_factory=list)  # per shared space: its writers, noise

    @property
    def split(self) -> int:
        return sum(1 for c in self.convs.values() if c["runs"] > 1)

    def totals(self) -> dict[str, float]:
        """Noise summed over convolutions: unsplit, free cut, shared-order cut, what the file has."""
        keys = ("whole", "free", "shared", "applied")
        return {k: float(sum(c[k] for c in self.convs.values())) for k in keys}


def _choose_order(
    blocks, amax: dict[str, np.ndarray], groups: int, align: int = 1, penalty: float = 0.0
) -> np.ndarray:
    """One order for a space's writer blocks: of the candidate sorts (each writer's own, and the
    writers' normalized ranges joined by max and by mean), the one whose contiguous cuts cost the
    writers least, each normalized by its unsplit noise."""
    parts = [amax[b.writer][b.start : b.start + b.size] / float(amax[b.writer].max()) for b in blocks]
    stacked = np.stack(parts)
    candidates = [np.argsort(p, kind="stable") for p in parts]
    candidates += [np.argsort(stacked.max(0), kind="stable"), np.argsort(stacked.mean(0), kind="stable")]

    def cost(order):
        return sum(run_cost(p[order], contiguous_runs(p[order], groups, align, penalty)) for p in parts)

    return min(candidates, key=cost)


@functools.cache
def _run_module():
    """The RunConv2d class (built on first use: importing this module does not import torch)."""
    import torch
    from torch import nn

    class RunConv2d(nn.Module):
        """``conv`` as one convolution per run of output channels, each with its own range.

        Ungrouped: the runs are contiguous in ``conv``'s (already permuted) output order and the
        parts are concatenated, nothing more. Depthwise: every part keeps all channels, the other
        runs' weights zero, and the parts are summed (a depthwise conv has few MACs).
        """

        def __init__(self, conv: nn.Conv2d, runs: list[np.ndarray]):
            super().__init__()
            self.depthwise = conv.groups > 1
            self.parts = nn.ModuleList()
            for run in runs:
                index = torch.as_tensor(np.sort(run), dtype=torch.long)
                if not self.depthwise and not np.array_equal(
                    np.sort(run), np.arange(run.min(), run.max() + 1)
                ):
                    raise ValueError("an ungrouped conv's runs must be contiguous")
                part = nn.Conv2d(
                    conv.in_channels, conv.out_channels if self.depthwise else len(index), conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None,
                )  # fmt: skip
                with torch.no_grad():
                    if self.depthwise:
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

        def forward(self, x):
            if self.depthwise:
                return sum(part(x) for part in self.parts)
            return torch.cat([part(x) for part in self.parts], 1)

    return RunConv2d


def _amax(conv) -> np.ndarray:
    return conv.weight.detach().abs().flatten(1).amax(1).double().numpy()


def split_model(
    model,
    example,
    *,
    keep: frozenset[str] = frozenset(),
    groups: int = SPLIT_GROUPS,
    min_gain: float = MIN_GAIN,
    align: int | None = None,
    penalty: float | None = None,
) -> SplitReport:
    """Split every convolution of ``model`` (BatchNorm folded, traceable on ``example`` by
    ``torch.export``) whose per-tensor noise falls by ``min_gain``, with no gather.

    Each channel space (:func:`~workbench.recipes.channel_spaces.trace_channels`) gets one order
    (:func:`_choose_order`; the identity where pinned); writers' rows and readers' columns are
    permuted to it, and a split writer's runs are contiguous segments of its order
    (:func:`contiguous_runs`, with ``align`` / ``penalty``: :data:`ALIGN` / :data:`RUN_PENALTY` when
    None). ``keep``: convolutions to leave whole and unpermuted.
    """
    import torch

    from workbench.recipes.channel_spaces import trace_channels

    align = ALIGN if align is None else align
    penalty = RUN_PENALTY if penalty is None else penalty
    traced = trace_channels(model, example, keep)
    convs = {name: model.get_submodule(name) for name in {*traced.readers, *traced.depthwise}}
    amax = {name: _amax(convs[name]) for name in traced.writers}
    written = [[b for b in blocks if b.writer is not None] for blocks in traced.spaces]
    orders = [
        None if pinned or not blocks else _choose_order(blocks, amax, groups, align, penalty)
        for blocks, pinned in zip(written, traced.pinned, strict=True)
    ]
    report = SplitReport(min_gain, groups)
    new_ids = traced.new_ids(orders, traced.count)
    rows = {name: traced.writer_order(name, orders) for name in traced.writers}
    cols = {name: traced.tensor_order(ids, new_ids) for name, ids in traced.readers.items()}
    rows |= {name: traced.tensor_order(ids, new_ids) for name, ids in traced.depthwise.items()}
    with torch.no_grad():
        for name, conv in convs.items():
            weight = conv.weight
            if name in rows:
                weight = weight[torch.as_tensor(rows[name])]
                if conv.bias is not None:
                    conv.bias.copy_(conv.bias[torch.as_tensor(rows[name])])
            if name in cols and name not in traced.depthwise:
                weight = weight[:, torch.as_tensor(cols[name])]
            conv.weight.copy_(weight)
    run_conv = _run_module()
    for name in [*traced.writers, *traced.depthwise]:
        conv = convs[name]
        a = _amax(conv)
        free = channel_groups(a, groups)
        runs = free if name in traced.depthwise else contiguous_runs(a, groups, align, penalty)
        gain = noise_gain(a, runs) if len(runs) > 1 else 1.0
        applied = runs if gain >= min_gain else [np.arange(len(a))]
        report.convs[name] = {
            "whole": run_cost(a, [np.arange(len(a))]) / 127**2,
            "free": run_cost(a, free) / 127**2,
            "shared": run_cost(a, runs) / 127**2,
            "applied": run_cost(a, applied) / 127**2,
            "runs": len(applied),
        }
        if len(applied) > 1:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, run_conv(conv, applied))
    for blocks, pinned in zip(traced.spaces, traced.pinned, strict=True):
        names = sorted({b.writer for b in blocks if b.writer is not None})
        if len(names) > 1 or pinned and names:
            report.spaces.append({
                "writers": names, "pinned": pinned,
                "free": sum(report.convs[n]["free"] for n in names),
                "shared": sum(report.convs[n]["shared"] for n in names),
            })  # fmt: skip
    return report
