"""The recipe vocabulary: every recovery recipe's name, in registry order, and which names combine.

A leaf (imports nothing above :mod:`workbench.errors`), so :class:`~workbench.config.RunConfig`
can canonicalise its ``recipes`` (part of the config hash) without importing the recipes'
implementations; :mod:`workbench.recipes` registers one entry per name here, in this order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from workbench.errors import WorkbenchError

# Registry order: a recipe set is always applied and named in this order, whatever order it was given in.
RECIPE_NAMES = (
    "split-head",
    "split-levels",
    "equalize",
    "st-optimize",
    "split-channels",
    "split-channels-fine",
    "bias-correct",
    "qat",
    "calib-all",
    "calib-percentile",
    "calib-mse",
    "weights-octav",
    "int16x8",
    "float-fallback",
)


def parse_recipes(value: str | Iterable[str] | None) -> list[str]:
    """Recipe names from ``"a,b"``, a config entry ``"a+b"`` or a list, validated, de-duplicated, in registry order.

    Example:
        >>> parse_recipes("calib-all,split-head")
        ['split-head', 'calib-all']
    """
    if value is None:
        return []
    names = (
        [v.strip() for v in re.split(r"[,+]", value)]
        if isinstance(value, str)
        else [str(v).strip() for v in value]
    )
    given, names = names, [n for n in names if n]
    if given and not names:  # "--recipe ," is a typo, not "no recipe"
        raise WorkbenchError(f"recipe list {value!r} names no recipe; known: {', '.join(RECIPE_NAMES)}")
    unknown = [n for n in names if n not in RECIPE_NAMES]
    if unknown:
        raise WorkbenchError(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPE_NAMES)}")
    if "calib-percentile" in names and not {"split-head", "split-levels"} & set(names):
        raise WorkbenchError("calib-percentile clamps the split head's outputs: use it with split-head")
    if {"split-channels", "split-channels-fine"} <= set(names):
        raise WorkbenchError("split-channels-fine is split-channels with finer parts: name one of them")
    if "int16x8" in names and "float-fallback" in names:
        raise WorkbenchError(
            "int16x8 and float-fallback cannot be combined (the converter's 16x8 mode has no denylist)"
        )
    if "qat" in names and {"weights-octav", "bias-correct"} & set(names):
        raise WorkbenchError(
            "qat leaves the weights on the converter's min/max int8 grid: weights-octav would clip them off it "
            "and bias-correct has no rounding shift left to correct; use qat without them"
        )
    if {"st-optimize", "equalize"} <= set(names):
        raise WorkbenchError(
            "st-optimize runs ST's own cross-layer equalization (range-based, with high-bias absorption): "
            "use it without equalize"
        )
    if "split-channels" in names and {"qat", "bias-correct"} & set(names):
        raise WorkbenchError(
            "split-channels changes which weights share an int8 scale after qat and bias-correct have "
            "learned for the unsplit convolutions' scales; use it without them"
        )
    library = {"calib-mse", "weights-octav"} & set(names)
    if library and {"int16x8", "float-fallback"} & set(names):
        raise WorkbenchError(
            f"{', '.join(sorted(library))} cannot be combined with int16x8 or float-fallback (ai-edge-quantizer "
            "sets the ranges; 16x8 and the float denylist are the TFLite converter's)"
        )
    return [n for n in RECIPE_NAMES if n in names]
