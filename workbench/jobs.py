"""The export and conversion jobs, shared by the report's Dask graph (:mod:`workbench.graph`)
and the sweep's cells (:mod:`workbench.sweep.tasks`), each cached by its key.

- :func:`export_job`: a float SavedModel of (weights, imgsz, :class:`ExportEdits`), made by the model
  family. Its key: the weights' sha256 (read now, so a replaced weights file is never used in its
  predecessor's place), imgsz, the edits and, for edits that learn from images, those images'
  fingerprint. A folder already holding an export of the same key is reused.
- :func:`recipe_export`: the export a recipe set needs, beside a plain one (``<folder>+<edits key>``).
- :func:`convert_job`: one .tflite of (export, scheme, io, recipes, calibration images); reused when
  its hidden key file beside it says the same key and the file is unchanged.
- :func:`quantize_with_recipes`: both for one-off callers (``workbench quantize --recipe``,
  benchmarks, notebooks): the export the recipes need, then the conversion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from workbench.calibration import DEFAULT_CALIB_COUNT, calibration_fingerprint
from workbench.config import IOType, Scheme
from workbench.errors import WorkbenchError
from workbench.exported import EXPORT_META, ExportResult
from workbench.fileio import exclusive, sha256_file, write_json
from workbench.locations import IMGSZ_FIELD
from workbench.quantize import QuantizeResult, quantize
from workbench.recipes import build_plan, check_family
from workbench.recipes.edits import ExportEdits

# steps that run Dask graphs (workbench.graph): a report gives them one shared cluster
EXECUTOR_STEPS = ("quantize", "evaluate")


def export_job(
    weights: str | Path,
    imgsz: int,
    folder: str | Path,
    edits: ExportEdits = ExportEdits(),
    *,
    family: str,
    calib: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
) -> ExportResult:
    """The export of ``weights`` at ``imgsz`` with ``edits`` in ``folder``: the one already there if
    its key matches, else a new one by the weights' model ``family`` (as the plan, or the base export's
    metadata, names it: it refuses edits it cannot make).
    ``calib`` / ``calib_count``: the images edits that learn from images take."""
    from workbench.families import get_family

    family = get_family(family)
    family.check_edits(edits, weights)
    folder = Path(folder)
    if edits.changed():  # cells converting in parallel share a recipe's export: build it once
        with exclusive(folder):
            return _cached_export(folder, family, weights, imgsz, edits, calib, calib_count) or family.export(
                weights, imgsz, folder, edits=edits, calib=calib, calib_count=calib_count
            )
    return _cached_export(folder, family, weights, imgsz, edits, calib, calib_count) or family.export(
        weights, imgsz, folder, edits=edits
    )


def _cached_export(folder: Path, family, weights, imgsz: int, edits: ExportEdits, calib, calib_count: int):
    if not (folder / EXPORT_META).is_file():
        return None
    cached = ExportResult.load(folder)
    weights_file = family.weights_for(weights, imgsz)
    if not weights_file.is_file():
        raise WorkbenchError("weights file not found", path=weights_file)
    same = (
        cached.weights_sha256 == sha256_file(weights_file)
        and cached.imgsz == imgsz
        and cached.normalized
        and ExportEdits.recorded(cached) == edits
    )
    if same and edits.calibrated:
        if calib is None:
            return None  # the family's export says what is missing
        same = cached.calibration == calibration_fingerprint(calib, edits.calibration_images(calib_count))
    return cached if same else None


def recipe_export(
    base: ExportResult,
    recipes: str | Iterable[str] | None,
    scheme: Scheme | str,
    *,
    calib: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
) -> ExportResult:
    """The export ``recipes`` need to convert ``scheme``: ``base`` itself if it has their edits (or
    there are no recipes), else one exported from base's weights with them, in
    ``<base folder>+<edits key>``."""
    plan = build_plan(recipes, calib_count, scheme)
    if ExportEdits.recorded(base) == plan.export or not plan.recipes:
        return base  # without recipes, conversion itself says whether base will do
    check_family(plan.recipes, base.family, path=base.saved_model)
    if not base.normalized:
        raise WorkbenchError(
            "recipes re-export from the weights with normalized outputs; this export has pixel outputs",
            path=base.saved_model,
        )
    if not Path(base.weights).is_file():
        raise WorkbenchError(
            f"the recipe needs an export with its edits, and the weights this SavedModel came from "
            f"({base.weights}) are gone",
            path=base.saved_model,
        )
    if base.weights_sha256 and sha256_file(base.weights) != base.weights_sha256:
        raise WorkbenchError(
            f"the recipe re-exports from {base.weights}, but that file is no longer the one this SavedModel "
            "was exported from (its sha256 changed): export again",
            path=base.saved_model,
        )
    folder = Path(base.saved_model).parent / f"{Path(base.saved_model).name}+{plan.export.key}"
    return export_job(
        base.weights,
        base.imgsz,
        folder,
        plan.export,
        family=base.family,
        calib=calib,
        calib_count=plan.conversion.calib_count,
    )


def convert_job(
    export: ExportResult,
    scheme: Scheme | str,
    out: str | Path,
    *,
    io: IOType | str = IOType.UF,
    calib: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
    recipes: str | Iterable[str] | None = None,
) -> QuantizeResult:
    """``export`` (made with the recipes' edits) converted to ``out``; the file already there is
    reused when its key (export, scheme, io, recipes, calibration images) is the same."""
    scheme, out = Scheme(scheme), Path(out)
    plan = build_plan(recipes, calib_count, scheme)
    count = plan.conversion.calib_count
    key = {
        "weights_sha256": export.weights_sha256,
        "imgsz": export.imgsz,
        "edits": ExportEdits.recorded(export).to_dict(),
        "edit_calibration": export.calibration,
        "export_tags": [export.bias_corrected, export.qat, export.kpt_clip],
        "scheme": scheme.value,
        "io": IOType(io).value,
        "recipes": list(plan.recipes),
        "calibration": calibration_fingerprint(calib, count) if scheme.is_int8 and calib else None,
        "calib_count": count,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    record = out.parent / f".{out.name}.job.json"  # hidden: not one of a step's outputs
    if out.is_file() and record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("key") == digest and saved["result"]["sha256"] == sha256_file(out):
            return QuantizeResult(**dict(saved["result"], path=out))
    result = quantize(
        export.saved_model, scheme, out, io=io, calib=calib, calib_count=calib_count, recipes=recipes
    )
    write_json(record, {"key": digest, "result": result.to_dict()})
    return result


def quantize_with_recipes(
    saved_model: str | Path,
    scheme: Scheme | str,
    out: str | Path,
    *,
    io: IOType | str = IOType.UF,
    calib: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
    allow_unnormalized: bool = False,
    recipes: str | Iterable[str] | None = None,
) -> QuantizeResult:
    """:func:`workbench.quantize.quantize` of a plain export with ``recipes``: their export (beside
    ``saved_model``, made once) first, then the conversion. For one-off callers; jobs call the parts.

    Example:
        >>> quantize_with_recipes("build/sm256", "int8-per-tensor", "build/x.tflite",
        ...                       calib="data/synth/images/train", recipes="split-levels")  # doctest: +SKIP
    """
    build_plan(recipes, calib_count, scheme)  # a recipe that cannot convert scheme fails before loading
    export = recipe_export(
        ExportResult.load(saved_model), recipes, scheme, calib=calib, calib_count=calib_count
    )
    return quantize(
        export.saved_model,
        scheme,
        out,
        io=io,
        calib=calib,
        calib_count=calib_count,
        allow_unnormalized=allow_unnormalized,
        recipes=recipes,
    )


def convert_weights(
    weights: str | Path,
    imgsz: int,
    scheme: Scheme | str,
    folder: str | Path,
    *,
    io: IOType | str = IOType.UF,
    calib: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
) -> QuantizeResult:
    """``weights`` (any family's float file; ``{imgsz}`` in the name for one file per size) exported
    at ``imgsz`` and converted to ``scheme``, both kept in ``folder`` and reused while their keys
    match (:func:`export_job`, :func:`convert_job`). For one-off callers: tests, benchmarks.

    Example:
        >>> convert_weights("st/st_ssd_mobilenet_v1_025_{imgsz}.h5", 224, "int8-per-channel",
        ...                 "build/ssd224", calib="data/coco/images", calib_count=8)  # doctest: +SKIP
    """
    from workbench.plan import one_model_plan

    folder = Path(folder)
    family = one_model_plan(weights).model.family  # the one-model plan names the family
    export = export_job(weights, imgsz, folder / "saved_model", family=family)
    name = f"{Path(str(weights)).stem.replace(IMGSZ_FIELD, str(imgsz))}-{Scheme(scheme).value}.tflite"
    return convert_job(export, scheme, folder / name, io=io, calib=calib, calib_count=calib_count)
