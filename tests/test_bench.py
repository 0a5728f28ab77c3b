"""Latency benchmark on a tiny converted model and a zoo file; CLI output contract and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_tflite import tiny_models
from workbench.bench import BenchResult, bench_model, bench_models, cpu_model, to_pandas
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


def test_bench_model_statistics_and_identity(tiny):
    import ai_edge_litert

    path = tiny["int8-per-channel"]
    r = bench_model(path, threads=1, runs=7, warmup=1)
    assert len(r.times_ms) == 7 and r.runs == 7 and r.threads == 1
    assert r.min_ms == min(r.times_ms) and r.min_ms <= r.median_ms <= r.p90_ms <= max(r.times_ms)
    assert r.mean_ms == pytest.approx(sum(r.times_ms) / 7)
    assert r.size_bytes == path.stat().st_size and r.sha256 == sha256_file(path)
    assert r.litert_version == ai_edge_litert.__version__ and r.cpu == cpu_model() != ""
    assert r.arena_bytes >= 16 * 16 * 16  # the (1,16,16,16) int8 feature map must fit


def test_bench_models_keeps_order_and_tabulates(tiny):
    paths = [tiny["fp32"], tiny["int8-per-tensor"]]
    results = bench_models(paths, runs=3, warmup=0)
    assert [r.path for r in results] == [str(p) for p in paths]
    df = to_pandas(results)
    assert list(df["path"]) == [str(p) for p in paths] and "times_ms" not in df.columns
    assert len(results[0].to_pandas()) == 1


def test_bench_models_interleave_so_a_slow_spell_hits_every_model(tiny, monkeypatch):
    from workbench.runtime import TFLiteModel

    calls = []

    def clock(self):  # a machine that slows down steadily while the benchmark runs
        calls.append(self.path.name)
        return 1.0 + len(calls) / 100

    monkeypatch.setattr(TFLiteModel, "invoke_raw", clock)
    a, b = tiny["fp32"], tiny["int8-per-tensor"]
    results = bench_models([a, b], runs=7, warmup=1, block=3)
    timed = calls[2:]  # after one warm-up invoke each
    assert timed == [a.name] * 3 + [b.name] * 3 + [a.name] * 3 + [b.name] * 3 + [a.name, b.name]
    # identical models measured through the slowdown come out (nearly) equal
    assert results[1].median_ms / results[0].median_ms == pytest.approx(1.0, abs=0.03)


def test_bench_rejects_bad_arguments(tiny, tmp_path):
    with pytest.raises(WorkbenchError, match="runs >= 1"):
        bench_model(tiny["fp32"], runs=0)
    with pytest.raises(WorkbenchError, match="missing.tflite: model file not found"):
        bench_models([tiny["fp32"], tmp_path / "missing.tflite"], runs=1)
    with pytest.raises(ValueError, match="timings"):
        BenchResult("m", 1, 1, 1, 1, 2, 0, 1, "cpu", 1, "0" * 64, "x", 0, times_ms=[1.0])


@pytest.mark.zoo
def test_bench_zoo_file(zoo_dir):
    r = bench_model(
        zoo_dir / "st/object_detection_ssd/ssd_mobilenet_v1_025_192_int8.tflite", runs=3, warmup=1
    )
    assert r.size_bytes == 595664 and r.median_ms > 0


def test_cli_bench_json_table_and_error(tiny, tmp_path, capsys):
    out = tmp_path / "bench" / "b.json"
    args = [
        "bench",
        str(tiny["fp32"]),
        str(tiny["int8-ii"]),
        "--threads",
        "1",
        "--runs",
        "2",
        "--warmup",
        "0",
    ]
    assert main([*args, "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert printed == json.loads(out.read_text())
    assert printed["threads"] == 1 and printed["cpu"] == cpu_model() and len(printed["results"]) == 2
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "median" in table and tiny["int8-ii"].name in table
    missing = tmp_path / "missing.tflite"
    assert main(["bench", str(tiny["fp32"]), str(missing), "--out", str(tmp_path / "x.json")]) == 2
    assert f"{missing}: model file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_cpu_features_are_read_from_cpuinfo():
    from workbench.bench import SIMD_FLAGS, cpu_features

    features = cpu_features()
    assert set(features) <= set(SIMD_FLAGS)
    flags = next(
        (
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith(("flags", "Features"))
        ),
        "",
    )
    assert ("avx2" in features) == (" avx2" in flags)
