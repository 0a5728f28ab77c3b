"""Synthetic people: determinism, COCO validity, label semantics, YOLO copy, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.cli import main
from workbench.data import synth
from workbench.data.coco import COCO_FLIP_IDX as FLIP_IDX
from workbench.data.coco import COCO_KEYPOINT_NAMES as KEYPOINT_NAMES
from workbench.data.synth import SynthDataset, generate_dataset


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture(scope="module")
def std(tmp_path_factory) -> Path:
    """The brief's reference run: standard preset, 64 + 16 images at 128 px, seed 0."""
    out = tmp_path_factory.mktemp("synth") / "A"
    assert main(["data", "synth", "--out", str(out), "--train", "64", "--val", "16", "--imgsz", "128",
                 "--seed", "0"]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> SynthDataset:
    """Hardest preset: occlusion, truncation and empty images occur."""
    return generate_dataset(tmp_path_factory.mktemp("synth") / "full", 48, 8, imgsz=160, seed=3, preset="full",
                            progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> SynthDataset:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "easy", 24, 4, imgsz=128, seed=1, preset="easy",
                            progress=False)  # fmt: skip


def _ann_bytes(root: Path) -> list[bytes]:
    return [(root / "annotations" / f"{s}.json").read_bytes() for s in ("train", "val")]


def test_same_seed_same_bytes_other_seed_differs(std, tmp_path):
    again, other = tmp_path / "A2", tmp_path / "B"
    args = ["--train", "64", "--val", "16", "--imgsz", "128"]
    assert main(["data", "synth", "--out", str(again), *args, "--seed", "0"]) == 0
    assert main(["data", "synth", "--out", str(other), *args, "--seed", "1"]) == 0
    assert _ann_bytes(again) == _ann_bytes(std)
    for name in ("train/000000.jpg", "train/000063.jpg", "val/000007.jpg"):
        assert (again / "images" / name).read_bytes() == (std / "images" / name).read_bytes()
    assert all(a != b for a, b in zip(_ann_bytes(other), _ann_bytes(std), strict=True))
    assert SynthDataset.load(again).fingerprint == SynthDataset.load(std).fingerprint
    assert SynthDataset.load(other).fingerprint != SynthDataset.load(std).fingerprint


def test_image_depends_only_on_its_index_and_splits_differ(std, tmp_path):
    small = generate_dataset(tmp_path / "small", 5, 2, imgsz=128, seed=0, progress=False)
    for i in range(5):
        assert (small.images("train") / f"{i:06d}.jpg").read_bytes() == (
            std / f"images/train/{i:06d}.jpg"
        ).read_bytes()
    train0, val0 = (
        (std / "images/train/000000.jpg").read_bytes(),
        (std / "images/val/000000.jpg").read_bytes(),
    )
    assert train0 != val0


def test_console_entry_point(tmp_path):
    exe = Path(sys.executable).parent / "workbench"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "workbench"]
    out = tmp_path / "cli"
    proc = subprocess.run([*cmd, "data", "synth", "--out", str(out), "--train", "3", "--val", "1", "--imgsz", "64",
                           "--preset", "easy", "--json"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["counts"] == {"train": 3, "val": 1} and info["generator_version"] == synth.GENERATOR_VERSION
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 3


@pytest.mark.parametrize("iou_type", ["keypoints", "segm", "bbox"])
def test_ground_truth_scores_perfectly_against_itself(std, iou_type):
    gt = _quiet_coco(std / "annotations" / "val.json")
    results = []
    for a in gt.dataset["annotations"]:
        r = {"image_id": a["image_id"], "category_id": 1, "score": 1.0}
        if iou_type == "keypoints":
            r["keypoints"] = a["keypoints"]
        elif iou_type == "segm":
            r["segmentation"] = gt.annToRLE(a)
        else:
            r["bbox"] = a["bbox"]
        results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_structure(std):
    for split, n in (("train", 64), ("val", 16)):
        coco = _quiet_coco(std / "annotations" / f"{split}.json")
        d = coco.dataset
        assert len(d["images"]) == n and {i["width"] for i in d["images"]} == {128}
        assert d["categories"][0]["keypoints"] == KEYPOINT_NAMES and len(d["categories"][0]["skeleton"]) == 19
        assert d["info"]["generator_version"] == synth.GENERATOR_VERSION and d["info"]["seed"] == 0
        ids = [a["id"] for a in d["annotations"]]
        assert len(ids) == len(set(ids)) > 0
        for a in d["annotations"]:
            assert a["category_id"] == 1 and a["iscrowd"] == 0 and len(a["keypoints"]) == 51
            assert a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3])
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a["segmentation"])


def _check_semantics(root: Path, split: str) -> np.ndarray:
    """Assert the label invariants; return counts of v = 0, 1, 2."""
    coco = _quiet_coco(root / "annotations" / f"{split}.json")
    counts = np.zeros(3, int)
    kernel = np.ones((5, 5), np.uint8)  # tolerance of 2 px around the polygon mask
    for a in coco.dataset["annotations"]:
        size = coco.imgs[a["image_id"]]["width"]
        kp = np.array(a["keypoints"], float).reshape(17, 3)
        v = kp[:, 2].astype(int)
        counts += np.bincount(v, minlength=3)
        assert set(v) <= {0, 1, 2}
        assert np.all(kp[v == 0, :2] == 0), "v=0 keypoints must be (0, 0)"
        assert np.all((kp[v > 0, :2] >= 0) & (kp[v > 0, :2] < size)), (
            "labelled keypoints must be inside the image"
        )
        x, y, w, h = a["bbox"]
        vis = kp[v == 2, :2]
        assert np.all((vis >= [x - 2, y - 2]) & (vis <= [x + w + 2, y + h + 2])), (
            "visible keypoint outside bbox"
        )
        mask = coco.annToMask(a)
        # polygons rasterize back to the mask; only holes (an arm touching the body) are filled in
        assert 0.95 * a["area"] <= mask.sum() <= 1.25 * a["area"] and a["area"] > 0
        near = cv2.dilate(mask, kernel)
        for px, py in vis.astype(int):
            assert near[py, px], f"visible keypoint ({px}, {py}) not on the person's mask"
    return counts


def test_label_semantics_standard(std):
    counts = _check_semantics(std, "train") + _check_semantics(std, "val")
    assert counts[2] > 0


def test_label_semantics_full_has_truncation_occlusion_and_empty_images(full):
    counts = _check_semantics(full.root, "train")
    assert counts[0] > 0 and counts[1] > 0, f"full preset should truncate and occlude, got v counts {counts}"
    coco = json.loads(full.ann("train").read_text())
    with_people = {a["image_id"] for a in coco["annotations"]}
    empty = [i for i in coco["images"] if i["id"] not in with_people]
    assert empty, "full preset should produce some images without people"
    for info in empty:
        assert (full.root / "yolo/labels/train" / info["file_name"].replace(".jpg", ".txt")).read_text() == ""


def test_easy_people_face_the_camera(easy):
    """Left joints are on the image right: what makes left/right learnable (and flip_idx right)."""
    coco = json.loads(easy.ann("train").read_text())
    assert all(1 <= n <= 2 for n in np.bincount([a["image_id"] for a in coco["annotations"]])[1:])
    for a in coco["annotations"]:
        kp = np.array(a["keypoints"], float).reshape(17, 3)
        assert np.all(kp[:, 2] > 0), "easy preset: nobody is cut by the border"
        for left, right in ((1, 2), (3, 4), (5, 6), (11, 12)):
            assert kp[left, 0] > kp[right, 0], f"{KEYPOINT_NAMES[left]} not right of {KEYPOINT_NAMES[right]}"
        assert a["bbox"][3] >= 0.4 * 128
    v = np.array([a["keypoints"][2::3] for a in coco["annotations"]])
    assert (v == 2).mean() > 0.97, "easy preset: little occlusion"


def test_yolo_copy_matches_coco(std):
    data = yaml.safe_load((std / "yolo" / "data.yaml").read_text())
    assert data["kpt_shape"] == [17, 3] and data["flip_idx"] == FLIP_IDX and data["names"] == {0: "person"}
    assert Path(data["path"]) == (std / "yolo").resolve()
    coco = json.loads((std / "annotations" / "val.json").read_text())
    for info in coco["images"]:
        img = std / "yolo" / data["val"] / info["file_name"]
        assert (
            img.stat().st_ino == (std / "images/val" / info["file_name"]).stat().st_ino
        )  # hardlink, not a copy
        rows = [
            list(map(float, line.split()))
            for line in (std / "yolo/labels/val" / info["file_name"].replace(".jpg", ".txt"))
            .read_text()
            .splitlines()
        ]
        anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
        assert len(rows) == len(anns)
        for row, a in zip(rows, anns, strict=True):
            x, y, w, h = a["bbox"]
            assert row[0] == 0 and np.allclose(
                np.array(row[1:5]) * 128, [x + w / 2, y + h / 2, w, h], atol=1e-3
            )
            kp = np.array(row[5:]).reshape(17, 3)
            kp[:, :2] *= 128
            assert np.allclose(kp.reshape(-1), a["keypoints"], atol=1e-3)


def test_manifest_and_reuse(tmp_path):
    ds = generate_dataset(tmp_path / "d", 4, 2, imgsz=64, seed=2, preset="easy", progress=False)
    manifest = json.loads((ds.root / "dataset.json").read_text())
    assert manifest["sha256"]["val"] == synth.sha256_file(ds.ann("val"))
    assert manifest["fingerprint"] == synth.dataset_fingerprint(ds.root) and ds.is_current()
    stamp = ds.ann("train").stat().st_mtime_ns
    assert (
        generate_dataset(ds.root, 4, 2, imgsz=64, seed=2, preset="easy", progress=False).fingerprint
        == ds.fingerprint
    )
    assert ds.ann("train").stat().st_mtime_ns == stamp, "an identical current dataset is reused"
    ds.ann("train").write_text(ds.ann("train").read_text().replace('"iscrowd":0', '"iscrowd":1', 1))
    assert not SynthDataset.load(ds.root).is_current()
    again = generate_dataset(ds.root, 4, 2, imgsz=64, seed=2, preset="easy", progress=False)
    assert again.is_current() and again.fingerprint == ds.fingerprint
    assert list(ds.to_pandas()["images"]) == [4, 2]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--imgsz", "100"], "multiple of 32"),
        (["--train", "-5"], "--train"),
        (["--val", "-1"], "--val"),
        (["--seed", "-1"], "seed"),
    ],
)
def test_bad_input_exits_2_and_leaves_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "bad"
    assert (
        main(["data", "synth", "--out", str(out), "--train", "2", "--val", "1", "--imgsz", "64", *flags]) == 2
    )
    err = capsys.readouterr().err
    assert "error" in err and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert (
        main(
            ["data", "synth", "--out", str(tmp_path / "mine"), "--train", "2", "--val", "1", "--imgsz", "64"]
        )
        == 2
    )
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_failure_midway_leaves_no_output(tmp_path, monkeypatch):
    calls = []

    def boom(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    original = synth.render_sample
    monkeypatch.setattr(synth, "render_sample", boom)
    with pytest.raises(RuntimeError):
        generate_dataset(tmp_path / "half", 4, 1, imgsz=64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_no_val_split_points_ultralytics_at_train(tmp_path):
    ds = generate_dataset(tmp_path / "d", 3, 0, imgsz=64, preset="easy", progress=False)
    assert json.loads(ds.ann("val").read_text())["images"] == []
    assert yaml.safe_load(ds.data_yaml.read_text())["val"] == "images/train"
