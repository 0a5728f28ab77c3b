"""SavedModel → ``.tflite`` in one of four numeric schemes, with the zoo's I/O conventions.

=================== ===========================================================================
scheme              TFLite converter settings
=================== ===========================================================================
fp32                no optimisation
fp16                ``Optimize.DEFAULT`` + ``supported_types=[float16]`` (weights stored fp16)
int8-per-channel    full-integer, one weight scale per output channel (converter default)
int8-per-tensor     full-integer with ``_experimental_disable_per_channel = True`` (as ST's zoo)
=================== ===========================================================================

I/O types (ST's two letters, input then output): ``uf`` uint8 in / float out (the zoo's deployment
form), ``ii`` int8 in / int8 out, ``ff`` float in / float out. Float schemes have float I/O, so
they are always written as ``ff`` whatever was asked (the result says so).

The representative dataset is a folder of images, preprocessed exactly as evaluation preprocesses
them: the export's recorded pre-processing (letterbox to the model size, RGB, [0, 1] for YOLO;
resize and [-1, 1] for ST's SSD, from its config yaml).

Recovery recipes (:mod:`workbench.recipes`) change the conversion: a different export (split head,
equalization: the SavedModel is re-exported from the weights it records, beside the given one),
more calibration images, int16 activations, blocks kept in float, or ranges set by
ai-edge-quantizer instead of the converter's min/max (:mod:`workbench.recipes.ranges`). Every file records its
recipes in its metadata, and each result says whether the file is still all-int8 and what weight
granularity it has, as :mod:`workbench.inspect` reads them from the file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import IOType, Scheme
from workbench.errors import WorkbenchError
from workbench.export import ExportResult
from workbench.fileio import atomic_path, exclusive, sha256_file
from workbench.offline import import_tensorflow
from workbench.safeload import check_weights

log = logging.getLogger(__name__)
DEFAULT_CALIB_COUNT = 200
FALLBACK_RANK_IMAGES = 8  # calibration images scoring each block for float-fallback


@dataclass
class QuantizeResult:
    """One converted variant."""

    path: Path
    scheme: Scheme
    io: IOType
    imgsz: int
    size_bytes: int
    sha256: str
    calib_images: int
    seconds: float
    recipes: list[str] = field(default_factory=list)
    all_int8: bool = False
    granularity: str = "float"
    float_blocks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from workbench.inspect import VERDICTS

        self.scheme, self.io = Scheme(self.scheme), IOType(self.io)
        if self.scheme.is_int8 and self.calib_images <= 0:
            raise ValueError("an int8 variant needs calibration images")
        if self.granularity not in VERDICTS:
            raise ValueError(f"granularity must be one of {VERDICTS}, got {self.granularity!r}")
        if self.all_int8 and not self.scheme.is_int8:
            raise ValueError(f"a {self.scheme.value} file cannot be all-int8")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(path=str(self.path), scheme=self.scheme.value, io=self.io.value)
        return out


def calibration_batches(
    folder: str | Path,
    imgsz: int,
    count: int = DEFAULT_CALIB_COUNT,
    *,
    preprocess: str = "letterbox",
    interpolation: str = "bilinear",
    input_range: tuple[float, float] | list[float] = (0.0, 1.0),
) -> list[np.ndarray]:
    """Up to ``count`` images prepared as evaluation prepares them, as (1,S,S,3) float32 in ``input_range``."""
    from workbench.data.images import list_images, load_image
    from workbench.preprocess import letterbox, resize

    lo, hi = (np.float32(v) for v in input_range)
    batches = []
    for path in list_images(folder, count):
        if preprocess == "letterbox":
            image, _ = letterbox(load_image(path), (imgsz, imgsz))
        else:
            image, _ = resize(load_image(path), (imgsz, imgsz), interpolation)
        batches.append((lo + image.astype(np.float32) / np.float32(255.0) * (hi - lo))[None])
    return batches


def effective_io(scheme: Scheme, io: IOType) -> IOType:
    """Float schemes keep float I/O."""
    return io if scheme.is_int8 else IOType.FF


def quantize(
    saved_model: str | Path,
    scheme: str | Scheme,
    out: str | Path,
    *,
    io: str | IOType = IOType.UF,
    calib: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
    allow_unnormalized: bool = False,
    recipes: str | Iterable[str] | None = None,
) -> QuantizeResult:
    """Convert ``saved_model`` to ``out`` (.tflite) in ``scheme`` with ``io`` tensor types.

    Int8 of a SavedModel with pixel outputs is refused unless ``allow_unnormalized``: its single
    output tensor would share one scale between coordinates in [0, imgsz] and scores in [0, 1],
    and the scores collapse.

    Metadata is embedded as Ultralytics does (a ``metadata.json`` zip entry appended to the file):
    Ultralytics' keys, so ``YOLO('x.tflite')`` can load float/int8-I/O files, plus ours under
    ``"workbench"`` (normalized outputs, preprocessing, scheme, I/O, calibration count).

    ``recipes`` (names or ``"a,b"``, see :mod:`workbench.recipes`) apply to int8 schemes only.

    Example:
        >>> quantize("build/sm256", "int8-per-tensor", "build/256/int8-per-tensor-uf.tflite",
        ...          io="uf", calib="data/synth/images/train", calib_count=100)  # doctest: +SKIP
    """
    from workbench.recipes import build_plan

    if isinstance(calib_count, bool) or not isinstance(calib_count, int) or calib_count < 1:
        raise WorkbenchError(f"--calib-count must be an integer of at least 1, got {calib_count!r}")
    scheme, io = Scheme(scheme), IOType(io)
    io = effective_io(scheme, io)
    plan = build_plan(recipes, calib_count)
    if plan.recipes and not scheme.is_int8:
        raise WorkbenchError(f"recipes ({', '.join(plan.recipes)}) apply to int8 schemes, not {scheme.value}")
    if plan.activations == "int16" and scheme is Scheme.INT8_PER_TENSOR:
        raise WorkbenchError(
            "int16x8 runs with per-channel weights only: TF's 16x8 mode fails on per-tensor weights "
            "('Quantized dimension for tensor property and quantization parameters do not match')"
        )
    if plan.activations == "int16":
        io = IOType.FF  # the converter's 16x8 mode takes float (or int16) I/O, not uint8
    elif plan.ranges_by_library:
        io = IOType.II  # ai-edge-quantizer writes int8 input and outputs
    calib_count = plan.calib_count
    export = ExportResult.load(saved_model)
    for part in ("saved_model.pb", "variables/variables.index"):
        if not (Path(saved_model) / part).is_file():
            raise WorkbenchError(
                f"incomplete SavedModel: {part} is missing (re-run `workbench export`)", path=saved_model
            )
    if plan.split_channels and scheme is not Scheme.INT8_PER_TENSOR:
        raise WorkbenchError(
            f"split-channels gives per-tensor weights more than one scale per convolution; {scheme.value} "
            "weights already have one per channel: use it with int8-per-tensor"
        )
    wanted = {
        "head": plan.head,
        "equalize": plan.equalize,
        "split_channels": plan.split_channels,
        "kpt_clip": None,
        "bias_correct": None,
        "qat": None,
    }
    granularity = "per-tensor" if scheme is Scheme.INT8_PER_TENSOR else "per-channel"
    for option, count in _calibrated_edits(plan):
        if calib is None:
            raise WorkbenchError(
                f"{option.replace('_', '-')} learns from calibration images: pass --calib IMAGES"
            )
        edit_batches = calibration_batches(calib, export.imgsz, count)
        digest = hashlib.sha256(b"".join(b.tobytes() for b in edit_batches)).hexdigest()[:8]
        wanted[option] = (f"{granularity}:{digest}", edit_batches)
    if plan.kpt_percentile is not None:
        if calib is None or export.task != "pose":
            raise WorkbenchError(
                "calib-percentile clamps keypoint offsets: it needs a pose model and --calib IMAGES"
            )
        from workbench.export import keypoint_offset_percentiles

        wanted["kpt_clip"] = keypoint_offset_percentiles(
            export.weights,
            calibration_batches(calib, export.imgsz, calib_count),
            plan.kpt_percentile,
            plan.equalize,
        )
    if plan.recipes and _export_options(wanted) != _cached_options(export):
        export = _reexport(export, saved_model, wanted)
        saved_model = export.saved_model
    batches: list[np.ndarray] = []
    if scheme.is_int8:
        if not export.normalized and not allow_unnormalized:
            raise WorkbenchError(
                f"refusing {scheme.value}: this SavedModel outputs pixel coordinates, and full-int8 gives "
                f"its one output tensor a single scale shared by coordinates in [0, {export.imgsz}] and "
                "scores in [0, 1], so every score collapses to a few levels. Re-export without "
                "--pixel-outputs (normalized outputs), or pass --allow-unnormalized to convert anyway",
                path=saved_model,
            )
        if calib_count < 1:
            raise WorkbenchError(f"calibration needs at least 1 image, got calib_count {calib_count}")
        if calib is None:
            raise WorkbenchError(f"{scheme.value} needs --calib IMAGES (a folder of calibration images)")
        from workbench.calibration import prepared_images

        options = {
            "preprocess": export.preprocess,
            "interpolation": export.interpolation,
            "input_range": tuple(export.input_range),
        }
        key = (str(Path(calib).resolve()), export.imgsz, calib_count, *options.values())
        batches = prepared_images(  # decoded once for the int8 schemes of a task (executor)
            key, lambda: calibration_batches(calib, export.imgsz, calib_count, **options)
        )
        log.info("calibrating %s with %d images from %s", scheme.value, len(batches), calib)

    tf = import_tensorflow()

    started = time.perf_counter()
    float_blocks: list[str] = []
    if plan.float_blocks:
        flatbuffer, float_blocks = _float_fallback(saved_model, batches, scheme, io, plan.float_blocks)
    elif plan.ranges_by_library:
        from workbench.recipes.ranges import quantize_with_ranges

        flatbuffer = quantize_with_ranges(
            _convert(tf, saved_model, Scheme.FP32, IOType.FF, [], "int8"),
            batches,
            per_tensor=scheme is Scheme.INT8_PER_TENSOR,
            activation_ranges=plan.activation_ranges,
            weight_ranges=plan.weight_ranges,
        )
    else:
        flatbuffer = _convert(tf, saved_model, scheme, io, batches, plan.activations)

    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.runtime import write_tflite_metadata
    from workbench.tflite_graph import read_graph

    # Ultralytics' export time would make two conversions of one config differ; the file's
    # provenance is its weights' sha256 (below) and the run's config.
    metadata = {k: v for k, v in export.ultralytics.items() if k != "date"}
    metadata["workbench"] = {
        "normalized": export.normalized,
        "family": export.family,
        "preprocess": export.preprocess,
        "interpolation": export.interpolation,
        "input_range": export.input_range,
        "task": export.task,
        "imgsz": export.imgsz,
        "kpt_shape": export.kpt_shape,
        "scheme": scheme.value,
        "io": io.value,
        "calib_images": len(batches),
        "weights_sha256": export.weights_sha256,
        "head": export.head,
        "recipes": list(plan.recipes),
        "float_blocks": float_blocks,
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(flatbuffer)
        write_tflite_metadata(tmp, metadata)
    graph = read_graph(out)
    return QuantizeResult(
        path=out,
        scheme=scheme,
        io=io,
        imgsz=export.imgsz,
        size_bytes=out.stat().st_size,
        sha256=sha256_file(out),
        calib_images=len(batches),
        seconds=round(time.perf_counter() - started, 1),
        recipes=list(plan.recipes),
        all_int8=scheme.is_int8 and is_all_int8(graph),
        granularity=weight_granularity(graph).verdict,
        float_blocks=float_blocks,
    )


def _calibrated_edits(plan) -> list[tuple[str, int]]:
    """The export options that learn from calibration images, with how many images each takes."""
    from workbench.recipes.bias_correct import BIAS_CORRECTION_IMAGES
    from workbench.recipes.qat import QAT_IMAGES

    return [
        (option, count)
        for option, count, wanted in (
            ("bias_correct", BIAS_CORRECTION_IMAGES, plan.bias_correct),
            ("qat", QAT_IMAGES, plan.qat),
        )
        if wanted
    ]


def _reexport(export: ExportResult, saved_model: str | Path, options: dict[str, Any]) -> ExportResult:
    """The SavedModel with ``options`` (head, equalize), exported from the same weights beside ``saved_model``.

    Reused when a matching one is already there (same weights sha256, size and options).
    """
    yolo_only = (
        options["head"] != "single"
        or options["kpt_clip"] is not None
        or options["bias_correct"]
        or options["qat"]
    )
    if export.family != "yolo" and yolo_only:
        raise WorkbenchError(
            f"split-head, split-levels, calib-percentile, bias-correct and qat change an Ultralytics YOLO model; "
            f"this is a {export.family} model (its recipes: equalize, split-channels, calib-all, calib-mse, "
            "weights-octav, int16x8, float-fallback)",
            path=saved_model,
        )
    tag = f"+{options['head']}-head" + ("+equalized" if options["equalize"] else "")
    if options["split_channels"]:
        tag += "+split-channels"
    if options["kpt_clip"] is not None:
        tag += "+clip{:g}_{:g}".format(*options["kpt_clip"])
    if options["bias_correct"] is not None:
        tag += "+bc-" + options["bias_correct"][0].replace(":", "-")
    if options["qat"] is not None:
        tag += "+qat-" + options["qat"][0].replace(":", "-")
    folder = Path(saved_model).parent / f"{Path(saved_model).name}{tag}"
    with exclusive(folder):  # cells converting in parallel share this re-export: build it once
        return _reexport_locked(export, saved_model, options, folder)


def _reexport_locked(
    export: ExportResult, saved_model: str | Path, options: dict[str, Any], folder: Path
) -> ExportResult:
    from workbench.export import export_saved_model
    from workbench.families import get_family

    if folder.is_dir():
        cached = ExportResult.load(folder)
        if {"weights_sha256": cached.weights_sha256, "imgsz": cached.imgsz, **_cached_options(cached)} == {
            "weights_sha256": export.weights_sha256,
            "imgsz": export.imgsz,
            **_export_options(options),
        }:
            return cached
    if not Path(export.weights).is_file():
        raise WorkbenchError(
            f"the recipe needs a re-export, and the weights this SavedModel came from ({export.weights}) are gone",
            path=saved_model,
        )
    if export.family != "yolo":
        return get_family(export.family).export(
            export.weights, export.imgsz, folder, equalize=options["equalize"],
            split_channels=options["split_channels"],
        )  # fmt: skip
    return export_saved_model(export.weights, export.imgsz, folder, normalize=export.normalized, **options)


def _export_options(options: dict[str, Any]) -> dict[str, Any]:
    """The recorded form of export ``options``: bias-correct's and qat's (tag, batches) become their tags."""
    return dict(
        options, **{k: None if options[k] is None else options[k][0] for k in ("bias_correct", "qat")}
    )


def _cached_options(cached: ExportResult) -> dict[str, Any]:
    return {
        "head": cached.head,
        "equalize": cached.equalized,
        "split_channels": cached.split_channels,
        "kpt_clip": cached.kpt_clip,
        "bias_correct": cached.bias_corrected,
        "qat": cached.qat,
    }


def _convert(
    tf, saved_model, scheme: Scheme, io: IOType, batches: list[np.ndarray], activations: str
) -> bytes:
    """The TFLite converter's plain conversion in ``scheme`` (int16 activations for 16x8)."""
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    except Exception as err:  # TF raises OSError, DecodeError, ValueError... for a damaged folder
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkbenchError(
            f"not a loadable SavedModel ({type(err).__name__}: {first}); re-run `workbench export`",
            path=saved_model,
        ) from None
    if scheme is Scheme.FP16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif scheme.is_int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(batches)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if activations == "int16"
            else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        converter.inference_input_type = {IOType.UF: tf.uint8, IOType.II: tf.int8, IOType.FF: tf.float32}[io]
        converter.inference_output_type = tf.int8 if io is IOType.II else tf.float32
        # ST's zoo switch for per-tensor weights; the default is per-channel
        converter._experimental_disable_per_channel = scheme is Scheme.INT8_PER_TENSOR
    from workbench.calibration import reuse_calibration

    try:
        with reuse_calibration():  # per-channel and per-tensor of one export calibrate alike
            return converter.convert()
    except Exception as err:
        raise WorkbenchError(f"TFLite conversion to {scheme.value} failed: {err}", path=saved_model) from None


def _float_fallback(
    saved_model, batches: list[np.ndarray], scheme: Scheme, io: IOType, k: int
) -> tuple[bytes, list[str]]:
    """Int8 with the ``k`` blocks that best restore the outputs (alone, in float) kept in float."""
    from workbench.recipes.selective import SelectiveQuantizer

    selective = SelectiveQuantizer(saved_model, batches, per_tensor=scheme is Scheme.INT8_PER_TENSOR)
    ranked = selective.rank_by_output_sqnr(selective.blocks(), batches[:FALLBACK_RANK_IMAGES])
    chosen = [block for block, _ in ranked[:k]]
    log.info("float fallback: %s", "; ".join(b.label for b in chosen))
    nodes = [n for block in chosen for n in block.nodes]
    return selective.convert(nodes, io), [b.label for b in chosen]


def _representative(batches: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
    for batch in batches:
        yield [batch]


def fake_quantize_weights(weights: np.ndarray, per_channel: bool, axis: int = 0) -> np.ndarray:
    """Symmetric int8 round trip of a weight tensor, as the TFLite converter quantizes weights.

    Per-channel takes one scale per slice along ``axis`` (output channels); per-tensor one scale.

    Example:
        >>> w = np.array([[1.0, -0.5], [0.01, 0.02]])
        >>> float(np.abs(fake_quantize_weights(w, per_channel=True) - w).max()) < 1e-3
        True
    """
    weights = np.asarray(weights, dtype=np.float64)
    reduce = tuple(i for i in range(weights.ndim) if i != axis) if per_channel else None
    scale = np.max(np.abs(weights), axis=reduce, keepdims=per_channel) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    return np.clip(np.round(weights / scale), -127, 127) * scale


def weight_quantization_error(weights_pt: str | Path, layers: int | None = None):
    """SQNR (dB) of int8 weights per-tensor, per-channel and per-tensor after ``split-channels``, for
    the first ``layers`` (default all) ungrouped convolutions.

    A teaching aid: shows how much resolution per-tensor weights lose where channel ranges differ,
    and how much the ``split-channels`` recipe's runs (:mod:`workbench.recipes.split_channels`,
    each run its own per-tensor scale) give back. Returns a DataFrame with one row per convolution
    (BatchNorm folded in, as at export).
    """
    import pandas as pd
    import torch
    from ultralytics import YOLO

    from workbench.recipes.split_channels import MIN_GAIN, SPLIT_GROUPS, channel_groups, noise_gain

    path = Path(weights_pt)
    if not path.is_file():
        raise WorkbenchError("weights file not found", path=path)
    check_weights(path)
    model = YOLO(str(path)).model.fuse()
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups == 1:
            w = module.weight.detach().numpy()
            ranges = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            signal = float(np.sum(w.astype(np.float64) ** 2))
            row = {
                "layer": name,
                "out_channels": w.shape[0],
                "channel_range_ratio": float(ranges.max() / max(ranges.min(), 1e-12)),
            }
            runs = channel_groups(ranges, SPLIT_GROUPS)
            if len(runs) == 1 or noise_gain(ranges, runs) < MIN_GAIN:
                runs = [np.arange(w.shape[0])]  # the recipe leaves this conv whole
            split = np.empty_like(w, dtype=np.float64)
            for run in runs:
                split[run] = fake_quantize_weights(w[run], per_channel=False)
            rounded = {
                "per_tensor_db": fake_quantize_weights(w, False),
                "per_channel_db": fake_quantize_weights(w, True),
                "split_channels_db": split,
            }
            for label, values in rounded.items():
                noise = float(np.sum((values - w) ** 2))
                row[label] = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
            rows.append(row)
            if layers is not None and len(rows) == layers:
                break
    return pd.DataFrame(rows).round(2)
