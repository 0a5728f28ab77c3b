"""Synthetic people: the offline default dataset for pose, segmentation and detection.

Each image is drawn by :func:`~workbench.data.synth_render.render_sample` (procedural cartoon
people with exact labels); this module writes them as a dataset: COCO person-keypoints JSON (17
joints, visible silhouette polygons, boxes) plus an Ultralytics YOLO pose copy, and its manifest.

An image depends only on ``(seed, split, index, imgsz, preset)`` and :data:`GENERATOR_VERSION`,
never on how many images were generated before it. Bump :data:`GENERATOR_VERSION` whenever the
pixels or labels change; :func:`dataset_fingerprint` lets downstream steps detect a stale dataset.

Example:
    >>> import tempfile, pathlib
    >>> ds = generate_dataset(pathlib.Path(tempfile.mkdtemp()) / "synth", 4, 2, imgsz=128, progress=False)
    >>> ds.counts
    {'train': 4, 'val': 2}
    >>> ds.is_current()
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from workbench.config import validate_imgsz
from workbench.data.coco import COCO_FLIP_IDX, COCO_SKELETON, PERSON_CATEGORY
from workbench.data.synth_render import GENERATOR_VERSION, PRESETS, SPLITS, render_sample
from workbench.data.yolo import coco_to_yolo
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, sha256_file

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SPLITS",
    "SynthDataset",
    "contact_sheet",
    "dataset_fingerprint",
    "generate_dataset",
    "render_sample",
]


# ---- dataset -----------------------------------------------------------------------------------
@dataclass
class SynthDataset:
    """A generated dataset on disk (see :func:`generate_dataset`), as recorded in ``dataset.json``.

    Example:
        >>> ds = SynthDataset.load("data/synth")  # doctest: +SKIP
        >>> ds.ann("val"), ds.data_yaml  # doctest: +SKIP
    """

    root: Path
    preset: str
    seed: int
    imgsz: int
    counts: dict[str, int]
    people: dict[str, int]
    fingerprint: str
    generator_version: str = GENERATOR_VERSION
    sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.preset not in PRESETS:
            raise WorkbenchError(
                f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}", self.root
            )
        self.imgsz = validate_imgsz(self.imgsz, str(self.root))
        if set(self.counts) != set(SPLITS) or any(
            not isinstance(n, int) or n < 0 for n in self.counts.values()
        ):
            raise WorkbenchError(
                f"counts must give a non-negative image count per split, got {self.counts}", self.root
            )

    def ann(self, split: str) -> Path:
        """COCO person-keypoints JSON of ``split``."""
        return self.root / "annotations" / f"{split}.json"

    def images(self, split: str) -> Path:
        """Image folder of ``split``."""
        return self.root / "images" / split

    @property
    def data_yaml(self) -> Path:
        """Ultralytics dataset YAML (pose, ``kpt_shape [17, 3]``)."""
        return self.root / "yolo" / "data.yaml"

    def is_current(self) -> bool:
        """True if written by this :data:`GENERATOR_VERSION` and the annotations are unchanged."""
        return (
            self.generator_version == GENERATOR_VERSION and dataset_fingerprint(self.root) == self.fingerprint
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "preset": self.preset,
            "seed": self.seed,
            "imgsz": self.imgsz,
            "counts": dict(self.counts),
            "people": dict(self.people),
            "fingerprint": self.fingerprint,
            "generator_version": self.generator_version,
            "sha256": dict(self.sha256),
            "data_yaml": str(self.data_yaml),
        }

    def to_pandas(self):
        """One row per split: images, people, people per image."""
        import pandas as pd

        rows = [{"split": s, "images": self.counts[s], "people": self.people[s]} for s in SPLITS]
        df = pd.DataFrame(rows).set_index("split")
        df["people_per_image"] = df["people"] / df["images"].where(df["images"] > 0)
        return df

    def plot(self, split: str = "val", n: int = 16):
        """A matplotlib figure of the first ``n`` images of ``split`` with their labels drawn."""
        import matplotlib.pyplot as plt

        sheet = contact_sheet(self.root, split, n)
        fig, ax = plt.subplots(figsize=(8, 8 * sheet.shape[0] / sheet.shape[1]))
        ax.imshow(sheet[..., ::-1])
        ax.set_axis_off()
        ax.set_title(f"synthetic people, preset {self.preset!r}, {split}")
        return fig

    @classmethod
    def load(cls, root: str | Path) -> SynthDataset:
        """Read ``root/dataset.json``."""
        manifest = Path(root) / "dataset.json"
        if not manifest.is_file():
            raise WorkbenchError("not a synthetic dataset (dataset.json missing)", manifest.parent)
        try:
            info = json.loads(manifest.read_text())
            return cls(root=Path(root), preset=info["preset"], seed=info["seed"], imgsz=info["imgsz"],
                       counts=info["counts"], people=info["people"], fingerprint=info["fingerprint"],
                       generator_version=info["generator_version"], sha256=info["sha256"])  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise WorkbenchError(f"unreadable dataset manifest: {err!r}", manifest) from None


def dataset_fingerprint(root: str | Path) -> str:
    """sha256 over the annotation files of a dataset (they embed the generator version and seed)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        path = Path(root) / "annotations" / f"{split}.json"
        if not path.is_file():
            raise WorkbenchError("annotation file missing", path)
        digest.update(f"{split}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _hardlink_copies(copies: Path, originals: Path) -> None:
    """Replace the image copies under ``copies`` by hardlinks to ``originals`` (same bytes, no space).

    Hardlinks, not symlinks: they survive the final rename of the dataset folder, and Ultralytics
    resolves folder symlinks (losing the ``/yolo/`` in the path it derives label paths from).
    """
    for copy in copies.iterdir():
        if copy.name.startswith("."):  # fileio.OWNER_MARKER: not an image
            continue
        link = copy.with_name(copy.name + ".link")
        try:
            os.link(originals / copy.name, link)
        except OSError:
            return  # a filesystem without hardlinks: keep the copies
        os.replace(link, copy)


def generate_dataset(
    out: str | Path,
    n_train: int,
    n_val: int,
    imgsz: int = 256,
    seed: int = 0,
    preset: str = "standard",
    progress: bool = True,
    force: bool = False,
) -> SynthDataset:
    """Generate (or reuse) a synthetic people dataset in ``out``.

    Layout: ``images/{train,val}/NNNNNN.jpg``, ``annotations/{train,val}.json`` (COCO
    person-keypoints), ``yolo/`` (Ultralytics pose copy with ``data.yaml``; images hardlinked) and
    ``dataset.json`` (manifest). The folder is written beside ``out`` and renamed into place at the
    end, so a failure leaves nothing behind. An existing dataset with the same parameters, the
    current generator version and intact annotations is reused unless ``force``; a folder that is
    not a synthetic dataset is never overwritten.

    Args:
        out: output folder.
        n_train: training images (>= 1).
        n_val: validation images (>= 0).
        imgsz: image side, a multiple of 32.
        seed: non-negative seed; image ``i`` of a split depends only on (seed, split, i).
        preset: ``"easy"``, ``"standard"`` or ``"full"`` (see :data:`PRESETS`).
        progress: show a tqdm bar.
        force: regenerate even if an identical current dataset exists.

    Returns:
        The :class:`SynthDataset`.

    Example:
        >>> ds = generate_dataset("data/synth", 256, 64, imgsz=256, preset="easy")  # doctest: +SKIP
    """
    out = Path(out)
    imgsz = validate_imgsz(imgsz, "--imgsz")
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise WorkbenchError(f"{name} must be an integer >= {low}, got {value!r}")
    if preset not in PRESETS:
        raise WorkbenchError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    counts = {"train": int(n_train), "val": int(n_val)}

    if out.exists():
        if (out / "dataset.json").is_file():
            try:
                old = SynthDataset.load(out)
                same = (old.preset, old.seed, old.imgsz, old.counts) == (preset, seed, imgsz, counts)
                if same and not force and old.is_current():
                    return old
            except WorkbenchError:
                pass  # a broken earlier dataset: regenerate it
        elif not out.is_dir() or any(out.iterdir()):
            raise WorkbenchError("exists and is not a synthetic dataset; refusing to overwrite it", out)

    people = {}
    bar = tqdm(total=sum(counts.values()), desc=f"synth {preset}", unit="img", disable=not progress)
    with atomic_path(out) as tmp:
        for split in SPLITS:
            img_dir = tmp / "images" / split
            for d in (img_dir, tmp / "annotations"):
                d.mkdir(parents=True, exist_ok=True)
            coco = {
                "info": {"description": "workbench synthetic people", "generator_version": GENERATOR_VERSION,
                         "preset": preset, "seed": seed, "imgsz": imgsz, "split": split},
                "licenses": [],
                "images": [],
                "annotations": [],
                "categories": [PERSON_CATEGORY],
            }  # fmt: skip
            for index in range(counts[split]):
                img, anns = render_sample(seed, split, index, imgsz, preset)
                name = f"{index:06d}.jpg"
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
                if not ok:
                    raise WorkbenchError("JPEG encoding failed", img_dir / name)
                (img_dir / name).write_bytes(buf.tobytes())
                image_id = index + 1
                coco["images"].append({"id": image_id, "file_name": name, "width": imgsz, "height": imgsz})
                for a in anns:
                    coco["annotations"].append(
                        {**a, "id": len(coco["annotations"]) + 1, "image_id": image_id}
                    )
                bar.update()
            people[split] = len(coco["annotations"])
            ann_path = tmp / "annotations" / f"{split}.json"
            ann_path.write_text(json.dumps(coco, sort_keys=True, separators=(",", ":")) + "\n")
            # A split without people has only empty label files, which the detect format (needing
            # no keypoints, unlike the pose validator) writes just the same.
            task = "pose" if coco["annotations"] else "detect"
            coco_to_yolo(ann_path, img_dir, tmp / "yolo", task, split, link="copy")
            _hardlink_copies(tmp / "yolo" / "images" / split, img_dir)
        data_yaml = {
            "path": str(out.resolve() / "yolo"),
            "train": "images/train",
            "val": "images/val" if counts["val"] else "images/train",  # Ultralytics needs a val set
            "names": {0: "person"},
            "kpt_shape": [17, 3],
            "flip_idx": COCO_FLIP_IDX,
        }
        (tmp / "yolo" / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
        ds = SynthDataset(
            root=out, preset=preset, seed=seed, imgsz=imgsz, counts=counts, people=people,
            fingerprint=dataset_fingerprint(tmp),
            sha256={s: sha256_file(tmp / "annotations" / f"{s}.json") for s in SPLITS},
        )  # fmt: skip
        manifest = {k: v for k, v in ds.to_dict().items() if k not in ("root", "data_yaml")}
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    bar.close()
    return ds


# ---- looking at it -----------------------------------------------------------------------------
_LIMB_COLORS = {"left": (255, 128, 0), "right": (0, 128, 255), "centre": (0, 220, 0)}


def contact_sheet(root: str | Path, split: str = "val", n: int = 16, cols: int = 4) -> np.ndarray:
    """A BGR grid of the first ``n`` images of ``split`` with boxes, mask outlines and skeletons.

    Left limbs are drawn blue, right limbs orange; occluded joints (v=1) as hollow red circles.
    """
    root = Path(root)
    coco = json.loads((root / "annotations" / f"{split}.json").read_text())
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    tiles = []
    for info in coco["images"][:n]:
        img = cv2.imread(str(root / "images" / split / info["file_name"]))
        img = (
            cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) if img.shape[0] < 200 else img
        )
        f = img.shape[0] / info["height"]
        for a in by_image.get(info["id"], []):
            for poly in a["segmentation"]:
                pts = (np.array(poly).reshape(-1, 2) * f).astype(np.int32)
                cv2.polylines(img, [pts], True, (255, 255, 255), 1)
            x, y, w, h = (np.array(a["bbox"]) * f).astype(int)
            cv2.rectangle(img, (x, y), (x + w, y + h), (0, 255, 255), 1)
            kp = np.array(a["keypoints"], float).reshape(17, 3)
            for i, j in COCO_SKELETON:
                p, q = kp[i - 1], kp[j - 1]
                if p[2] > 0 and q[2] > 0:
                    side = (
                        "left"
                        if (i % 2 == 0 and j % 2 == 0 and i > 1)
                        else "right"
                        if (i % 2 and j % 2 and i > 1)
                        else "centre"
                    )
                    cv2.line(
                        img,
                        tuple((p[:2] * f).astype(int)),
                        tuple((q[:2] * f).astype(int)),
                        _LIMB_COLORS[side],
                        1,
                        cv2.LINE_AA,
                    )
            for x, y, v in kp:
                if v == 2:
                    cv2.circle(img, (int(x * f), int(y * f)), 2, (0, 255, 0), -1)
                elif v == 1:
                    cv2.circle(img, (int(x * f), int(y * f)), 3, (0, 0, 255), 1)
        tiles.append(img)
    if not tiles:
        raise WorkbenchError(f"no images in split {split!r}", root / "annotations" / f"{split}.json")
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    return np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
