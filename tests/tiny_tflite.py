"""Tiny real .tflite models for the runtime/inspect/bench tests, converted with TF's own converter.

One small CNN (conv → depthwise → conv → pooled dense, plus a feature-map output) whose conv
filters have deliberately uneven per-output-channel magnitudes (×0.05..×4), so per-tensor int8 is
measurably worse than per-channel. Built once per test session (~10 s on a shared CPU).
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

import numpy as np

IMGSZ = 32


def _model():
    from workbench.offline import import_tensorflow

    import_tensorflow()  # keras loads TensorFlow: torchvision must come first
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((IMGSZ, IMGSZ, 3), batch_size=1, name="images")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    feat = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    head = keras.layers.Dense(4, name="fc")(keras.layers.GlobalAveragePooling2D(name="gap")(feat))
    model = keras.Model(inp, [feat, head])
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:  # uneven per-output-channel ranges: the case per-channel scales exist for
            kernel = weights[0]
            gains = np.geomspace(0.05, 4.0, kernel.shape[-1])
            rng.shuffle(gains)
            weights[0] = (kernel * gains).astype(np.float32)
            weights[1] = rng.normal(0, 0.1, weights[1].shape).astype(np.float32)
            layer.set_weights(weights)
    return model


def calibration_images(n: int = 8, seed: int = 0) -> np.ndarray:
    """Smooth random RGB images in [0, 1], (n, 1, H, W, 3) float32 (with exact 0 and 1 pixels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMGSZ, 0:IMGSZ] / IMGSZ
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-3, 3, 3)
        img = np.stack([np.sin(a * xx + b * yy + c + k) for k in range(3)], -1) * 0.5 + 0.5
        img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
        img[0, 0], img[-1, -1] = 0.0, 1.0  # full [0, 1] range so int8 input scale is 1/255
        out.append(img[None].astype(np.float32))
    return np.stack(out)


def _convert(model, scheme: str, io: str = "uf") -> bytes:
    from workbench.offline import import_tensorflow

    tf = import_tensorflow()

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if scheme == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif scheme.startswith("int8"):
        calib = calibration_images(16, seed=1)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x] for x in calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if io == "uf" else tf.int8
        converter.inference_output_type = tf.float32 if io == "uf" else tf.int8
        if scheme == "int8-per-tensor":
            converter._experimental_disable_per_channel = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


@functools.lru_cache(maxsize=1)
def tiny_models() -> dict[str, Path]:
    """Paths of the tiny model in each scheme: fp32, fp16, int8-per-channel, int8-per-tensor, int8-ii."""
    model = _model()
    out_dir = Path(tempfile.mkdtemp(prefix="wb-tiny-tflite-"))
    specs = {
        "fp32": ("fp32", "ff"),
        "fp16": ("fp16", "ff"),
        "int8-per-channel": ("int8-per-channel", "uf"),
        "int8-per-tensor": ("int8-per-tensor", "uf"),
        "int8-ii": ("int8-per-channel", "ii"),
    }
    paths = {}
    for key, (scheme, io) in specs.items():
        paths[key] = out_dir / f"tiny_{key}.tflite"
        paths[key].write_bytes(_convert(model, scheme, io))
    return paths


@functools.lru_cache(maxsize=1)
def unrelated_model() -> Path:
    """A different float network with the same input size: conv → max-pool → dense (8 outputs)."""
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((IMGSZ, IMGSZ, 3), batch_size=1, name="images")
    x = keras.layers.Conv2D(4, 5, activation="tanh", name="c1")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    out = keras.layers.Dense(8, name="fc")(keras.layers.Flatten(name="flat")(x))
    path = Path(tempfile.mkdtemp(prefix="wb-tiny-other-")) / "other_fp32.tflite"
    path.write_bytes(_convert(keras.Model(inp, out), "fp32"))
    return path
