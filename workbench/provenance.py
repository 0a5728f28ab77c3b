"""Provenance: what produced a number — config hash, model and dataset hashes, package versions.

Every row of a results table carries these, so a reported AP can be traced back to the exact
config, weights, annotations and software that produced it.

Example:
    >>> p = Provenance(config_hash="0123456789ab", packages={"python": "3.11.9"})
    >>> p.to_dict()["config_hash"]
    '0123456789ab'
"""

from __future__ import annotations

import hashlib
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file

# Distribution names as pip knows them; "python" is added from the interpreter.
TRACKED_PACKAGES = (
    "workbench",
    "ultralytics",
    "torch",
    "tensorflow",
    "ai-edge-litert",
    "numpy",
    "onnx2tf",
    "faster-coco-eval",
    "pycocotools",
)

_HEX = re.compile(r"^[0-9a-f]+$")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a result (None when not installed).

    Example:
        >>> versions = package_versions()
        >>> sorted(versions)[:3]
        ['ai-edge-litert', 'faster-coco-eval', 'numpy']
    """
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes; a missing file is a :class:`WorkbenchError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("file not found (cannot hash it)", path=path)
    return sha256_file(path)


def dataset_hash(ann_json_paths: str | Path | Iterable[str | Path]) -> str:
    """Hash of one or more annotation files' bytes, independent of the order they are given in.

    File names do not enter the hash: a copied or renamed annotation file hashes the same.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.json").write_text("{}"); _ = (d / "b.json").write_text("[]")
        >>> dataset_hash([d / "a.json", d / "b.json"]) == dataset_hash([d / "b.json", d / "a.json"])
        True
    """
    if isinstance(ann_json_paths, (str, Path)):
        ann_json_paths = [ann_json_paths]
    digests = sorted(file_sha256(p) for p in ann_json_paths)
    if not digests:
        raise WorkbenchError("dataset_hash needs at least one annotation file")
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


@dataclass
class Provenance:
    """Where a result came from.

    Attributes:
        config_hash: :attr:`workbench.config.RunConfig.hash` of the run.
        model_sha256: sha256 of the model file evaluated (None for run-level provenance).
        dataset_hash: :func:`dataset_hash` of the evaluation annotations (None if not known).
        packages: :func:`package_versions` at the time of the run.

    Example:
        >>> Provenance(config_hash="xyz")
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: config_hash must be lowercase hex, got 'xyz'
    """

    config_hash: str
    model_sha256: str | None = None
    dataset_hash: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("config_hash", "model_sha256", "dataset_hash"):
            value = getattr(self, key)
            if value is None and key != "config_hash":
                continue
            if not isinstance(value, str) or not _HEX.match(value):
                raise WorkbenchError(f"{key} must be lowercase hex, got {value!r}")
        if not isinstance(self.packages, Mapping):
            raise WorkbenchError(f"packages must be a mapping of name to version, got {self.packages!r}")
        self.packages = dict(self.packages)

    @classmethod
    def collect(
        cls,
        config_hash: str,
        model_path: str | Path | None = None,
        ann_json_paths: str | Path | Iterable[str | Path] | None = None,
    ) -> Provenance:
        """Hash the given files and record the installed package versions now."""
        return cls(
            config_hash=config_hash,
            model_sha256=None if model_path is None else file_sha256(model_path),
            dataset_hash=None if ann_json_paths is None else dataset_hash(ann_json_paths),
            packages=package_versions(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_hash": self.config_hash,
            "model_sha256": self.model_sha256,
            "dataset_hash": self.dataset_hash,
            "packages": dict(self.packages),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str | Path | None = None) -> Provenance:
        try:
            return cls(
                **{k: values.get(k) for k in ("config_hash", "model_sha256", "dataset_hash")},
                packages=values.get("packages") or {},
            )
        except WorkbenchError as err:
            raise WorkbenchError(err.message, path=source) from None
