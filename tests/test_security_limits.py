"""Bad-input campaign, part 3 (issue 21): the results store, resource exhaustion, silently replaced
inputs, signals and one-line messages. Parts 1 and 2: test_reliability.py, test_security.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_security import _one_error
from workbench.cli import main
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def tiny_tflite():
    from tests.tiny_tflite import tiny_models

    return tiny_models()["fp32"]


# ---- 3. the results store: read-only, over the store only --------------------------------------------
@pytest.fixture()
def store_dir(tmp_path):
    from workbench.sweep import store

    for i in range(2):
        store.write_row(
            tmp_path, {"cell": f"{i:016x}", "status": "ok", "variant": f"v{i}", "ap": 0.5 + i / 10}
        )
    return tmp_path


ESCAPES = {
    "copy-to": "COPY (select 1) TO '{out}/leak.csv'",
    "read-csv": "select * from read_csv('/etc/passwd')",
    "read-text": "select * from read_text('/etc/hostname')",
    "attach": "ATTACH '{out}/new.db' AS x",
    "install-httpfs": "INSTALL httpfs",
    "re-enable": "SET enable_external_access = true",
    "read-parquet-elsewhere": "select * from read_parquet('{out}/*.parquet')",
}


@pytest.mark.parametrize("sql", list(ESCAPES.values()), ids=list(ESCAPES))
def test_a_query_cannot_reach_outside_the_store(sql, store_dir, tmp_path_factory):
    from workbench.sweep import query

    out = tmp_path_factory.mktemp("outside")
    with pytest.raises(WorkbenchError, match="query failed"):
        query(store_dir, sql.format(out=out))
    assert list(out.iterdir()) == []


def test_a_query_still_answers_over_the_store(store_dir):
    from workbench.sweep import query

    frame = query(store_dir, "select variant, ap from results order by ap")
    assert list(frame["variant"]) == ["v0", "v1"] and frame["ap"].tolist() == pytest.approx([0.5, 0.6])


def test_a_truncated_cell_file_is_skipped_with_a_warning_naming_it(store_dir):
    from workbench.sweep import query

    damaged = store_dir / "results" / f"{0:016x}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.warns(UserWarning, match=f"{damaged}: unreadable"):
        frame = query(store_dir, "select variant from results")
    assert list(frame["variant"]) == ["v1"]


@pytest.mark.parametrize(
    "name", ["0stray.parquet", f"{7:016x}.parquet"], ids=["foreign-name", "foreign-columns"]
)
def test_a_stray_parquet_file_adds_no_rows(name, store_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.sweep import query

    pq.write_table(pa.table({"variant": ["intruder"], "ap": [1.0]}), store_dir / "results" / name)
    with pytest.warns(UserWarning, match="not a cell of this sweep"):
        frame = query(store_dir, "select variant from results order by variant")
    assert list(frame["variant"]) == ["v0", "v1"]


def _sweep_yaml(tmp_path: Path, name: str = "s") -> Path:
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: {name}\nimgsz: [192]\nschemes: [fp32]\nout_dir: {tmp_path / 'reports'}\n")
    return config


@pytest.mark.parametrize("sql", ["", "   "], ids=["empty", "blank"])
def test_an_empty_query_is_refused_not_a_sweep(sql, tmp_path, capsys):
    assert main(["sweep", "--config", str(_sweep_yaml(tmp_path)), "--query", sql]) == 2
    assert "the query is empty" in _one_error(capsys.readouterr().err, "sweep")
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("name", ["../../escape", "/abs", ".."])
def test_a_sweep_name_cannot_escape_the_sweeps_folder(name, tmp_path, capsys):
    config = _sweep_yaml(tmp_path, json.dumps(name))
    assert main(["sweep", "--config", str(config), "--query", "select 1"]) == 2
    assert "cannot name a folder" in _one_error(capsys.readouterr().err, "sweep")
    assert not (tmp_path / "escape").exists()


def test_two_sweeps_into_one_folder_are_refused(tmp_path):
    from workbench.sweep import SweepConfig, run_sweep

    sweep_dir = tmp_path / "sweep"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom workbench.runlock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(30)\n", str(sweep_dir)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkbenchError, match=f"in use by pid {holder.pid}"):
            run_sweep(SweepConfig.from_dict({"name": "s", "imgsz": [192]}), sweep_dir, progress=False)
    finally:
        holder.kill()
        holder.wait()


# ---- 4. resource exhaustion ------------------------------------------------------------------------
BOMB = "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for k, p in zip("abcdefghi", [None, *"abcdefgh"], strict=True)
)  # 9^9 = 387 million values once expanded, ~450 bytes


@pytest.mark.parametrize("where", ["report-config", "sweep-config", "st-config"])
def test_a_yaml_alias_bomb_is_refused_quickly(where, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: x\n" + BOMB if where != "st-config" else BOMB)
    started = time.perf_counter()
    if where == "st-config":
        from workbench.families.st_config import load_st_config

        with pytest.raises(WorkbenchError, match="expands to more than"):
            load_st_config(path)
    else:
        verb = "report" if where == "report-config" else "sweep"
        assert main([verb, "--config", str(path)]) == 2
        assert "expands to more than" in _one_error(capsys.readouterr().err, verb)
    assert time.perf_counter() - started < 5


def test_yaml_anchors_of_normal_size_still_work():
    from workbench.safeparse import load_yaml

    assert load_yaml("base: &b {imgsz: [256]}\nother: *b\n") == {
        "base": {"imgsz": [256]},
        "other": {"imgsz": [256]},
    }


def test_tflite_metadata_that_inflates_to_gigabytes_is_refused_quickly(tiny_tflite, tmp_path):
    from workbench.runtime import MAX_METADATA_BYTES, read_tflite_metadata

    bomb = tmp_path / "bomb.tflite"
    bomb.write_bytes(tiny_tflite.read_bytes())
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("metadata.json", "w", force_zip64=True) as member:
            chunk = b" " * (1 << 20)
            for _ in range((MAX_METADATA_BYTES >> 20) * 4):
                member.write(chunk)
    assert bomb.stat().st_size < MAX_METADATA_BYTES / 50
    started = time.perf_counter()
    with pytest.raises(WorkbenchError, match="inflates to more than"):
        read_tflite_metadata(bomb)
    assert time.perf_counter() - started < 5


DEEP = "[" * 100_000 + "]" * 100_000


def test_json_nested_100000_deep_is_one_line(tmp_path, capsys):
    ann = tmp_path / "deep.json"
    ann.write_text(DEEP)
    assert main(["data", "validate", str(ann), "--images", str(tmp_path), "--task", "pose"]) == 2
    assert f"{ann}: JSON nested too deeply" in _one_error(capsys.readouterr().err, "data")


def test_tflite_metadata_nested_100000_deep_is_one_line(tiny_tflite, tmp_path):
    from workbench.runtime import read_tflite_metadata

    model = tmp_path / "deep.tflite"
    model.write_bytes(tiny_tflite.read_bytes())
    with zipfile.ZipFile(model, "a") as zf:
        zf.writestr("metadata.json", DEEP)
    with pytest.raises(WorkbenchError, match="nested too deeply"):
        read_tflite_metadata(model)


# ---- 5. inputs silently replaced ---------------------------------------------------------------------
@pytest.fixture()
def weights_tree(tmp_path, monkeypatch):
    root = tmp_path / "weights"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        (root / sub / "m.pt").write_bytes(sub.encode())
    monkeypatch.setenv("WORKBENCH_WEIGHTS_DIR", str(root))
    return root


@pytest.mark.parametrize("name", ["/nonexistent/typo/m.pt", "typo/m.pt", "~/nowhere/m.pt"])
def test_a_weights_path_is_never_swapped_for_a_namesake(name, weights_tree):
    from workbench.locations import resolve_weights

    with pytest.raises(WorkbenchError, match="not found"):
        resolve_weights(name)


def test_a_weights_path_under_the_weights_folder_is_used_as_given(weights_tree):
    from workbench.locations import resolve_weights

    assert resolve_weights("b/m.pt") == weights_tree / "b" / "m.pt"


def test_a_bare_weights_name_matching_several_files_is_refused_listing_them(weights_tree):
    from workbench.locations import resolve_weights

    with pytest.raises(WorkbenchError, match="matches 2 files") as err:
        resolve_weights("m.pt")
    assert str(weights_tree / "a" / "m.pt") in str(err.value) and str(weights_tree / "b" / "m.pt") in str(
        err.value
    )


@pytest.mark.parametrize("recipe", [",", " , ", "+"], ids=["comma", "spaced-comma", "plus"])
def test_an_empty_recipe_list_is_refused(recipe, tmp_path, capsys):
    args = ["quantize", "--saved-model", str(tmp_path / "sm"), "--scheme", "int8-per-channel",
            "--out", str(tmp_path / "o.tflite"), "--recipe", recipe]  # fmt: skip
    assert main(args) == 2
    assert "names no recipe" in _one_error(capsys.readouterr().err, "quantize")


@pytest.mark.parametrize(
    "schemes, recipe",
    [
        ("[fp32, fp16]", "split-head"),
        ("[int8-per-channel]", "split-channels"),
        ("[int8-per-tensor]", "int16x8"),
    ],
    ids=["float-only", "split-channels-per-channel", "int16x8-per-tensor"],
)
def test_a_config_recipe_for_none_of_the_schemes_is_refused(schemes, recipe, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nschemes: {schemes}\nrecipes: [{recipe}]\nsynth_preset: easy\n")
    assert main(["report", "--config", str(config), "--reports-dir", str(tmp_path / "reports")]) == 2
    assert f"recipes: '{recipe}' applies to none of the schemes" in _one_error(
        capsys.readouterr().err, "report"
    )
    assert not (tmp_path / "reports").exists()


# ---- 6. signals and one-line messages ----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the discarded raise
def test_a_sigterm_during_a_del_is_acted_on_not_lost():
    from workbench.runlock import Interrupted, raise_if_interrupted, signals_as_exceptions

    class KilledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here; Python discards it

    reached = []
    with pytest.raises(Interrupted) as raised, signals_as_exceptions():
        KilledWhileCollected()
        reached.append("after the __del__")
        raise_if_interrupted()  # a safe point (a sweep calls it between cells)
        reached.append("past the safe point")
    assert raised.value.signum == signal.SIGTERM and reached == ["after the __del__"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_second_signal_is_not_ignored():
    from workbench.runlock import Interrupted, signals_as_exceptions

    class KilledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted), signals_as_exceptions():
        KilledWhileCollected()  # lost inside __del__ ...
        os.kill(os.getpid(), signal.SIGTERM)  # ... and the next kill still stops the block at once
        time.sleep(5)
        pytest.fail("the second SIGTERM was ignored")


@pytest.mark.parametrize("count", ["0", "-3"])
@pytest.mark.parametrize("scheme", ["fp32", "int8-per-channel"])
def test_quantize_calib_count_below_1_is_one_line(count, scheme, tmp_path, capsys):
    args = ["quantize", "--saved-model", str(tmp_path / "sm"), "--scheme", scheme,
            "--out", str(tmp_path / "o.tflite"), "--calib-count", count]  # fmt: skip
    assert main(args) == 2
    assert f"--calib-count must be an integer of at least 1, got {count}" in _one_error(
        capsys.readouterr().err, "quantize"
    )


def test_an_unclosed_ipv6_scheduler_address_is_one_line(tmp_path, capsys):
    args = ["sweep", "--config", str(_sweep_yaml(tmp_path)), "--scheduler", "tcp://[::1"]
    assert main(args) == 2
    assert "scheduler address 'tcp://[::1' is not host:port" in _one_error(capsys.readouterr().err, "sweep")


def test_json_depth_skips_brackets_inside_strings_and_reads_what_it_allows():
    from workbench.safeparse import MAX_JSON_DEPTH, json_depth, loads_json

    assert json_depth(b'{"a": "[[[\\"{{", "b": [[1]]}') == 3
    allowed = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(allowed.encode()) == MAX_JSON_DEPTH and loads_json(allowed) is not None
