"""Deployment targets: the registry, Vela's figures taken as Vela gives them, failures as clear cells."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from tiny_tflite import tiny_models

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


def test_the_registry_holds_the_host_and_four_ethos_u_targets():
    assert list_targets() == ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256", "host"]
    assert {get_target(n).latency_source for n in list_targets()} == {"tool", "measured"}


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
    assert len(err) == 1 and "unknown target 'stm32x9'" in err[0] and "ethos-u85-256, host" in err[0]


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
