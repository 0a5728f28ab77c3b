"""Gather-free split-channels on a Keras SSD-like model (workbench.recipes.split_channels_keras)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recipes.keras_layers import randomize_batchnorm


def _ssd_like(seed: int = 0):
    """A MobileNet chain, two lateral convs joined by an ADD (a tensor with two writers), and two heads
    reshaped and concatenated (pinned), wide enough for 16-channel runs; every conv's output channels have ranges ×0.01..×10."""
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    layers = keras.layers
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = layers.ReLU(6.0)(
        layers.BatchNormalization()(layers.Conv2D(48, 3, padding="same", use_bias=False)(inp))
    )
    x = layers.ReLU(6.0)(
        layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x))
    )
    x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(64, 1, use_bias=False)(x)))
    a = layers.BatchNormalization()(layers.Conv2D(40, 1)(x))
    b = layers.BatchNormalization()(layers.Conv2D(40, 1)(layers.ZeroPadding2D(0)(x)))
    fmap = layers.Add()([a, b])
    heads = []
    for width in (32, 8):
        h = layers.BatchNormalization()(layers.Conv2D(width, 3, padding="same")(fmap))
        heads.append(layers.Reshape((-1, 4))(h))
    out = layers.Concatenate(axis=1)(heads)
    model = keras.Model(inp, out)
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            randomize_batchnorm(layer, rng)
        elif type(layer).__name__ in ("Conv2D", "DepthwiseConv2D"):
            axis = 2 if type(layer).__name__ == "DepthwiseConv2D" else 3
            gains = np.geomspace(0.01, 10, weights[0].shape[axis])
            rng.shuffle(gains)
            shape = [1, 1, 1, 1]
            shape[axis] = len(gains)
            layer.set_weights(
                [weights[0] * gains.reshape(shape), *[rng.normal(0, 0.1, w.shape) for w in weights[1:]]]
            )
    return model


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)


def test_spaces_share_an_order_across_an_add_and_pin_the_heads():
    from workbench.recipes.split_channels_keras import channel_orders, channel_spaces

    model = _ssd_like()
    space, pinned, writers = channel_spaces(model)
    by_writers = {tuple(sorted(c.name for c in convs)): root for root, convs in writers.items()}
    shared = next(root for names, root in by_writers.items() if len(names) == 2)  # the two lateral convs
    assert shared not in pinned
    heads = [root for names, root in by_writers.items() if len(names) == 1 and root in pinned]
    assert len(heads) == 2  # each head conv's output is reshaped: pinned to its own order
    _, orders = channel_orders(model)
    assert shared in orders and not set(heads) & set(orders)


@pytest.mark.parametrize("depthwise", ["slice", "sum"])
@pytest.mark.parametrize("equalize", [False, True])
def test_split_keeps_the_float_network(equalize, depthwise):
    from workbench.recipes.equalize_keras import equalize_keras_model
    from workbench.recipes.split_channels_keras import split_keras_model

    model = _ssd_like()
    before = np.asarray(model(_x()))
    if equalize:
        assert equalize_keras_model(model) == 1  # its ReLU6 caps are permuted with their channels
    assert len(split_keras_model(model, depthwise=depthwise)) >= 5
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)


def test_split_after_st_optimize_keeps_its_network():
    from workbench.recipes.split_channels_keras import split_keras_model
    from workbench.recipes.st_optimize import st_optimize_keras_model

    model = _ssd_like()
    st_optimize_keras_model(model)
    before = np.asarray(model(_x()))
    assert len(split_keras_model(model)) >= 5
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)


def test_aligned_split_cuts_convs_at_multiples_of_16_and_keeps_the_float_network():
    from workbench.recipes.split_channels import ALIGN
    from workbench.recipes.split_channels_keras import split_keras_model

    assert ALIGN == 16  # the recipe's key says "-a16"
    model = _ssd_like()
    before = np.asarray(model(_x()))
    split = split_keras_model(model, depthwise="slice")
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    convs = {name: runs for name, runs in split.items() if kinds[name] == "Conv2D"}
    assert len(convs) >= 3 and any(kinds[name] == "DepthwiseConv2D" for name in split)
    for name, runs in split.items():  # depthwise too, when sliced
        width = model.get_layer(name).get_weights()[0].shape[2 if kinds[name] != "Conv2D" else 3]
        assert np.array_equal(np.concatenate(runs), np.arange(width)), name  # contiguous, in order
        assert all(run[0] % ALIGN == 0 for run in runs), (name, [run[0] for run in runs])
        assert width > ALIGN  # 16 channels or fewer (the 8-wide head) have no aligned cut


def test_unaligned_split_cuts_where_alignment_forbids():
    """``align=1`` (the former cut) does cut off-block: the aligned test above is not vacuous."""
    from workbench.recipes.split_channels_keras import split_keras_model

    model = _ssd_like()
    before = np.asarray(model(_x()))
    split = split_keras_model(model, align=1)
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    starts = [run[0] for name, runs in split.items() if kinds[name] == "Conv2D" for run in runs]
    assert any(start % 16 for start in starts)


def test_narrow_sum_splits_narrow_convs_into_summed_parts_and_keeps_the_float_network():
    """``narrow="sum"`` reaches the convs of 32 channels or fewer that aligned runs cannot cut
    usefully (here the 8-wide head, pinned by its reshape), as full-width parts over any channels."""
    from workbench.recipes.split_channels import ALIGN
    from workbench.recipes.split_channels_keras import split_keras_model

    def positions(model, split):  # each build names its layers afresh: compare by position
        return {i for i, layer in enumerate(model.layers) if layer.name in split}

    whole = _ssd_like()
    skipped = positions(whole, split_keras_model(whole))
    model = _ssd_like()
    before = np.asarray(model(_x()))
    split = split_keras_model(model, narrow="sum")
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)
    added = positions(model, split) - skipped
    assert added, "narrow='sum' split no conv that 'skip' left whole"
    for position in added:
        layer = model.layers[position]
        name = layer.name
        width = layer.get_weights()[0].shape[3]
        assert type(layer).__name__ == "Conv2D" and width <= 2 * ALIGN, (name, width)
        runs = split[name]
        assert len(runs) >= 2 and sorted(np.concatenate(runs).tolist()) == list(range(width))
    with pytest.raises(ValueError, match="narrow"):
        split_keras_model(_ssd_like(), narrow="wide")


def _per_tensor_tflite(model, path):
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, 16, 16, 3), tf.float32)
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([_x(s)] for s in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = True  # noqa: SLF001  (as workbench.quantize, ST's zoo)
    path.write_bytes(converter.convert())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("depthwise", ["sum", "slice"])
def test_converted_split_file_has_no_gather_and_is_all_int8_per_tensor(tmp_path, depthwise):
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.recipes.split_channels_keras import split_keras_model
    from workbench.tflite_graph import read_graph

    plain = read_graph(_per_tensor_tflite(_ssd_like(), tmp_path / "plain.tflite"))
    model = _ssd_like()
    split_keras_model(model, depthwise=depthwise)
    graph = read_graph(_per_tensor_tflite(model, tmp_path / "split.tflite"))
    ops = graph.op_histogram()
    assert "GATHER" not in ops and "GATHER_ND" not in ops
    assert ops.get("CONV_2D", 0) > plain.op_histogram().get("CONV_2D", 0)  # the parts are there
    assert is_all_int8(graph) and weight_granularity(graph).verdict == "per-tensor"
    # the ReLU6 after a split conv runs in each part (fused into its CONV_2D), not after the
    # concatenation as a separate op (XNNPACK ran those 9x slower on the host, SSD 224)
    assert ops.get("RELU6", 0) == plain.op_histogram().get("RELU6", 0)
    assert ops.get("DEPTHWISE_CONV_2D", 0) > plain.op_histogram().get("DEPTHWISE_CONV_2D", 0)
    if depthwise == "sum":  # full-width parts summed by ADDs
        assert ops.get("ADD", 0) > plain.op_histogram().get("ADD", 0) and "SPLIT_V" not in ops
        return
    # sliced: the input cut by SPLIT_V, no ADD added
    assert ops.get("ADD", 0) == plain.op_histogram().get("ADD", 0) and ops.get("SPLIT_V", 0) >= 1
    # every concatenation of conv parts: each part but the last fills whole 16-channel blocks
    joined = set()
    for op in graph.ops:
        producers = [graph.producer(t) for t in op.inputs]
        kinds = {p.op if p is not None else None for p in producers}
        if op.op == "CONCATENATION" and kinds <= {"CONV_2D", "DEPTHWISE_CONV_2D"}:
            depths = [graph.tensors[t].shape[-1] for t in op.inputs]
            assert all(d % 16 == 0 for d in depths[:-1]), depths
            joined |= kinds
    assert joined == {"CONV_2D", "DEPTHWISE_CONV_2D"}
