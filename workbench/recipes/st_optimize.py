"""ST's own per-tensor preparation of a Keras model (``optimize: True``): the ``st-optimize`` recipe.

A reproduction of STMicroelectronics/stm32ai-modelzoo-services,
``common/optimization/model_formatting_ptq_per_tensor.py`` :func:`model_formatting_ptq_per_tensor`
(with ``bw_bn_folding`` from ``common/optimization/bn_weights_folding.py``), which ST's quantization
services run on the float model when ``quantization.granularity`` is ``per_tensor`` and
``quantization.optimize`` is true, before the per-tensor TFLite conversion (here the recipe converts
per-channel too, for comparison). Its steps, in its order, with its thresholds:

1. ``bn_parameters``: γ, β of every BatchNorm right after a depthwise conv, kept for step 5.
2. ``bw_bn_folding(epsilon=1e-3, dead_channel_th=1e-10)``: every BatchNorm that is its conv's only
   reader folds into that conv (``w·γ/√(σ²+ε)``, ``(b − μ)·γ/√(σ²+ε) + β``; a bias is added where the
   conv had none); a depthwise channel whose moving mean and variance are both ≤ 1e-10 is "dead":
   its γ is set to 0 (the channel keeps only β) so it does not blow up the per-tensor weight range.
3. ``zero_irrelevant_channels(min_weights_th=1e-10)``: an output channel of a Conv2D / depthwise whose
   weights all lie within ±1e-10 is set to 0.
4. ``couple_names_and_indexes`` + ``cross_layer_equalisation``: each depthwise followed, with no
   branch, by a Conv2D directly or through one "neutral" layer (ReLU, ReLU6, PReLU, Dropout,
   ZeroPadding2D) is equalized with it: per channel, ranges ``r = max − min`` of the depthwise
   channel (``r1``) and of the conv's input channel (``r2``), ``s = √(r1·r2)/r2``; the depthwise
   channel and its bias are divided by ``s``, the conv's input channel multiplied by it.
5. ``high_bias_absorption(n=3)``: for those couples whose depthwise had a BatchNorm, with γ, β of
   step 1 divided by ``s``: ``c = relu(β − 3γ)``, set to 0 where ``β + 3γ ≥ 6/s`` (ST: the ReLU6 would
   saturate); ``c`` leaves the depthwise's bias and enters the conv's as ``Σ W2·c``.
6. ``adaptive_clip_per_channel``: the ReLU6 of each couple becomes a per-channel clip at ``6/s``, the
   levels rounded to a grid of ``(max − min)/65535``.

The float network is unchanged by steps 2 and 4 (exact), by step 5 where the activations feeding the
ReLU stay in ``[c, 6/s]`` (its assumption), and by 6 up to the 1/65535 rounding. Differences from
ST's code, all where theirs would fail or be wrong rather than where it chooses: BatchNorm folds with
the layer's own ε (ST: always 1e-3, which is every SSD BatchNorm's ε); a conv with a non-linear fused
activation is not folded into; a ReLU counts as neutral only when it is scale-equivariant (no
threshold, no negative slope, cap ``None`` or 6); ``s = 1`` where ``r2 = 0`` (ST: a division by
zero). The graph is edited in place (folded BatchNorms and clipped ReLUs get a new ``call``), not
rebuilt as ST's ``insert_layer_in_graph`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPSILON = 1e-3  # bw_bn_folding's default; ST's SSDs use it in every BatchNorm
DEAD_CHANNEL_TH = 1e-10  # bw_bn_folding(dead_channel_th=1e-10)
MIN_WEIGHTS_TH = 1e-10  # zero_irrelevant_channels(min_weights_th=1e-10)
HBA_N = 3  # high_bias_absorption(n=3)
RELU6_SAT_UP = 6.0
CLIP_LEVELS = 65535  # adaptive_clip_per_channel's grid of saturation levels
NEUTRAL = ("ReLU", "PReLU", "Dropout", "ZeroPadding2D")


def _kind(layer) -> str:
    return type(layer).__name__


def _readers(layer) -> list:
    return [node.outbound_layer for node in layer._outbound_nodes]  # noqa: SLF001  (Keras graph edges)


def is_folded(layer) -> bool:
    """Whether ``layer`` is a BatchNorm folded into its conv (it now passes its input through)."""
    return bool(getattr(layer, "_workbench_folded", False))


def _next(layer):
    """The one reader of ``layer`` past folded BatchNorms (ST's ``active_number_of_nodes``), or None."""
    readers = _readers(layer)
    while len(readers) == 1 and is_folded(readers[0]):
        readers = _readers(readers[0])
    return readers[0] if len(readers) == 1 else None


def _weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of a conv, a zero bias added to the layer first if it had none (as ST does)."""
    kernel, *rest = layer.get_weights()
    if not layer.use_bias:
        channels = kernel.shape[2] * kernel.shape[3] if _kind(layer) == "DepthwiseConv2D" else kernel.shape[3]
        layer.use_bias = True
        layer.bias = layer.add_weight(name="bias", shape=(channels,), initializer="zeros", dtype=layer.dtype)
        rest = [np.zeros(channels, np.float32)]
    return kernel, rest[0]


def _out_axis_scale(layer, kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``kernel`` with output channel ``i`` multiplied by ``factor[i]``."""
    if _kind(layer) == "DepthwiseConv2D":  # (kh, kw, C, multiplier): output channel c·m + j
        return kernel * factor.reshape(kernel.shape[2], kernel.shape[3])[None, None]
    return kernel * factor[None, None, None, :]


def _identity(inputs, *_, **__):
    return inputs


def fold_batchnorms(
    model, dead_channel_th: float = DEAD_CHANNEL_TH
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Step 2 (with step 1): fold each BatchNorm into the conv it alone reads; {depthwise name: (γ, β)}."""
    kept = {}
    for layer in model.layers:
        if _kind(layer) not in ("Conv2D", "DepthwiseConv2D") or layer.activation.__name__ != "linear":
            continue
        readers = _readers(layer)
        if len(readers) != 1 or _kind(readers[0]) != "BatchNormalization" or is_folded(readers[0]):
            continue
        norm = readers[0]
        gamma, beta, mean, var = (np.array(w, np.float64) for w in norm.get_weights())
        if _kind(layer) == "DepthwiseConv2D":
            kept[layer.name] = (gamma.copy(), beta.copy())
            dead = (var <= dead_channel_th) & (mean <= dead_channel_th)
            var, mean, gamma = np.where(dead, 1.0, var), np.where(dead, 0.0, mean), np.where(dead, 0.0, gamma)
        kernel, bias = _weights(layer)
        factor = gamma / np.sqrt(var + norm.epsilon)
        layer.set_weights(
            [
                _out_axis_scale(layer, kernel, factor).astype(np.float32),
                ((bias - mean) * factor + beta).astype(np.float32),
            ]
        )
        norm.call, norm._workbench_folded = _identity, True
    return kept


def zero_irrelevant_channels(model, min_weights_th: float = MIN_WEIGHTS_TH) -> int:
    """Step 3: zero every conv output channel whose weights all lie within ±``min_weights_th``; how many."""
    count = 0
    for layer in model.layers:
        if _kind(layer) not in ("Conv2D", "DepthwiseConv2D"):
            continue
        kernel, *rest = layer.get_weights()
        depthwise = _kind(layer) == "DepthwiseConv2D"
        amax = np.abs(kernel).max(axis=(0, 1, 3) if depthwise else (0, 1, 2))
        weak = amax < min_weights_th
        if weak.any() and not (amax == 0)[weak].all():
            kernel = kernel.copy()
            if depthwise:
                kernel[:, :, weak, :] = 0.0
            else:
                kernel[..., weak] = 0.0
            layer.set_weights([kernel, *rest])
        count += int(weak.sum())
    return count


def _neutral(layer) -> bool:
    kind = _kind(layer)
    if kind == "ReLU":
        return (
            float(layer.threshold) == 0
            and float(layer.negative_slope) == 0
            and layer.max_value in (None, 6, 6.0)
        )
    if kind == "Activation":
        return layer.activation.__name__ in ("relu", "relu6")
    return kind in NEUTRAL


def is_relu6(layer) -> bool:
    if _kind(layer) == "Activation":
        return layer.activation.__name__ == "relu6"
    return _kind(layer) == "ReLU" and layer.max_value is not None and float(layer.max_value) == 6.0


def couples(model) -> list[tuple[Any, Any, Any]]:
    """Step 4's pairs (ST's ``couple_names_and_indexes``): (depthwise, conv, its ReLU6 or None)."""
    found = []
    for layer in model.layers:
        if _kind(layer) != "DepthwiseConv2D" or layer.depth_multiplier != 1:
            continue
        first = _next(layer)
        if first is not None and _kind(first) == "Conv2D" and first.groups == 1:
            found.append((layer, first, None))
        elif first is not None and _neutral(first):
            second = _next(first)
            if second is not None and _kind(second) == "Conv2D" and second.groups == 1:
                found.append((layer, second, first if is_relu6(first) else None))
    return found


def cross_layer_equalisation(pairs) -> list[np.ndarray]:
    """Step 4 on each (depthwise, conv, _) of ``pairs``; the ``1/s`` vectors, one per pair."""
    inverses = []
    for depthwise, conv, _ in pairs:
        w1, b1 = _weights(depthwise)
        w2, b2 = _weights(conv)
        r1 = (w1.max(axis=(0, 1, 3)) - w1.min(axis=(0, 1, 3))).astype(np.float64)
        r2 = (w2.max(axis=(0, 1, 3)) - w2.min(axis=(0, 1, 3))).astype(np.float64)
        s = np.where(r2 > 0, np.sqrt(r1 * r2) / np.where(r2 > 0, r2, 1.0), 1.0)
        s = np.where((s == 0) & (r1 == 0), 1.0, s)
        inv_s = 1.0 / s
        depthwise.set_weights(
            [(w1 * inv_s[None, None, :, None]).astype(np.float32), (b1 * inv_s).astype(np.float32)]
        )
        conv.set_weights([(w2 * s[None, None, :, None]).astype(np.float32), b2])
        inverses.append(inv_s)
    return inverses


def high_bias_absorption(pairs, inverses, kept: dict, n: float = HBA_N) -> int:
    """Step 5 on each pair whose depthwise had a BatchNorm; how many channels absorbed a bias."""
    count = 0
    for (depthwise, conv, _), inv_s in zip(pairs, inverses, strict=True):
        if depthwise.name not in kept:
            continue
        gamma, beta = kept[depthwise.name][0] * inv_s, kept[depthwise.name][1] * inv_s
        c = np.maximum(beta - n * gamma, 0.0)
        c[beta + n * gamma >= RELU6_SAT_UP * inv_s] = 0.0
        w1, b1 = depthwise.get_weights()
        w2, b2 = conv.get_weights()
        depthwise.set_weights([w1, (b1 - c).astype(np.float32)])
        conv.set_weights([w2, (b2 + np.einsum("hwio,i->o", w2.astype(np.float64), c)).astype(np.float32)])
        count += int((c > 0).sum())
    return count


def clip_levels(inv_s: np.ndarray) -> np.ndarray:
    """Step 6's per-channel saturation levels ``6/s`` on ST's grid of (max − min)/65535."""
    levels = RELU6_SAT_UP * np.asarray(inv_s, np.float64)
    step = (levels.max() - levels.min()) / CLIP_LEVELS
    return (np.round(levels / step) * step if step > 0 else levels).astype(np.float32)


def set_caps(layer, caps: np.ndarray) -> None:
    """Make the ReLU / Activation ``layer`` compute ``min(relu(x), caps)`` per channel (caps kept on it,
    so a later channel permutation can permute them)."""
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()
    constant = tf.constant(np.asarray(caps, np.float32))

    def call(inputs, *_, **__):
        return tf.minimum(tf.nn.relu(inputs), constant)

    layer.call, layer._workbench_caps = call, np.asarray(caps, np.float32)


def st_optimize_keras_model(model) -> dict[str, int]:
    """ST's ``model_formatting_ptq_per_tensor`` on ``model`` in place; what each step changed."""
    kept = fold_batchnorms(model)
    zeroed = zero_irrelevant_channels(model)
    pairs = couples(model)
    inverses = cross_layer_equalisation(pairs)
    absorbed = high_bias_absorption(pairs, inverses, kept)
    clipped = 0
    for (_, _, relu6), inv_s in zip(pairs, inverses, strict=True):
        if relu6 is not None:
            set_caps(relu6, clip_levels(inv_s))
            clipped += 1
    return {
        "folded": sum(is_folded(layer) for layer in model.layers),
        "zeroed_channels": zeroed,
        "equalized_pairs": len(pairs),
        "absorbed_channels": absorbed,
        "clipped": clipped,
    }
