"""The split-channels recipe on a Keras model (ST's SSD), gather-free: per-tensor convs split by channel range.

Same idea as :mod:`workbench.recipes.split_channels` (which also says why): a convolution's output
channels, in runs of similar largest weight, become separate convolutions, each with its own
per-tensor int8 scale. Here no GATHER puts channels back in order (Arm's Vela runs GATHER on the
CPU, and ST's MP2 NPU has none): the order is chosen so that every run is a contiguous segment,
and concatenating the parts gives the tensor as the rest of the network reads it.

- **Channel spaces.** A conv's output keeps its channel order through the channel-wise layers
  after it (BatchNorm, ReLU(6), elementwise activations, padding, upsampling, pooling, a
  reshape that keeps the last axis, depthwise convs) and through ADDs, which join their inputs'
  spaces: a tensor with several writers shares one order. Each space is read either by convs
  (their input channels can be permuted) or by something that cannot be (a reshape of the heads,
  a concatenation, softmax, a model output): then the space is *pinned* to its own order.
- **Free spaces** take the order of ascending channel range (the largest over their writers, BN
  folded): every writer's kernel and bias, every channel-wise layer's per-channel weights
  (BatchNorm, depthwise, moved ReLU6 caps) and every reader conv's input channels are permuted
  that way. The float network is the same function.
- **Splitting.** Each ``Conv2D`` is cut by :func:`~workbench.recipes.split_channels.contiguous_runs`
  (the exact least-noise cut of its order into contiguous segments that start at multiples of
  :data:`~workbench.recipes.split_channels.ALIGN`, 16: Ethos-U's output blocks, as on the YOLO
  path; in a pinned space the best a fixed order allows) and becomes one convolution per segment,
  concatenated.
  Its BatchNorm is folded into the parts first (the converter folds it into an unsplit conv, not
  into parts), and a plain ReLU/ReLU6 after it runs in each part, so the converter fuses it into
  each CONV_2D: left after the concatenation it is a separate RELU6 op, which made the SSD 224
  file 6–9× slower than plain per-tensor on this CPU (XNNPACK), against ~2× now. A
  ``DepthwiseConv2D`` splits into parts with the other channels zeroed, summed with ADDs (any
  grouping, no gather; :data:`DEPTHWISE` ``"sum"``), or with ``"slice"`` into aligned contiguous
  slices of its input (SPLIT_V), concatenated: cheaper, but on the SSD it loses most of the
  recovery (docs/recipes.md).

A convolution is split only where its per-tensor weight noise falls by ``MIN_GAIN``. The float
network is unchanged (tested to 1e-4). With ``equalize`` or ``st-optimize`` they run first.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from workbench.recipes.split_channels import (
    ALIGN,
    MIN_GAIN,
    RUN_PENALTY,
    SPLIT_GROUPS,
    channel_groups,
    contiguous_runs,
    noise_gain,
)

CHANNELWISE = frozenset(
    {
        "BatchNormalization",
        "ReLU",
        "ZeroPadding2D",
        "UpSampling2D",
        "Dropout",
        "Add",
        "GlobalAveragePooling2D",
        "MaxPooling2D",
        "AveragePooling2D",
    }
)
# a split depthwise: "sum" (parts over any channels, the others zeroed, summed) or "slice" (contiguous
# 16-aligned input slices, concatenated). Measured on ST's SSD 224 (docs/recipes.md): slice is 1.4x
# plain per-tensor on the host, sum 2.1x, but aligned slices leave the 8/16-channel early depthwise
# convs whole and cut the rest along a shared order: AP -0.064 vs per-channel against sum's -0.019
DEPTHWISE = "sum"
# a conv of 2 * ALIGN channels or fewer (at most one aligned cut) whose aligned runs do not pay: "sum"
# splits it like a summed depthwise (full-width parts over any channels, the others zeroed, ADDs); "skip" leaves it
NARROW = "skip"
# the split-channels-fine recipe (ST's SSD 224, docs/recipes.md): 6 parts, narrow convs summed, took
# per-tensor from -0.019 to -0.0095 AP of per-channel; 3 parts with narrow summed only to -0.016
FINE_GROUPS = 6
ELEMENTWISE = frozenset(
    {"relu", "relu6", "linear", "sigmoid", "tanh", "swish", "silu", "hard_sigmoid", "elu"}
)


def _kind(layer) -> str:
    return type(layer).__name__


def _inputs(layer) -> list:
    layers = []
    for node in layer._inbound_nodes:  # noqa: SLF001  (Keras keeps the graph edges here)
        inbound = node.inbound_layers
        layers += inbound if isinstance(inbound, list) else [inbound]
    return layers


def _readers(layer) -> list:
    return [node.outbound_layer for node in layer._outbound_nodes]  # noqa: SLF001


def _is_conv(layer) -> bool:
    return _kind(layer) == "Conv2D" and layer.groups == 1 and layer.data_format == "channels_last"


def _is_depthwise(layer) -> bool:
    return _kind(layer) == "DepthwiseConv2D" and layer.depth_multiplier == 1


def _channelwise(layer) -> bool:
    kind = _kind(layer)
    if kind == "Activation":
        return layer.activation.__name__ in ELEMENTWISE
    if kind == "Reshape":
        return layer.input_shape[-1] == layer.output_shape[-1] and len(layer.output_shape) >= 2
    return kind in CHANNELWISE or _is_depthwise(layer)


def _folded(layer) -> tuple[np.ndarray, np.ndarray, object | None]:
    """``layer``'s kernel and bias with the BatchNorm it alone feeds folded in, and that BatchNorm."""
    depthwise = _kind(layer) == "DepthwiseConv2D"
    kernel, *rest = layer.get_weights()
    channels = kernel.shape[2] if depthwise else kernel.shape[3]
    bias = rest[0] if layer.use_bias else np.zeros(channels, np.float32)
    readers = _readers(layer)
    norm = readers[0] if len(readers) == 1 else None
    if (
        norm is None
        or _kind(norm) != "BatchNormalization"
        or getattr(norm, "_workbench_folded", False)  # st-optimize folded it already
        or layer.activation.__name__ != "linear"
    ):
        return kernel, bias, None
    gamma, beta, mean, var = norm.get_weights()
    factor = gamma / np.sqrt(var + norm.epsilon)
    kernel = kernel * (factor[None, None, :, None] if depthwise else factor[None, None, None, :])
    return kernel, (bias - mean) * factor + beta, norm


def _amax(layer) -> np.ndarray:
    kernel = _folded(layer)[0]
    axes = (0, 1, 3) if _kind(layer) == "DepthwiseConv2D" else (0, 1, 2)
    return np.abs(kernel).max(axis=axes).astype(np.float64)


def channel_spaces(model) -> tuple[dict[str, str], set[str], dict[str, list]]:
    """Each layer's output channel space (a root layer name), the pinned roots, and each root's conv writers."""
    parent = {layer.name: layer.name for layer in model.layers}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    pins = [layer.name for layer in model.layers if layer.name in set(model.output_names)]
    pins += [layer.name for layer in model.layers if len(layer._inbound_nodes) > 1]  # noqa: SLF001  (shared)
    for layer in model.layers:
        if _channelwise(layer):
            for source in _inputs(layer):
                parent[find(source.name)] = find(layer.name)
        elif not _is_conv(layer):
            pins += [layer.name] + [source.name for source in _inputs(layer)]
    space = {layer.name: find(layer.name) for layer in model.layers}
    writers: dict[str, list] = {}
    for layer in model.layers:
        if _is_conv(layer):
            writers.setdefault(space[layer.name], []).append(layer)
    return space, {space[name] for name in pins}, writers


def channel_orders(
    model, groups: int = SPLIT_GROUPS, align: int = 1, depthwise: bool = False
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Each layer's space and the order of every free space with conv writers.

    Without ``depthwise``: ascending range (the largest over the space's writers). With it, the
    space's depthwise convs are cut into contiguous slices too, so its order serves them and its
    writers alike: of the candidate sorts (each member's own ascending order, and the members'
    ranges, each normalized by its largest, joined by max and by mean), the one whose contiguous
    cuts (:func:`~workbench.recipes.split_channels.contiguous_runs`, ``groups`` runs starting at
    multiples of ``align``) cost the members least, each normalized by its unsplit noise
    (:func:`~workbench.recipes.split_channels._choose_order`, the YOLO path's choice)."""
    from workbench.recipes.split_channels import _choose_order

    space, pinned, writers = channel_spaces(model)
    members = {root: list(convs) for root, convs in writers.items()}
    if depthwise:
        for layer in model.layers:
            if _is_depthwise(layer) and space[layer.name] in members:
                members[space[layer.name]].append(layer)
    orders = {}
    for root, layers in members.items():
        if root in pinned:
            continue
        amax = {layer.name: _amax(layer) for layer in layers}
        if len(layers) == len(writers[root]):  # conv writers only: ascending range
            order = np.argsort(np.max(list(amax.values()), axis=0), kind="stable")
        else:
            blocks = [_Block(name, 0, len(a)) for name, a in amax.items()]
            order = _choose_order(blocks, amax, groups, align)
        if not np.array_equal(order, np.arange(len(order))):
            orders[root] = order
    return space, orders


class _Block(NamedTuple):
    """A member's channels in its space (all of them: Keras spaces have no chunks)."""

    writer: str
    start: int
    size: int


def permute(model, space: dict[str, str], orders: dict[str, np.ndarray]) -> int:
    """Put every free space in its order: writers' outputs, channel-wise weights, readers' inputs."""
    from workbench.recipes.st_optimize import set_caps

    count = 0
    for layer in model.layers:
        out = orders.get(space[layer.name])
        weights = layer.get_weights()
        if _is_conv(layer):
            sources = _inputs(layer)
            into = orders.get(space[sources[0].name]) if len(sources) == 1 else None
            if into is None and out is None:
                continue
            kernel, *rest = weights
            kernel = kernel if into is None else kernel[:, :, into, :]
            kernel, rest = (kernel, rest) if out is None else (kernel[..., out], [b[out] for b in rest])
            layer.set_weights([kernel, *rest])
            count += 1
        elif out is not None and _is_depthwise(layer):
            layer.set_weights([weights[0][:, :, out, :], *[b[out] for b in weights[1:]]])
        elif out is not None and _kind(layer) == "BatchNormalization":
            layer.set_weights([w[out] for w in weights])
        elif out is not None and hasattr(layer, "_workbench_caps"):  # a ReLU6 cap moved per channel
            set_caps(layer, layer._workbench_caps[out])
    return count


def _split_call(
    tf, layer, kernel: np.ndarray, bias: np.ndarray, runs: list[np.ndarray], relu: str | None = None,
    summed: bool = False,
):  # fmt: skip
    """``layer``'s call as parts over ``runs``, either concatenated (a ``Conv2D``'s output runs, a
    depthwise's contiguous input slices; runs in order) or summed (``summed``, or a depthwise's
    scattered runs; any runs: full-width parts, the other channels' weights zero, one ADD per extra part)."""
    strides, padding = (1, *layer.strides, 1), layer.padding.upper()
    dilations, activation = layer.dilation_rate, layer.activation
    after = {None: lambda x: x, "relu": tf.nn.relu, "relu6": tf.nn.relu6}[relu]
    depthwise = _kind(layer) == "DepthwiseConv2D"
    contiguous = np.array_equal(np.concatenate(runs), np.arange(len(bias)))
    if summed or (depthwise and not contiguous):
        parts = []
        for run in runs:  # a depthwise kernel's channels are its axis 2, a conv's outputs its axis 3
            k, b = np.zeros_like(kernel), np.zeros_like(bias)
            if depthwise:
                k[:, :, run] = kernel[:, :, run]
            else:
                k[..., run] = kernel[..., run]
            b[run] = bias[run]
            parts.append((tf.constant(k, tf.float32), tf.constant(b, tf.float32)))
        part_op = tf.nn.depthwise_conv2d if depthwise else tf.nn.conv2d

        def sum_parts(inputs, *_, **__):
            outputs = [part_op(inputs, k, strides, padding, dilations=dilations) + b for k, b in parts]
            total = outputs[0]
            for output in outputs[1:]:
                total = total + output
            return after(activation(total))

        return sum_parts
    if not contiguous:
        raise ValueError(f"{layer.name}: runs must be contiguous segments in order (no gather)")
    if depthwise:
        parts = [(tf.constant(kernel[:, :, r], tf.float32), tf.constant(bias[r], tf.float32)) for r in runs]
        sizes = [len(r) for r in runs]

        def sliced(inputs, *_, **__):
            slices = tf.split(inputs, sizes, axis=-1)
            outputs = [
                after(activation(tf.nn.depthwise_conv2d(x, k, strides, padding, dilations=dilations) + b))
                for x, (k, b) in zip(slices, parts, strict=True)
            ]
            return tf.concat(outputs, -1)

        return sliced
    parts = [(tf.constant(kernel[..., r], tf.float32), tf.constant(bias[r], tf.float32)) for r in runs]

    def call(inputs, *_, **__):
        # an elementwise activation commutes with the concatenation: applied per part, the converter
        # fuses it into each CONV_2D (after the concatenation it would be a separate RELU6 op)
        outputs = [
            after(activation(tf.nn.conv2d(inputs, k, strides, padding, dilations=dilations) + b))
            for k, b in parts
        ]
        return tf.concat(outputs, -1)

    return call


def _relu_after(layer, norm) -> tuple[object, str] | None:
    """The plain ReLU / ReLU6 layer (``ReLU`` or ``Activation``) that alone reads ``layer`` (or its folded
    BatchNorm ``norm``), if any, and which (``relu``, ``relu6``): the split applies it per part.
    Per-channel caps (``st-optimize``, ``equalize``) stay where they are."""
    readers = _readers(norm if norm is not None else layer)
    after = readers[0] if len(readers) == 1 else None
    if (
        after is None
        or hasattr(after, "_workbench_caps")
        or len(after._inbound_nodes) != 1  # noqa: SLF001
        or layer.activation.__name__ != "linear"
    ):
        return None
    if _kind(after) == "Activation" and after.activation.__name__ in ("relu", "relu6"):
        return after, after.activation.__name__
    if (
        _kind(after) == "ReLU"
        and float(after.threshold) == 0.0
        and float(after.negative_slope) == 0.0
        and after.max_value in (None, 6.0)
    ):
        return after, "relu" if after.max_value is None else "relu6"
    return None


def _pays(amax: np.ndarray, runs: list[np.ndarray], min_gain: float) -> bool:
    """Whether splitting into ``runs`` divides the per-tensor weight noise by ``min_gain`` or more."""
    return len(runs) >= 2 and noise_gain(amax, runs) >= min_gain


def split_keras_model(
    model,
    groups: int = SPLIT_GROUPS,
    min_gain: float = MIN_GAIN,
    align: int | None = None,
    penalty: float | None = None,
    depthwise: str | None = None,
    narrow: str | None = None,
) -> dict[str, list[np.ndarray]]:
    """Order ``model``'s channel spaces, then split every convolution whose per-tensor weight noise
    falls by ``min_gain`` (no gather); returns each split layer's runs (channel positions in its
    permuted order).

    As in :func:`~workbench.recipes.split_channels.split_model`, a ``Conv2D``'s runs start only at
    multiples of ``align`` channels (the last ends at its width) and each run beyond the first costs
    ``penalty`` of its unsplit noise: :data:`~workbench.recipes.split_channels.ALIGN` /
    :data:`~workbench.recipes.split_channels.RUN_PENALTY` when None, which the recipe's key names
    (``split-channels-a16``). A conv of ``2 · align`` channels or fewer then has at most two runs,
    of ``align`` or fewer none. ``depthwise`` (:data:`DEPTHWISE` when None): ``"slice"`` cuts a
    ``DepthwiseConv2D`` the same way, into contiguous aligned slices of its input, concatenated
    (its space's order chosen for it and the writers together); ``"sum"`` into parts over any
    channels, summed (full-width parts: ``groups`` times the work, and ADDs). ``narrow``
    (:data:`NARROW` when None): ``"sum"`` splits a ``Conv2D`` of ``2 · align`` channels or fewer
    whose aligned runs fall short of ``min_gain`` into summed full-width parts over any channels.
    """
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()
    align = ALIGN if align is None else align
    penalty = RUN_PENALTY if penalty is None else penalty
    depthwise = DEPTHWISE if depthwise is None else depthwise
    narrow = NARROW if narrow is None else narrow
    if depthwise not in ("slice", "sum"):
        raise ValueError(f"depthwise must be 'slice' or 'sum', got {depthwise!r}")
    if narrow not in ("skip", "sum"):
        raise ValueError(f"narrow must be 'skip' or 'sum', got {narrow!r}")
    sliced = depthwise == "slice"
    permute(model, *channel_orders(model, groups, align, depthwise=sliced))
    split = {}
    for layer in model.layers:
        if not (_is_conv(layer) or _is_depthwise(layer)):
            continue
        kernel, bias, norm = _folded(layer)
        amax = _amax(layer)
        summed = _is_depthwise(layer) and not sliced
        runs = channel_groups(amax, groups) if summed else contiguous_runs(amax, groups, align, penalty)
        narrow_conv = not summed and len(amax) <= 2 * align  # at most one aligned cut
        if narrow == "sum" and narrow_conv and not _pays(amax, runs, min_gain):
            runs, summed = channel_groups(amax, groups), True
        if not _pays(amax, runs, min_gain):
            continue
        relu = None if summed else _relu_after(layer, norm)  # a sum's ReLU fuses into its last ADD
        kernel, bias = kernel.astype(np.float32), bias.astype(np.float32)
        layer.call = _split_call(tf, layer, kernel, bias, runs, relu and relu[1], summed)
        for done in (norm, relu and relu[0]):  # folded into the parts above
            if done is not None:
                done.call = lambda inputs, *_, **__: inputs
        split[layer.name] = runs
    return split
