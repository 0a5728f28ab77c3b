"""Recovery recipes: named, composable changes to how a SavedModel becomes an int8 .tflite.

Each registry entry (:class:`Recipe`) declares the model families and the schemes it applies to,
and its edits, split by who makes them: export edits (:class:`~.edits.ExportEdits`: head,
equalization, split convolutions, bias correction, qat, keypoint clamp), which the model family
makes when it exports, and conversion edits (:class:`~.edits.ConversionEdits`: calibration count,
ranges, float blocks, int16 activations). :func:`build_plan` composes a set for one scheme in
registry order, so the same set gives the same file whatever order it was named in.
``workbench recipes`` lists them.

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
st-optimize      ST's model-zoo preparation for per-tensor int8 (their ``optimize: True``):   yes
                 BN folding, weak channels zeroed, range-based CLE, high-bias
                 absorption, per-channel ReLU6 clips (:mod:`.st_optimize`; SSD)
split-channels   per-tensor only: each convolution whose per-tensor weight noise falls    yes
                 1.5x or more becomes up to 3 convolutions over runs of output channels
                 of similar range, each with its own scale; channel orders are permuted
                 so the runs concatenate in place (exact in float; no GATHER; more ops)
split-channels-  split-channels with finer parts (ST's SSD): up to 6 per conv, and convs   yes
fine             of 32 channels or fewer split too, as full-width parts summed by ADDs
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

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from workbench.errors import WorkbenchError
from workbench.recipe_names import RECIPE_NAMES, parse_recipes
from workbench.recipes.edits import ConversionEdits, ExportEdits

FLOAT_FALLBACK_K = 3
ALL_CALIBRATION_IMAGES = 100_000  # "every image in the folder"
KPT_PERCENTILE = 99.99
SPLIT_MIN_GAIN = 1.5  # = workbench.recipes.split_channels.MIN_GAIN (that module imports numpy)
INT8_SCHEMES = ("int8-per-channel", "int8-per-tensor")
GRANULARITY = "<granularity>"  # an export edit's value that is the scheme's weight granularity
BOTH = ("yolo", "ssd")


@dataclass(frozen=True)
class Recipe:
    """One registry entry: what it applies to and what it edits.

    ``families``: the model families it works on; ``schemes``: the schemes it converts;
    ``export``: :class:`ExportEdits` fields it sets (:data:`GRANULARITY` for the scheme's weight
    granularity); ``conversion``: :class:`ConversionEdits` fields it sets.
    """

    name: str
    summary: str
    families: tuple[str, ...]
    schemes: tuple[str, ...] = INT8_SCHEMES
    export: dict[str, Any] = field(default_factory=dict, hash=False)
    conversion: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Plan:
    """What a conversion does once its recipes are applied: the export it needs and how it converts."""

    recipes: tuple[str, ...]
    export: ExportEdits
    conversion: ConversionEdits

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipes": list(self.recipes),
            "export": self.export.to_dict(),
            "conversion": self.conversion.to_dict(),
        }


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    # the vocabulary's order is the registry's: a recipe set applies in that order
    if (*RECIPES, recipe.name) != RECIPE_NAMES[: len(RECIPES) + 1]:
        raise ValueError(f"recipe {recipe.name!r} is not next in workbench.recipe_names.RECIPE_NAMES")
    unknown = set(recipe.export) - set(ExportEdits.__dataclass_fields__)
    unknown |= set(recipe.conversion) - set(ConversionEdits.__dataclass_fields__)
    if unknown:
        raise ValueError(f"recipe {recipe.name!r} sets unknown edits {sorted(unknown)}")
    RECIPES[recipe.name] = recipe
    return recipe


register(
    Recipe(
        "split-head",
        "boxes, scores, keypoint offsets and visibilities as separate outputs in stride units; decode in float",
        families=("yolo",),
        export={"head": "split"},
    )
)
register(
    Recipe(
        "split-levels",
        "split-head with one output per stride level and keypoint x/y apart from visibility: no shared "
        "int8 scale across levels or quantities",
        families=("yolo",),
        export={"head": "levels"},
    )
)
register(
    Recipe(
        "equalize",
        "cross-layer equalization of conv pairs before export (SSD: exact depthwise→pointwise; YOLO: approximate, SiLU)",
        families=BOTH,
        export={"equalize": True},
    )
)
register(
    Recipe(
        "st-optimize",
        "ST's model-zoo per-tensor preparation (optimize: True): BN folding, weak channels zeroed, "
        "range-based CLE of depthwise→conv pairs, high-bias absorption, per-channel ReLU6 clips (SSD)",
        families=("ssd",),
        export={"st_optimize": True},
    )
)
register(
    Recipe(
        "split-channels",
        "per-tensor only: each conv whose weight channel ranges differ widely becomes up to 3 convs over "
        "runs of channels of similar range, each with its own int8 scale; weights permuted so no GATHER restores "
        "the order (exact in float; more convs and concatenations)",
        families=BOTH,
        schemes=("int8-per-tensor",),
        export={"split_channels": SPLIT_MIN_GAIN},
    )
)
register(
    Recipe(
        "split-channels-fine",
        "split-channels with finer parts, for ST's SSD where per-tensor collapses (224 px): up to 6 convs per "
        "conv, and the narrow convs (32 channels or fewer) split too, as full-width parts summed by ADDs. "
        "Measured at 224: per-channel's AP within 0.01, at 2.0x the MP2 NPU time of split-channels",
        families=("ssd",),
        schemes=("int8-per-tensor",),
        export={"split_channels": SPLIT_MIN_GAIN, "split_fine": True},
    )
)
register(
    Recipe(
        "bias-correct",
        "empirical bias correction before export: each conv's bias absorbs the mean output shift of its "
        "int8 weights at this scheme's granularity (32 calibration images; YOLO models)",
        families=("yolo",),
        export={"bias_correct": GRANULARITY},
    )
)
register(
    Recipe(
        "qat",
        "quantization-aware fine-tuning before export: int8 weights (this scheme's granularity) in the forward "
        "pass, distilled from the float model on the calibration images, no labels (YOLO pose/detect; ~4 min, one core)",
        families=("yolo",),
        export={"qat": GRANULARITY},
    )
)
register(
    Recipe(
        "calib-all",
        "calibrate on every image of the calibration folder (min/max: the converter's only method)",
        families=BOTH,
        conversion={"calib_count": ALL_CALIBRATION_IMAGES},
    )
)
register(
    Recipe(
        "calib-percentile",
        f"clamp split-head keypoint offsets at their {KPT_PERCENTILE}th percentile (needs split-head or "
        "split-levels; measured on yolo11n-pose: hurts, the far keypoints of large people lie beyond it)",
        families=("yolo",),
        export={"kpt_percentile": KPT_PERCENTILE},
    )
)
register(
    Recipe(
        "calib-mse",
        "activation ranges narrowed to the least int8 error over each tensor's histogram (outputs keep "
        "min/max); quantized by ai-edge-quantizer, int8 I/O",
        families=BOTH,
        conversion={"activation_ranges": "mse"},
    )
)
register(
    Recipe(
        "weights-octav",
        "convolution weights clipped by ai-edge-quantizer's OCTAV (the MSE-optimal clip), int8 I/O",
        families=BOTH,
        conversion={"weight_ranges": "octav"},
    )
)
register(
    Recipe(
        "int16x8",
        "int16 activations with int8 weights for the whole model (not all-int8; per-channel weights only: "
        "TF's 16x8 mode fails on per-tensor)",
        families=BOTH,
        schemes=("int8-per-channel",),
        conversion={"activations": "int16"},
    )
)
register(Recipe(
    "float-fallback",
    f"keep the {FLOAT_FALLBACK_K} blocks that most restore the outputs in float (not all-int8)",
    families=BOTH, conversion={"float_blocks": FLOAT_FALLBACK_K},
))  # fmt: skip


def build_plan(recipes: str | Iterable[str] | None, calib_count: int, scheme: Any) -> Plan:
    """The :class:`Plan` for ``recipes`` converting ``scheme`` (a Scheme or its value) on top of a plain
    conversion with ``calib_count`` images; a clear error if a recipe does not convert that scheme.

    Example:
        >>> plan = build_plan("split-levels,bias-correct,calib-all", 50, "int8-per-tensor")
        >>> plan.export.key, plan.conversion.calib_count > 50
        ('levels-head+bc-per-tensor', True)
    """
    if isinstance(calib_count, bool) or not isinstance(calib_count, int) or calib_count < 1:
        raise WorkbenchError(f"--calib-count must be an integer of at least 1, got {calib_count!r}")
    names = parse_recipes(recipes)
    scheme_value = getattr(scheme, "value", scheme)
    if names and scheme_value not in INT8_SCHEMES:
        raise WorkbenchError(f"recipes ({', '.join(names)}) apply to int8 schemes, not {scheme_value}")
    for name in names:
        if scheme_value not in RECIPES[name].schemes:
            raise WorkbenchError(
                _SCHEME_REFUSALS.get(name, f"{name} converts {', '.join(RECIPES[name].schemes)}")
            )
    granularity = scheme_value.removeprefix("int8-")
    export, conversion = ExportEdits(), ConversionEdits(calib_count=calib_count)
    for name in names:
        recipe = RECIPES[name]
        export = replace(
            export, **{k: granularity if v == GRANULARITY else v for k, v in recipe.export.items()}
        )
        conversion = replace(conversion, **recipe.conversion)
    return Plan(tuple(names), export, conversion)


def export_edits(recipes: str | Iterable[str] | None, scheme: Any) -> ExportEdits:
    """The export ``recipes`` need to convert ``scheme`` (``ExportEdits()`` if none)."""
    return build_plan(recipes, 1, scheme).export


_SCHEME_REFUSALS = {
    "int16x8": "int16x8 runs with per-channel weights only: TF's 16x8 mode fails on per-tensor weights "
    "('Quantized dimension for tensor property and quantization parameters do not match')",
    "split-channels": "split-channels gives per-tensor weights more than one scale per convolution; "
    "int8-per-channel weights already have one per channel: use it with int8-per-tensor",
}
_SCHEME_REFUSALS["split-channels-fine"] = _SCHEME_REFUSALS["split-channels"]  # the same reason


def check_family(recipes: Iterable[str], family: str, path: Any = None) -> None:
    """Refuse, in one line, recipes not declared for the model ``family``."""
    names = list(recipes)
    foreign = [n for n in names if family not in RECIPES[n].families]
    if foreign:
        own = [n for n, r in RECIPES.items() if family in r.families]
        raise WorkbenchError(
            f"{', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply to {family} models "
            f"(its recipes: {', '.join(own)})",
            path=path,
        )


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
    return all(scheme_value in RECIPES[name].schemes for name in names if name)


def recipe_suffix(recipes: Iterable[str]) -> str:
    """``"+a+b"`` for variant names, ``""`` without recipes."""
    return "".join(f"+{r}" for r in recipes)
