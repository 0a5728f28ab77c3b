"""Model families: one place per family says how to load, train, export, preprocess, decode, score.

A registry in the spirit of timm's ``create_model``: the steps ask :func:`family_of` for the family
of a config's model and call its methods, instead of branching on file names.

======== ===================================== =========================================================
family   models                                 what it knows
======== ===================================== =========================================================
``yolo`` Ultralytics ``.pt`` / model ``.yaml``  pose / seg / detect; Ultralytics training; normalized
                                               head export; letterbox, [0, 1]; YOLO decoder
``ssd``  ST's Keras ``.h5`` (SSD MobileNet v1)  detect; tf_keras fine-tuning with an SSD loss; ST's
                                               preprocessing from its config yaml; anchor decoder
======== ===================================== =========================================================

Example:
    >>> get_family("ssd").name, family_of("st_ssd_mobilenet_v1_025_224.h5").name
    ('ssd', 'ssd')
    >>> family_of("yolov8n-seg.yaml").name
    'yolo'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError
from workbench.families.base import ModelFamily
from workbench.families.ssd import SsdFamily
from workbench.families.yolo import YoloFamily

if TYPE_CHECKING:
    import numpy as np

    from workbench.evaluate import EvalRunner, OutputTransform

_REGISTRY: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry (its ``name`` must be new)."""
    if family.name in _REGISTRY:
        raise ValueError(f"model family {family.name!r} is already registered")
    _REGISTRY[family.name] = family
    return family


def list_families() -> list[str]:
    return sorted(_REGISTRY)


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name``; a clear error listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WorkbenchError(f"unknown model family {name!r}; known: {', '.join(list_families())}") from None


def family_of(model: str | Path) -> ModelFamily:
    """The family whose :meth:`ModelFamily.claims` accepts ``model`` (a path or a model name)."""
    for family in _REGISTRY.values():
        if family.claims(model):
            return family
    raise WorkbenchError(
        f"no model family takes {str(model)!r}: expected an Ultralytics .pt / model .yaml (yolo) "
        "or ST's Keras .h5 (ssd)",
        path=model,
    )


# ---- evaluation: the runner of any model file --------------------------------------------------------
def evaluation_runner(model: str | Path, *, output_transform: OutputTransform | None = None) -> EvalRunner:
    """The runner that evaluates ``model``: a ``.tflite`` of any family, or a family's float weights.

    The runner is opened by the evaluation pass (after its ground truth loads); a ``.tflite``'s
    family is read then (:func:`tflite_family`). ``output_transform`` applies to a ``.tflite``'s
    float outputs before decoding (e.g. the diagnosis's int8 rounding of a float model's outputs).

    Example:
        >>> # evaluate(evaluation_runner("st_ssd_mobilenet_v1_025_256.h5"), EvalSettings(ann, images, "detect"))
    """
    from workbench.evaluate import TFLiteRunner

    path = Path(model)
    if path.suffix == ".tflite":
        return TFLiteRunner(path, tflite_family, output_transform)
    for family in _REGISTRY.values():
        if path.suffix in family.weights_suffixes:
            if output_transform is not None:
                raise WorkbenchError("output_transform applies to .tflite models only", path=path)
            return family.evaluation_runner(path)
    weights = ", ".join(f"{' / '.join(f.weights_suffixes)} ({f.name})" for f in _REGISTRY.values())
    raise WorkbenchError(f"model must be a .tflite or a family's float weights: {weights}", path=path)


def tflite_family(
    path: Path, metadata: dict[str, Any], outputs: list[np.ndarray], input_hw: tuple[int, int]
) -> ModelFamily:
    """The family of an open ``.tflite``: the one its metadata records (our conversions), else the
    one family whose output layout its outputs have (ST's zoo files record none)."""
    recorded = metadata.get("workbench", {}).get("family")
    if recorded:
        return get_family(recorded)
    claimed = [f for f in _REGISTRY.values() if f.claims_outputs(outputs, input_hw)]
    if len(claimed) != 1:
        which = (
            "no model family's layout"
            if not claimed
            else f"the layouts of {', '.join(f.name for f in claimed)}"
        )
        shapes = [tuple(o.shape) for o in outputs]
        raise WorkbenchError(f"records no model family, and its outputs {shapes} fit {which}", path=path)
    return claimed[0]


register(YoloFamily())
register(SsdFamily())

__all__ = [
    "ModelFamily",
    "evaluation_runner",
    "family_of",
    "get_family",
    "list_families",
    "register",
    "tflite_family",
]
