"""The model-family registry and what each family reads from its inputs (fast; no conversion)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.config import METRIC_OF_TASK, RunConfig, Task
from workbench.decode.ssd import decode_ssd
from workbench.errors import WorkbenchError
from workbench.families import family_of, get_family, list_families
from workbench.families.ssd_train import encode, match
from workbench.families.st_config import load_st_config
from workbench.locations import weights_dir
from workbench.preprocess import ImageTransform

ST_WEIGHTS = weights_dir() / "st"  # WORKBENCH_WEIGHTS_DIR


@pytest.fixture(scope="module")
def st_weights() -> Path:
    if not (ST_WEIGHTS / "st_ssd_mobilenet_v1_025_224.h5").is_file():
        pytest.skip(f"ST's SSD .h5 files not found in {ST_WEIGHTS} (set WORKBENCH_WEIGHTS_DIR)")
    return ST_WEIGHTS


@pytest.mark.parametrize("name", list_families())
def test_every_family_names_its_tasks_metric_and_decoder(name):
    family = get_family(name)
    assert family.name == name and family.tasks and family.decoder in ("yolo", "ssd")
    assert {family.metric(t) for t in family.tasks} <= set(METRIC_OF_TASK.values())


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("data/weights/yolov8n-pose-synth.pt", "yolo"),
        ("yolov8n-seg.yaml", "yolo"),
        ("yolo11n-seg.pt", "yolo"),
        ("../shared/weights/st/st_ssd_mobilenet_v1_025_{imgsz}.h5", "ssd"),
    ],
)
def test_family_of_model(model, name):
    assert family_of(model).name == name


def test_unknown_family_and_model_are_clear_errors():
    with pytest.raises(WorkbenchError, match="unknown model family 'rnn'; known: ssd, yolo"):
        get_family("rnn")
    with pytest.raises(WorkbenchError, match="no model family takes"):
        family_of("model.onnx")


def test_ssd_family_refuses_pose():
    cfg = RunConfig(task="pose", model="x_{imgsz}.h5")
    with pytest.raises(WorkbenchError, match="the ssd family does detect, not pose"):
        get_family("ssd").dataset(cfg)


def test_match_encode_is_the_inverse_of_the_decoder():
    rng = np.random.default_rng(0)
    centre = rng.uniform(0.2, 0.8, (50, 2))
    size = rng.uniform(0.1, 0.4, (50, 2))
    anchors = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    gt = np.array([[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.9, 0.4]], np.float32)
    cls, offsets = match(anchors, gt, np.array([1, 1]))
    assert cls.sum() >= 2  # each box claims at least its best anchor
    scores = np.zeros((50, 2), np.float32)
    scores[:, 0] = 1.0
    scores[cls > 0] = [0.0, 1.0]
    t = ImageTransform((100, 100), (100, 100), (1.0, 1.0), (0.0, 0.0))
    det = decode_ssd([scores[None], offsets[None], anchors[None]], t, conf=0.5, iou=0.99)
    found = {tuple(np.round(b / 100, 4)) for b in det.boxes}
    assert {tuple(np.round(g, 4)) for g in gt} <= found
    assert np.allclose(encode(anchors, anchors), 0)


def test_st_configs_of_both_zoo_generations(st_weights, zoo_dir):
    new = load_st_config(st_weights / "st_ssd_mobilenet_v1_025_224_config.yaml")
    old = load_st_config(zoo_dir / "st" / "object_detection_ssd" / "ssd_mobilenet_v1_025_224_config.yaml")
    for cfg in (new, old):
        assert cfg.preprocessing.mode == "resize" and cfg.preprocessing.input_range == (-1.0, 1.0)
        assert (cfg.conf, cfg.nms_iou, cfg.eval_iou) == (0.001, 0.5, 0.4)
    assert new.preprocessing.interpolation == "nearest" and old.preprocessing.interpolation == "bilinear"


def test_st_config_without_rescaling_is_refused(tmp_path):
    path = tmp_path / "m_config.yaml"
    path.write_text(yaml.safe_dump({"preprocessing": {"resizing": {"interpolation": "nearest"}}}))
    with pytest.raises(WorkbenchError, match="m_config.yaml: has no preprocessing.rescaling section"):
        load_st_config(path)


# ---- bad inputs that need tf_keras: tiny models built here ------------------------------------------
def _save_keras(path: Path, outputs: str) -> Path:
    from workbench.offline import import_tensorflow

    import_tensorflow()
    import tf_keras

    x = tf_keras.Input((32, 32, 3))
    f = tf_keras.layers.Reshape((16 * 16, 4 * 3))(tf_keras.layers.Conv2D(12, 3, strides=2, padding="same")(x))
    if outputs == "classifier":
        y = [tf_keras.layers.Dense(10)(tf_keras.layers.GlobalAveragePooling2D()(x))]
    else:  # scores and boxes, no anchors
        y = [tf_keras.layers.Softmax()(tf_keras.layers.Dense(2)(f)), tf_keras.layers.Dense(4)(f)]
    tf_keras.Model(x, y).save(path, save_format="h5")
    return path


def _st_config(path: Path, **extra) -> Path:
    cfg = {
        "preprocessing": {"rescaling": {"scale": 127.5, "offset": -1}, "resizing": {"aspect_ratio": "fit"}}
    }
    path.write_text(yaml.safe_dump({**cfg, **extra}))
    return path


def test_h5_that_is_not_an_ssd_is_refused(tmp_path):
    from workbench.families.ssd import load_ssd

    model = _save_keras(tmp_path / "classifier.h5", "classifier")
    with pytest.raises(WorkbenchError, match=r"classifier.h5: is not an SSD: its outputs are \[\(10,\)\]"):
        load_ssd(model)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(WorkbenchError, match="junk.h5: not a loadable Keras model"):
        load_ssd(junk)


def test_ssd_without_anchors_needs_them_in_its_config(tmp_path):
    from workbench.families.ssd import SsdFamily, load_ssd

    model = _save_keras(tmp_path / "two_outputs.h5", "two")
    config = load_st_config(_st_config(tmp_path / "two_outputs_config.yaml"))
    with pytest.raises(
        WorkbenchError, match="two_outputs_config.yaml: outputs scores and boxes .* no `anchors:`"
    ):
        load_ssd(model, config)
    np.save(tmp_path / "anchors.npy", np.tile([[0.1, 0.1, 0.3, 0.3]], (256, 1)).astype(np.float32))
    _st_config(tmp_path / "two_outputs_config.yaml", anchors="anchors.npy")
    assert load_ssd(model, SsdFamily().config_for(model)) is not None


def test_seg_config_on_a_dataset_without_masks_is_refused(tmp_path):
    from workbench.data.synth import generate_dataset

    root = tmp_path / "people"
    generate_dataset(root, 2, 2, imgsz=64, preset="easy", progress=False)
    for split in ("train", "val"):
        ann = root / "annotations" / f"{split}.json"
        data = json.loads(ann.read_text())
        for a in data["annotations"]:
            a.pop("segmentation", None)
        ann.write_text(json.dumps(data))
    cfg = RunConfig(task="seg", model="yolov8n-seg.yaml", dataset=str(root), imgsz=[64])
    with pytest.raises(WorkbenchError, match="a seg config needs masks: annotation id 1 has no segmentation"):
        get_family("yolo").dataset(cfg)
    assert not (root / "yolo-seg").exists()
    shutil.rmtree(root)


def test_seg_dataset_gets_a_polygon_copy(tmp_path):
    from workbench.data.synth import generate_dataset

    root = tmp_path / "people"
    generate_dataset(root, 2, 2, imgsz=64, preset="easy", progress=False)
    cfg = RunConfig(task=Task.SEG, model="yolov8n-seg.yaml", dataset=str(root), imgsz=[64])
    prepared = get_family("yolo").dataset(cfg)
    assert prepared.data_yaml == root / "yolo-seg" / "data.yaml"
    label = next((root / "yolo-seg" / "labels" / "train").glob("*.txt")).read_text().split("\n")[0].split()
    assert len(label) > 5 and len(label) % 2 == 1  # class then x y pairs: a polygon, not a pose row


def test_one_weights_file_per_image_size_is_found_by_name(st_weights):
    from workbench.locations import resolve_model

    source = resolve_model("st_ssd_mobilenet_v1_025_{imgsz}.h5")
    assert source.kind == "ours" and source.name == "st_ssd_mobilenet_v1_025"
    assert (
        get_family("ssd").weights_for(source.path, 192)
        == st_weights.resolve() / "st_ssd_mobilenet_v1_025_192.h5"
    )
    with pytest.raises(WorkbenchError, match="not found for any image size"):
        resolve_model("no_such_ssd_{imgsz}.h5")
