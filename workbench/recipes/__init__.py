"""Recovery recipes: named, composable changes to how a SavedModel becomes an int8 .tflite.

Each recipe edits a :class:`Plan` (what to export, how to calibrate, what to keep out of int8);
``quantize(..., recipes=["split-head", "calib-all"])`` applies them in registry order, so the
same set gives the same file whatever order it was named in. ``workbench recipes`` lists them.

================ ====================================================================== =========
recipe           does                                                                   all-int8
================ ====================================================================== =========
split-head       end the graph before the decode: boxes/scores/keypoints as separate    yes
                 outputs in stride units, each with its own scale; decode in float
split-levels     split-head, and one output per stride level, keypoint x/y apart from   yes
                 visibility (an int8 concat shares one scale among its inputs)
equalize         cross-layer equalization of consecutive convolutions before export     yes
                 (Ultralytics conv pairs: approximate for SiLU; ST's SSD depthwise→
                 pointwise pairs: exact, the ReLU6 caps move per channel)
split-channels   per-tensor only: each convolution whose per-tensor weight noise falls    yes
                 1.5x or more becomes up to 3 convolutions over runs of output channels
                 of similar range, each with its own scale (exact in float; more ops)
bias-correct     each conv's bias absorbs the mean output shift its int8 weights (this     yes
                 scheme's granularity) cause on 32 calibration images, before export
qat              quantization-aware fine-tuning: 300 steps with int8 weights (this scheme's   yes
                 granularity) in the forward pass, distilled from the float model on the
                 calibration images (no labels); weights end on their int8 grid
calib-all        calibrate on every image of the calibration folder (min/max, the       yes
                 only range setting the TFLite converter offers)
calib-percentile clamp the split head's keypoint offsets in the graph at ±c (their 99.99th   yes
                 percentile magnitude on the calibration images), fused into the conv so
                 its int8 range becomes ±c. Measured on yolo11n-pose: hurts (far keypoints
                 of large people lie beyond a percentile set by background anchors)
calib-mse        activation ranges narrowed to the least int8 error over a histogram of     yes
                 each tensor (outputs keep min/max); quantized by ai-edge-quantizer
weights-octav    convolution weights clipped by ai-edge-quantizer's OCTAV (MSE-optimal     yes
                 clip), per channel or per tensor
int16x8          int16 activations, int8 weights, whole model                           no
float-fallback   keep the ``FLOAT_FALLBACK_K`` blocks whose float version best restores no
                 the outputs (SQNR on calibration images) in float
================ ====================================================================== =========

Whether a file is still all-int8 and its weight granularity are read from the file itself
(:func:`workbench.recipes.verdict.file_verdict`), not from this table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from workbench.recipe_names import RECIPE_NAMES, parse_recipes

FLOAT_FALLBACK_K = 3
ALL_CALIBRATION_IMAGES = 100_000  # "every image in the folder"
KPT_PERCENTILE = 99.99


@dataclass
class Plan:
    """What a conversion does once its recipes are applied."""

    recipes: tuple[str, ...] = ()
    head: str = "single"
    equalize: bool = False
    calib_count: int = 200
    activations: str = "int8"
    float_blocks: int = 0
    kpt_percentile: float | None = None
    activation_ranges: str = "minmax"
    weight_ranges: str = "minmax"
    split_channels: bool = False
    bias_correct: bool = False
    qat: bool = False

    def __post_init__(self) -> None:
        if self.activations not in ("int8", "int16"):
            raise ValueError(f"activations must be int8 or int16, got {self.activations!r}")
        if self.activation_ranges not in ("minmax", "mse") or self.weight_ranges not in ("minmax", "octav"):
            raise ValueError(f"invalid range setting in {self}")
        if self.calib_count < 1 or self.float_blocks < 0:
            raise ValueError(f"invalid plan: {self}")

    @property
    def ranges_by_library(self) -> bool:
        """Whether ai-edge-quantizer (:mod:`workbench.recipes.ranges`) sets the ranges, not the converter."""
        return (self.activation_ranges, self.weight_ranges) != ("minmax", "minmax")

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), recipes=list(self.recipes))


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    apply: Callable[[Plan], None]


RECIPES: dict[str, Recipe] = {}


def register(name: str, summary: str) -> Callable[[Callable[[Plan], None]], Callable[[Plan], None]]:
    def wrap(fn: Callable[[Plan], None]) -> Callable[[Plan], None]:
        # the vocabulary's order is the registry's: a recipe set applies in that order
        if (*RECIPES, name) != RECIPE_NAMES[: len(RECIPES) + 1]:
            raise ValueError(f"recipe {name!r} is not next in workbench.recipe_names.RECIPE_NAMES")
        RECIPES[name] = Recipe(name, summary, fn)
        return fn

    return wrap


@register(
    "split-head",
    "boxes, scores, keypoint offsets and visibilities as separate outputs in stride units; decode in float",
)
def _split_head(plan: Plan) -> None:
    plan.head = "split"


@register(
    "split-levels",
    "split-head with one output per stride level and keypoint x/y apart from visibility: no shared "
    "int8 scale across levels or quantities",
)
def _split_levels(plan: Plan) -> None:
    plan.head = "levels"


@register(
    "equalize",
    "cross-layer equalization of conv pairs before export (SSD: exact depthwise→pointwise; YOLO: approximate, SiLU)",
)
def _equalize(plan: Plan) -> None:
    plan.equalize = True


@register(
    "split-channels",
    "per-tensor only: each conv whose weight channel ranges differ widely becomes up to 3 convs over "
    "runs of channels of similar range, each with its own int8 scale (exact in float; more ops)",
)
def _split_channels(plan: Plan) -> None:
    plan.split_channels = True


@register(
    "bias-correct",
    "empirical bias correction before export: each conv's bias absorbs the mean output shift of its "
    "int8 weights at this scheme's granularity (32 calibration images; YOLO models)",
)
def _bias_correct(plan: Plan) -> None:
    plan.bias_correct = True


@register(
    "qat",
    "quantization-aware fine-tuning before export: int8 weights (this scheme's granularity) in the forward "
    "pass, distilled from the float model on the calibration images, no labels (YOLO pose/detect; ~4 min, one core)",
)
def _qat(plan: Plan) -> None:
    plan.qat = True


@register(
    "calib-all", "calibrate on every image of the calibration folder (min/max: the converter's only method)"
)
def _calib_all(plan: Plan) -> None:
    plan.calib_count = ALL_CALIBRATION_IMAGES


@register(
    "calib-percentile",
    f"clamp split-head keypoint offsets at their {KPT_PERCENTILE}th percentile (needs split-head or "
    "split-levels; measured on yolo11n-pose: hurts, the far keypoints of large people lie beyond it)",
)
def _calib_percentile(plan: Plan) -> None:
    plan.kpt_percentile = KPT_PERCENTILE


@register(
    "calib-mse",
    "activation ranges narrowed to the least int8 error over each tensor's histogram (outputs keep "
    "min/max); quantized by ai-edge-quantizer, int8 I/O",
)
def _calib_mse(plan: Plan) -> None:
    plan.activation_ranges = "mse"


@register(
    "weights-octav",
    "convolution weights clipped by ai-edge-quantizer's OCTAV (the MSE-optimal clip), int8 I/O",
)
def _weights_octav(plan: Plan) -> None:
    plan.weight_ranges = "octav"


@register(
    "int16x8",
    "int16 activations with int8 weights for the whole model (not all-int8; per-channel weights only: "
    "TF's 16x8 mode fails on per-tensor)",
)
def _int16x8(plan: Plan) -> None:
    plan.activations = "int16"


@register(
    "float-fallback",
    f"keep the {FLOAT_FALLBACK_K} blocks that most restore the outputs in float (not all-int8)",
)
def _float_fallback(plan: Plan) -> None:
    plan.float_blocks = FLOAT_FALLBACK_K


def build_plan(recipes: str | Iterable[str] | None, calib_count: int) -> Plan:
    """The :class:`Plan` for ``recipes`` on top of a plain conversion with ``calib_count`` images."""
    names = parse_recipes(recipes)
    plan = Plan(recipes=tuple(names), calib_count=calib_count)
    for name in names:
        RECIPES[name].apply(plan)
    return plan


def applies(recipes: str | Iterable[str], scheme_value: str) -> bool:
    """Whether the recipe set can convert ``scheme_value`` (int16x8 needs per-channel weights;
    split-channels gives per-tensor weights more scales, which per-channel files already have).

    Example:
        >>> applies("split-levels+int16x8", "int8-per-tensor"), applies("int16x8", "int8-per-channel")
        (False, True)
        >>> applies("split-channels", "int8-per-channel")
        False
    """
    names = recipes.split("+") if isinstance(recipes, str) else list(recipes)
    needs = {"int16x8": "int8-per-channel", "split-channels": "int8-per-tensor"}
    return not any(
        name in names and scheme_value != scheme for name, scheme in needs.items() if "int8" in scheme_value
    )


def recipe_suffix(recipes: Iterable[str]) -> str:
    """``"+a+b"`` for variant names, ``""`` without recipes."""
    return "".join(f"+{r}" for r in recipes)
