"""Deployment targets: the registry, Vela's figures taken as Vela gives them, failures as clear cells."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tests.tiny_tflite import tiny_models
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.targets import get_target, list_targets
from workbench.targets.base import TargetEstimate
from workbench.targets.macs import op_macs
from workbench.targets.vela import EthosUTarget, vela_version
from workbench.tflite_graph import read_graph

needs_vela = pytest.mark.skipif(vela_version() is None, reason="ethos-u-vela is not installed")
# the tiny network's MACs by hand: stem 16x16x8 outputs x 3x3x3, depthwise 16x16x8 x 3x3,
# pointwise 16x16x16 x 8, dense 4 x 16
TINY_MACS = 16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 16 * 16 * 16 * 8 + 4 * 16


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


def test_the_registry_holds_the_host_four_ethos_u_two_st_npu_and_three_st_cpu_targets():
    assert list_targets() == [
        "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256", "host",
        "stm32h7", "stm32mp135", "stm32mp157", "stm32mp2", "stm32n6",
    ]  # fmt: skip
    assert {get_target(n).latency_source for n in list_targets()} == {"tool", "measured", "fitted"}


@pytest.mark.parametrize("name", list_targets())
def test_every_target_refuses_a_missing_file(name, tmp_path):
    with pytest.raises(WorkbenchError, match="not found"):
        get_target(name).estimate(tmp_path / "none.tflite")


def test_an_unknown_target_is_refused_with_the_valid_list(tiny, capsys):
    assert (
        main(["target", str(tiny["int8-per-tensor"]), "--target", "ethos-u55-256", "--target", "stm32x9"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "unknown target 'stm32x9'" in err[0]
        and "ethos-u85-256, host, stm32h7, stm32mp135, stm32mp157, stm32mp2, stm32n6" in err[0]
    )


def test_macs_are_counted_from_the_tensor_shapes(tiny):
    for scheme in ("fp32", "int8-per-channel"):
        graph = read_graph(tiny[scheme])
        assert sum(op_macs(graph, op) for op in graph.ops) == TINY_MACS


def test_an_estimate_that_failed_carries_no_figures():
    with pytest.raises(ValueError, match="no figures"):
        TargetEstimate("t", "m.tflite", latency_ms=3.0, error="boom")
    with pytest.raises(ValueError, match="leave-one-out"):
        TargetEstimate("t", "m.tflite", latency_ms=3.0, latency_source="fitted")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TargetEstimate("t", "m.tflite", latency_ms=3.0, latency_source="tool", accelerator_mac_share=1.5)


@needs_vela
def test_a_vela_target_reports_vela_s_own_summary(tiny, tmp_path):
    target, model = get_target("ethos-u55-256"), tiny["int8-per-tensor"]
    estimate = target.estimate(model)
    subprocess.run(target.command(model, tmp_path), check=True, capture_output=True)
    (summary_csv,) = tmp_path.glob("*_summary_*.csv")
    with summary_csv.open(newline="") as fh:
        summary = next(csv.DictReader(fh))
    assert estimate.error is None and estimate.latency_source == "tool"
    assert estimate.latency_ms == pytest.approx(float(summary["inference_time"]) * 1000)
    assert estimate.sram_bytes == round(float(summary["sram_memory_used"]) * 1024)
    assert estimate.flash_bytes == round(float(summary["off_chip_flash_memory_used"]) * 1024)
    assert estimate.provenance["nn_macs"] == int(float(summary["nn_macs"]))
    # uint8 in, float out: the DEQUANTIZE of each of its 2 outputs is left to the CPU, every MAC runs on the NPU
    assert estimate.fallback_ops == ["DEQUANTIZE"] * 2 and estimate.accelerator_mac_share == 1.0
    assert (
        estimate.provenance["version"] == vela_version()
        and estimate.provenance["accelerator"] == "ethos-u55-256"
    )


@needs_vela
def test_a_float_file_runs_wholly_on_the_cpu_of_an_ethos_u(tiny):
    estimate = get_target("ethos-u85-256").estimate(tiny["fp32"])
    assert estimate.error.startswith("no op runs on the NPU") and estimate.latency_ms is None
    assert {p.engine for p in estimate.placement} == {"cpu"}
    assert "CONV_2D" in estimate.fallback_ops and len(estimate.fallback_ops) == len(
        read_graph(tiny["fp32"]).ops
    )


class _CrashingVela(EthosUTarget):
    """Vela as it behaves on ST's SSD files: a segmentation fault."""

    def command(self, model, out_dir):
        return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]


def test_an_estimator_crash_is_a_clear_cell_not_a_number(tiny, monkeypatch, capsys):
    crashing = _CrashingVela("ethos-u55-256", get_target("ethos-u55-256").config)
    estimate = crashing.estimate(tiny["int8-per-tensor"])
    assert estimate.error == "estimator failed: vela crashed (SIGSEGV)"
    assert estimate.latency_ms is None and estimate.sram_bytes is None and estimate.fallback_ops == []
    import workbench.targets

    monkeypatch.setitem(workbench.targets._REGISTRY, "ethos-u55-256", crashing)
    assert main(["target", str(tiny["int8-per-tensor"]), "--target", "ethos-u55-256", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["error"] == "estimator failed: vela crashed (SIGSEGV)" and row["latency_ms"] is None


def test_the_json_has_one_object_per_target_with_the_documented_keys(tiny, capsys):
    assert main(["target", str(tiny["int8-per-channel"]), "--target", "host", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    for key in ("target", "latency_ms", "latency_source", "latency_error_pct", "sram_bytes", "flash_bytes",
                "accelerator_mac_share", "fallback_ops", "error"):  # fmt: skip
        assert key in row
    assert row["target"] == "host" and row["latency_source"] == "measured" and row["latency_ms"] > 0
    assert row["latency_error_pct"] is None and row["error"] is None and row["provenance"]["simd"] is not None


# ---- ST's boards: documented placement, latency fitted to the published figures -----------------
def published_files(zoo_dir, ssd: dict) -> dict:
    """(model, imgsz, weights) -> the file each published figure was measured on: ST's zoo files
    (pose, seg) and per-channel conversions of ST's SSD .h5 (the card's int8 files' sources)."""
    from workbench.targets.published import SSD, ZOO_FILES

    files = {key: zoo_dir / "st" / name for key, name in ZOO_FILES.items()}
    return files | {(SSD, imgsz, "pc"): path for imgsz, path in ssd.items()}


@pytest.mark.zoo
@pytest.mark.slow
@pytest.mark.parametrize("index", range(7))
def test_mp2_places_each_published_model_on_its_published_majority_engine(zoo_dir, st_ssd_per_channel, index):
    from workbench.targets.published import PUBLISHED_MP2_SHARES, placement_check

    assert len(PUBLISHED_MP2_SHARES) == 7  # ST's 7 published MP2 figures
    row = placement_check(get_target("stm32mp2"), published_files(zoo_dir, st_ssd_per_channel))[index]
    assert "error" not in row, row
    assert row["estimate_majority"] == row["published_majority"], row
    # the SSD conversions hold per-channel weights: every MAC leaves the MP2's NPU for the GPU
    if row["model"] == "st-ssd-mobilenet-v1-0.25":
        assert row["estimate_gpu_mac_pct"] == 100.0


@pytest.mark.zoo
@pytest.mark.slow
def test_memory_is_checked_against_every_published_ram_figure(zoo_dir, st_ssd_per_channel):
    from workbench.targets.published import PUBLISHED_RAM, flash_check, ram_check
    from workbench.targets.st import N6_RAM_RATIO
    from workbench.targets.st_cpu import H7_RAM_RATIO

    files = {(m, s): p for (m, s, w), p in published_files(zoo_dir, st_ssd_per_channel).items() if w == "pc"}
    rows = ram_check(files)
    assert len(rows) == len(PUBLISHED_RAM) == 10 and all("error" not in r for r in rows), rows
    for row in rows:  # the estimate is what the ST targets report as sram_bytes
        assert row["error_pct"] == pytest.approx(
            (row["estimate_kib"] - row["published_kib"]) / row["published_kib"] * 100, abs=0.1
        )
    # each label's stated range of published / estimate holds on every published figure of its board
    for board, (low, high), count in (("stm32n6", N6_RAM_RATIO, 7), ("stm32h7", H7_RAM_RATIO, 3)):
        ratios = [r["published_over_estimate"] for r in rows if r["board"] == board]
        assert len(ratios) == count and low <= min(ratios) and max(ratios) <= high, (board, ratios)
        assert f"{low}x to {high}x" in get_target(board).sram_means
    # weights flash: the H7's is the file's constants (the conversions hold ST's weights); the N6's
    # is more (ST's compiler stores its own layout), never less
    flash = flash_check(files)
    assert len(flash) == 10 and all("error" not in r for r in flash), flash
    assert all(abs(r["error_pct"]) < 0.1 for r in flash if r["board"] == "stm32h7")
    assert all(-20.0 < r["error_pct"] < 0.0 for r in flash if r["board"] == "stm32n6")
    # ST's boards count a buffer for the SSD's constant anchors output (6825 anchors x 4 float32);
    # the Linux boards' TFLite runtime reads it from the file: the arena alone
    from workbench.inspect import activation_arena

    ssd224 = st_ssd_per_channel[224]
    arena = activation_arena(read_graph(ssd224)).arena_bytes
    assert get_target("stm32h7").estimate(ssd224).sram_bytes == arena + 6825 * 4 * 4
    assert get_target("stm32n6").estimate(ssd224).sram_bytes == arena + 6825 * 4 * 4
    assert get_target("stm32mp157").estimate(ssd224).sram_bytes == arena


def test_each_st_target_says_what_its_sram_figure_means(tiny, capsys):
    assert (
        main(
            ["target", str(tiny["int8-per-tensor"]), "--target", "stm32n6", "--target", "stm32mp2", "--json"]
        )
        == 0
    )
    rows = {r["target"]: r for r in json.loads(capsys.readouterr().out)}
    n6, mp2 = rows["stm32n6"]["provenance"]["sram_means"], rows["stm32mp2"]["provenance"]["sram_means"]
    assert n6.startswith("estimate:") and "published N6 internal RAM" in n6
    assert mp2.startswith("estimate:") and "unchecked" in mp2


@pytest.mark.zoo
def test_st_files_show_the_published_figure_beside_the_estimate(zoo_dir):
    estimate = get_target("stm32mp2").estimate(
        zoo_dir / "st" / "pose_estimation" / "yolov8n_256_quant_pt_uf_pose_coco-st.tflite"
    )
    assert estimate.provenance["published_ms"] == 17.57
    assert abs(estimate.latency_ms - 17.57) / 17.57 * 100 < 2 * estimate.provenance["loo_max_pct"]


@pytest.mark.zoo
def test_the_fitted_macs_are_those_of_st_s_files(zoo_dir):
    from workbench.targets.st import MP2_POINTS, N6_POINTS

    by_name = {p.name: p for p in (zoo_dir / "st").glob("*/*.tflite")}
    for point in (*N6_POINTS, *MP2_POINTS):
        path = by_name.get(point.file.removeprefix("st_"))
        graph = read_graph(path)
        assert sum(op_macs(graph, op) for op in graph.ops) / 1e6 == pytest.approx(
            sum(point.mmacs.values()), abs=0.05
        )


@pytest.mark.zoo
@pytest.mark.slow
def test_the_fitted_ssd_macs_are_those_of_the_h5_conversions(st_ssd_per_channel):
    from workbench.targets.st import MP2_POINTS, N6_POINTS
    from workbench.targets.st_cpu import CPU_BOARDS

    ssd_points = [p for p in (*N6_POINTS, *MP2_POINTS) if p.file.startswith("st_ssd")]
    ssd_points += [p for board in CPU_BOARDS for p in board.points]
    assert len(ssd_points) == 5 + 3 * 3
    for point in ssd_points:
        graph = read_graph(st_ssd_per_channel[int(point.file.split("_")[-2])])
        assert sum(op_macs(graph, op) for op in graph.ops) / 1e6 == pytest.approx(
            sum(point.mmacs.values()), abs=0.05
        )


def test_leave_one_out_is_computed_and_printed(capsys):
    from workbench.targets.st import LatencyModel, PublishedPoint, leave_one_out

    exact = [
        PublishedPoint(f"m{i}", 2.0 * m**0.5, {"npu": m}) for i, m in enumerate((50.0, 200.0, 800.0, 1500.0))
    ]
    assert max(leave_one_out(exact)) < 1e-6  # a power law is recovered exactly
    assert LatencyModel.fit(exact).predict({"npu": 400.0}) == pytest.approx(40.0)
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("stm32n6", "stm32mp2"):
        target = get_target(name)
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert f"median {target.loo_median_pct:.1f} %" in line and target.loo_median_pct <= 25.0


@pytest.mark.parametrize("name", ["stm32n6", "stm32h7", "stm32mp135"])
def test_st_targets_refuse_to_cost_what_st_never_published(tiny, name):
    estimate = get_target(name).estimate(tiny["fp32"])  # float convolutions on the CPU
    assert estimate.error.startswith("no latency model for") and estimate.latency_ms is None
    assert {p.engine for p in estimate.placement} == {"cpu"}


@pytest.mark.parametrize("name", ["stm32h7", "stm32mp157", "stm32mp135"])
def test_a_cpu_board_runs_every_op_on_its_cpu_at_its_fitted_mac_rate(tiny, name):
    target = get_target(name)
    estimate = target.estimate(tiny["int8-per-channel"])
    assert estimate.error is None and {p.engine for p in estimate.placement} == {"cpu"}
    # no accelerator: no MAC share, nothing falls back
    assert estimate.accelerator_mac_share is None and estimate.fallback_ops == []
    assert estimate.latency_ms == pytest.approx(target.model.predict({"cpu": TINY_MACS / 1e6}))
    assert estimate.latency_error_pct == round(target.loo_median_pct, 1) and len(target.points) == 3
    assert "seed 004" in estimate.provenance["fitted_on"] and estimate.provenance["sram_means"].startswith(
        "estimate:"
    )


# ---- a config's targets: columns per variant --------------------------------------------------
def test_target_columns_hold_each_target_s_figures_and_reuse_the_host_timing(tiny):
    from workbench.bench import bench_models
    from workbench.targets.columns import target_columns

    paths = [tiny["int8-per-tensor"], tiny["int8-per-channel"]]
    timings = bench_models(paths, runs=3)
    rows = target_columns(paths, ["host", "stm32mp2"], timings)
    for row, timing in zip(rows, timings, strict=True):
        assert row["host_latency_ms"] == timing.median_ms and row["host_latency_source"] == "measured"
        assert row["stm32mp2_latency_source"] == "fitted" and row["stm32mp2_latency_error_pct"] > 0
    # per-tensor weights run on the MP2's NPU, per-channel ones leave it for the GPU
    assert (
        rows[0]["stm32mp2_accelerator_mac_share"] == 1.0 and rows[1]["stm32mp2_accelerator_mac_share"] == 0.0
    )
    assert "CONV_2D" in rows[1]["stm32mp2_fallback_ops"] and rows[1]["stm32mp2_error"] is None


def test_a_config_s_unknown_target_is_refused_before_any_work():
    from workbench.config import RunConfig
    from workbench.plan import make_plan

    with pytest.raises(WorkbenchError, match="unknown target 'stm32x9'.*stm32mp2") as err:
        make_plan(RunConfig(targets=["host", "stm32x9"]), source="run.yaml")
    assert err.value.path == "run.yaml"


def test_configs_without_targets_keep_their_hash():
    from workbench.config import RunConfig

    assert RunConfig(targets=[]).hash == RunConfig().hash != RunConfig(targets=["stm32n6"]).hash
