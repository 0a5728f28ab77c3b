"""Sweeps: grid → Dask graph → Parquet store. A 2×2 grid (scheme × calibration size) on 8 tiny
synthetic images at imgsz 64, run serially and on a 2-worker LocalCluster."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import yaml

from workbench.cli import main
from workbench.sweep import SweepConfig, query, run_sweep, store

CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "weights" / "yolov8n-pose-synth.pt"
GRID = {
    "name": "tiny",
    "task": "pose",
    "model": str(CHECKPOINT),
    "imgsz": [64],
    "schemes": ["int8-per-tensor", "int8-per-channel"],
    "calib_images": [2, 4],
    "synth_preset": "easy",
    "synth_train": 8,
    "synth_val": 8,
    "synth_imgsz": 96,
    "bench_runs": 3,
    "threads": 1,
}
# Figures a rerun must reproduce; timings and hosts differ by nature.
VOLATILE = {"convert_seconds", "eval_seconds", "host", "latency_host", "latency_ms_median",
            "latency_ms_p90", "latency_ms_min", "path"}  # fmt: skip


def write_config(folder: Path, **changes) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return path


def rows(sweep_dir: Path) -> dict[str, dict]:
    frame = query(sweep_dir, "select * from results order by cell")
    frame = frame.astype(object).where(frame.notna(), None)  # NaN != NaN; None == None
    return {r["cell"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in frame.to_dict("records")}


def detections_sha(sweep_dir: Path) -> dict[str, str]:
    files = sorted((sweep_dir / "eval").glob("*/coco/detections.json"))
    return {p.parent.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def seed_exports(source: Path, target: Path) -> None:
    """Reuse the serial run's SavedModels (an export already there is not redone): the cluster
    runs convert, evaluate and inspect, which is what differs between the paths."""
    shutil.copytree(source / "saved_models", target / "saved_models")


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serial")
    sweep = SweepConfig.from_yaml(write_config(folder))
    summary = run_sweep(sweep, folder / "out", progress=False)
    return folder / "out", summary


@pytest.fixture(scope="module")
def client():
    from workbench.cluster import open_client

    with open_client(workers=2) as c:
        yield c


@pytest.mark.slow
def test_grid_shares_one_export_and_stores_a_row_per_cell(serial):
    out, summary = serial
    assert (summary.done, summary.cached, summary.failed) == (4, 0, 0)
    assert len(list((out / "saved_models").iterdir())) == 1  # 4 cells, one (model, imgsz)
    frame = query(
        out, "select scheme, calib_images, n_images, latency_ms_median, dataset_hash, packages from results"
    )
    assert len(frame) == 4 and set(frame["n_images"]) == {8}
    assert frame[["latency_ms_median", "dataset_hash", "packages"]].notna().all().all()


@pytest.mark.slow
def test_cluster_gives_the_serial_rows_and_detections(serial, client, tmp_path):
    out, _ = serial
    seed_exports(out, tmp_path / "out")
    summary = run_sweep(
        SweepConfig.from_yaml(write_config(tmp_path)), tmp_path / "out", client=client, progress=False
    )
    assert (summary.done, summary.failed) == (4, 0)
    assert summary.dashboard and summary.dashboard.startswith("http")
    assert rows(tmp_path / "out") == rows(out)  # AP, sha256 of every file, sizes, provenance
    assert detections_sha(tmp_path / "out") == detections_sha(out)


@pytest.mark.slow
def test_a_raising_cell_is_recorded_failed_while_the_others_finish(serial, client, tmp_path):
    out, _ = serial
    seed_exports(out, tmp_path / "out")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    config = write_config(
        tmp_path, model=[str(CHECKPOINT), str(broken)], schemes=["int8-per-tensor"], calib_images=2
    )
    summary = run_sweep(SweepConfig.from_yaml(config), tmp_path / "out", client=client, progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    frame = query(tmp_path / "out", "select model, status, error, ap from results order by model")
    assert list(frame["status"]) == ["failed", "ok"]
    assert frame["error"][0] and frame["ap"].isna()[0] and frame["ap"].notna()[1]


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_finished_cells_cached(serial, tmp_path):
    out, _ = serial
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    before = rows(out)
    lost, tampered = sorted(before)[:2]
    (resumed / "results" / f"{lost}.parquet").unlink()  # killed before this row was written
    variant = resumed / "variants" / f"{tampered}.tflite"
    variant.write_bytes(variant.read_bytes()[:-1])  # a file that no longer hashes as stored
    summary = run_sweep(SweepConfig.from_yaml(write_config(tmp_path)), resumed, progress=False)
    assert (summary.done, summary.cached, summary.failed) == (2, 2, 0)
    assert rows(resumed) == before  # the re-run cells reproduce their rows byte for byte


@pytest.mark.slow
def test_query_prints_the_rows(serial, capsys, tmp_path):
    out, _ = serial
    config = write_config(tmp_path)
    code = main(["sweep", "--config", str(config), "--out", str(out), "--query",
                 "select scheme, calib_images, ap from results order by scheme, calib_images", "--json"])  # fmt: skip
    assert code == 0
    import json

    printed = json.loads(capsys.readouterr().out)
    assert [(r["scheme"], r["calib_images"]) for r in printed] == [
        ("int8-per-channel", 2), ("int8-per-channel", 4), ("int8-per-tensor", 2), ("int8-per-tensor", 4)
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_scheduler_fails_in_one_line_within_10_s(tmp_path, capsys, kind):
    import socket

    config = write_config(tmp_path, synth_train=4, synth_val=4)
    with socket.socket() as listener:  # "silent": accepts TCP, never speaks Dask's protocol
        listener.bind(("127.0.0.1", 0))
        if kind == "silent":
            listener.listen()
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        start = time.perf_counter()
        code = main(
            ["sweep", "--config", str(config), "--out", str(tmp_path / "out"), "--scheduler", address]
        )
        elapsed = time.perf_counter() - start
    assert code == 2 and elapsed < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unreachable" in err and address in err
    assert not (tmp_path / "out" / "results").exists()


@pytest.mark.parametrize(
    ("axis", "values", "named"),
    [
        ("imgsz", [64, 70], "imgsz=70"),
        ("schemes", ["fp32", "int4"], "int4"),
        ("model", [str(CHECKPOINT), "nope.pt"], "nope.pt"),
    ],
)
def test_an_invalid_axis_value_is_refused_before_any_task(tmp_path, capsys, axis, values, named):
    config = write_config(tmp_path, **{axis: values})
    code = main(["sweep", "--config", str(config), "--out", str(tmp_path / "out"), "--workers", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and str(config) in err
    assert not (tmp_path / "out").exists()  # no cluster, no task, nothing written


def test_exclude_names_partial_cells_on_the_axes():
    sweep = SweepConfig.from_dict({**GRID, "exclude": [{"schemes": "int8-per-channel", "calib_images": 2}]})
    assert [(c.values["schemes"], c.values["calib_images"]) for c in sweep.cells()] == [
        ("int8-per-tensor", 2), ("int8-per-tensor", 4), ("int8-per-channel", 4)
    ]  # fmt: skip
    assert len({c.key for c in sweep.cells()}) == 3 and len({c.export_key for c in sweep.cells()}) == 1
    with pytest.raises(Exception, match="not on the axis"):
        SweepConfig.from_dict({**GRID, "exclude": [{"calib_images": 3}]})


def test_recipes_axis_plans_int8_cells_only_and_names_them():
    sweep = SweepConfig.from_dict(
        {**GRID, "schemes": ["fp32", "int8-per-tensor", "int8-per-channel"], "calib_images": 2,
         "recipes": ["none", "split-levels+calib-mse", "int16x8"]}
    )  # fmt: skip
    planned = [(c.values["schemes"], c.values["recipes"]) for c in sweep.cells()]
    assert planned == [
        ("fp32", "none"), ("int8-per-tensor", "none"), ("int8-per-tensor", "split-levels+calib-mse"),
        ("int8-per-channel", "none"), ("int8-per-channel", "split-levels+calib-mse"), ("int8-per-channel", "int16x8"),
    ]  # fmt: skip
    cells = {(c.values["schemes"], c.values["recipes"]): c for c in sweep.cells()}
    assert cells[("int8-per-tensor", "none")].config.recipes == []
    assert (
        "int8-per-tensor+split-levels+calib-mse_"
        in cells[("int8-per-tensor", "split-levels+calib-mse")].variant
    )
    with pytest.raises(Exception, match="recipes=magic.*unknown recipe"):
        SweepConfig.from_dict({**GRID, "recipes": ["none", "magic"]}).cells()


@pytest.mark.slow
def test_recipe_cells_share_one_re_export_on_the_cluster(serial, client, tmp_path):
    """pc and pt cells of one recipe run at once on 2 workers; the re-export is built once (locked)."""
    out, _ = serial
    seed_exports(out, tmp_path / "out")
    config = write_config(tmp_path, calib_images=[2], recipes=["split-head"])
    summary = run_sweep(SweepConfig.from_yaml(config), tmp_path / "out", client=client, progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    frame = query(
        tmp_path / "out", "select scheme, recipe, all_int8, weight_granularity from results order by scheme"
    )
    assert frame.values.tolist() == [
        ["int8-per-channel", "split-head", True, "per-channel"],
        ["int8-per-tensor", "split-head", True, "per-tensor"],
    ]
    exports = sorted(
        p.name for p in (tmp_path / "out" / "saved_models").iterdir() if not p.name.startswith(".")
    )
    assert len(exports) == 2 and exports[1] == exports[0] + "+split-head"


def test_store_refuses_a_row_with_unknown_columns(tmp_path):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="does not know: speed"):
        store.write_row(tmp_path, {"cell": "x", "status": "ok", "speed": 1.0})
    assert not (tmp_path / "results").exists()


def test_committed_sweep_configs_expand_to_valid_cells():
    root = Path(__file__).resolve().parents[2] / "configs" / "sweeps"
    for path in sorted(root.glob("*.yaml")):
        cells = SweepConfig.from_yaml(path).cells()
        assert len({c.key for c in cells}) == len(cells) > 1
