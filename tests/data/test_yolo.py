"""COCO → YOLO → COCO round trips, label format accepted by Ultralytics, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from workbench.cli import main
from workbench.data.coco import COCO_FLIP_IDX, PERSON_CATEGORY, load_coco
from workbench.data.yolo import coco_to_yolo, write_data_yaml, yolo_class_names, yolo_to_coco
from workbench.errors import WorkbenchError

SIZES = {"a.jpg": (640, 480), "b.png": (333, 517), "empty.jpg": (64, 96)}


def _pose_dataset(root: Path) -> Path:
    """Three images; random person keypoints (some unlabelled), a crowd and a keypoint-less person."""
    rng = np.random.default_rng(0)
    images_dir = root / "imgs"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for image_id, (name, (w, h)) in enumerate(SIZES.items(), start=1):
        Image.new("RGB", (w, h), (90, 120, 150)).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        if name == "empty.jpg":
            continue
        for _ in range(3):
            x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            bw, bh = rng.uniform(10, w / 2), rng.uniform(10, h / 2)
            kx, ky = rng.uniform(x, x + bw, 17), rng.uniform(y, y + bh, 17)
            v = rng.integers(0, 3, 17)
            v[0] = 2
            kx[v == 0], ky[v == 0] = 0, 0
            kpts = np.stack([kx, ky, v], 1).reshape(-1).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, bw, bh], "keypoints": kpts, "num_keypoints": int((v > 0).sum()),
                                "iscrowd": 0, "area": bw * bh})  # fmt: skip
    annotations.append({"id": 90, "image_id": 1, "category_id": 1, "bbox": [1, 1, 50, 50], "iscrowd": 1,
                        "keypoints": [0] * 51, "num_keypoints": 0, "area": 2500})  # fmt: skip
    annotations.append({"id": 91, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0,
                        "keypoints": [0] * 51, "num_keypoints": 0, "area": 400})  # fmt: skip
    ann = root / "pose.json"
    ann.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [PERSON_CATEGORY]})
    )
    return ann


def _by_file(coco: dict) -> dict[str, list[dict]]:
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    out: dict[str, list[dict]] = {name: [] for name in names.values()}
    for ann in coco["annotations"]:
        out[names[ann["image_id"]]].append(ann)
    return out


def test_pose_round_trip_keeps_keypoints_within_half_pixel(tmp_path):
    ann = _pose_dataset(tmp_path)
    out = coco_to_yolo(ann, tmp_path / "imgs", tmp_path / "yolo", "pose", "val")
    back = _by_file(yolo_to_coco(out / "labels/val", out / "images/val", "pose"))
    original = _by_file(load_coco(ann, tmp_path / "imgs").to_dict())
    for name, anns in original.items():
        kept = [a for a in anns if not a["iscrowd"] and a["num_keypoints"] > 0]
        assert len(back[name]) == len(kept)
        for src, dst in zip(kept, back[name], strict=True):
            a, b = np.reshape(src["keypoints"], (-1, 3)), np.reshape(dst["keypoints"], (-1, 3))
            assert np.abs(a[:, :2] - b[:, :2]).max() < 0.5
            assert (a[:, 2] == b[:, 2]).all()
            assert np.abs(np.subtract(src["bbox"], dst["bbox"])).max() < 0.5
    assert (out / "labels/val/empty.txt").read_text() == ""
    assert (out / "images/val/a.jpg").is_symlink()


def test_pose_labels_pass_ultralytics_checks(tmp_path):
    from ultralytics.data.utils import verify_image_label

    ann = _pose_dataset(tmp_path)
    out = coco_to_yolo(ann, tmp_path / "imgs", tmp_path / "yolo", "pose", "train", link="copy")
    assert not (out / "images/train/a.jpg").is_symlink()
    for name in SIZES:
        image = out / "images/train" / name
        label = (out / "labels/train" / name).with_suffix(".txt")
        result = verify_image_label((str(image), str(label), "", True, 1, 17, 3, False))
        nc, msg = result[8], result[9]
        assert nc == 0, msg
        if name != "empty.jpg":
            assert result[4].shape[1:] == (17, 3)
    data_yaml = write_data_yaml(out, {"train": "train", "val": "train"}, "pose")
    content = yaml.safe_load(data_yaml.read_text())
    assert content["kpt_shape"] == [17, 3] and content["flip_idx"] == COCO_FLIP_IDX
    assert Path(content["path"], content["val"]).is_dir()


def test_detect_and_seg_round_trip_on_tiny_coco(tiny_coco, tmp_path):
    ann, images = tiny_coco / "instances_train2017_small.json", tiny_coco / "train_2017_small"
    dataset = load_coco(ann, images)
    categories = sorted(dataset.categories, key=lambda c: c["id"])
    original = _by_file(dataset.to_dict())

    det = coco_to_yolo(ann, images, tmp_path / "det", "detect", "train")
    back = _by_file(yolo_to_coco(det / "labels/train", det / "images/train", "detect", categories))
    for name, anns in original.items():
        kept = [a for a in anns if not a["iscrowd"]]
        assert [a["category_id"] for a in back[name]] == [a["category_id"] for a in kept]
        for src, dst in zip(kept, back[name], strict=True):
            assert np.abs(np.subtract(src["bbox"], dst["bbox"])).max() < 0.5

    seg = coco_to_yolo(ann, images, tmp_path / "seg", "seg", "train")
    back = _by_file(yolo_to_coco(seg / "labels/train", seg / "images/train", "seg", categories))
    merged = 0
    for name, anns in original.items():
        kept = [a for a in anns if not a["iscrowd"]]
        assert len(back[name]) == len(kept)
        for src, dst in zip(kept, back[name], strict=True):
            poly = np.reshape(dst["segmentation"][0], (-1, 2))
            parts = [np.reshape(p, (-1, 2)) for p in src["segmentation"]]
            if len(parts) == 1:
                assert poly.shape == parts[0].shape and np.abs(poly - parts[0]).max() < 0.5
            else:  # merged like Ultralytics: one outline through every vertex of every part
                merged += 1
                for point in np.concatenate(parts):
                    assert np.abs(poly - point).sum(1).min() < 0.5
    assert merged >= 1


def test_rle_mask_becomes_its_largest_contour(tmp_path):
    from pycocotools import mask as mask_utils

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (80, 60)).save(tmp_path / "imgs/m.png")
    mask = np.zeros((60, 80), np.uint8, order="F")
    mask[10:40, 20:60] = 1  # big part
    mask[50:55, 2:6] = 1  # small part, dropped
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode()
    coco = {"images": [{"id": 1, "file_name": "m.png", "width": 80, "height": 60}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 10, 58, 45], "iscrowd": 0,
                             "segmentation": rle}],
            "categories": [{"id": 1, "name": "person"}]}  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(coco))
    out = coco_to_yolo(tmp_path / "m.json", tmp_path / "imgs", tmp_path / "yolo", "seg", "val")
    ann = yolo_to_coco(out / "labels/val", out / "images/val", "seg")["annotations"][0]
    assert ann["bbox"] == pytest.approx([20, 10, 39, 29], abs=1e-3)


def test_missing_image_leaves_no_split_behind(tmp_path):
    ann = _pose_dataset(tmp_path)
    (tmp_path / "imgs/b.png").unlink()
    with pytest.raises(WorkbenchError, match=r"b\.png: image file not found"):
        coco_to_yolo(ann, tmp_path / "imgs", tmp_path / "yolo", "pose", "val")
    assert not (tmp_path / "yolo/labels/val").exists() and not (tmp_path / "yolo/images/val").exists()


def test_convert_cli_writes_data_yaml_and_rejects_wrong_task(tiny_coco, tmp_path, capsys):
    ann, images = tiny_coco / "instances_train2017_small.json", tiny_coco / "train_2017_small"
    code = main(["data", "convert", str(ann), "--images", str(images), "--out", str(tmp_path / "y"),
                 "--task", "detect", "--split", "val", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    content = yaml.safe_load(Path(report["data_yaml"]).read_text())
    assert content["val"] == "images/val" and content["names"] == yolo_class_names(load_coco(ann))
    assert len(list((tmp_path / "y/labels/val").glob("*.txt"))) == 16

    code = main(
        ["data", "convert", str(ann), "--images", str(images), "--out", str(tmp_path / "p"), "--task", "pose"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "instances_train2017_small.json" in err and "not a pose dataset" in err
    assert not (tmp_path / "p").exists()
