"""Empirical bias correction (Nagel et al., 2019, "Data-Free Quantization", §4.2) on a fused
Ultralytics model, before export.

Int8 weights ``Ŵ = W + ΔW`` shift each convolution's expected output by ``E[ΔW ∗ x]``, a per-channel
bias the network was never trained with, largest where per-tensor scales round small channels
coarsely. For every ``nn.Conv2d`` this module measures that shift on calibration inputs (the
float network's own activations, padding included: ``mean over images and positions of
conv(x, ΔW)``) and subtracts it from the conv's bias. ``ΔW`` is the TFLite converter's symmetric
int8 rounding at the scheme's granularity (:func:`workbench.recipes.weight_rounding.fake_quantize_weights`), so the
correction matches the file the converter writes; with ``weights-octav`` the clipping differs and
the correction is only approximate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BIAS_CORRECTION_IMAGES = 32


def correct_biases(model, batches: Sequence[np.ndarray], per_channel: bool) -> int:
    """Fold BatchNorm, then subtract each conv's int8-weight output shift from its bias; how many convs."""
    import torch

    from workbench.recipes.weight_rounding import fake_quantize_weights

    model.fuse(verbose=False)
    model.eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    deltas, sums, counts = {}, {}, {}
    for conv in convs:
        w = conv.weight.detach().double().numpy()
        deltas[conv] = torch.from_numpy(fake_quantize_weights(w, per_channel=per_channel) - w)
        sums[conv], counts[conv] = torch.zeros(conv.out_channels, dtype=torch.float64), 0

    def measure(conv, inputs, _output):
        shift = torch.nn.functional.conv2d(
            inputs[0].double(), deltas[conv], None, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        sums[conv] += shift.sum(dim=(0, 2, 3))
        counts[conv] += shift.shape[0] * shift.shape[2] * shift.shape[3]

    hooks = [conv.register_forward_hook(measure) for conv in convs]
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # see export.keypoint_offset_percentiles: a 2-thread pool crawls beside other jobs
    try:
        with torch.no_grad():
            for batch in batches[:BIAS_CORRECTION_IMAGES]:
                model(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))
    finally:
        torch.set_num_threads(threads)
        for hook in hooks:
            hook.remove()
    corrected = 0
    with torch.no_grad():
        for conv in convs:
            if not counts[conv]:
                continue
            shift = (sums[conv] / counts[conv]).to(conv.weight.dtype)
            if conv.bias is None:
                conv.bias = torch.nn.Parameter(-shift)
            else:
                conv.bias -= shift
            corrected += 1
    return corrected
