"""Every CLI verb for every model family (timm-style: parametrized over the family registry).

Each family has a sample model below (a new family must add one: the first test fails otherwise).
The verbs run through the real entry point, ``workbench.cli.main``, on the family's smallest input
size and a few synthetic images; bad input must end in one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.export import EXPORT_META
from workbench.families import list_families
from workbench.locations import weights_dir

REPO = Path(__file__).resolve().parents[2]
SHARED_ST = weights_dir() / "st"


@dataclass(frozen=True)
class Sample:
    weights: Path  # float weights of the family
    imgsz: int  # its smallest input size (keeps exports and conversions quick)
    task: str
    recipe: str  # an int8 recipe that applies to the family
    foreign_recipe: str | None  # a recipe that does not (None: every recipe applies)


SAMPLES = {
    "yolo": Sample(REPO / "data" / "weights" / "yolov8n-pose-synth.pt", 192, "pose", "calib-all", None),
    "ssd": Sample(SHARED_ST / "st_ssd_mobilenet_v1_025_192.h5", 192, "detect", "equalize", "split-head"),
}  # fmt: skip
EVAL_IMAGES = 6
CALIB_IMAGES = 8


def sample(family: str) -> Sample:
    found = SAMPLES[family]
    if not found.weights.is_file():
        pytest.skip(f"{family} sample weights not found at {found.weights} (set WORKBENCH_WEIGHTS_DIR)")
    return found


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str, verb: str, *names: str) -> str:
    """Exit 2 and exactly one stderr line, ``workbench VERB: error: ...`` naming each of ``names``."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"workbench {verb}: error: "), lines[0]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``workbench export`` of each family's sample, once per module: ``{family: SavedModel folder}``."""
    root, done = tmp_path_factory.mktemp("exports"), {}

    def export(family: str) -> Path:
        if family not in done:
            found = sample(family)
            out = root / f"{family}{found.imgsz}"
            code = main(
                ["export", "--weights", str(found.weights), "--imgsz", str(found.imgsz), "--out", str(out)]
            )
            assert code == 0 and (out / "saved_model.pb").is_file()
            done[family] = out
        return done[family]

    return export


@pytest.fixture(scope="module")
def conversions(tmp_path_factory, exports, synth_eval_set):
    """fp32 and int8-per-tensor (with the family's recipe) of each export, converted by the CLI."""
    root, done = tmp_path_factory.mktemp("tflite"), {}

    def convert(family: str, scheme: str) -> tuple[Path, dict]:
        if (family, scheme) not in done:
            out = root / f"{family}-{scheme}.tflite"
            argv = ["quantize", "--saved-model", str(exports(family)), "--scheme", scheme, "--out", str(out)]
            if scheme != "fp32":
                argv += ["--calib", str(synth_eval_set.train_images), "--calib-count", str(CALIB_IMAGES)]
                argv += ["--recipe", SAMPLES[family].recipe]
            stdout = _json_of(argv)
            done[family, scheme] = out, stdout
        return done[family, scheme]

    return convert


def _json_of(argv: list[str]) -> dict:
    """``main(argv + --json)``, which must exit 0: the JSON object it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*argv, "--json"])
    assert code == 0, argv
    return json.loads(buffer.getvalue())


def test_every_registered_family_has_a_sample():
    assert set(SAMPLES) == set(list_families())


@pytest.mark.slow
@pytest.mark.parametrize("family", list_families())
def test_export_writes_a_savedmodel_naming_its_family(family, exports):
    found = sample(family)
    meta = json.loads((exports(family) / EXPORT_META).read_text())
    assert meta["family"] == family
    assert meta["imgsz"] == found.imgsz and meta["task"] == found.task and meta["normalized"] is True
    assert Path(meta["weights"]).name == found.weights.name


@pytest.mark.parametrize("family", list_families())
def test_train_zero_epochs_keeps_the_weights(family, synth_eval_set, tmp_path, capsys):
    found = sample(family)
    before = found.weights.read_bytes()
    code, out, err = run_cli(
        capsys, "train", "--model", found.weights, "--data", synth_eval_set.root, "--epochs", "0",
        "--imgsz", found.imgsz, "--out", tmp_path / "run", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["family"] == family and summary["task"] == found.task and summary["epochs"] == 0
    assert Path(summary["weights"]) == Path(summary["weights_file"]) == found.weights
    assert summary["train_seconds"] == 0.0
    assert found.weights.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("family", list_families())
@pytest.mark.parametrize("scheme", ["fp32", "int8-per-tensor"])
def test_quantize_converts_the_export(family, scheme, conversions, synth_eval_set):
    from workbench.inspect import is_all_int8, weight_granularity
    from workbench.runtime import read_tflite_metadata
    from workbench.tflite_graph import read_graph

    path, result = conversions(family, scheme)
    graph = read_graph(path)
    meta = read_tflite_metadata(path)["workbench"]
    assert meta["family"] == result["family"] == family and meta["imgsz"] == SAMPLES[family].imgsz
    if scheme == "fp32":
        assert not is_all_int8(graph) and result["recipes"] == [] and result["calib_images"] == 0
    else:
        assert is_all_int8(graph) and weight_granularity(graph).verdict == "per-tensor"
        assert meta["recipes"] == result["recipes"] == [SAMPLES[family].recipe]
        everything = len(list(synth_eval_set.train_images.iterdir()))  # what calib-all takes
        assert result["calib_images"] == (everything if result["recipes"] == ["calib-all"] else CALIB_IMAGES)


@pytest.mark.slow
@pytest.mark.parametrize("family", list_families())
def test_evaluate_scores_the_int8_file(family, conversions, synth_eval_set):
    path, _ = conversions(family, "int8-per-tensor")
    result = _json_of(
        ["evaluate", str(path), "--task", SAMPLES[family].task, "--ann", str(synth_eval_set.val_ann),
         "--images", str(synth_eval_set.val_images), "--max-images", str(EVAL_IMAGES)]
    )  # fmt: skip
    assert result["n_images"] == EVAL_IMAGES and 0.0 <= result["AP"] <= 1.0


@pytest.mark.parametrize("family", list_families())
def test_evaluate_runs_every_family_s_float_weights(family, synth_eval_set, capsys):
    found = sample(family)
    code, out, err = run_cli(
        capsys, "evaluate", found.weights, "--task", found.task, "--ann", synth_eval_set.val_ann,
        "--images", synth_eval_set.val_images, "--imgsz", found.imgsz, "--max-images", 2, "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["n_images"] == 2 and 0.0 <= result["AP"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in list_families() if SAMPLES[f].foreign_recipe])
def test_quantize_refuses_a_recipe_of_another_family(family, exports, synth_eval_set, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "quantize", "--saved-model", exports(family), "--scheme", "int8-per-tensor",
        "--calib", synth_eval_set.train_images, "--calib-count", 2, "--recipe", SAMPLES[family].foreign_recipe,
        "--out", tmp_path / "x.tflite",
    )  # fmt: skip
    assert_one_error_line(code, err, "quantize", exports(family).name)
    assert not (tmp_path / "x.tflite").exists()


# ---- bad input: one line, exit 2, for every verb ------------------------------------------------


@pytest.fixture()
def junk(tmp_path) -> dict[str, Path]:
    """Files that are not what their names say, and a SavedModel folder of an unknown family."""
    files = {}
    for name in ("corrupt.pt", "corrupt.h5", "corrupt.tflite", "model.onnx"):
        files[name] = tmp_path / name
        files[name].write_bytes(b"not a model \x00\x01\x02" * 64)
    unknown = tmp_path / "sm-unknown"
    unknown.mkdir()
    (unknown / EXPORT_META).write_text(
        json.dumps({
            "task": "detect", "imgsz": 192, "names": {"0": "person"}, "kpt_shape": None, "normalized": True,
            "weights": "w.onnx", "weights_sha256": "0" * 64, "seconds": 0.0, "family": "no-such-family",
        })
    )  # fmt: skip
    files["unknown family"] = unknown
    garbled = tmp_path / "sm-garbled"
    garbled.mkdir()
    (garbled / EXPORT_META).write_text("{ not json")
    files["garbled export"] = garbled
    return files


@pytest.mark.parametrize("family", list_families())
def test_bad_weights_are_one_line_for_every_verb(family, junk, synth_eval_set, tmp_path, capsys):
    found = sample(family)
    missing = tmp_path / f"missing{found.weights.suffix}"
    corrupt = junk[f"corrupt{found.weights.suffix}"]
    for companion in found.weights.parent.glob(f"{found.weights.stem}_*"):  # e.g. ST's <model>_config.yaml
        shutil.copyfile(companion, corrupt.parent / companion.name.replace(found.weights.stem, corrupt.stem))
    data = ["--data", str(synth_eval_set.root), "--out", str(tmp_path / "run")]
    for argv, verb, name in [
        (["export", "--weights", missing, "--imgsz", 192, "--out", tmp_path / "sm"], "export", missing.name),
        (["export", "--weights", corrupt, "--imgsz", 192, "--out", tmp_path / "sm"], "export", corrupt.name),
        (["train", "--model", missing, "--epochs", 0, *data], "train", missing.name),
        (
            ["evaluate", missing, "--task", "detect", "--ann", "a.json", "--images", "."],
            "evaluate",
            missing.name,
        ),
    ]:
        code, _, err = run_cli(capsys, *argv)
        assert_one_error_line(code, err, verb, name)
    assert not (tmp_path / "sm").exists()


def test_wrong_suffix_and_unknown_family_are_one_line(junk, synth_eval_set, tmp_path, capsys):
    onnx = junk["model.onnx"]
    eval_args = ["--task", "detect", "--ann", synth_eval_set.val_ann, "--images", synth_eval_set.val_images]
    quantize = ["quantize", "--scheme", "fp32", "--out", tmp_path / "x.tflite", "--saved-model"]
    for argv, verb, name, says in [
        (["export", "--weights", onnx, "--imgsz", 192, "--out", tmp_path / "sm"], "export", onnx.name,
         "no model family takes"),
        (["train", "--model", onnx, "--data", synth_eval_set.root, "--out", tmp_path / "r"], "train", onnx.name,
         "no model family takes"),
        (["evaluate", onnx, *eval_args], "evaluate", onnx.name, "no model family takes"),
        (["evaluate", junk["corrupt.tflite"], *eval_args], "evaluate", "corrupt.tflite", ""),
        ([*quantize, junk["unknown family"]], "quantize", "sm-unknown", "unknown model family 'no-such-family'"),
        ([*quantize, junk["garbled export"]], "quantize", "sm-garbled", "unreadable export metadata"),
        ([*quantize, tmp_path / "nothing"], "quantize", "nothing", "not found"),
        (["train", "--model", SAMPLES["yolo"].weights, "--data", tmp_path / "no-data", "--out", tmp_path / "r"],
         "train", "no-data", "not found"),
    ]:  # fmt: skip
        code, _, err = run_cli(capsys, *argv)
        assert says in assert_one_error_line(code, err, verb, name)
    assert not (tmp_path / "x.tflite").exists() and not (tmp_path / "r").exists()


def test_a_task_the_family_does_not_do_is_one_line(synth_eval_set, capsys):
    found = sample("ssd")
    code, _, err = run_cli(
        capsys, "evaluate", found.weights, "--task", "pose", "--ann", synth_eval_set.val_ann,
        "--images", synth_eval_set.val_images,
    )  # fmt: skip
    line = assert_one_error_line(code, err, "evaluate", found.weights.name)
    assert "does detect, not pose" in line


def test_a_library_exception_is_one_line_and_verbose_shows_its_traceback(tmp_path, monkeypatch, capsys):
    from workbench.families.ssd import SsdFamily

    def broken_export(self, *args, **kwargs):
        raise RuntimeError("something deep in a library\nsecond line")

    monkeypatch.setattr(SsdFamily, "export", broken_export)
    weights = tmp_path / "fine.h5"
    weights.write_bytes(b"\x00")
    argv = ["export", "--weights", weights, "--imgsz", 192, "--out", tmp_path / "sm"]
    code, _, err = run_cli(capsys, *argv)
    line = assert_one_error_line(
        code, err, "export", "fine.h5", "RuntimeError", "something deep in a library"
    )
    assert "second line" not in line and "--verbose" in line
    code, _, err = run_cli(capsys, *argv, "--verbose")
    assert code == 2 and "Traceback" in err and "broken_export" in err
    assert err.strip().splitlines()[-1].startswith("workbench export: error: ")


def test_console_run_of_a_missing_file_prints_one_stderr_line(tmp_path):
    """A real process (no capture layer): stderr holds the error line and nothing else."""
    missing = tmp_path / "st_ssd_missing_192.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "export", "--weights", str(missing), "--imgsz", "192",
         "--out", str(tmp_path / "sm")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and missing.name in proc.stderr
    assert proc.stderr.startswith("workbench export: error: ")


def test_pixel_outputs_go_to_the_yolo_export_and_the_ssd_refuses_them(tmp_path, monkeypatch, capsys):
    import workbench.export

    seen = {}
    monkeypatch.setattr(workbench.export, "export_saved_model", lambda *a, **kw: seen.update(kw))
    from workbench.families import get_family

    get_family("yolo").export(SAMPLES["yolo"].weights, 192, tmp_path / "sm", normalize=False)
    assert seen["normalize"] is False
    ssd = sample("ssd")
    code, _, err = run_cli(capsys, "export", "--weights", ssd.weights, "--imgsz", 192, "--out", tmp_path / "x",
                           "--pixel-outputs")  # fmt: skip
    assert_one_error_line(code, err, "export", "no pixel-output form")
    assert not (tmp_path / "x").exists()


def test_train_takes_a_dataset_folder_by_its_data_yaml_and_refuses_a_bad_loose_one(
    synth_eval_set, tmp_path, capsys
):
    found = sample("yolo")
    argv = ["train", "--model", found.weights, "--epochs", 0, "--out", tmp_path / "run", "--json", "--data"]
    code, out, err = run_cli(capsys, *argv, synth_eval_set.root / "yolo" / "data.yaml")
    assert code == 0, err
    assert json.loads(out)["weights_file"] == str(found.weights)
    (tmp_path / "images").mkdir()
    kpt = "kpt_shape: [17, 3]\n"
    for text, says in [
        (f"path: .\ntrain: images\nval: images\nnames: {{0: person}}\n{kpt}", "relative path '.'"),
        (f"path: {tmp_path}\ntrain: images\nval: nowhere\nnames: {{0: person}}\n{kpt}", "val images folder"),
        (f"path: {tmp_path}\ntrain: images\nval: images\nnames: {{0: person}}\n", "no kpt_shape"),
        (f"path: {tmp_path}\ntrain: images\n{kpt}", "no val, names"),
        ("- just\n- a list\n", "not a mapping"),
        ("train: [unclosed\n", "not valid YAML"),
    ]:  # fmt: skip
        loose = tmp_path / "data.yaml"
        loose.write_text(text)
        code, _, err = run_cli(capsys, *argv, loose)
        assert says in assert_one_error_line(code, err, "train", str(loose), "data.yaml")


def test_train_takes_the_data_yaml_data_convert_writes(synth_eval_set, tmp_path, capsys, monkeypatch):
    """``workbench data convert`` of a train and a val split, then ``train --data <its data.yaml>``:
    the family trains on that very file (its retraining recorded here, not run)."""
    from workbench.families.yolo import YoloFamily

    yolo = tmp_path / "yolo"
    for split in ("train", "val"):
        code, _, err = run_cli(
            capsys, "data", "convert", synth_eval_set.root / "annotations" / f"{split}.json",
            "--images", synth_eval_set.root / "images" / split, "--out", yolo, "--task", "pose", "--split", split,
        )  # fmt: skip
        assert code == 0, err
    seen = {}

    def recorded(self, cfg, start, dataset, out):
        seen.update(cfg=cfg, start=start, dataset=dataset)
        return {"weights": str(start), "train_seconds": 1.0, "val": {"map50_95": 0.5}}

    monkeypatch.setattr(YoloFamily, "retrain", recorded)
    found = sample("yolo")
    code, out, err = run_cli(
        capsys, "train", "--model", found.weights, "--data", yolo / "data.yaml", "--epochs", 2,
        "--imgsz", 192, "--out", tmp_path / "run", "--json",
    )  # fmt: skip
    assert code == 0, err
    dataset = seen["dataset"]
    assert dataset.data_yaml == yolo / "data.yaml" and dataset.val_ann is None
    assert dataset.train_images == (yolo / "images" / "train").resolve()
    assert dataset.val_images == (yolo / "images" / "val").resolve()
    assert seen["cfg"].epochs == 2 and seen["cfg"].imgsz == [192] and seen["cfg"].task.value == "pose"
    assert json.loads(out)["family"] == "yolo" and json.loads(out)["start"] == str(found.weights)
    # the same file for a report run is refused: a run evaluates on COCO annotations
    from workbench.config import RunConfig
    from workbench.errors import WorkbenchError
    from workbench.plan import make_plan

    with pytest.raises(WorkbenchError, match="for `workbench train` only"):
        make_plan(RunConfig(model=str(found.weights), dataset=str(yolo / "data.yaml")), "run.yaml")
