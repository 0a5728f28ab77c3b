"""Bad-input campaign, part 2 (issue 21): untrusted files and destructive paths.

Hostile but realistic inputs. Each must end in exit 2 with one error line naming the culprit
(nothing run, nothing deleted, nothing written outside what the workbench created), or in the
clean behaviour. Part 1 (57 cases) is in test_reliability.py; part 3 (the results store, resource
exhaustion, replaced inputs, signals) in test_security_limits.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CHECKPOINT, REPO
from workbench.cli import main
from workbench.errors import WorkbenchError

SHARED = REPO.parent / "shared" / "weights"
REAL_PT = SHARED / "ultralytics" / "yolo11n-pose.pt"
REAL_H5 = SHARED / "st" / "st_ssd_mobilenet_v1_025_192.h5"


def _one_error(err: str, verb: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"workbench {verb}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- 1. no code from a weights file ----------------------------------------------------------------
@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """A .pt whose pickle runs `touch MARKER`, and a Keras .h5 whose Lambda layer does the same."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    maker = (
        "import os, sys, torch\n"
        "class E:\n"
        "    def __reduce__(self): return (os.system, ('touch ' + sys.argv[1],))\n"
        "torch.save({'model': E()}, sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", maker, str(marker), str(root / "evil.pt")], check=True)
    h5_maker = (
        "import sys, tf_keras\n"
        "inp = tf_keras.Input((192, 192, 3))\n"
        "out = tf_keras.layers.Lambda(lambda x, m=sys.argv[1]: (__import__('os').system('touch ' + m), x)[1],\n"
        "                             name='evil')(inp)\n"
        "tf_keras.Model(inp, out).save(sys.argv[2])\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", h5_maker, str(marker), str(root / "evil.h5")], check=True,
                   env=env, capture_output=True)  # fmt: skip
    marker.unlink(missing_ok=True)  # building the model ran the lambda once
    return root, marker


def _synth(tmp_path: Path):
    from workbench.data.synth import generate_dataset

    ds = generate_dataset(tmp_path / "synth", 2, 2, imgsz=64, seed=0, preset="easy", progress=False)
    return ds.ann("val"), ds.root / "images" / "val"


@pytest.mark.parametrize("suffix", ["pt", "h5"])
def test_export_refuses_a_weights_file_that_runs_code(evil, suffix, tmp_path, capsys):
    root, marker = evil
    weights = root / f"evil.{suffix}"
    assert main(["export", "--weights", str(weights), "--imgsz", "192", "--out", str(tmp_path / "x")]) == 2
    line = _one_error(capsys.readouterr().err, "export")
    assert f"{weights}: refused:" in line and "--trust-weights" in line
    assert not marker.exists() and not (tmp_path / "x").exists()


def test_evaluate_refuses_a_weights_file_that_runs_code(evil, tmp_path, capsys):
    root, marker = evil
    ann, images = _synth(tmp_path)
    args = ["evaluate", str(root / "evil.pt"), "--task", "pose", "--ann", str(ann), "--images", str(images)]
    assert main([*args, "--imgsz", "64", "--out", str(tmp_path / "o")]) == 2
    assert "refused: its pickle names code" in _one_error(capsys.readouterr().err, "evaluate")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", ["pt", "h5"])
def test_a_report_config_naming_a_weights_file_that_runs_code_is_refused_before_work(
    evil, suffix, tmp_path, capsys
):
    root, marker = evil
    config = tmp_path / "c.yaml"
    task = "pose" if suffix == "pt" else "detect"
    config.write_text(f"name: evil\ntask: {task}\nmodel: {root / f'evil.{suffix}'}\nimgsz: [192]\n")
    st_config = REAL_H5.with_name(f"{REAL_H5.stem}_config.yaml")
    if suffix == "h5" and st_config.is_file():  # an SSD .h5 needs its ST config beside it
        (root / "evil_config.yaml").write_text(st_config.read_text())
    code = main(["report", "--config", str(config), "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists(), err
    assert not (tmp_path / "reports").exists()
    if suffix == "pt" or st_config.is_file():
        assert "refused:" in _one_error(err, "report")


def test_trust_weights_loads_what_the_user_vouches_for(evil, tmp_path, capsys):
    """The explicit opt-in is honoured (and is the only way the code runs)."""
    root, marker = evil
    main(["export", "--trust-weights", "--weights", str(root / "evil.pt"), "--imgsz", "192",
          "--out", str(tmp_path / "x")])  # fmt: skip
    assert marker.exists()  # the pickle's code ran: the user asked for it
    marker.unlink()
    assert os.environ.get("WORKBENCH_TRUST_WEIGHTS") is None  # the opt-in ends with the command


@pytest.mark.parametrize(
    "path", [CHECKPOINT, REAL_PT, REAL_H5], ids=["project-checkpoint", "yolo11n-pose", "st-ssd-h5"]
)
def test_real_weights_pass_the_safe_check(path):
    from workbench.safeload import check_weights

    if not Path(path).is_file():
        pytest.skip(f"{path} absent")
    check_weights(path)  # raises if refused


def test_real_ssd_h5_still_loads():
    if not REAL_H5.is_file():
        pytest.skip("ST .h5 absent")
    from workbench.families.ssd import load_ssd
    from workbench.families.st_config import config_beside, load_st_config

    model = load_ssd(REAL_H5, load_st_config(config_beside(REAL_H5)))
    assert len(model.outputs) in (2, 3)


# ---- 2. never delete what we did not write -----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tflite():
    from tests.tiny_tflite import tiny_models

    return tiny_models()["fp32"]


@pytest.mark.parametrize("verb", ["bench", "inspect"])
@pytest.mark.parametrize("target", [".", "folder"])
def test_out_naming_a_users_folder_is_refused_and_the_folder_kept(
    verb, target, tiny_tflite, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    monkeypatch.chdir(folder)
    args = [verb, str(tiny_tflite), "--out", "." if target == "." else str(folder)]
    if verb == "bench":
        args += ["--runs", "2", "--warmup", "0"]
    assert main(args) == 2
    line = _one_error(capsys.readouterr().err, verb)
    assert "existing folder" in line
    assert (folder / "keep.txt").read_text() == "keep" and sorted(p.name for p in folder.iterdir()) == [
        "keep.txt"
    ]


def test_atomic_path_replaces_only_folders_it_wrote(tmp_path):
    from workbench.fileio import OWNER_MARKER, atomic_path

    ours = tmp_path / "ours"
    with atomic_path(ours) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("1")
    assert (ours / OWNER_MARKER).is_file()
    with atomic_path(ours) as tmp:  # a re-run replaces its own output
        tmp.mkdir()
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in ours.iterdir()) == [OWNER_MARKER, "b.txt"]
    with pytest.raises(WorkbenchError, match="existing folder; name a file"), atomic_path(ours) as tmp:
        tmp.write_text("a file over our folder")
    assert (ours / "b.txt").is_file()


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    from workbench.fileio import write_json

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("precious")
    (tmp_path / "out.json").symlink_to(victim / "data")
    write_json(tmp_path / "out.json", {"a": 1})
    assert (victim / "data").read_text() == "precious"
    assert not (tmp_path / "out.json").is_symlink()


def test_synth_refuses_a_folder_with_a_foreign_dataset_json(tmp_path, capsys):
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "dataset.json").write_text('{"mine": true}')
    (folder / "thesis.tex").write_text("years of work")
    assert main(["data", "synth", "--out", str(folder), "--train", "2", "--val", "1", "--imgsz", "64"]) == 2
    assert str(folder) in _one_error(capsys.readouterr().err, "data")
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_rebuild_refuses_to_overwrite_an_index_html_it_did_not_write(tmp_path, capsys):
    run = tmp_path / "site" / "run-0123456789ab"
    run.mkdir(parents=True)
    (run / "status.json").write_text('{"state": "failed", "step": "01_retrain", "error": "stopped"}')
    page = tmp_path / "site" / "index.html"
    page.write_text("<html><title>My homepage</title></html>")
    assert main(["report", "--rebuild", str(run)]) == 2
    assert f"{page}: was not written by the workbench" in _one_error(capsys.readouterr().err, "report")
    assert page.read_text() == "<html><title>My homepage</title></html>"


def test_a_run_lock_that_is_a_symlink_is_not_followed(tmp_path):
    from workbench.runlock import run_lock

    target = tmp_path / "precious.txt"
    target.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(WorkbenchError, match="cannot open the run lock"), run_lock(run):
        pass
    assert target.read_text() == "precious"


@pytest.mark.parametrize("verb", ["bench", "report"])
def test_an_output_folder_under_a_file_is_one_line(verb, tiny_tflite, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    if verb == "bench":
        args = ["bench", str(tiny_tflite), "--runs", "2", "--warmup", "0", "--out", str(blocker / "b.json")]
    else:
        config = tmp_path / "c.yaml"
        config.write_text(f"name: x\nout_dir: {blocker}\nsynth_preset: easy\nsynth_train: 8\nsynth_val: 8\n")
        args = ["report", "--config", str(config)]
    assert main(args) == 2
    assert str(blocker) in _one_error(capsys.readouterr().err, verb)


def test_disk_full_inside_an_atomic_write_is_one_line(tmp_path):
    import errno

    from workbench.fileio import atomic_path

    with pytest.raises(WorkbenchError, match="No space left"), atomic_path(tmp_path / "o.tflite"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_a_console_run_shows_our_error_line_and_none_of_tensorflows_logs(evil, tmp_path):
    root, marker = evil
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "workbench", "export", "--weights", str(root / "evil.pt"), "--imgsz", "192",
            "--out", str(tmp_path / "x")]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2
    lines = done.stderr.splitlines()  # no "I0000 ... port.cc" nor "WARNING: All log messages before absl"
    assert len(lines) == 1 and lines[0].startswith(f"workbench export: error: {root / 'evil.pt'}: refused"), (
        lines
    )
    assert "refused" in done.stderr and not marker.exists()


def test_the_log_filter_keeps_our_lines_bars_and_childrens_output_in_order():
    script = (
        "import os, subprocess, sys\n"
        "from workbench.quietlogs import tf_logs_hidden\n"
        "with tf_logs_hidden():\n"
        "    os.write(2, b'W0000 00:00:1796217196.712285   14528 port.cc:153] oneDNN custom operations\\n')\n"
        "    print('ours 1', file=sys.stderr)\n"
        "    os.write(2, b'bar 10%\\rbar 20%\\r')\n"
        "    subprocess.run([sys.executable, '-c', \"import os; os.write(2, b'fully_quantize: 0, inference_type: 6\\\\n"
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\\\nchild line\\\\n')\"])\n"
        "    print('ours 2', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"ours 1\nbar 10%\rbar 20%\rchild line\nours 2\nafter\n"
