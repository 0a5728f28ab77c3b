"""The split-channels recipe on a Keras model (ST's SSD): per-tensor convolutions split by channel range.

Same idea as :mod:`workbench.recipes.split_channels` (which also says why): each convolution's
output channels, in runs of similar largest weight (:func:`channel_groups`), become separate
convolutions, each with its own per-tensor int8 scale. Here the BatchNorm after a convolution is
folded into it first (the converter would fold it into the unsplit convolution; it cannot fold
into the parts), and the convolution's ``call`` is replaced, as :mod:`workbench.recipes.equalize_keras`
replaces ReLU6's, so the exported graph holds the parts:

- ``Conv2D``: one convolution per run, concatenated, one gather back to the channel order;
- ``DepthwiseConv2D``: one depthwise convolution per run with the other channels zeroed, summed
  with ADDs (the converter has no int8 ADD_N).

The float network is unchanged (tested). With ``equalize`` the equalization runs first.
"""

from __future__ import annotations

import numpy as np

from workbench.recipes.split_channels import MIN_GAIN, SPLIT_GROUPS, channel_groups, noise_gain


def _folded(layer) -> tuple[np.ndarray, np.ndarray, object | None]:
    """``layer``'s kernel and bias with the BatchNorm it alone feeds folded in, and that BatchNorm."""
    depthwise = type(layer).__name__ == "DepthwiseConv2D"
    kernel, *rest = layer.get_weights()
    channels = kernel.shape[2] if depthwise else kernel.shape[3]
    bias = rest[0] if layer.use_bias else np.zeros(channels, np.float32)
    nodes = layer._outbound_nodes  # noqa: SLF001  (Keras keeps the graph edges here)
    norm = nodes[0].outbound_layer if len(nodes) == 1 else None
    if norm is None or type(norm).__name__ != "BatchNormalization" or layer.activation.__name__ != "linear":
        return kernel, bias, None
    gamma, beta, mean, var = norm.get_weights()
    factor = gamma / np.sqrt(var + norm.epsilon)
    kernel = kernel * (factor[None, None, :, None] if depthwise else factor[None, None, None, :])
    return kernel, (bias - mean) * factor + beta, norm


def _split_call(tf, layer, kernel: np.ndarray, bias: np.ndarray, runs: list[np.ndarray]):
    strides, padding = (1, *layer.strides, 1), layer.padding.upper()
    dilations, activation = layer.dilation_rate, layer.activation
    if type(layer).__name__ == "DepthwiseConv2D":
        parts = []
        for run in runs:
            k, b = np.zeros_like(kernel), np.zeros_like(bias)
            k[:, :, run], b[run] = kernel[:, :, run], bias[run]
            parts.append((tf.constant(k, tf.float32), tf.constant(b, tf.float32)))

        def call(inputs, *_, **__):
            outputs = [
                tf.nn.depthwise_conv2d(inputs, k, strides, padding, dilations=dilations) + b for k, b in parts
            ]
            total = outputs[0]
            for output in outputs[1:]:
                total = total + output
            return activation(total)

        return call
    runs = [np.sort(r) for r in runs]
    parts = [(tf.constant(kernel[..., r], tf.float32), tf.constant(bias[r], tf.float32)) for r in runs]
    restore = tf.constant(np.argsort(np.concatenate(runs)).astype(np.int32))

    def call(inputs, *_, **__):
        joined = tf.concat(
            [tf.nn.conv2d(inputs, k, strides, padding, dilations=dilations) + b for k, b in parts], -1
        )
        return activation(tf.gather(joined, restore, axis=-1))

    return call


def split_keras_model(model, groups: int = SPLIT_GROUPS, min_gain: float = MIN_GAIN) -> int:
    """Split every convolution of ``model`` whose per-tensor weight noise falls by ``min_gain``; the count."""
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()
    count = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if not (
            (kind == "Conv2D" and layer.groups == 1)
            or (kind == "DepthwiseConv2D" and layer.depth_multiplier == 1)
        ):
            continue
        kernel, bias, norm = _folded(layer)
        amax = (
            np.abs(kernel).max(axis=(0, 1, 3) if kind == "DepthwiseConv2D" else (0, 1, 2)).astype(np.float64)
        )
        runs = channel_groups(amax, groups)
        if len(runs) < 2 or noise_gain(amax, runs) < min_gain:
            continue
        layer.call = _split_call(tf, layer, kernel.astype(np.float32), bias.astype(np.float32), runs)
        if norm is not None:  # folded into the parts above
            norm.call = lambda inputs, *_, **__: inputs
        count += 1
    return count
