"""Where weights, datasets and zoo files are found: one setting each, and lookup by name.

=================== ========================== =====================================
setting             default                    holds
=================== ========================== =====================================
WORKBENCH_WEIGHTS_DIR ``../shared/weights``    float weights (.pt, .h5), searched recursively
WORKBENCH_DATA_DIR  ``../shared/data``         COCO-layout datasets (JSON + images/)
WORKBENCH_ZOO_DIR   ``../shared/zoo``          ST's model-zoo .tflite files
=================== ========================== =====================================

Defaults are relative to the repository root, so a checkout with ``shared/`` beside it finds them.

A config's ``model: yolo11n-pose.pt`` is resolved by :func:`resolve_weights`: a path that exists;
else the first file of that name under the weights folder; else, only with ``allow_download``, the
name handed to Ultralytics, which downloads its own release assets. Offline and not found, the
error lists every place looked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workbench.config import resolve_path
from workbench.errors import WorkbenchError
from workbench.offline import REPO_ROOT

WEIGHT_SUFFIXES = (".pt", ".h5", ".keras")
IMGSZ_FIELD = "{imgsz}"  # in a weights name: one file per image size (ST's SSD .h5 files)


def _setting(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else (REPO_ROOT.parent / "shared" / default).resolve()


def weights_dir() -> Path:
    return _setting("WORKBENCH_WEIGHTS_DIR", "weights")


def data_dir() -> Path:
    return _setting("WORKBENCH_DATA_DIR", "data")


def zoo_dir() -> Path:
    return _setting("WORKBENCH_ZOO_DIR", "zoo")


def _ultralytics_asset(name: str) -> bool:
    """Whether Ultralytics publishes ``name`` as a release asset (it downloads those by name)."""
    try:
        from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES
    except ImportError:  # pragma: no cover - ultralytics is a dependency
        return False
    return name in GITHUB_ASSETS_NAMES


def resolve_weights(model: str, allow_download: bool = False) -> Path | str:
    """The weights file ``model`` names: a local path, a file under :func:`weights_dir`, or a download.

    Returns a ``Path`` when the file is here; the bare name (for Ultralytics to download) only when
    ``allow_download`` is set and Ultralytics knows the name. A model ``.yaml`` (an architecture to
    train from scratch) is returned as given: Ultralytics ships those.

    Raises:
        WorkbenchError: not found, listing the places looked (and how to allow a download).
    """
    if is_architecture(model):
        return model
    if IMGSZ_FIELD in model:
        return _resolve_template(model)
    looked: list[str] = []
    for candidate in (Path(model).expanduser(), resolve_path(model)):
        if candidate.exists():
            return candidate
        if str(candidate.resolve()) not in looked:
            looked.append(str(candidate.resolve()))
    root = weights_dir()
    name = Path(model).name
    if name != model:  # a path: used as given (or under the weights folder), never swapped for a namesake
        if (root / model).is_file() and not Path(model).is_absolute() and ".." not in Path(model).parts:
            return root / model
        under_root = [] if Path(model).is_absolute() else [str(root / model)]  # an absolute path is itself
        raise WorkbenchError(f"weights {model!r} not found; looked in: {'; '.join(looked + under_root)}")
    found = sorted(root.rglob(name)) if root.is_dir() else []
    if len(found) > 1:
        raise WorkbenchError(
            f"weights name {model!r} matches {len(found)} files under WORKBENCH_WEIGHTS_DIR "
            f"({', '.join(map(str, found[:10]))}); pass the path of the one you mean"
        )
    if found:
        return found[0]
    looked.append(f"{root}/**/{name} (WORKBENCH_WEIGHTS_DIR)")
    if allow_download and _ultralytics_asset(name):
        return name
    hint = (
        "Ultralytics does not publish a file of that name"
        if allow_download
        else "downloads are off (allow_download: true / --allow-download to let Ultralytics fetch its release files)"
    )
    raise WorkbenchError(f"weights {model!r} not found; looked in: {'; '.join(looked)}; {hint}")


def _resolve_template(model: str) -> Path:
    """``…_{imgsz}.h5`` (one file per image size): the template in the first folder holding a match."""
    pattern = Path(model).name.replace(IMGSZ_FIELD, "*")
    folders = [Path(model).expanduser().parent, resolve_path(model).parent]
    root = weights_dir()
    folders += sorted({p.parent for p in root.rglob(pattern)}) if root.is_dir() else []
    for folder in folders:
        if any(folder.glob(pattern)):
            return folder.resolve() / Path(model).name
    looked = (
        "; ".join(str(f / pattern) for f in folders[:2]) + f"; {root}/**/{pattern} (WORKBENCH_WEIGHTS_DIR)"
    )
    raise WorkbenchError(f"weights {model!r} not found for any image size; looked in: {looked}")


def is_architecture(model: str | Path) -> bool:
    """A model ``.yaml``: an architecture Ultralytics builds (untrained), not a weights file."""
    return str(model).endswith((".yaml", ".yml"))


def weights_file(resolved: Path | str) -> Path | str:
    """What :func:`resolve_weights` returned, made usable: a local file or an architecture ``.yaml``
    as it is; a bare release name downloaded (``resolve_weights`` returns one only when allowed)."""
    if isinstance(resolved, Path) or is_architecture(resolved):
        return resolved
    return fetch_weights(resolved)


def fetch_weights(name: str) -> Path:
    """Download an Ultralytics release file into the project cache (only reached with allow_download)."""
    from workbench.offline import cache_dir

    target = cache_dir() / "weights" / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        path = Path(attempt_download_asset(str(target)))
    except Exception as err:  # network and HTTP errors come in many types
        raise WorkbenchError(f"download of {name!r} failed: {err}", path=target) from None
    if not path.is_file():
        raise WorkbenchError(f"download of {name!r} produced no file", path=target)
    return path


def resolve_data(path: str | None) -> Path | None:
    """A dataset path as given, from the repository root, or under :func:`data_dir` (first that exists).

    A path found nowhere is returned as given from the repository root, for the caller's
    "not found" error to name.
    """
    if path is None:
        return None
    given = resolve_path(path)
    if given.exists():
        return given
    under_data = data_dir() / path
    return under_data if under_data.exists() else given


@dataclass(frozen=True)
class ModelSource:
    """One ``model:`` entry of a config, resolved: our weights to convert, or a zoo folder."""

    entry: str  # as the config names it
    kind: str  # "ours": weights the workbench trains/converts; "zoo": ready .tflite files
    path: Path | str  # the file or folder; a bare name only for an allowed download

    def __post_init__(self) -> None:
        if self.kind not in ("ours", "zoo"):
            raise ValueError(f"kind must be 'ours' or 'zoo', got {self.kind!r}")

    @property
    def name(self) -> str:
        """Model name in variant names: the weights' stem (``yolo11n-pose``)."""
        if self.kind == "zoo":
            return Path(str(self.path)).name
        return Path(str(self.path).replace(f"_{IMGSZ_FIELD}", "").replace(IMGSZ_FIELD, "")).stem


def resolve_model(entry: str, allow_download: bool = False) -> ModelSource:
    """Resolve a config's model entry: a folder of .tflite files (as given, from the repository
    root, or under :func:`zoo_dir`) is a zoo source; anything else is weights
    (:func:`resolve_weights`)."""
    for candidate in (Path(entry).expanduser(), resolve_path(entry), zoo_dir() / entry):
        if candidate.is_dir():
            return ModelSource(entry, "zoo", candidate.resolve())
    return ModelSource(entry, "ours", resolve_weights(entry, allow_download))
