"""COCO annotation files: load, validate, and hand over to the COCO tools.

:func:`load_coco` reads a COCO JSON into a :class:`CocoDataset` and checks its structure, so that a
broken file fails here with one message naming the file and the problem instead of deep inside
pycocotools. :func:`require_task_fields` checks that the file carries what a task needs (keypoints
for pose, masks for seg); the evaluator calls it before running any model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tqdm import tqdm

from workbench.config import Task
from workbench.errors import WorkbenchError
from workbench.safeparse import load_json_file

COCO_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
# Index of each keypoint's mirror image, for horizontal-flip augmentation.
COCO_FLIP_IDX = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
PERSON_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": COCO_KEYPOINT_NAMES,
    "skeleton": COCO_SKELETON,
}
REQUIRED_KEYS = ("images", "annotations", "categories")
VISIBILITY = (0, 1, 2)  # COCO keypoint flags: not labelled, labelled but hidden, visible
# A box may overhang its image by rounding; beyond this fraction of the image size it is a wrong box
# (wrong image, or x/y swapped) and is refused.
BOX_OVERHANG = 0.05


@dataclass
class CocoDataset:
    """A validated COCO dataset (ground truth).

    Construction validates the structure; a problem raises :class:`WorkbenchError` naming
    :attr:`path`. Missing ``iscrowd`` defaults to 0 and missing ``area`` to the box area, as the
    COCO tools need both. Refused as well, since each would silently change AP: a box reaching
    more than 5 % of the image size outside its image, a keypoint visibility outside {0, 1, 2},
    and a zero or negative ``area`` on a non-crowd annotation with labelled keypoints (OKS divides
    by the area: every detection of that person would score 0).

    Attributes:
        path: the JSON file (used in error messages).
        images, annotations, categories: the COCO lists.
        images_dir: folder that image ``file_name`` entries are relative to, if known.
        extra: other top-level keys (``info``, ``licenses``), kept for writing back.

    Example:
        >>> ds = CocoDataset("a.json", images=[{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}],
        ...                  annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 3]}],
        ...                  categories=[{"id": 1, "name": "person"}])
        >>> ds.person_category_id, ds.annotations[0]["area"]
        (1, 12.0)
    """

    path: Path
    images: list[dict]
    annotations: list[dict]
    categories: list[dict]
    images_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.images_dir = None if self.images_dir is None else Path(self.images_dir)
        self._validate()

    # ---- lookups -------------------------------------------------------------------------
    @cached_property
    def image_by_id(self) -> dict[int, dict]:
        return {img["id"]: img for img in self.images}

    @cached_property
    def category_by_id(self) -> dict[int, dict]:
        return {cat["id"]: cat for cat in self.categories}

    @cached_property
    def annotations_by_image(self) -> dict[int, list[dict]]:
        """Annotations grouped by image id; every image has an entry (possibly empty)."""
        groups: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        for ann in self.annotations:
            groups[ann["image_id"]].append(ann)
        return groups

    @property
    def person_category_id(self) -> int:
        """Id of the category named ``person``; raises if there is none."""
        for cat in self.categories:
            if cat.get("name") == "person":
                return cat["id"]
        raise WorkbenchError("no category named 'person'", path=self.path)

    def num_keypoints(self, category_id: int) -> int:
        """Keypoints per instance of a category: its ``keypoints`` names, or 17 for ``person``."""
        cat = self.category_by_id[category_id]
        if cat.get("keypoints"):
            return len(cat["keypoints"])
        return len(COCO_KEYPOINT_NAMES) if cat.get("name") == "person" else 0

    def image_path(self, img: dict | int) -> Path:
        """Path of an image (entry or id) under :attr:`images_dir`."""
        if self.images_dir is None:
            raise WorkbenchError("no images folder given for this annotation file", path=self.path)
        entry = self.image_by_id[img] if isinstance(img, int) else img
        return self.images_dir / entry["file_name"]

    # ---- conversion ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The COCO JSON object."""
        return {
            **self.extra,
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }

    def summary(self) -> dict[str, Any]:
        """Counts worth printing: images, annotations, persons, keypoint/mask coverage."""
        person = next((c["id"] for c in self.categories if c.get("name") == "person"), None)
        persons = [a for a in self.annotations if a["category_id"] == person and not a["iscrowd"]]
        return {
            "path": str(self.path),
            "images": len(self.images),
            "annotations": len(self.annotations),
            "categories": len(self.categories),
            "person_instances": len(persons),
            "with_keypoints": sum(bool(a.get("num_keypoints", _labelled(a))) for a in persons),
            "with_segmentation": sum(bool(a.get("segmentation")) for a in self.annotations),
            "crowd": sum(bool(a["iscrowd"]) for a in self.annotations),
        }

    def to_pandas(self):
        """One row per annotation: ids, category name, box, crowd flag, labelled keypoints."""
        import pandas as pd

        rows = [
            {
                "id": a["id"],
                "image_id": a["image_id"],
                "category": self.category_by_id[a["category_id"]].get("name"),
                "x": a["bbox"][0], "y": a["bbox"][1], "w": a["bbox"][2], "h": a["bbox"][3],
                "area": a["area"],
                "iscrowd": a["iscrowd"],
                "num_keypoints": _labelled(a),
            }
            for a in self.annotations
        ]  # fmt: skip
        return pd.DataFrame(rows)

    def to_pycocotools(self):
        """A ``pycocotools.coco.COCO`` built from memory (no second read of the file)."""
        import contextlib
        import io

        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = self.to_dict()
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            coco.createIndex()
        return coco

    # ---- validation ----------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        raise WorkbenchError(message, path=self.path)

    def _validate(self) -> None:
        for key, value in (
            ("images", self.images),
            ("annotations", self.annotations),
            ("categories", self.categories),
        ):
            if not isinstance(value, list):
                self._fail(f"'{key}' must be a list, got {type(value).__name__}")
        cat_ids = set()
        for i, cat in enumerate(self.categories):
            if not isinstance(cat, dict) or not _is_int(cat.get("id")):
                self._fail(f"category #{i} has no integer 'id'")
            cat_ids.add(cat["id"])
        img_ids: dict[int, dict] = {}
        for i, img in enumerate(self.images):
            if not isinstance(img, dict) or not _is_int(img.get("id")):
                self._fail(f"image #{i} has no integer 'id'")
            label = f"image id {img['id']}"
            if img["id"] in img_ids:
                self._fail(f"duplicate {label}")
            img_ids[img["id"]] = img
            if not isinstance(img.get("file_name"), str) or not img["file_name"]:
                self._fail(f"{label} has no 'file_name'")
            for dim in ("width", "height"):
                if not _is_int(img.get(dim)) or img[dim] <= 0:
                    self._fail(f"{label} ({img['file_name']}) has no positive integer '{dim}'")
        ann_ids = set()
        for i, ann in enumerate(self.annotations):
            if not isinstance(ann, dict):
                self._fail(f"annotation #{i} is not an object")
            if not _is_int(ann.get("id")):
                self._fail(f"annotation #{i} has no integer 'id'")
            label = f"annotation id {ann['id']}"
            if ann["id"] in ann_ids:
                self._fail(f"duplicate {label}")
            ann_ids.add(ann["id"])
            if ann.get("image_id") not in img_ids:
                self._fail(f"{label} refers to unknown image_id {ann.get('image_id')!r}")
            if ann.get("category_id") not in cat_ids:
                self._fail(f"{label} refers to unknown category_id {ann.get('category_id')!r}")
            self._validate_annotation(ann, label, img_ids[ann["image_id"]])

    def _validate_annotation(self, ann: dict, label: str, img: dict) -> None:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            self._fail(f"{label}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            self._fail(f"{label}: bbox {bbox} has negative size")
        x, y, w, h = bbox
        width, height = img["width"], img["height"]
        dx, dy = BOX_OVERHANG * width + 1, BOX_OVERHANG * height + 1
        if x < -dx or y < -dy or x + w > width + dx or y + h > height + dy:
            self._fail(
                f"{label}: bbox {bbox} lies far outside its image id {img['id']} ({img['file_name']}, "
                f"{width}x{height})"
            )
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2] * bbox[3]))
        if not _is_number(ann["area"]):
            self._fail(f"{label}: area must be a number, got {ann['area']!r}")
        if "keypoints" in ann:
            kpts = ann["keypoints"]
            k = self.num_keypoints(ann["category_id"])
            expected = 3 * k if k else None
            if not isinstance(kpts, list) or not all(_is_number(v) for v in kpts):
                self._fail(f"{label}: keypoints must be a list of numbers")
            if expected is not None and len(kpts) != expected:
                name = self.category_by_id[ann["category_id"]].get("name")
                self._fail(
                    f"{label}: keypoints has {len(kpts)} values, expected {expected} "
                    f"(x, y, v for each of {k} keypoints of category {name!r})"
                )
            if expected is None and len(kpts) % 3:
                self._fail(f"{label}: keypoints has {len(kpts)} values, not a multiple of 3 (x, y, v)")
            bad = [(k, v) for k, v in enumerate(kpts[2::3]) if v not in VISIBILITY]
            if bad:
                k, v = bad[0]
                self._fail(f"{label}: keypoint {k} has visibility {v!r}, expected 0, 1 or 2")
            labelled = _labelled(ann)
            if labelled and not ann["iscrowd"] and ann["area"] <= 0:
                self._fail(
                    f"{label}: area {ann['area']} with {labelled} labelled keypoints; OKS divides by the "
                    "area, so every detection of this person would score 0 (give its segment or box area)"
                )
        seg = ann.get("segmentation")
        if seg:
            if isinstance(seg, dict):
                if "counts" not in seg or "size" not in seg:
                    self._fail(f"{label}: RLE segmentation needs 'counts' and 'size'")
            elif isinstance(seg, list):
                for poly in seg:
                    if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                        self._fail(f"{label}: polygon must be a list of at least 3 x, y pairs")
            else:
                self._fail(f"{label}: segmentation must be a polygon list or an RLE object")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _labelled(ann: dict) -> int:
    """Number of keypoints with visibility > 0."""
    return sum(1 for v in (ann.get("keypoints") or [])[2::3] if v > 0)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("annotation file not found", path=path)
    try:
        with open(path, encoding="utf-8") as fh:
            return load_json_file(fh, path)
    except json.JSONDecodeError as err:
        raise WorkbenchError(
            f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", path=path
        ) from None
    except UnicodeDecodeError as err:
        raise WorkbenchError(f"not a UTF-8 text file ({err.reason})", path=path) from None


def load_coco(
    ann_json: str | Path,
    images_dir: str | Path | None = None,
    task: Task | str | None = None,
    check_images: bool = False,
    exif_transpose: bool = False,
) -> CocoDataset:
    """Load and validate a COCO annotation file.

    Args:
        ann_json: the COCO JSON (ground truth, not a results list).
        images_dir: folder the ``file_name`` entries are relative to.
        task: if given, also check the fields that task needs (:func:`require_task_fields`).
        check_images: decode every image and compare its size with the JSON (needs ``images_dir``);
            warns about images with an EXIF orientation.
        exif_transpose: with ``check_images``, check images as displayed (see :func:`load_image`).

    Returns:
        The validated :class:`CocoDataset`.

    Raises:
        WorkbenchError: naming the file (or image) and the first problem found.

    Example:
        >>> ds = load_coco("annotations/person_keypoints_val2017.json", "val2017", task="pose")  # doctest: +SKIP
        >>> ds.summary()["person_instances"]  # doctest: +SKIP
        10777
    """
    path = Path(ann_json)
    data = read_json(path)
    if isinstance(data, list):
        raise WorkbenchError(
            "is a list (a detections/results file?), expected a COCO dataset object", path=path
        )
    if not isinstance(data, dict):
        raise WorkbenchError(f"expected a COCO dataset object, got {type(data).__name__}", path=path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise WorkbenchError(f"missing top-level key(s) {', '.join(missing)}", path=path)
    extra = {k: v for k, v in data.items() if k not in REQUIRED_KEYS}
    dataset = CocoDataset(path, data["images"], data["annotations"], data["categories"], images_dir, extra)
    if images_dir is not None and not Path(images_dir).is_dir():
        raise WorkbenchError("images folder not found", path=images_dir)
    if task is not None:
        require_task_fields(dataset, task)
    if check_images:
        verify_images(dataset, exif_transpose)
    return dataset


def require_task_fields(dataset: CocoDataset, task: Task | str) -> None:
    """Raise unless ``dataset`` carries the ground truth ``task`` is evaluated on.

    pose: a person category and keypoints on every non-crowd person; seg: a segmentation on every
    non-crowd annotation; detect: boxes only (always present after validation).

    Example:
        >>> ds = CocoDataset("a.json", [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 6}],
        ...                  [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 3]}],
        ...                  [{"id": 1, "name": "person"}])
        >>> require_task_fields(ds, "pose")
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: a.json: annotation id 7 has no keypoints: not a pose dataset
    """
    task = parse_task(task)
    if task is Task.POSE:
        person = dataset.person_category_id
        for ann in dataset.annotations:
            if ann["category_id"] == person and not ann["iscrowd"] and "keypoints" not in ann:
                raise WorkbenchError(
                    f"annotation id {ann.get('id')} has no keypoints: not a pose dataset", path=dataset.path
                )
        if not any("keypoints" in a for a in dataset.annotations):
            raise WorkbenchError("has no keypoints: not a pose dataset", path=dataset.path)
    elif task is Task.SEG:
        for ann in dataset.annotations:
            if not ann["iscrowd"] and not ann.get("segmentation"):
                raise WorkbenchError(
                    f"annotation id {ann.get('id')} has no segmentation: not a segmentation dataset",
                    path=dataset.path,
                )


def parse_task(task: Task | str) -> Task:
    """``task`` as a :class:`Task`; an unknown name is a :class:`WorkbenchError` listing the valid ones."""
    try:
        return Task(task)
    except ValueError:
        raise WorkbenchError(
            f"unknown task {task!r}; expected one of {', '.join(t.value for t in Task)}"
        ) from None


def require_image_files(dataset: CocoDataset) -> None:
    """Raise unless every image the JSON names is a file in the images folder (no decoding: fast)."""
    if dataset.images_dir is None:
        raise WorkbenchError("checking images needs the images folder", path=dataset.path)
    missing = [img["file_name"] for img in dataset.images if not dataset.image_path(img).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WorkbenchError(
            f"{len(missing)} of {len(dataset.images)} images named in {dataset.path.name} are missing: {shown}",
            path=dataset.images_dir,
        )


def verify_images(dataset: CocoDataset, exif_transpose: bool = False) -> None:
    """Decode every image; raise on the first missing, corrupt or wrongly sized one.

    Warns (once) about images with an EXIF orientation, which are read in their stored frame
    unless ``exif_transpose``.
    """
    from workbench.data.images import exif_orientation, load_image, warn_exif

    if dataset.images_dir is None:
        raise WorkbenchError("checking images needs the images folder", path=dataset.path)
    tagged = []
    for img in tqdm(dataset.images, desc="check images", unit="img", leave=False):
        path = dataset.image_path(img)
        height, width = load_image(path, exif_transpose).shape[:2]
        if exif_orientation(path) != 1:
            tagged.append(path)
        if (width, height) != (img["width"], img["height"]):
            raise WorkbenchError(
                f"image is {width}x{height} but the annotations ({dataset.path.name}) say "
                f"{img['width']}x{img['height']}",
                path=path,
            )
    warn_exif(tagged, len(dataset.images), exif_transpose)
