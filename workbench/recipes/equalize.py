"""Cross-layer equalization (Nagel et al., 2019, "Data-Free Quantization") on an Ultralytics model.

For two convolutions in a row, ``y = W2 · f(W1 · x + b1) + b2``, output channel ``i`` of the first
is divided by ``s_i`` and input channel ``i`` of the second multiplied by it, with
``s_i = sqrt(r1_i / r2_i)`` (``r1_i``, ``r2_i``: the channel's largest absolute weight in each).
Both then have channel ranges ``sqrt(r1_i · r2_i)``: per-tensor weight scales stop being set by one
wide channel. The network is unchanged when ``f`` is positively homogeneous (ReLU:
``f(x / s) = f(x) / s``); for SiLU it is only approximately so, which is why its AP must be measured.
Bias correction is not applied: its expected-error term needs per-channel input statistics the
recipe does not collect.

Pairs: each ``Bottleneck``'s ``cv1 → cv2`` and consecutive ungrouped convolutions of a head
``nn.Sequential`` (box/class/keypoint branches); BatchNorm is folded first.
"""

from __future__ import annotations


def equalize_pair(first, second) -> None:
    """Rescale ``first``'s output channels and ``second``'s input channels in place (both ``nn.Conv2d``)."""
    import torch

    with torch.no_grad():
        w1, w2 = first.weight.double(), second.weight.double()
        r1 = w1.abs().flatten(1).amax(1)
        r2 = w2.abs().transpose(0, 1).flatten(1).amax(1)
        s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
        first.weight.copy_((w1 / s[:, None, None, None]).to(first.weight.dtype))
        if first.bias is not None:
            first.bias.copy_((first.bias.double() / s).to(first.bias.dtype))
        second.weight.copy_((w2 * s[None, :, None, None]).to(second.weight.dtype))


def conv_pairs(model) -> list[tuple]:
    """(first, second) ``nn.Conv2d`` pairs of a fused Ultralytics model that equalization may rescale."""
    from torch import nn
    from ultralytics.nn.modules.block import Bottleneck

    def conv(m):
        inner = getattr(m, "conv", m)
        return inner if isinstance(inner, nn.Conv2d) and inner.groups == 1 else None

    pairs = []
    for module in model.modules():
        if isinstance(module, Bottleneck):
            candidates = [(module.cv1, module.cv2)]
        elif isinstance(module, nn.Sequential):
            items = list(module)
            candidates = list(zip(items, items[1:], strict=False))
        else:
            continue
        for a, b in candidates:
            first, second = conv(a), conv(b)
            if first is not None and second is not None and first.out_channels == second.in_channels:
                pairs.append((first, second))
    return pairs


def equalize_model(model) -> int:
    """Fold BatchNorm, then equalize every pair of :func:`conv_pairs`; returns the number of pairs."""
    model.fuse(verbose=False)
    pairs = conv_pairs(model)
    for first, second in pairs:
        equalize_pair(first, second)
    return len(pairs)
