"""COCO-Person: the person-only subset of COCO 2017 that ST's model-zoo cards evaluate on.

Kept: every image with at least one non-crowd person; of its annotations, the person ones
(crowd persons included, as COCO eval uses them as ignore regions); the person category only.

The output folder has the project's dataset layout (see :mod:`workbench.data.prepare`), so two
calls, for ``train2017`` and ``val2017``, give a dataset usable as ``dataset: <out>``::

    out/annotations/<role>.json    role: train (from train2017), val (from val2017)
    out/images/<role>/             symlinks to the COCO images
    out/yolo/                      Ultralytics copy: images/<role>, labels/<role>, data.yaml
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from workbench.config import Task
from workbench.data.coco import load_coco, parse_task
from workbench.data.yolo import coco_to_yolo, link_or_copy, relative_name, split_keys, write_data_yaml
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, write_json

ANNOTATION_FILES = {
    Task.POSE: "person_keypoints_{split}.json",
    Task.SEG: "instances_{split}.json",
    Task.DETECT: "instances_{split}.json",
}


def split_role(split: str) -> str:
    """``train2017`` → ``train``, ``val2017`` → ``val``; other names are kept."""
    for role in ("train", "val", "test"):
        if split.startswith(role):
            return role
    return split


def build_person_subset(
    coco_root: str | Path,
    split: str = "val2017",
    *,
    out: str | Path,
    task: Task | str = "pose",
    max_images: int | None = None,
) -> Path:
    """Write the COCO-Person subset of one split of a local COCO 2017 folder.

    Args:
        coco_root: folder with ``annotations/person_keypoints_<split>.json`` (pose) or
            ``annotations/instances_<split>.json`` (seg, detect) and the images in ``<split>/``.
        split: COCO split name, e.g. ``val2017``.
        out: dataset folder to write into (other roles already there are kept).
        task: decides the source annotation file and the YOLO label format.
        max_images: keep only the first N qualifying images by id (None: all).

    Returns:
        The written COCO JSON.

    Example:
        >>> build_person_subset("coco", "val2017", out="coco-person", task="pose")  # doctest: +SKIP
        PosixPath('coco-person/annotations/val.json')
    """
    task = parse_task(task)
    if max_images is not None and (not isinstance(max_images, int) or max_images <= 0):
        raise WorkbenchError(f"max_images must be a positive integer, got {max_images!r}")
    root, out = Path(coco_root), Path(out)
    ann_path = root / "annotations" / ANNOTATION_FILES[task].format(split=split)
    images_dir = root / split
    if not ann_path.is_file():
        raise WorkbenchError(
            f"annotation file not found; a COCO 2017 folder has annotations/{ann_path.name} and {split}/",
            path=ann_path,
        )
    if not images_dir.is_dir():
        raise WorkbenchError(f"images folder not found; a COCO 2017 folder has {split}/", path=images_dir)

    dataset = load_coco(ann_path, images_dir, task=task)
    person = dataset.person_category_id
    keep = [
        img
        for img in sorted(dataset.images, key=lambda i: i["id"])
        if any(
            a["category_id"] == person and not a["iscrowd"] for a in dataset.annotations_by_image[img["id"]]
        )
    ]
    keep = keep[:max_images] if max_images else keep
    if not keep:
        raise WorkbenchError("no image has a non-crowd person", path=ann_path)
    subset = {
        **dataset.extra,
        "images": keep,
        "annotations": [
            a for img in keep for a in dataset.annotations_by_image[img["id"]] if a["category_id"] == person
        ],
        "categories": [dataset.category_by_id[person]],
    }

    role = split_role(split)
    with atomic_path(out / "images" / role) as images_tmp:
        for img in tqdm(keep, desc=f"COCO-Person {split}", unit="img", leave=False):
            source = dataset.image_path(img)
            if not source.is_file():
                raise WorkbenchError(f"image file not found (listed in {ann_path})", path=source)
            target = images_tmp / relative_name(img["file_name"], ann_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, target, "symlink")
        written = write_json(out / "annotations" / f"{role}.json", subset)
    yolo_dir = coco_to_yolo(written, out / "images" / role, out / "yolo", task, role)
    kpt = dataset.num_keypoints(person)
    write_data_yaml(yolo_dir, split_keys(yolo_dir), task, kpt_shape=(kpt, 3))
    return written
