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

Recovery recipes (:mod:`workbench.recipes`) change the conversion: more calibration images, int16
activations, blocks kept in float, or ranges set by ai-edge-quantizer instead of the converter's
min/max (:mod:`workbench.recipes.ranges`). Recipes that change the float model (split head,
equalization...) need an export made with those edits (the model family makes it:
:func:`workbench.jobs.export_job`); conversion checks the export it is given carries exactly them
and refuses it otherwise (:func:`workbench.jobs.quantize_with_recipes` exports, then converts). Every file records its
recipes in its metadata, and each result says whether the file is still all-int8 and what weight
granularity it has, as :mod:`workbench.inspect` reads them from the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from workbench.calibration import DEFAULT_CALIB_COUNT, calibration_batches
from workbench.config import IOType, Scheme
from workbench.errors import WorkbenchError
from workbench.exported import ExportResult
from workbench.fileio import atomic_path, sha256_file
from workbench.offline import import_tensorflow
from workbench.recipes import Plan, build_plan, check_family
from workbench.recipes.edits import ExportEdits

# the weight rounding maths lived here; notebooks import it from this module
from workbench.recipes.weight_rounding import fake_quantize_weights, weight_quantization_error

__all__ = [
    "DEFAULT_CALIB_COUNT",
    "QuantizeResult",
    "calibration_batches",
    "effective_io",
    "fake_quantize_weights",
    "quantize",
    "weight_quantization_error",
]
log = logging.getLogger(__name__)
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

    ``recipes`` (names or ``"a,b"``, see :mod:`workbench.recipes`) apply to int8 schemes only, and
    ``saved_model`` must have been exported with their export edits (refused otherwise).

    Example:
        >>> quantize("build/sm256", "int8-per-tensor", "build/256/int8-per-tensor-uf.tflite",
        ...          io="uf", calib="data/synth/images/train", calib_count=100)  # doctest: +SKIP
    """
    scheme, io = Scheme(scheme), IOType(io)
    plan = build_plan(recipes, calib_count, scheme)
    io = effective_io(scheme, io)
    if plan.conversion.activations == "int16":
        io = IOType.FF  # the converter's 16x8 mode takes float (or int16) I/O, not uint8
    elif plan.conversion.ranges_by_library:
        io = IOType.II  # ai-edge-quantizer writes int8 input and outputs
    export = checked_export(saved_model, plan, scheme)
    batches = _calibration_images(export, scheme, calib, plan, allow_unnormalized)

    started = time.perf_counter()
    flatbuffer, float_blocks = _flatbuffer(saved_model, scheme, io, batches, plan)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(flatbuffer)
        _write_metadata(tmp, export, scheme, io, len(batches), plan, float_blocks)
    return _result(out, scheme, io, export.imgsz, len(batches), started, plan, float_blocks)


def checked_export(saved_model: str | Path, plan: Plan, scheme: Scheme) -> ExportResult:
    """The export at ``saved_model``, checked complete, of a family ``plan``'s recipes apply to, and
    made with exactly the export edits they need (an int8 file records its recipes, so an edited
    export converts to int8 only with the recipes that made it; a float file of one is allowed)."""
    export = ExportResult.load(saved_model)
    for part in ("saved_model.pb", "variables/variables.index"):
        if not (Path(saved_model) / part).is_file():
            raise WorkbenchError(
                f"incomplete SavedModel: {part} is missing (re-run `workbench export`)", path=saved_model
            )
    check_family(plan.recipes, export.family, path=saved_model)
    have = ExportEdits.recorded(export)
    if plan.export.split_channels and have.split_channels and have.split_channels > 0:
        # split-channels converts an export split at any setting: the setting is the export's
        plan = replace(plan, export=replace(plan.export, split_channels=have.split_channels))
    if have != plan.export and (plan.recipes or scheme.is_int8):
        raise WorkbenchError(
            f"this export has the edits [{have.key or 'none'}], and "
            f"{', '.join(plan.recipes) or 'a plain conversion'} needs [{plan.export.key or 'none'}]: "
            "convert an export made with them (workbench.jobs.export_job; `workbench quantize --recipe` "
            "and workbench.jobs.quantize_with_recipes export and convert)",
            path=saved_model,
        )
    return export


def _calibration_images(
    export: ExportResult,
    scheme: Scheme,
    calib: str | Path | None,
    plan: Plan,
    allow_unnormalized: bool,
) -> list[np.ndarray]:
    """The representative images of an int8 conversion (none for float schemes), prepared as the
    export records."""
    if not scheme.is_int8:
        return []
    calib_count = plan.conversion.calib_count
    if not export.normalized and not allow_unnormalized:
        raise WorkbenchError(
            f"refusing {scheme.value}: this SavedModel outputs pixel coordinates, and full-int8 gives "
            f"its one output tensor a single scale shared by coordinates in [0, {export.imgsz}] and "
            "scores in [0, 1], so every score collapses to a few levels. Re-export without "
            "--pixel-outputs (normalized outputs), or pass --allow-unnormalized to convert anyway",
            path=export.saved_model,
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
    return batches


def _flatbuffer(
    saved_model: str | Path, scheme: Scheme, io: IOType, batches: list[np.ndarray], plan: Plan
) -> tuple[bytes, list[str]]:
    """The converted model and the blocks kept in float (float-fallback)."""
    tf = import_tensorflow()
    conversion = plan.conversion
    if conversion.float_blocks:
        return _float_fallback(saved_model, batches, scheme, io, conversion.float_blocks)
    if conversion.ranges_by_library:
        from workbench.recipes.ranges import quantize_with_ranges

        flatbuffer = quantize_with_ranges(
            _convert(tf, saved_model, Scheme.FP32, IOType.FF, [], "int8"),
            batches,
            per_tensor=scheme is Scheme.INT8_PER_TENSOR,
            activation_ranges=conversion.activation_ranges,
            weight_ranges=conversion.weight_ranges,
        )
        return flatbuffer, []
    return _convert(tf, saved_model, scheme, io, batches, conversion.activations), []


def _write_metadata(
    path: Path,
    export: ExportResult,
    scheme: Scheme,
    io: IOType,
    calib_images: int,
    plan: Plan,
    float_blocks: list[str],
) -> None:
    from workbench.runtime import write_tflite_metadata

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
        "calib_images": calib_images,
        "weights_sha256": export.weights_sha256,
        "head": export.head,
        "recipes": list(plan.recipes),
        "float_blocks": float_blocks,
    }
    write_tflite_metadata(path, metadata)


def _result(
    out: Path,
    scheme: Scheme,
    io: IOType,
    imgsz: int,
    calib_images: int,
    started: float,
    plan: Plan,
    float_blocks: list[str],
) -> QuantizeResult:
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.tflite_graph import read_graph

    graph = read_graph(out)
    return QuantizeResult(
        path=out,
        scheme=scheme,
        io=io,
        imgsz=imgsz,
        size_bytes=out.stat().st_size,
        sha256=sha256_file(out),
        calib_images=calib_images,
        seconds=round(time.perf_counter() - started, 1),
        recipes=list(plan.recipes),
        all_int8=scheme.is_int8 and is_all_int8(graph),
        granularity=weight_granularity(graph).verdict,
        float_blocks=float_blocks,
    )


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
