"""Reliability campaign (issue 12): bad inputs, kills, concurrent runs, byte-identical files.
Part 2 (issue 21: untrusted files, destructive paths, the results store) is test_security.py.

Every bad input must end in one of two outcomes: exit 2 with one error line naming the file at
fault (and nothing written), or exit 0 with the AP of the clean input. Never a wrong AP with exit 0.
The evaluator cases run the project's checkpoint (.pt, Ultralytics runner) on 16 synthetic val
images: ~1 s per case that reaches the model, milliseconds for the rest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CHECKPOINT, REPO
from workbench.cli import main
from workbench.config import RunConfig
from workbench.errors import WorkbenchError

WORKBENCH = Path(sys.executable).parent / "workbench"
FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


# ---- the evaluator's campaign --------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """16 synthetic val images + COCO JSON (seed 0, easy) and the checkpoint's AP on them."""
    from workbench.data.prepare import prepare_dataset
    from workbench.evaluate import EvalSettings, evaluate
    from workbench.families import evaluation_runner

    ds = prepare_dataset(RunConfig(synth_preset="easy", synth_train=8, synth_val=16, seed=0), progress=False)
    result = evaluate(
        evaluation_runner(CHECKPOINT),
        EvalSettings(ds.val_ann, ds.val_images, "pose", imgsz=256, progress=False),
    )
    assert 0.3 < result.AP < 1.0
    return ds, result.AP


@dataclass
class Case:
    """A bad input: how to make it from a clean copy, and the expected outcome."""

    name: str
    mutate: Callable[[dict, Path], object]  # (COCO dict, images dir) -> culprit ("ann", "image" or a Path)
    expect: str  # "error" (naming the culprit), or "clean-ap" (the clean input's AP)
    message: str = ""  # a fragment the error line must contain
    args: tuple[str, ...] = ()
    warns: str = ""  # a fragment of the warning expected with a clean AP


def _person(coco: dict) -> dict:
    return next(a for a in coco["annotations"] if any(v > 0 for v in a["keypoints"][2::3]))


def _image_of(coco: dict, ann: dict) -> dict:
    return next(i for i in coco["images"] if i["id"] == ann["image_id"])


def _set(obj: dict, **values) -> str:
    obj.update(values)
    return "ann"


def _exif(path: Path, orientation: int, rotate: int = 0) -> Path:
    """Re-save ``path`` (lossless PNG bytes under the same name) rotated by ``rotate`` degrees, tagged."""
    image = Image.open(path).convert("RGB").rotate(rotate, expand=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="PNG", exif=exif)
    return path


def _exif_landscape(coco: dict, images: Path) -> Path:
    """First image cropped to 256x192 (JSON updated), tagged "rotate 90° for display"."""
    path = _first_image(coco, images)
    Image.open(path).convert("RGB").crop((0, 0, 256, 192)).save(path, format="PNG")
    coco["images"][0]["height"] = 192
    return _exif(path, 6)


def _first_image(coco: dict, images: Path) -> Path:
    return images / coco["images"][0]["file_name"]


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _as_rgba_png(path: Path) -> None:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(path, format="PNG")


def _all_exif(coco: dict, images: Path, orientation: int, rotate: int) -> None:
    for img in coco["images"]:
        _exif(images / img["file_name"], orientation, rotate)


ANNOTATION_CASES = [
    Case("truncated-json", lambda c, d: "truncate", "error", "malformed JSON"),
    Case("results-list-json", lambda c, d: "as-list", "error", "is a list"),
    Case("no-images-key", lambda c, d: c.pop("images") and "ann", "error", "missing top-level key(s) images"),
    Case("duplicate-image-id", lambda c, d: _set(c["images"][1], id=c["images"][0]["id"]), "error", "duplicate image id"),
    Case("unknown-image-id", lambda c, d: _set(c["annotations"][0], image_id=999_999), "error", "unknown image_id"),
    Case("keypoints-50-values", lambda c, d: _set(_person(c), keypoints=_person(c)["keypoints"][:50]), "error", "expected 51"),
    Case("negative-box", lambda c, d: _set(_person(c), bbox=[1, 1, -4, 5]), "error", "negative size"),
    Case("box-far-outside", lambda c, d: _set(_person(c), bbox=[_image_of(c, _person(c))["width"] + 40, 5, 30, 40]),
         "error", "far outside its image"),
    Case("area-0-keypointed", lambda c, d: _set(_person(c), area=0), "error", "OKS divides by the area"),
    Case("area-not-a-number", lambda c, d: _set(_person(c), area="12"), "error", "area must be a number"),
    Case("visibility-3", lambda c, d: _set(_person(c), keypoints=[*_person(c)["keypoints"][:2], 3, *_person(c)["keypoints"][3:]]),
         "error", "visibility 3"),
    Case("no-keypoints", lambda c, d: [a.pop("keypoints") for a in c["annotations"]] and "ann", "error", "has no keypoints"),
    Case("image-missing", lambda c, d: (_first_image(c, d).unlink(), _first_image(c, d))[1], "error", "image file not found"),
    Case("image-truncated", lambda c, d: _truncate(_first_image(c, d)), "error", "cannot decode image"),
    Case("image-size-mismatch", lambda c, d: (_set(c["images"][0], width=c["images"][0]["width"] + 8),
                                               _first_image(c, d))[1], "error", "annotations"),
    Case("exif-90-labels-stored-frame-transposed", lambda c, d: _exif_landscape(c, d), "error",
         "drop --exif-transpose", ("--exif-transpose",)),
    # the same pixels and labels, harmless variations: the clean AP exactly
    Case("exif-tag-labels-stored-frame", lambda c, d: _exif(_first_image(c, d), 6), "clean-ap",
         warns="1 of 16 images carry an EXIF orientation"),
    Case("exif-180-labels-displayed-frame", lambda c, d: _all_exif(c, d, 3, 180), "clean-ap",
         args=("--exif-transpose",), warns="16 of 16 images carry an EXIF orientation"),
    Case("iscrowd-missing", lambda c, d: [a.pop("iscrowd", None) for a in c["annotations"]] and "ann", "clean-ap"),
    Case("images-reversed", lambda c, d: c["images"].reverse(), "clean-ap"),
    Case("extra-keys", lambda c, d: _set(c, info={"note": "x"}, licenses=[]) and [a.update(extra=1) for a in c["annotations"]],
         "clean-ap"),
    Case("rgba-png-image", lambda c, d: _as_rgba_png(_first_image(c, d)), "clean-ap"),
]  # fmt: skip

ARGUMENT_CASES = [
    Case("max-det-0", lambda c, d: "arg", "error", "--max-det must be an integer of at least 1, got 0", ("--max-det", "0")),
    Case("max-det-negative", lambda c, d: "arg", "error", "--max-det must be", ("--max-det", "-5")),
    Case("conf-2", lambda c, d: "arg", "error", "--conf must be a number within [0, 1], got 2.0", ("--conf", "2")),
    Case("conf-nan", lambda c, d: "arg", "error", "--conf must be a number within [0, 1], got nan", ("--conf", "nan")),
    Case("conf-negative", lambda c, d: "arg", "error", "--conf must be", ("--conf", "-1")),
    Case("iou-2", lambda c, d: "arg", "error", "--iou must be a number within [0, 1]", ("--iou", "2")),
    Case("threads-0", lambda c, d: "arg", "error", "--threads must be an integer of at least 1", ("--threads", "0")),
    Case("segm-on-pose", lambda c, d: "arg", "error", "iou_type 'segm' needs a seg model", ("--iou-type", "segm")),
    Case("out-is-a-file", lambda c, d: "out-file", "error", "--out names an existing file"),
    Case("max-images-0", lambda c, d: "arg", "error", "max_images must be at least 1", ("--max-images", "0")),
    Case("model-missing", lambda c, d: "no-model", "error", "missing.pt' not found; looked in: "),
    Case("model-corrupt-tflite", lambda c, d: "junk-model", "error", "not a loadable TFLite model"),
]  # fmt: skip


def _run_case(case: Case, clean, tmp_path: Path, capsys):
    """Apply ``case`` to a copy of the clean set, run `workbench evaluate`, return (code, err, out_dir, culprit)."""
    ds, _ = clean
    images = tmp_path / "images"
    shutil.copytree(ds.val_images, images)
    ann = tmp_path / "ann.json"
    coco = json.loads(Path(ds.val_ann).read_text())
    culprit = case.mutate(coco, images)
    model = CHECKPOINT
    out = tmp_path / "out"
    if culprit == "as-list":
        ann.write_text(json.dumps(coco["annotations"]))
    else:
        ann.write_text(json.dumps(coco))
    if culprit == "truncate":
        _truncate(ann)
    if culprit == "out-file":
        out.write_text("not a folder")
    if culprit == "no-model":
        model = tmp_path / "missing.pt"
    if culprit == "junk-model":
        model = tmp_path / "junk.tflite"
        model.write_bytes(b"TFL3" + bytes(200))
    if isinstance(culprit, str):
        culprit = {"truncate": ann, "as-list": ann, "ann": ann, "no-model": model, "junk-model": model}.get(
            culprit, culprit
        )
    args = ["evaluate", str(model), "--task", "pose", "--ann", str(ann), "--images", str(images),
            "--imgsz", "256", "--out", str(out), "--json", *case.args]  # fmt: skip
    capsys.readouterr()
    with pytest.warns(UserWarning, match=case.warns) if case.warns else _no_warning_needed():
        code = main(args)
    captured = capsys.readouterr()
    return code, captured, out, culprit


class _no_warning_needed:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("case", ANNOTATION_CASES + ARGUMENT_CASES, ids=lambda c: c.name)
def test_evaluator_bad_input_is_an_error_naming_the_file_or_the_clean_ap(case, clean, tmp_path, capsys):
    _, clean_ap = clean
    code, captured, out, culprit = _run_case(case, clean, tmp_path, capsys)
    if case.expect == "error":
        lines = [line for line in captured.err.splitlines() if line.startswith("workbench evaluate: error:")]
        assert code == 2 and len(lines) == 1, captured.err
        assert case.message in lines[0], lines[0]
        if isinstance(culprit, Path):
            assert str(culprit) in lines[0], lines[0]
        assert not (out / "metrics.json").exists() and not (out / "detections.json").exists()
    else:
        assert code == 0, captured.err
        result = json.loads(captured.out)
        assert result["AP"] == pytest.approx(clean_ap, abs=1e-12), case.name
        assert json.loads((out / "metrics.json").read_text())["AP"] == result["AP"]


@pytest.mark.parametrize(
    "case", [c for c in ANNOTATION_CASES if c.expect == "error" and not c.args], ids=lambda c: c.name
)
def test_data_validate_refuses_what_the_evaluator_refuses(case, clean, tmp_path, capsys):
    ds, _ = clean
    images = tmp_path / "images"
    shutil.copytree(ds.val_images, images)
    coco = json.loads(Path(ds.val_ann).read_text())
    culprit = case.mutate(coco, images)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco["annotations"] if culprit == "as-list" else coco))
    if culprit == "truncate":
        _truncate(ann)
    assert main(["data", "validate", str(ann), "--images", str(images), "--task", "pose"]) == 2
    err = capsys.readouterr().err
    assert case.message in err and (str(culprit) if isinstance(culprit, Path) else str(ann)) in err, err


def test_exif_labels_in_the_displayed_frame_score_lower_without_the_option(clean, tmp_path, capsys):
    """The silent case the warning exists for: tagged images read in their stored frame."""
    ds, clean_ap = clean
    case = next(c for c in ANNOTATION_CASES if c.name == "exif-180-labels-displayed-frame")
    code, captured, _, _ = _run_case(
        Case(case.name, case.mutate, "clean-ap", warns=case.warns), clean, tmp_path, capsys
    )
    assert code == 0
    assert json.loads(captured.out)["AP"] < clean_ap - 0.1  # the warning is the only signal


# ---- config and report: bad inputs -----------------------------------------------------------------
CONFIG_CASES = [
    ("epochs-true", "name: x\nepochs: true\n", "epochs must be a positive integer, got True"),
    ("duplicate-imgsz", "name: x\nimgsz: [256, 256]\n", "imgsz lists a value twice"),
    ("empty-yaml", "", "is empty"),
    ("unknown-scheme", "name: x\nschemes: [int4]\n", "schemes: 'int4' is not one of fp32, fp16, int8-per-channel, int8-per-tensor"),
    ("unknown-key", "name: x\nepoch: 3\n", "unknown config key(s) epoch; valid keys:"),
    ("bad-imgsz", "name: x\nimgsz: [250]\n", "image size 250 must be a multiple of 32"),
    ("missing-model", "name: x\nmodel: nowhere.pt\n", "'nowhere.pt' not found"),
    ("not-a-mapping", "- a\n- b\n", "must be a mapping"),
]  # fmt: skip


@pytest.mark.parametrize("name,text,message", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_report_refuses_bad_configs_before_any_work(name, text, message, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["report", "--config", str(config), "--reports-dir", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert f"{config}: " in err and message in err, err
    assert not (tmp_path / "reports").exists()


def test_rebuild_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    assert main(["report", "--rebuild", str(folder)]) == 2
    assert f"{folder}: not a run folder" in capsys.readouterr().err
    assert main(["report", "--rebuild", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert list(folder.iterdir()) == [] and not (tmp_path / "index.html").exists()


def test_report_finds_the_repository_notebooks_from_any_folder(tmp_path, monkeypatch, capsys):
    import workbench.pipeline

    seen = {}

    def fake_run(config, notebooks, reports_dir, **kwargs):
        seen["notebooks"] = notebooks
        raise WorkbenchError("stopped by the test")

    monkeypatch.setattr(workbench.pipeline, "run_pipeline", fake_run)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("name: away\nsynth_preset: easy\nsynth_train: 8\nsynth_val: 16\n")
    assert main(["report", "--config", "c.yaml"]) == 2
    assert "stopped by the test" in capsys.readouterr().err
    assert [p.name for p in seen["notebooks"]][:2] == ["01_retrain.ipynb", "02_quantize.ipynb"]
    assert seen["notebooks"][0].parent == REPO / "notebooks"
    assert not (tmp_path / "reports").exists()  # refused before work: no empty run folder left behind


def _hold_lock(run_dir: Path, seconds: float) -> subprocess.Popen:
    code = (
        "import sys, time\nfrom workbench.runlock import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(float(sys.argv[2]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_folder_held_by_another_process_is_refused_or_waited_for(tmp_path, capsys):
    from workbench.pipeline import run_id_for, run_pipeline

    config = RunConfig(name="lock", imgsz=[256])
    notebooks = sorted(FIXTURES.glob("0*.ipynb"))
    run_dir = tmp_path / "reports" / run_id_for(config)
    holder = _hold_lock(run_dir, 60)
    try:
        with pytest.raises(WorkbenchError) as err:
            run_pipeline(config, notebooks, tmp_path / "reports")
        assert f"run folder is in use by pid {holder.pid} on " in str(err.value) and "--wait" in str(
            err.value
        )
        (tmp_path / "c.yaml").write_text("name: lock\nimgsz: [256]\n")
        args = ["report", "--config", str(tmp_path / "c.yaml"), "--reports-dir", str(tmp_path / "reports"),
                "--notebooks-dir", str(FIXTURES)]  # fmt: skip
        assert main(args) == 2
        assert f"in use by pid {holder.pid}" in capsys.readouterr().err
        assert not (run_dir / "status.json").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel drops a dead process's flock
        holder.wait()
    result = run_pipeline(config, notebooks, tmp_path / "reports")
    assert result.ran == ["01_write", "02_results"]

    holder = _hold_lock(run_dir, 2)
    t0 = time.perf_counter()
    again = run_pipeline(config, notebooks, tmp_path / "reports", wait=True)
    assert time.perf_counter() - t0 > 1.0 and again.cached == ["01_write", "02_results"]
    holder.wait()


def test_a_cached_step_whose_output_changed_runs_again(tmp_path):
    from workbench.pipeline import run_pipeline

    config = RunConfig(name="hash", imgsz=[256])
    notebooks = sorted(FIXTURES.glob("0*.ipynb"))
    first = run_pipeline(config, notebooks, tmp_path)
    out = first.run_dir / "out_01.json"
    out.write_text(out.read_text()[:-5])  # truncated: still exists, no longer what step 01 wrote
    again = run_pipeline(config, notebooks, tmp_path)
    assert again.ran == ["01_write", "02_results"]
    assert json.loads(out.read_text())["config_hash"] == config.hash
    assert run_pipeline(config, notebooks, tmp_path).cached == ["01_write", "02_results"]


def test_a_forced_rerun_removes_the_previous_results_before_it_starts(tmp_path):
    from workbench.pipeline import run_pipeline
    from workbench.report import build_reports_index, build_run_report

    config = RunConfig(name="stale", imgsz=[256])
    notebooks = sorted(FIXTURES.glob("0*.ipynb"))
    run_dir = run_pipeline(config, notebooks, tmp_path).run_dir
    build_run_report(run_dir)
    assert (run_dir / "results.csv").is_file()

    with pytest.raises(WorkbenchError, match="failing on demand"):
        run_pipeline(config, notebooks, tmp_path, force=True,
                     params_for=lambda s: {"fail": True} if s == "02_results" else {})  # fmt: skip
    assert not (run_dir / "results.csv").exists() and not (run_dir / "steps" / "02_results.json").exists()
    page = build_run_report(run_dir).read_text()
    assert "FAILED at step <code>02_results</code>" in page and "tiny_256_fp32_uf" not in page
    index = build_reports_index(tmp_path).read_text()
    assert "failed" in index and "0.500" not in index  # no best AP from the previous run


# ---- byte-identical conversions --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["fp16", "int8-per-channel"])
def test_same_savedmodel_and_calibration_give_the_same_bytes(scheme, pose256, synth_eval_set, tmp_path):
    from workbench.quantize import quantize

    shas = [
        quantize(pose256["saved_model"], scheme, tmp_path / f"{i}.tflite", io="uf",
                 calib=synth_eval_set.train_images, calib_count=8).sha256
        for i in range(2)
    ]  # fmt: skip
    assert shas[0] == shas[1]


@pytest.mark.slow
def test_damaged_savedmodels_are_one_line_errors(pose256, tmp_path, capsys):
    def quantize_cli(folder):
        code = main(
            [
                "quantize",
                "--saved-model",
                str(folder),
                "--scheme",
                "fp32",
                "--out",
                str(tmp_path / "o.tflite"),
            ]
        )
        return code, capsys.readouterr().err

    assert quantize_cli(tmp_path / "missing") == (
        2,
        f"workbench quantize: error: {tmp_path / 'missing'}: SavedModel folder not found\n",
    )
    truncated = tmp_path / "truncated"
    shutil.copytree(pose256["saved_model"], truncated)
    _truncate(truncated / "saved_model.pb", 0.3)
    code, err = quantize_cli(truncated)
    assert code == 2 and err.count("\n") == 1 and "not a loadable SavedModel" in err and str(truncated) in err
    no_vars = tmp_path / "no_vars"
    shutil.copytree(pose256["saved_model"], no_vars)
    shutil.rmtree(no_vars / "variables")
    code, err = quantize_cli(no_vars)
    assert code == 2 and "variables/variables.index is missing" in err
    assert not (tmp_path / "o.tflite").exists()


@pytest.mark.slow
def test_inspect_reference_must_be_the_same_network(pose256):
    from workbench.inspect import check_same_network
    from workbench.tflite_graph import read_graph

    fp32 = read_graph(pose256["fp32"])
    for scheme in ("int8-per-channel", "int8-per-tensor"):
        assert check_same_network(read_graph(pose256[scheme]), fp32) == 1.0


# ---- kills and concurrent runs of a real `workbench report` ----------------------------------------
TINY = "name: tiny\nimgsz: [192]\nschemes: [int8-per-channel]\nsynth_preset: easy\nsynth_train: 16\nsynth_val: 8\nepochs: 0\ncalib_images: 8\nbench_runs: 3\n"  # fmt: skip


def _interactive_signals() -> None:
    """SIGINT as a terminal gives it. A job started with `&` or nohup (a CI runner may be one)
    inherits SIGINT ignored, and the workbench rightly keeps an ignored signal ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(args, cwd, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.Popen([str(WORKBENCH), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interactive_signals, **kw)  # fmt: skip


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One complete `workbench report` of a tiny config (1 size, 1 scheme, 8 val images, 0 epochs): ~2 min."""
    if not WORKBENCH.exists():
        pytest.skip("console script not installed in this environment")
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.yaml").write_text(TINY)
    args = ["report", "--config", "tiny.yaml", "--reports-dir", "reports"]
    done = _cli(args, root)
    out, err = done.communicate(timeout=900)
    assert done.returncode == 0, err
    run_dir = next((root / "reports").glob("tiny-*"))
    return root, args, run_dir, (run_dir / "results.csv").read_text()


def _kernels(proc: subprocess.Popen) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_inside_an_asyncio_background_task_is_not_lost(signum):
    """papermill drives its kernel from an asyncio loop in the main thread. A signal whose handler
    runs inside one of nbclient's background tasks (its kernel poller) used to raise there, be stored
    on that task unseen, and the run went on to exit 0. Now the kernel (any child) is stopped and
    the signal is raised when the block ends."""
    import asyncio

    from workbench.runlock import Interrupted, signals_as_exceptions

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    async def step():
        async def poller():  # the handler runs in this task, right after the kill
            os.kill(os.getpid(), signum)
            await asyncio.sleep(0)

        background = asyncio.ensure_future(poller())
        for _ in range(50):  # what a kernel's reply wait looks like: until the child is gone
            if child.poll() is not None:
                break
            await asyncio.sleep(0.1)
        return background

    loop = asyncio.new_event_loop()
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # not ignored, as in a terminal
    try:
        with pytest.raises(Interrupted) as raised, signals_as_exceptions():
            background = loop.run_until_complete(step())
    finally:
        signal.signal(signal.SIGINT, inherited)
        loop.close()
        child.kill()
    assert raised.value.signum == signum
    assert background.done() and background.exception() is None  # nothing parked on the task
    assert child.wait(timeout=10) == -signal.SIGTERM  # the "kernel" was stopped, not left running


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_killed_forced_rerun_leaves_an_honest_failed_run(tiny_run, signum):
    root, args, run_dir, _ = tiny_run
    proc = _cli([*args, "--force"], root)
    # running step 02 in its kernel (status.json still holds the last test's failure until the run starts)
    _wait_for(lambda: _status(run_dir).get("state") == "running" and _status(run_dir).get("step") == "02_quantize"
              and _kernels(proc), 600, "step 02 to run in a kernel")  # fmt: skip
    time.sleep(1.0)
    kernels = _kernels(proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)  # generous: a loaded CI machine stops kernels slowly
    assert proc.returncode == 128 + signum, err
    errors = [line for line in err.splitlines() if line.startswith("workbench report: error:")]
    assert len(errors) == 1 and f"interrupted by {signal.Signals(signum).name}" in errors[0], err
    status = _status(run_dir)
    assert status["state"] == "failed" and status["step"] == "02_quantize"
    assert "did not finish: interrupted by" in status["error"]
    page = (run_dir / "index.html").read_text()
    assert "FAILED at step <code>02_quantize</code>" in page and "<h2>Results</h2>" not in page
    row = (root / "reports" / "index.html").read_text()
    assert "<td>failed</td>" in row and "keypoints (" not in row  # no best AP of the previous run
    # nothing from the previous complete run passes for this one
    assert not (run_dir / "results.csv").exists()
    for step in ("03_evaluate", "04_benchmark", "05_compare"):
        assert not (run_dir / f"{step}.html").exists() and not (run_dir / f"{step}.ipynb").exists()
    assert kernels and all(_gone(pid) for pid in kernels), "the notebook kernel outlived the run"


@pytest.mark.slow
def test_concurrent_runs_are_refused_or_wait_then_resume_to_identical_results(tiny_run):
    root, args, run_dir, first_csv = tiny_run
    first = _cli([*args, "--force"], root)
    _wait_for(lambda: _status(run_dir).get("state") == "running", 300, "the first run to start")
    refused = _cli(args, root)
    out, err = refused.communicate(timeout=300)
    assert refused.returncode == 2 and f"in use by pid {first.pid}" in err and "--wait" in err, err
    waiting = _cli([*args, "--wait"], root)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(waiting.stderr), daemon=True)
    reader.start()
    _wait_for(lambda: any("waiting (--wait)" in line for line in lines), 300, "the second run to wait")
    assert f"in use by pid {first.pid}" in "".join(lines)
    assert waiting.poll() is None and _status(run_dir)["state"] == "running"  # blocked, not running beside
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM
    waiting.wait(timeout=900)  # then resumes the failed run to completion
    reader.join(timeout=10)
    assert waiting.returncode == 0, "".join(lines)
    assert _status(run_dir)["state"] == "complete"

    # same config twice -> same results.csv, apart from timing columns
    from io import StringIO

    import pandas as pd

    def untimed(text: str) -> pd.DataFrame:
        table = pd.read_csv(StringIO(text))
        # the files too: export resets tf_keras' name counters and the metadata carries no date,
        # so model_sha256 and size_bytes must repeat
        return table.drop(columns=[c for c in table.columns if "latency" in c or "seconds" in c])

    again = untimed((run_dir / "results.csv").read_text())
    pd.testing.assert_frame_equal(untimed(first_csv), again)
    assert not math.isnan(again["ap"].iloc[0])


# ---- smaller items ---------------------------------------------------------------------------------
def test_inspect_refuses_a_reference_of_another_network(tmp_path, capsys):
    from tests.tiny_tflite import calibration_images, tiny_models, unrelated_model

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, x in enumerate(calibration_images(2)):
        Image.fromarray(np.round(x[0] * 255).astype(np.uint8)).save(calib / f"{i}.png")
    tiny, other = tiny_models(), unrelated_model()
    args = ["inspect", str(tiny["int8-per-channel"]), "--calib", str(calib), "--json"]
    assert main([*args, "--reference", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other}: is not a reference of the same network: output shapes [(1, 8)]" in err
    assert main([*args, "--reference", str(tiny["fp32"])]) == 0  # the same network still works
    assert all(s["sqnr_db"] is None or s["sqnr_db"] > 0 for s in json.loads(capsys.readouterr().out)["sqnr"])


def test_quantize_names_a_missing_savedmodel(tmp_path, capsys):
    missing = tmp_path / "missing"
    args = [
        "quantize",
        "--saved-model",
        str(missing),
        "--scheme",
        "fp32",
        "--out",
        str(tmp_path / "o.tflite"),
    ]
    assert main(args) == 2
    assert capsys.readouterr().err == f"workbench quantize: error: {missing}: SavedModel folder not found\n"


def test_an_error_lands_below_the_progress_bar_not_under_it(clean, tmp_path, capsys):
    ds, _ = clean
    images = tmp_path / "images"
    shutil.copytree(ds.val_images, images)
    coco = json.loads(Path(ds.val_ann).read_text())
    _truncate(images / coco["images"][8]["file_name"])  # fails mid-run, with the bar drawn
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    args = ["evaluate", str(CHECKPOINT), "--task", "pose", "--ann", str(ann), "--images", str(images)]
    assert main([*args, "--imgsz", "256"]) == 2
    err = capsys.readouterr().err
    at = err.index("workbench evaluate: error:")
    assert "evaluate yolov8n-pose-synth.pt" in err[:at] and err[at - 1] == "\n"  # the bar was closed first
    assert "\r" not in err[at:] and err[at:].count("\n") == 1  # and nothing redraws over the line
