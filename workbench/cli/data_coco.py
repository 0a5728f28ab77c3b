"""`workbench data coco|validate|convert`: COCO download, COCO-Person subset, validation, YOLO copy.

Examples::

    workbench data coco --download data/coco --parts val2017,annotations
    workbench data coco --subset --root data/coco --out data/coco-person --task pose
    workbench data validate data/coco/annotations/person_keypoints_val2017.json --images data/coco/val2017 --task pose
    workbench data convert ann.json --images imgs --out yolo --task seg --split val
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli import print_json
from workbench.config import Task
from workbench.errors import WorkbenchError

TASKS = [t.value for t in Task]


def register(sub) -> None:
    coco = sub.add_parser("coco", help="download COCO 2017 or build its COCO-Person subset")
    mode = coco.add_mutually_exclusive_group(required=True)
    mode.add_argument("--download", metavar="DIR", type=Path, help="download and extract COCO parts into DIR")
    mode.add_argument(
        "--subset", action="store_true", help="build the COCO-Person subset of --root into --out"
    )
    coco.add_argument(
        "--parts",
        default="val2017,annotations",
        help="comma-separated: train2017,val2017,test2017,annotations",
    )
    coco.add_argument("--base-url", default=None, help="mirror serving zips/ and annotations/")
    coco.add_argument("--checksum", action="append", default=[], metavar="PART=ALGO:HEX",
                      help="override a part's checksum (for mirrors); repeatable")  # fmt: skip
    coco.add_argument("--root", type=Path, help="local COCO 2017 folder (annotations/, val2017/, ...)")
    coco.add_argument("--out", type=Path, help="dataset folder to write the subset into")
    coco.add_argument("--split", default="val2017", help="COCO split for --subset (default val2017)")
    coco.add_argument("--task", choices=TASKS, default="pose")
    coco.add_argument("--max-images", type=int, default=None, help="keep only the first N images (by id)")
    coco.add_argument("--json", action="store_true", help="print one JSON object")
    coco.set_defaults(func=_coco)

    validate = sub.add_parser("validate", help="check a COCO annotation file (and its images)")
    validate.add_argument("ann", type=Path, help="COCO annotation JSON")
    validate.add_argument("--images", type=Path, default=None, help="image folder: also decode every image")
    validate.add_argument("--task", choices=TASKS, default=None, help="also require the task's fields")
    validate.add_argument(
        "--exif-transpose",
        action="store_true",
        help="check images as displayed (EXIF orientation applied): for labels drawn on rotated views",
    )
    validate.add_argument("--json", action="store_true", help="print one JSON object")
    validate.set_defaults(func=_validate)

    convert = sub.add_parser("convert", help="write a COCO dataset as Ultralytics YOLO images + labels")
    convert.add_argument("ann", type=Path, help="COCO annotation JSON")
    convert.add_argument("--images", type=Path, required=True, help="image folder of the annotation file")
    convert.add_argument(
        "--out", type=Path, required=True, help="YOLO dataset folder (data.yaml is written here)"
    )
    convert.add_argument("--task", choices=TASKS, default="pose")
    convert.add_argument("--split", default="train", help="split folder name (default train)")
    convert.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    convert.add_argument("--json", action="store_true", help="print one JSON object")
    convert.set_defaults(func=_convert)


def _coco(args: argparse.Namespace) -> int:
    if args.download is not None:
        from workbench.data.download import COCO_CHECKSUMS, COCO_URL, download_coco

        checksums = dict(COCO_CHECKSUMS)
        for item in args.checksum:
            part, sep, value = item.partition("=")
            if not sep or not value:
                raise WorkbenchError(f"--checksum expects PART=ALGO:HEX, got {item!r}")
            checksums[part] = value
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        dest = download_coco(args.download, parts, base_url=args.base_url or COCO_URL, checksums=checksums)
        result = {"dest": str(dest), "parts": parts}
        _report(args, result, f"COCO {', '.join(parts)} ready in {dest}")
        return 0
    from workbench.data.coco import load_coco
    from workbench.data.subset import build_person_subset

    if args.root is None or args.out is None:
        raise WorkbenchError("--subset needs --root (a COCO 2017 folder) and --out")
    ann = build_person_subset(args.root, args.split, out=args.out, task=args.task, max_images=args.max_images)
    summary = load_coco(ann).summary()
    result = {
        "ann": str(ann),
        "out": str(args.out),
        "data_yaml": str(args.out / "yolo" / "data.yaml"),
        **summary,
    }
    _report(args, result, f"COCO-Person {args.split}: {summary['images']} images, "
                          f"{summary['person_instances']} persons → {ann}")  # fmt: skip
    return 0


def _validate(args: argparse.Namespace) -> int:
    from workbench.data.coco import load_coco

    dataset = load_coco(
        args.ann, args.images, task=args.task, check_images=args.images is not None,
        exif_transpose=args.exif_transpose,
    )  # fmt: skip
    summary = {**dataset.summary(), "task": args.task, "images_checked": args.images is not None}
    _report(args, summary, f"{args.ann}: OK, {summary['images']} images, {summary['annotations']} annotations"
                           + (", all images decode" if args.images is not None else ""))  # fmt: skip
    return 0


def _convert(args: argparse.Namespace) -> int:
    from workbench.data.coco import load_coco
    from workbench.data.yolo import coco_to_yolo, split_keys, write_data_yaml, yolo_class_names

    out = coco_to_yolo(
        args.ann, args.images, args.out, args.task, args.split, "copy" if args.copy else "symlink"
    )
    dataset = load_coco(args.ann)
    kpt = dataset.num_keypoints(dataset.person_category_id) if args.task == "pose" else 17
    data_yaml = write_data_yaml(
        out, split_keys(out), args.task, yolo_class_names(dataset), kpt_shape=(kpt, 3)
    )
    labels = len(list((out / "labels" / args.split).rglob("*.txt")))
    result = {
        "out": str(out),
        "data_yaml": str(data_yaml),
        "split": args.split,
        "task": args.task,
        "label_files": labels,
    }
    _report(args, result, f"{labels} label files in {out / 'labels' / args.split}; {data_yaml}")
    return 0


def _report(args: argparse.Namespace, result: dict, line: str) -> None:
    if args.json:
        print_json(result)
    else:
        print(line)
