"""Range setting beyond the TFLite converter's min/max, through Google's ai-edge-quantizer.

The TFLite converter takes each activation's range as its min/max over the calibration images and
each weight's range as its max |w|. Two recipes replace those ranges; the quantization itself
(scales, zero points, int8 kernels, the file) is ai-edge-quantizer's static int8 recipe applied to
the float ``.tflite`` of the same SavedModel:

- ``calib-mse`` (activations): ai-edge-quantizer calibrates every tensor's min/max over the
  calibration images; then, for every tensor but the model's outputs, the range is narrowed to the
  one whose int8 rounding + clipping error over a histogram of its values (the first
  ``MSE_HISTOGRAM_IMAGES`` calibration images) is least. Outputs keep min/max: clipping them cuts
  the far keypoints of large people, as ``calib-percentile`` measured.
- ``weights-octav`` (weights): convolution weights clipped by ai-edge-quantizer's OCTAV algorithm
  (Sakr et al., 2022, "Optimal Clipping and Magnitude-aware Differentiation"), the MSE-optimal
  clip found by Newton iterations, per channel or per tensor.

ai-edge-quantizer's own activation update (a moving average of per-batch min/max, its default) and
its ``MSE`` weight algorithm (a Gaussian rule, 0.054·RMS) were measured on yolo11n-pose and both
cost AP (README, Recovery), so neither is used: calibration here accumulates the global min/max,
as the converter does, before the MSE step.

The files take int8 input and give int8 outputs (ST's ``ii`` I/O), integer throughout, which
:func:`workbench.inspect.is_all_int8` checks.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import warnings

import numpy as np

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)
MSE_HISTOGRAM_IMAGES = 32
HISTOGRAM_BINS = 2048
SHRINK_STEPS = np.linspace(0.5, 1.0, 26)  # candidate ends: 50 % .. 100 % of min and of max
CALIBRATION_THREADS = 2


def mse_range(hist: np.ndarray, lo: float, hi: float, levels: int = 256) -> tuple[float, float]:
    """The ``[lo', hi']`` within ``[lo, hi]`` (0 kept inside) whose uniform ``levels``-step quantization
    of the histogram ``hist`` (equal bins over ``[lo, hi]``) has the least squared error.

    Example:
        >>> h = np.r_[np.full(2047, 100.0), 1.0]  # one outlier bin at the top
        >>> lo, hi = mse_range(h, 0.0, 10.0)
        >>> lo, round(hi, 2)
        (0.0, 5.0)
    """
    if not hi > lo or hist.sum() <= 0:
        return lo, hi
    bins = len(hist)
    centers = lo + (np.arange(bins) + 0.5) * (hi - lo) / bins
    weights = hist / hist.sum()
    best = (np.inf, lo, hi)
    for b in SHRINK_STEPS if lo < 0 else (1.0,):
        for a in SHRINK_STEPS if hi > 0 else (1.0,):
            low, high = min(lo * b, 0.0), max(hi * a, 0.0)
            step = (high - low) / (levels - 1)
            clipped = np.clip(centers, low, high)
            error = float(np.sum(weights * (centers - (np.round((clipped - low) / step) * step + low)) ** 2))
            if error < best[0] - 1e-15:
                best = (error, low, high)
    return best[1], best[2]


def _global_min_max(qsv: dict, new: dict) -> dict:
    """Calibration update keeping the running min/max, as the TFLite converter's calibrator does."""
    if not qsv:
        return new
    return {"min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def _narrow_to_mse(float_model: bytes, qsvs: dict, batches: list[np.ndarray]) -> int:
    """Replace the min/max of every non-output activation in ``qsvs`` by its MSE range; how many changed."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(
        model_content=float_model, experimental_preserve_all_tensors=True, num_threads=CALIBRATION_THREADS
    )
    interpreter.allocate_tensors()
    index = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    outputs = {d["name"] for d in interpreter.get_output_details()}
    bounds = {}
    for name, qsv in qsvs.items():
        if name in index and name not in outputs and np.size(qsv.get("min", ())) == 1:
            lo, hi = float(np.ravel(qsv["min"])[0]), float(np.ravel(qsv["max"])[0])
            if hi > lo:
                bounds[name] = (lo, hi)
    hists = {name: np.zeros(HISTOGRAM_BINS) for name in bounds}
    (input_detail,) = interpreter.get_input_details()
    for batch in batches[:MSE_HISTOGRAM_IMAGES]:
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
        for name, (lo, hi) in bounds.items():
            hists[name] += np.histogram(interpreter.get_tensor(index[name]), HISTOGRAM_BINS, (lo, hi))[0]
    changed = 0
    for name, (lo, hi) in bounds.items():
        low, high = mse_range(hists[name], lo, hi)
        if (low, high) != (lo, hi):
            changed += 1
        qsv = qsvs[name]
        qsvs[name] = {
            "min": np.full(np.shape(qsv["min"]), low, dtype=np.asarray(qsv["min"]).dtype),
            "max": np.full(np.shape(qsv["max"]), high, dtype=np.asarray(qsv["max"]).dtype),
        }
    return changed


def quantize_with_ranges(
    float_model: bytes,
    batches: list[np.ndarray],
    *,
    per_tensor: bool,
    activation_ranges: str = "minmax",
    weight_ranges: str = "minmax",
) -> bytes:
    """Static int8 quantization of ``float_model`` (a float .tflite) by ai-edge-quantizer with the
    given range setting for activations (``minmax`` | ``mse``) and convolution weights (``minmax`` |
    ``octav``); int8 input and outputs."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if activation_ranges not in ("minmax", "mse") or weight_ranges not in ("minmax", "octav"):
        raise ValueError(
            f"unknown range setting: activations {activation_ranges!r}, weights {weight_ranges!r}"
        )
    if not batches:
        raise WorkbenchError("range setting needs calibration images")
    granularity = qtyping.QuantGranularity.TENSORWISE if per_tensor else qtyping.QuantGranularity.CHANNELWISE
    quant = quantizer.Quantizer(bytearray(float_model))
    quant.add_static_config(".*", "*", 8, 8, granularity)
    if weight_ranges == "octav":
        for op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            quant.add_static_config(".*", op, 8, 8, granularity, algorithm_key=AlgorithmName.OCTAV)
    signature_list = Interpreter(model_content=float_model).get_signature_list()
    if len(signature_list) != 1:
        raise WorkbenchError(f"expected one signature in the float model, found {len(signature_list)}")
    ((signature, spec),) = signature_list.items()
    (input_name,) = spec["inputs"]
    # both interpreters keep every tensor, which LiteRT warns is "for debugging purposes only":
    # reading every tensor is what calibration is
    warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors", category=UserWarning)
    calib = calibrator.Calibrator(
        quant._float_model_buffer,  # noqa: SLF001  (the parsed model the library quantizes)
        num_threads=CALIBRATION_THREADS,
        qsv_update_func=_global_min_max,
    )
    calib.calibrate({signature: [{input_name: b} for b in batches]}, quant._recipe_manager)  # noqa: SLF001
    qsvs = calib.get_model_qsvs()
    if activation_ranges == "mse":
        changed = _narrow_to_mse(float_model, qsvs, batches)
        log.info("calib-mse: %d of %d activation ranges narrowed", changed, len(qsvs))
    with contextlib.redirect_stdout(_io.StringIO()):  # the library prints a size summary
        result = quant.quantize(qsvs)
    if result.quantized_model is None:
        raise WorkbenchError("ai-edge-quantizer returned no model")
    return bytes(result.quantized_model)
