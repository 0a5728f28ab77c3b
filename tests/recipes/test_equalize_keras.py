"""Exact cross-layer equalization of Keras MobileNet blocks (the SSD family's ``equalize`` recipe)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recipes.keras_layers import randomize_batchnorm


def _mobilenet_block(seed: int = 0):
    """conv → BN → ReLU6 → depthwise → BN → ReLU6 → 1×1 conv → BN → ReLU6, depthwise ranges ×0.01..×10."""
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(name="bn2")(x))
    x = keras.layers.Conv2D(12, 1, use_bias=False, name="pw")(x)
    out = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(name="bn3")(x))
    model = keras.Model(inp, out)
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            randomize_batchnorm(layer, rng)
        elif type(layer).__name__ == "DepthwiseConv2D":
            gains = np.geomspace(0.01, 10, weights[0].shape[2])
            rng.shuffle(gains)
            layer.set_weights([weights[0] * gains[None, None, :, None]])
    return model


def _per_tensor_sqnr(weights: np.ndarray) -> float:
    """The worst channel's SQNR (dB) when the whole (k, k, C) tensor shares one int8 scale."""
    scale = np.abs(weights).max() / 127
    noise = np.sum((np.round(weights / scale) * scale - weights) ** 2, axis=(0, 1))
    return float(np.min(10 * np.log10(np.sum(weights**2, axis=(0, 1)) / np.maximum(noise, 1e-30))))


def _folded_depthwise(model) -> np.ndarray:
    dw, bn = model.get_layer("dw"), model.get_layer("bn2")
    gamma, _, _, var = bn.get_weights()
    return dw.get_weights()[0][:, :, :, 0] * (gamma / np.sqrt(var + bn.epsilon))


def test_equalization_keeps_the_float_network_and_evens_the_depthwise_channels():
    from workbench.recipes.equalize_keras import dw_pw_chains, equalize_keras_model

    model = _mobilenet_block()
    import tf_keras as keras

    x = np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32) * 10
    before, sqnr_before = np.asarray(model(x)), _per_tensor_sqnr(_folded_depthwise(model))
    relus = [layer.output for layer in model.layers if type(layer).__name__ == "ReLU"]
    capped = np.asarray(keras.Model(model.input, relus[1])(x))
    assert (capped >= 6 - 1e-6).any()  # the moved ReLU6 cap is exercised
    assert [(a.name, b.name) for a, _, _, b in dw_pw_chains(model)] == [("dw", "pw")]
    assert equalize_keras_model(model) == 1
    after = np.asarray(model(x))
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)
    assert (
        _per_tensor_sqnr(_folded_depthwise(model)) > sqnr_before + 15
    )  # measured: 0 dB (channels rounded to zero) → 19.6 dB


def test_equalization_refuses_a_leaky_relu():
    import tf_keras as keras

    from workbench.recipes.equalize_keras import equalize_keras_model

    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(inp)
    x = keras.layers.ReLU(negative_slope=0.1)(keras.layers.BatchNormalization()(x))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 1, use_bias=False)(x))
    with pytest.raises(ValueError, match="scale-equivariant"):
        equalize_keras_model(keras.Model(inp, x))
