"""COCO ⇄ Ultralytics YOLO label conversion.

Layout written by :func:`coco_to_yolo` (what Ultralytics expects: it finds a label by replacing
``/images/`` with ``/labels/`` in the image path)::

    out_dir/images/<split>/<file_name>      symlink to the original (or a copy)
    out_dir/labels/<split>/<file_stem>.txt  one row per instance, coordinates normalized to [0, 1]

Rows: detect ``cls cx cy w h``; pose ``cls cx cy w h`` + K × ``x y v`` (v kept 0/1/2); seg
``cls x1 y1 x2 y2 ...``. Classes are the COCO categories in id order, numbered from 0. Crowd
annotations are skipped (they are ignore regions, not instances), and so are, for pose, instances
without a labelled keypoint (as Ultralytics' own converter does; COCO eval ignores them too).
Coordinates get 6 decimals, so a round trip moves a point by < 0.001 px on a 1000 px image.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from workbench.config import Task
from workbench.data.coco import COCO_FLIP_IDX, PERSON_CATEGORY, CocoDataset, load_coco, parse_task
from workbench.data.images import IMAGE_SUFFIXES, image_size
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, write_text

DECIMALS = 6
YOLO_SPLIT_KEYS = ("train", "val", "test")


def yolo_class_names(dataset: CocoDataset) -> dict[int, str]:
    """Class index → name, in the order :func:`coco_to_yolo` numbers the categories."""
    return {
        i: str(cat.get("name", cat["id"]))
        for i, cat in enumerate(sorted(dataset.categories, key=lambda c: c["id"]))
    }


def coco_to_yolo(
    ann_json: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    task: Task | str = "pose",
    split: str = "train",
    link: str = "symlink",
) -> Path:
    """Write a COCO dataset as Ultralytics YOLO images + labels for one split.

    The split's ``images/`` and ``labels/`` folders appear complete or not at all; an existing
    split of the same name is replaced.

    Args:
        ann_json: COCO annotation file (validated, including the fields ``task`` needs).
        images_dir: folder the COCO ``file_name`` entries are relative to.
        out_dir: dataset root to write into (other splits already there are kept).
        task: ``pose``, ``seg`` or ``detect``: decides the label row format.
        split: split folder name, e.g. ``train`` or ``val``.
        link: ``symlink`` (falls back to copying where links are not allowed) or ``copy``.

    Returns:
        ``out_dir``.

    Example:
        >>> root = coco_to_yolo("person_keypoints_val2017.json", "val2017", "yolo", "pose", "val")  # doctest: +SKIP
        >>> write_data_yaml(root, {"train": "val", "val": "val"}, "pose")  # doctest: +SKIP
        PosixPath('yolo/data.yaml')
    """
    task = parse_task(task)
    if link not in ("symlink", "copy"):
        raise WorkbenchError(f"link must be 'symlink' or 'copy', got {link!r}")
    dataset = load_coco(ann_json, images_dir, task=task)
    class_of = {cat["id"]: i for i, cat in enumerate(sorted(dataset.categories, key=lambda c: c["id"]))}
    out_dir = Path(out_dir)
    with (
        atomic_path(out_dir / "labels" / split) as labels_tmp,
        atomic_path(out_dir / "images" / split) as images_tmp,
    ):
        labels_tmp.mkdir(parents=True)
        images_tmp.mkdir(parents=True)
        for img in tqdm(dataset.images, desc=f"coco→yolo {split}", unit="img", leave=False):
            rel = relative_name(img["file_name"], dataset.path)
            source = dataset.image_path(img)
            if not source.is_file():
                raise WorkbenchError(f"image file not found (listed in {dataset.path})", path=source)
            target = images_tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, target, link)
            rows = []
            for ann in dataset.annotations_by_image[img["id"]]:
                if ann["iscrowd"]:
                    continue
                row = _label_row(ann, img["width"], img["height"], task, dataset)
                if row is not None:
                    rows.append(f"{class_of[ann['category_id']]} " + " ".join(row))
            label = (labels_tmp / rel).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(r + "\n" for r in rows))
    return out_dir


def write_data_yaml(
    out_dir: str | Path,
    splits: dict[str, str],
    task: Task | str,
    names: dict[int, str] | None = None,
    kpt_shape: Sequence[int] = (17, 3),
    flip_idx: Sequence[int] = COCO_FLIP_IDX,
) -> Path:
    """Write ``out_dir/data.yaml`` for Ultralytics.

    Args:
        out_dir: dataset root written by :func:`coco_to_yolo`.
        splits: Ultralytics key (``train``/``val``/``test``) → split folder name under ``images/``.
        task: ``pose`` adds ``kpt_shape`` and ``flip_idx``.
        names: class index → name (default ``{0: "person"}``).

    Example:
        >>> write_data_yaml("yolo", {"train": "train", "val": "val"}, "pose")  # doctest: +SKIP
        PosixPath('yolo/data.yaml')
    """
    task = parse_task(task)
    out_dir = Path(out_dir)
    content: dict[str, Any] = {"path": str(out_dir.resolve())}
    for key, split in splits.items():
        if key not in YOLO_SPLIT_KEYS:
            raise WorkbenchError(f"split key {key!r} is not one of {', '.join(YOLO_SPLIT_KEYS)}")
        if not (out_dir / "images" / split).is_dir():
            raise WorkbenchError(f"images/{split} not found; convert that split first", path=out_dir)
        content[key] = f"images/{split}"
    names = {0: "person"} if names is None else names
    content["names"] = {int(k): str(v) for k, v in names.items()}
    if task is Task.POSE:
        content["kpt_shape"] = [int(v) for v in kpt_shape]
        content["flip_idx"] = [int(v) for v in flip_idx]
        if len(content["flip_idx"]) != content["kpt_shape"][0]:
            raise WorkbenchError(f"flip_idx has {len(flip_idx)} entries for {kpt_shape[0]} keypoints")
    return write_text(out_dir / "data.yaml", yaml.safe_dump(content, sort_keys=False))


def split_keys(out_dir: str | Path) -> dict[str, str]:
    """The ``splits`` argument of :func:`write_data_yaml` for the splits converted so far.

    ``train``/``val``/``test`` map to folders of that name under ``out_dir/images``; Ultralytics
    needs both ``train`` and ``val``, so a missing one falls back to the other.

    Example:
        >>> split_keys("yolo")  # with only yolo/images/val written  # doctest: +SKIP
        {'train': 'val', 'val': 'val'}
    """
    present = {
        p.name for p in (Path(out_dir) / "images").iterdir() if p.is_dir() and not p.name.startswith(".")
    }
    splits = {key: key for key in YOLO_SPLIT_KEYS if key in present}
    if not splits:
        others = sorted(present)
        if not others:
            raise WorkbenchError("no converted split under images/", path=out_dir)
        splits = {"train": others[0], "val": others[0]}
    splits.setdefault("train", splits.get("val", splits.get("test")))
    splits.setdefault("val", splits["train"])
    return splits


def yolo_to_coco(
    labels_dir: str | Path,
    images_dir: str | Path,
    task: Task | str,
    categories: list[dict] | None = None,
) -> dict[str, Any]:
    """Read YOLO labels back into a COCO dataset dict (the inverse of :func:`coco_to_yolo`).

    Images are the files under ``images_dir`` (sorted, ids from 1); each one's label is the
    ``.txt`` at the same relative path under ``labels_dir`` (none: no instances). Seg boxes are the
    polygon's extent and seg areas the polygon's area; otherwise area is the box area.

    Args:
        categories: COCO categories in class-index order (default: the COCO person category).

    Example:
        >>> coco = yolo_to_coco("yolo/labels/val", "yolo/images/val", "pose")  # doctest: +SKIP
        >>> sorted(coco)  # doctest: +SKIP
        ['annotations', 'categories', 'images']
    """
    task = parse_task(task)
    labels_dir, images_dir = Path(labels_dir), Path(images_dir)
    if not images_dir.is_dir():
        raise WorkbenchError("images folder not found", path=images_dir)
    categories = [dict(PERSON_CATEGORY)] if categories is None else categories
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images, annotations = [], []
    for image_id, path in enumerate(tqdm(files, desc="yolo→coco", unit="img", leave=False), start=1):
        rel = path.relative_to(images_dir)
        width, height = image_size(path)
        images.append({"id": image_id, "file_name": rel.as_posix(), "width": width, "height": height})
        label = (labels_dir / rel).with_suffix(".txt")
        if not label.is_file():
            continue
        for line_no, line in enumerate(label.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            ann = _parse_row(line, task, width, height, categories, f"{label}:{line_no}")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **ann})
    return {"images": images, "annotations": annotations, "categories": categories}


# ---- COCO → row ----------------------------------------------------------------------------
def _label_row(ann: dict, width: int, height: int, task: Task, dataset: CocoDataset) -> list[str] | None:
    """Normalized values of one instance's row (without the class), or None to skip it."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    x1, y1 = np.clip(x, 0, width), np.clip(y, 0, height)
    x2, y2 = np.clip(x + w, 0, width), np.clip(y + h, 0, height)
    if x2 <= x1 or y2 <= y1:  # nothing inside the image
        return None
    box = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
    if task is Task.DETECT:
        return _fmt(box)
    if task is Task.POSE:
        kpts = np.asarray(ann.get("keypoints") or [], dtype=np.float64).reshape(-1, 3)
        if not (kpts[:, 2] > 0).any():
            return None
        xy = np.clip(kpts[:, :2] / [width, height], 0.0, 1.0)
        values = _fmt(box)
        for (kx, ky), v in zip(xy, kpts[:, 2], strict=True):
            values += [*_fmt([kx, ky]), str(int(round(v)))]
        return values
    polygon = _single_polygon(ann["segmentation"], width, height, dataset, ann)
    if polygon is None:
        return None
    return _fmt(np.clip(polygon / [width, height], 0.0, 1.0).reshape(-1))


def _single_polygon(seg: Any, width: int, height: int, dataset: CocoDataset, ann: dict) -> np.ndarray | None:
    """One (N, 2) polygon in pixels: RLE → largest outer contour; several parts → merged."""
    if isinstance(seg, dict):
        import cv2
        from pycocotools import mask as mask_utils

        if list(seg["size"]) != [height, width]:
            raise WorkbenchError(
                f"annotation id {ann['id']}: RLE size {seg['size']} is not the image's [{height}, {width}]",
                path=dataset.path,
            )
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
        mask = np.ascontiguousarray(mask_utils.decode(rle))
        contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        contours = [c.reshape(-1, 2) for c in contours if len(c) >= 3]
        if not contours:
            return None
        return max(contours, key=cv2.contourArea).astype(np.float64)
    polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
    if len(polygons) == 1:
        return polygons[0]
    from ultralytics.data.converter import merge_multi_segment  # heavy import, only when needed

    return np.concatenate(merge_multi_segment([p.reshape(-1).tolist() for p in polygons]), axis=0)


def _fmt(values: Any) -> list[str]:
    return [f"{float(v):.{DECIMALS}f}" for v in values]


# ---- row → COCO ----------------------------------------------------------------------------
def _parse_row(line: str, task: Task, width: int, height: int, categories: list[dict], where: str) -> dict:
    try:
        parts = line.split()
        cls, values = int(parts[0]), np.asarray([float(v) for v in parts[1:]], dtype=np.float64)
    except (ValueError, IndexError):
        raise WorkbenchError("label row is not numbers", path=where) from None
    if not 0 <= cls < len(categories):
        raise WorkbenchError(f"class {cls} has no category (have {len(categories)})", path=where)
    ann: dict[str, Any] = {"category_id": categories[cls]["id"]}
    scale = np.array([width, height], dtype=np.float64)
    if task is Task.SEG:
        if len(values) < 6 or len(values) % 2:
            raise WorkbenchError(f"seg row needs at least 3 x, y pairs, got {len(values)} values", path=where)
        poly = values.reshape(-1, 2) * scale
        (x1, y1), (x2, y2) = poly.min(0), poly.max(0)
        ann["bbox"] = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
        ann["segmentation"] = [poly.reshape(-1).tolist()]
        px, py = poly[:, 0], poly[:, 1]
        ann["area"] = float(abs(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1))) / 2)
        return ann
    expected = 4
    if task is Task.POSE:
        k = len(categories[cls].get("keypoints") or [])
        expected = 4 + 3 * k
    if len(values) != expected:
        raise WorkbenchError(
            f"{task.value} row has {len(values)} values after the class, expected {expected}", path=where
        )
    cx, cy, w, h = values[:4] * np.tile(scale, 2)
    ann["bbox"] = [float(cx - w / 2), float(cy - h / 2), float(w), float(h)]
    ann["area"] = float(w * h)
    if task is Task.POSE:
        kpts = values[4:].reshape(-1, 3)
        kpts[:, :2] *= scale
        ann["keypoints"] = [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(kpts.reshape(-1))]
        ann["num_keypoints"] = int((kpts[:, 2] > 0).sum())
    return ann


# ---- helpers -------------------------------------------------------------------------------
def relative_name(file_name: str, ann_path: Path) -> Path:
    """``file_name`` as a relative path, refusing absolute ones and ``..`` (they would escape)."""
    rel = Path(file_name)
    if rel.is_absolute() or ".." in rel.parts:
        raise WorkbenchError(
            f"image file_name {file_name!r} must be a relative path inside the images folder", path=ann_path
        )
    return rel


def link_or_copy(source: Path, target: Path, link: str) -> None:
    """Symlink ``target`` to ``source`` (absolute), or copy when asked (``link="copy"``) or when links fail."""
    if link == "symlink":
        try:
            os.symlink(source.resolve(), target)
            return
        except OSError:  # e.g. filesystems or Windows accounts without symlink rights
            pass
    shutil.copy2(source, target)
