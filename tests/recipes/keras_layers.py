"""Shared set-up of the tiny Keras models the Keras recipe tests build."""

from __future__ import annotations

import numpy as np


def randomize_batchnorm(layer, rng: np.random.Generator) -> None:
    """Give a BatchNormalization layer non-trivial statistics (γ, β, mean, variance), so folding it
    and moving channels through it are exercised."""
    n = layer.get_weights()[0].shape[0]
    layer.set_weights(
        [rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)]
    )
