"""Cross-layer equalization (Nagel et al., 2019) on a Keras MobileNet-style model (ST's SSD).

For each depthwise → BatchNorm → ReLU(6) → 1×1 conv chain with no branch in between, channel ``i``
of the depthwise conv (its BatchNorm folded: ``γ_i/σ_i`` scales it) is divided by ``s_i`` and
input channel ``i`` of the pointwise conv multiplied by it, ``s_i = sqrt(r1_i / r2_i)`` (each
side's largest absolute folded weight for that channel). Both then have range
``sqrt(r1_i · r2_i)``, and per-tensor weight scales stop being set by one wide depthwise channel:
the per-tensor collapse DFQ describes for MobileNets (ST's 192 SSD has depthwise channel-range
ratios up to 2e8).

The rescaling goes into the BatchNorm's ``γ, β`` (the converter folds them into the depthwise
conv) and the pointwise kernel. ReLU is scale-equivariant; ReLU6 is not, so its cap moves with the
channel: ``min(relu(x), 6/s_i)``, a per-channel MINIMUM. The float network is unchanged (to float
rounding, tested): the "exact for ReLU networks" case.

Only depthwise → pointwise pairs: equalizing the convolution *before* each depthwise as well (DFQ's
triplets) moves the channel spread into the activations between them, which TFLite quantizes per
tensor; on ST's 192 SSD per-tensor box AP fell to 0.006 that way (0.112 with these pairs alone).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def dw_pw_chains(model) -> list[tuple[Any, Any, Any, Any]]:
    """(depthwise, batchnorm, relu, pointwise) layer chains of ``model`` with no branch in between."""
    chains = []
    for layer in model.layers:
        if type(layer).__name__ != "DepthwiseConv2D" or layer.depth_multiplier != 1:
            continue
        chain, current = [layer], layer
        for kind in ("BatchNormalization", "ReLU", "Conv2D"):
            nodes = current._outbound_nodes  # noqa: SLF001  (Keras keeps the graph edges here)
            if len(nodes) != 1 or type(nodes[0].outbound_layer).__name__ != kind:
                break
            current = nodes[0].outbound_layer
            chain.append(current)
        if len(chain) == 4 and chain[3].kernel_size == (1, 1) and chain[3].groups == 1:
            chains.append(tuple(chain))
    return chains


def equalize_keras_model(model) -> int:
    """Equalize every :func:`dw_pw_chains` chain of ``model`` in place; returns how many."""
    from workbench.recipes.st_optimize import set_caps

    chains = dw_pw_chains(model)
    for depthwise, norm, relu, pointwise in chains:
        if relu.threshold != 0 or relu.negative_slope != 0:
            raise ValueError(f"{relu.name}: only ReLU / ReLU6 are scale-equivariant")
        gamma, beta, mean, var = norm.get_weights()
        r1 = np.abs(depthwise.get_weights()[0][:, :, :, 0]).max(axis=(0, 1)) * np.abs(
            gamma / np.sqrt(var + norm.epsilon)
        )
        kernel, *rest = pointwise.get_weights()
        r2 = np.abs(kernel).max(axis=(0, 1, 3))
        s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-12)), 1.0).astype(np.float32)
        norm.set_weights([gamma / s, beta / s, mean, var])
        pointwise.set_weights([kernel * s[None, None, :, None], *rest])
        if relu.max_value is not None:
            set_caps(relu, (float(relu.max_value) / s).astype(np.float32))
    return len(chains)
