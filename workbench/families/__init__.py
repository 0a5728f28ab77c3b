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

from workbench.errors import WorkbenchError
from workbench.families.base import ModelFamily
from workbench.families.ssd import SsdFamily
from workbench.families.yolo import YoloFamily

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


register(YoloFamily())
register(SsdFamily())

__all__ = ["ModelFamily", "family_of", "get_family", "list_families", "register"]
