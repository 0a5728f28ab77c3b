"""Sweeps store each listed target's columns in every cell's Parquet row (issue 19); a target added
to a finished sweep costs its estimates only; files written before the target columns still read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from workbench.sweep import SweepConfig, query, run_sweep, store

CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "weights" / "yolov8n-pose-synth.pt"
GRID = {
    "name": "tiny-targets", "task": "pose", "model": str(CHECKPOINT), "imgsz": [64],
    "schemes": ["int8-per-tensor", "int8-per-channel"], "calib_images": 2, "synth_preset": "easy",
    "synth_train": 8, "synth_val": 8, "synth_imgsz": 96, "bench_runs": 3, "threads": 1,
    "targets": ["host", "stm32mp2"],
}  # fmt: skip


def sweep(folder: Path, **changes) -> SweepConfig:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return SweepConfig.from_yaml(path)


@pytest.mark.slow
def test_cells_carry_their_targets_columns_and_a_new_target_reuses_the_cells(tmp_path):
    out = tmp_path / "out"
    first = run_sweep(sweep(tmp_path), out, progress=False)
    assert (first.done, first.failed) == (2, 0)
    frame = query(out, "select * from results order by scheme").set_index("scheme")
    pc, pt = frame.loc["int8-per-channel"], frame.loc["int8-per-tensor"]
    for row in (pc, pt):
        assert row["host_latency_ms"] == row["latency_ms_median"] and row["host_latency_source"] == "measured"
        assert row["stm32mp2_latency_source"] == "fitted" and row["stm32mp2_latency_error_pct"] > 0
        assert row["stm32n6_latency_source"] is None  # not listed: null, the schema is the same
    assert pc["stm32mp2_accelerator_mac_share"] < 0.5 < pt["stm32mp2_accelerator_mac_share"]  # MP2's GPU
    assert pc["stm32mp2_latency_ms"] > pt["stm32mp2_latency_ms"]

    second = run_sweep(sweep(tmp_path, targets=["host", "stm32mp2", "stm32n6"]), out, progress=False)
    assert (second.done, second.cached) == (0, 2)  # the cells' keys do not hold the targets
    again = query(out, "select * from results order by scheme").set_index("scheme")
    assert again["stm32n6_latency_source"].eq("fitted").all()
    assert list(again["stm32mp2_latency_ms"]) == list(frame["stm32mp2_latency_ms"])  # deterministic


def test_a_row_written_before_the_target_columns_is_read_with_them_null(tmp_path):
    base = pa.schema([f for f in store.SCHEMA if not any(f.name == c for c, _ in store.TARGET_COLUMNS)])
    row = {c: None for c in base.names} | {"cell": "0123456789abcdef", "status": "ok", "variant": "v"}
    (tmp_path / "results").mkdir()
    pq.write_table(
        pa.Table.from_pylist([row], schema=base), tmp_path / "results" / "0123456789abcdef.parquet"
    )
    frame = query(tmp_path, "select variant, stm32n6_latency_ms, host_latency_source from results")
    assert frame["variant"].tolist() == ["v"] and frame.iloc[0, 1:].isna().all()


def test_the_store_schema_has_every_registered_targets_columns():
    from workbench.targets import list_targets

    for name in list_targets():
        assert {f"{name}_latency_ms", f"{name}_latency_source", f"{name}_fallback_ops"} <= set(store.COLUMNS)
    assert store.SCHEMA.field("stm32n6_sram_bytes").type == pa.int64()
