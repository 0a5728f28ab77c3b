"""Weights and data found by name: WORKBENCH_WEIGHTS_DIR / WORKBENCH_DATA_DIR / WORKBENCH_ZOO_DIR,
offline refusal that lists where it looked, downloads only when allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.cli import main
from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.locations import resolve_data, resolve_model, resolve_weights, weights_dir
from workbench.plan import check_data_paths, resolve_models


@pytest.fixture
def weights_tree(tmp_path, monkeypatch):
    root = tmp_path / "weights"
    (root / "vendor").mkdir(parents=True)
    (root / "vendor" / "my-pose.pt").write_bytes(b"x")
    monkeypatch.setenv("WORKBENCH_WEIGHTS_DIR", str(root))
    return root


def test_a_file_name_is_found_recursively_under_the_weights_dir(weights_tree):
    assert weights_dir() == weights_tree.resolve()
    assert resolve_weights("my-pose.pt") == weights_tree / "vendor" / "my-pose.pt"


def test_a_local_path_wins_over_the_weights_dir(weights_tree, tmp_path):
    local = tmp_path / "my-pose.pt"
    local.write_bytes(b"y")
    assert resolve_weights(str(local)) == local


def test_offline_and_not_found_lists_every_place_looked(weights_tree):
    with pytest.raises(WorkbenchError) as err:
        resolve_weights("yolov8n-pose.pt")
    message = err.value.message
    assert "yolov8n-pose.pt' not found" in message
    assert f"{weights_tree.resolve()}/**/yolov8n-pose.pt (WORKBENCH_WEIGHTS_DIR)" in message
    assert "downloads are off" in message and "--allow-download" in message


def test_a_download_is_offered_only_when_allowed_and_only_for_names_ultralytics_publishes(weights_tree):
    assert resolve_weights("yolov8n-pose.pt", allow_download=True) == "yolov8n-pose.pt"
    with pytest.raises(WorkbenchError, match="Ultralytics does not publish a file of that name"):
        resolve_weights("no-such-model.pt", allow_download=True)


def test_a_model_yaml_is_an_architecture_not_a_file(monkeypatch):
    """Regression: `model: yolov8n-seg.yaml` (configs/seg-synth.yaml) went to the download path and
    the seg report failed in step 01 with "download of 'yolov8n-seg.yaml' produced no file"."""
    from workbench import locations

    assert resolve_weights("yolov8n-pose.yaml") == "yolov8n-pose.yaml"

    def no_download(name):
        raise AssertionError(f"tried to download {name}")

    monkeypatch.setattr(locations, "fetch_weights", no_download)
    assert locations.weights_file(resolve_weights("yolov8n-seg.yaml")) == "yolov8n-seg.yaml"
    local = Path(__file__)
    assert locations.weights_file(local) == local


def test_a_zoo_folder_is_found_under_the_zoo_dir(tmp_path, monkeypatch, weights_tree):
    (tmp_path / "zoo" / "st" / "pose").mkdir(parents=True)
    monkeypatch.setenv("WORKBENCH_ZOO_DIR", str(tmp_path / "zoo"))
    source = resolve_model("st/pose")
    assert source.kind == "zoo" and source.path == (tmp_path / "zoo" / "st" / "pose").resolve()
    ours = resolve_model("my-pose.pt")
    assert ours.kind == "ours" and ours.name == "my-pose"


def test_data_paths_resolve_under_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "data" / "set").mkdir(parents=True)
    (tmp_path / "data" / "set" / "ann.json").write_text("{}")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    assert resolve_data("set/ann.json") == tmp_path / "data" / "set" / "ann.json"


def test_plan_checks_name_the_missing_entry_and_the_config(weights_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "images").mkdir()
    config = RunConfig(model="my-pose.pt", calib_dir=str(tmp_path / "images"))
    check_data_paths(config)  # found: the folder as given
    (model,) = resolve_models(config)  # found: the weights by name, in the yolo family
    assert (model.kind, model.family) == ("ours", "yolo")
    with pytest.raises(WorkbenchError, match="calib_dir 'nowhere' not found") as err:
        check_data_paths(config.replace(calib_dir="nowhere"), "run.yaml")
    assert err.value.path == "run.yaml"
    with pytest.raises(WorkbenchError, match="'other.pt' not found") as err:
        resolve_models(config.replace(model="other.pt"), "run.yaml")
    assert err.value.path == "run.yaml"


def test_export_cli_refuses_unknown_weights_with_exit_2(weights_tree, tmp_path, capsys):
    assert (
        main(["export", "--weights", "yolov8n-pose.pt", "--imgsz", "256", "--out", str(tmp_path / "sm")]) == 2
    )
    err = capsys.readouterr().err
    assert "not found; looked in" in err and not (tmp_path / "sm").exists()


def test_report_refuses_a_config_naming_missing_weights_before_any_work(weights_tree, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(f"name: bad\nmodel: yolov8n-pose.pt\nout_dir: {tmp_path / 'reports'}\n")
    assert main(["report", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "yolov8n-pose.pt' not found" in err
    assert not (tmp_path / "reports").exists()


def test_config_lists_models_and_protocols():
    cfg = RunConfig(model=["a.pt", "st/pose"], protocol=["coco", "st"])
    assert cfg.models == ["a.pt", "st/pose"] and cfg.protocols == ["coco", "st"]
    with pytest.raises(WorkbenchError, match="lists an entry twice"):
        RunConfig(model=["a.pt", "a.pt"])
    with pytest.raises(WorkbenchError, match="protocol must be one or both of coco, st"):
        RunConfig(protocol=["coco", "voc"])
    with pytest.raises(WorkbenchError, match="dataset: coco needs `ann`"):
        RunConfig(dataset="coco")
    with pytest.raises(WorkbenchError, match="train_ann and train_images go together"):
        RunConfig(train_ann="x.json")


def test_the_shared_official_weights_resolve_by_name():
    if not (weights_dir() / "ultralytics" / "yolo11n-pose.pt").is_file():
        pytest.skip(f"yolo11n-pose.pt not under {weights_dir()} (set WORKBENCH_WEIGHTS_DIR)")
    assert resolve_weights("yolo11n-pose.pt") == weights_dir() / "ultralytics" / "yolo11n-pose.pt"
    assert Path(resolve_weights("yolo11n-pose.pt")).stat().st_size == 6255593  # weights/MANIFEST.md
