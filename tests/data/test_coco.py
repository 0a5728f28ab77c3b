"""COCO loading/validation, image decoding, COCO-Person subset: good input works, bad input fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from workbench.cli import main
from workbench.data.coco import PERSON_CATEGORY, load_coco, require_task_fields
from workbench.data.images import image_size, load_image
from workbench.data.subset import build_person_subset
from workbench.errors import WorkbenchError


def _pose_json(tmp_path: Path, n_values: int = 51, name: str = "pose.json") -> Path:
    """A one-image pose dataset with its image on disk."""
    (tmp_path / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "imgs/p.jpg")
    kpts = ([10, 12, 2] * 17)[:n_values]
    coco = {"images": [{"id": 1, "file_name": "p.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [4, 4, 30, 30], "iscrowd": 0,
                             "area": 900, "keypoints": kpts, "num_keypoints": 17}],
            "categories": [PERSON_CATEGORY]}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(coco, indent=1))
    return path


def _cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


# ---- images -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_load_image_converts_other_modes_to_rgb(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    source = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # 16-bit greyscale PNG
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    else:
        img = source.convert(mode)
        expected = np.asarray(img.convert("RGB"))
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    if mode == "CMYK":  # lossy JPEG: compare with PIL's own decode of the saved file
        expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(out, expected)
    assert image_size(path) == (20, 12)


def test_load_image_keeps_stored_frame_despite_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display": COCO labels are in the stored frame anyway
    path = tmp_path / "rot.jpg"
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert load_image(path).shape == (20, 40, 3)


def test_load_image_missing_and_truncated_files_name_the_file(tmp_path):
    with pytest.raises(WorkbenchError, match=r"nope\.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WorkbenchError, match=r"bad\.jpg: cannot decode image \(.*truncated"):
        load_image(bad)


# ---- load_coco validation -----------------------------------------------------------------
def test_load_coco_reads_tiny_coco_and_hands_over_to_pycocotools(tiny_coco):
    ds = load_coco(tiny_coco / "instances_train2017_small.json", tiny_coco / "train_2017_small", task="seg")
    summary = ds.summary()
    assert (summary["images"], summary["annotations"], summary["person_instances"], summary["crowd"]) == (
        16,
        197,
        32,
        1,
    )
    assert ds.person_category_id == 1
    assert ds.image_path(ds.images[0]).is_file()
    coco = ds.to_pycocotools()
    assert len(coco.getAnnIds(catIds=[1])) == 33
    assert len(ds.to_pandas()) == 197


def test_malformed_json_names_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(WorkbenchError, match=r"broken\.json: malformed JSON at line 3, column 19"):
        load_coco(path)
    err = _cli_error(capsys, "data", "validate", str(path))
    assert "broken.json" in err and "malformed JSON at line 3" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("categories"), r"missing top-level key\(s\) categories"),
        (lambda d: d["annotations"][0].update(image_id=99), r"annotation id 5 refers to unknown image_id 99"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotation id 5: bbox must be 4 numbers"),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]),
            r"annotation id 5: bbox .* has negative size",
        ),
        (lambda d: d["images"][0].pop("width"), r"image id 1 \(p\.jpg\) has no positive integer 'width'"),
    ],
)
def test_structural_problems_are_named(tmp_path, mutate, message):
    path = _pose_json(tmp_path)
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(WorkbenchError, match=r"pose\.json: " + message):
        load_coco(path)


def test_wrong_keypoint_length(tmp_path, capsys):
    path = _pose_json(tmp_path, n_values=50, name="short.json")
    expected = r"short\.json: annotation id 5: keypoints has 50 values, expected 51"
    with pytest.raises(WorkbenchError, match=expected):
        load_coco(path)
    err = _cli_error(capsys, "data", "validate", str(path), "--task", "pose")
    assert "short.json" in err and "keypoints has 50 values, expected 51" in err


def test_task_fields_required(tiny_coco, tmp_path, capsys):
    ann = tiny_coco / "instances_train2017_small.json"
    with pytest.raises(
        WorkbenchError,
        match=r"instances_train2017_small\.json: annotation id \d+ has no keypoints: not a pose dataset",
    ):
        load_coco(ann, task="pose")
    err = _cli_error(capsys, "data", "validate", str(ann), "--task", "pose")
    assert "not a pose dataset" in err
    pose = load_coco(_pose_json(tmp_path))
    require_task_fields(pose, "pose")
    require_task_fields(pose, "detect")
    with pytest.raises(
        WorkbenchError, match=r"annotation id 5 has no segmentation: not a segmentation dataset"
    ):
        require_task_fields(pose, "seg")
    with pytest.raises(WorkbenchError, match=r"unknown task 'depth'"):
        require_task_fields(pose, "depth")


def test_check_images_reports_missing_corrupt_and_resized_images(tmp_path, capsys):
    path = _pose_json(tmp_path)
    image = tmp_path / "imgs/p.jpg"
    assert (
        main(["data", "validate", str(path), "--images", str(tmp_path / "imgs"), "--task", "pose", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["images_checked"] is True

    image.write_bytes(image.read_bytes()[:200])
    err = _cli_error(capsys, "data", "validate", str(path), "--images", str(tmp_path / "imgs"))
    assert str(image) in err and "cannot decode image" in err

    Image.new("RGB", (48, 64)).save(image)  # transposed size: the JSON says 64x48
    with pytest.raises(
        WorkbenchError, match=r"p\.jpg: image is 48x64 but the annotations \(pose\.json\) say 64x48"
    ):
        load_coco(path, tmp_path / "imgs", check_images=True)

    image.unlink()
    with pytest.raises(WorkbenchError, match=r"imgs/p\.jpg: image file not found"):
        load_coco(path, tmp_path / "imgs", check_images=True)


# ---- COCO-Person subset -------------------------------------------------------------------
@pytest.fixture
def coco_root(tiny_coco, tmp_path) -> Path:
    """tiny-coco laid out as a COCO 2017 folder: annotations/instances_train2017.json + train2017/."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_train2017.json").symlink_to(tiny_coco / "instances_train2017_small.json")
    (root / "train2017").symlink_to(tiny_coco / "train_2017_small")
    return root


def test_person_subset_keeps_images_with_a_person(coco_root, tmp_path):
    out = tmp_path / "person"
    ann = build_person_subset(coco_root, "train2017", out=out, task="seg")
    assert ann == out / "annotations/train.json"
    ds = load_coco(ann, out / "images/train", task="seg", check_images=True)
    assert [c["name"] for c in ds.categories] == ["person"]
    assert len(ds.images) == 10 and len(ds.annotations) == 33
    assert all(any(not a["iscrowd"] for a in ds.annotations_by_image[i["id"]]) for i in ds.images)
    assert all((out / "images/train" / i["file_name"]).is_symlink() for i in ds.images)
    data = yaml.safe_load((out / "yolo/data.yaml").read_text())
    assert data["names"] == {0: "person"} and data["train"] == "images/train"
    assert len(list((out / "yolo/labels/train").glob("*.txt"))) == 10

    small = build_person_subset(coco_root, "train2017", out=tmp_path / "small", task="detect", max_images=3)
    ids = [i["id"] for i in load_coco(small).images]
    assert ids == sorted(i["id"] for i in ds.images)[:3]


def test_person_subset_errors_leave_nothing_behind(coco_root, tmp_path, capsys):
    out = tmp_path / "out"
    err = _cli_error(capsys, "data", "coco", "--subset", "--root", str(coco_root), "--out", str(out),
                     "--split", "train2017", "--task", "pose")  # fmt: skip
    assert "person_keypoints_train2017.json" in err and "annotation file not found" in err

    images = tmp_path / "partial-images"
    images.mkdir()
    data = json.loads((coco_root / "annotations/instances_train2017.json").read_text())
    with_person = {a["image_id"] for a in data["annotations"] if a["category_id"] == 1}
    missing = next(i["file_name"] for i in data["images"] if i["id"] in with_person)
    for src in (coco_root / "train2017").iterdir():
        if src.name != missing:
            (images / src.name).symlink_to(src.resolve())
    (coco_root / "train2017").unlink()
    (coco_root / "train2017").symlink_to(images)
    with pytest.raises(WorkbenchError, match=missing + ": image file not found"):
        build_person_subset(coco_root, "train2017", out=out, task="detect")
    assert not (out / "annotations/train.json").exists() and not (out / "images/train").exists()


def test_subset_cli_json(coco_root, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["data", "coco", "--subset", "--root", str(coco_root), "--out", str(out), "--split", "train2017",
                 "--task", "detect", "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 10 and report["person_instances"] == 32 and Path(report["data_yaml"]).is_file()


def test_person_subset_pose_uses_the_keypoint_file(coco_root, tmp_path):
    data = json.loads((coco_root / "annotations/instances_train2017.json").read_text())
    rng = np.random.default_rng(0)
    persons = [a for a in data["annotations"] if a["category_id"] == 1]
    for ann in persons:  # keypoints inside the box, all labelled
        x, y, w, h = ann["bbox"]
        ann["keypoints"] = (
            np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2)], 1)
            .ravel()
            .tolist()
        )
        ann["num_keypoints"] = 17
    data.update(annotations=persons, categories=[PERSON_CATEGORY])
    (coco_root / "annotations/person_keypoints_train2017.json").write_text(json.dumps(data))
    ann = build_person_subset(coco_root, "train2017", out=tmp_path / "pose", task="pose")
    assert len(load_coco(ann, task="pose").images) == 10
    content = yaml.safe_load((tmp_path / "pose/yolo/data.yaml").read_text())
    assert content["kpt_shape"] == [17, 3]
    rows = [
        r.split()
        for f in (tmp_path / "pose/yolo/labels/train").glob("*.txt")
        for r in f.read_text().splitlines()
    ]
    assert len(rows) == 32 and {len(r) for r in rows} == {1 + 4 + 17 * 3}
