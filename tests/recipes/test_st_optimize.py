"""ST's per-tensor preparation (the st-optimize recipe) step by step on a tiny Keras MobileNet block."""

from __future__ import annotations

import numpy as np
import pytest


def _block(seed: int = 0, high_bias: bool = False):
    """conv → BN → ReLU6 → depthwise → BN → ReLU6 → 1×1 conv → BN → ReLU6 with uneven depthwise channels.

    ``high_bias``: the depthwise's BatchNorm has β ≫ 3γ, and tiny depthwise weights, so its ReLU6 input
    stays within ``[β − 3γ, β + 3γ]`` (high-bias absorption's assumption: then it is exact).
    """
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((12, 12, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = keras.layers.ReLU(6.0, name="r1")(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.ReLU(6.0, name="r2")(keras.layers.BatchNormalization(name="bn2")(x))
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="pw")(x)
    out = keras.layers.ReLU(6.0, name="r3")(keras.layers.BatchNormalization(name="bn3")(x))
    model = keras.Model(inp, out)
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            n = weights[0].shape[0]
            gamma, beta = rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n)
            if high_bias and layer.name == "bn2":
                gamma, beta = rng.uniform(0.05, 0.1, n), rng.uniform(2.0, 3.0, n)
            layer.set_weights([gamma, beta, rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)])
        elif type(layer).__name__ == "DepthwiseConv2D":
            gains = np.geomspace(0.01, 10, weights[0].shape[2]) * (1e-4 if high_bias else 1.0)
            rng.shuffle(gains)
            layer.set_weights([weights[0] * gains[None, None, :, None]])
    return model


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 12, 12, 3)).astype(np.float32) * 3


def test_batchnorm_folding_is_exact_and_adds_the_bias():
    from workbench.recipes.st_optimize import fold_batchnorms, is_folded

    model = _block()
    before = np.asarray(model(_x()))
    kept = fold_batchnorms(model)
    assert list(kept) == ["dw"]  # γ, β kept for the depthwise's bias absorption
    assert all(is_folded(model.get_layer(n)) for n in ("bn1", "bn2", "bn3"))
    assert all(len(model.get_layer(n).get_weights()) == 2 for n in ("c1", "dw", "pw"))
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-5, rtol=1e-5)


def test_a_dead_depthwise_channel_keeps_only_its_beta():
    from workbench.recipes.st_optimize import fold_batchnorms

    model = _block()
    bn = model.get_layer("bn2")
    gamma, beta, mean, var = bn.get_weights()
    mean[2], var[2] = 0.0, 1e-12  # dead: both at most 1e-10
    bn.set_weights([gamma, beta, mean, var])
    fold_batchnorms(model)
    kernel, bias = model.get_layer("dw").get_weights()
    assert np.all(kernel[:, :, 2] == 0) and bias[2] == pytest.approx(beta[2])
    assert np.all(np.abs(kernel[:, :, 3]) > 0)


def test_weak_channels_are_zeroed_and_only_they():
    from workbench.recipes.st_optimize import zero_irrelevant_channels

    model = _block()
    conv = model.get_layer("pw")
    (kernel,) = conv.get_weights()
    kernel[..., 4] = 1e-11
    conv.set_weights([kernel])
    assert zero_irrelevant_channels(model) == 1
    (after,) = conv.get_weights()
    assert np.all(after[..., 4] == 0)
    np.testing.assert_array_equal(np.delete(after, 4, axis=3), np.delete(kernel, 4, axis=3))


def test_equalization_evens_the_pair_ranges_and_clips_keep_the_network():
    from workbench.recipes.st_optimize import (
        clip_levels,
        couples,
        cross_layer_equalisation,
        fold_batchnorms,
        set_caps,
    )

    model = _block()
    before = np.asarray(model(_x()))
    fold_batchnorms(model)
    pairs = couples(model)
    assert [(a.name, b.name, r.name) for a, b, r in pairs] == [("dw", "pw", "r2")]
    w1 = model.get_layer("dw").get_weights()[0]
    spread_before = np.ptp(w1, axis=(0, 1, 3))
    (inv_s,) = cross_layer_equalisation(pairs)
    set_caps(pairs[0][2], clip_levels(inv_s))
    w1, w2 = model.get_layer("dw").get_weights()[0], model.get_layer("pw").get_weights()[0]
    r1, r2 = np.ptp(w1, axis=(0, 1, 3)), np.ptp(w2, axis=(0, 1, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-5)  # both sides sqrt(r1·r2): equalized
    assert r1.max() / r1.min() < spread_before.max() / spread_before.min()
    levels = model.get_layer("r2")._workbench_caps
    step = (6 * inv_s.max() - 6 * inv_s.min()) / 65535
    assert np.all(np.abs(levels - 6 * inv_s) <= step)  # ReLU6 caps moved per channel, on ST's grid
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-3, rtol=1e-4)


def test_high_bias_absorption_moves_the_bias_and_is_exact_within_its_assumption():
    import workbench.recipes.st_optimize as st

    model = _block(high_bias=True)
    before = np.asarray(model(_x()))
    gamma, beta = model.get_layer("bn2").get_weights()[:2]
    kept = st.fold_batchnorms(model)
    pairs = st.couples(model)
    (inv_s,) = st.cross_layer_equalisation(pairs)
    (_, b1), (w2, b2) = model.get_layer("dw").get_weights(), model.get_layer("pw").get_weights()
    assert st.high_bias_absorption(pairs, [inv_s], kept) == 8  # every channel: β − 3γ > 0, β + 3γ < 6
    c = (beta - 3 * gamma) * inv_s
    np.testing.assert_allclose(model.get_layer("dw").get_weights()[1], b1 - c, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("pw").get_weights()[1], b2 + w2[0, 0].T @ c, rtol=1e-5)
    st.set_caps(pairs[0][2], st.clip_levels(inv_s))
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)


def test_the_whole_flow_reports_its_steps():
    from workbench.recipes.st_optimize import st_optimize_keras_model

    model = _block(high_bias=True)
    before = np.asarray(model(_x()))
    changes = st_optimize_keras_model(model)
    assert changes == {
        "folded": 3,
        "zeroed_channels": 0,
        "equalized_pairs": 1,
        "absorbed_channels": 8,
        "clipped": 1,
    }
    np.testing.assert_allclose(np.asarray(model(_x())), before, atol=1e-4, rtol=1e-4)


def test_st_optimize_is_declared_for_ssd_and_refuses_equalize():
    from workbench.errors import WorkbenchError
    from workbench.recipes import RECIPES, export_edits, parse_recipes

    assert RECIPES["st-optimize"].families == ("ssd",)
    assert export_edits("st-optimize", "int8-per-tensor").key == "st-optimized"
    # st-optimize comes first in the key, as it runs first (the split's own suffix is its setting)
    key = export_edits("st-optimize+split-channels", "int8-per-tensor").key
    assert key.startswith("st-optimized+split-channels")
    with pytest.raises(WorkbenchError, match="without equalize"):
        parse_recipes("equalize,st-optimize")
