"""Report layer on synthetic results tables: validation, Pareto front, plots, HTML pages."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from workbench.errors import WorkbenchError
from workbench.report import (
    RESULT_COLUMNS,
    build_reports_index,
    build_run_report,
    load_results,
    pareto_front,
    plot_ap_by_scheme,
    plot_frontier,
    plot_size_and_ram,
    plot_sqnr,
    recommend,
    scheme_comparison,
    validate_results,
    write_results_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCHEMES = {  # AP offset, latency factor, flash factor, worst SQNR
    "fp32": (0.0, 1.0, 1.0, math.nan),
    "fp16": (-0.002, 1.0, 0.5, math.nan),
    "int8-per-channel": (-0.02, 0.45, 0.27, 24.0),
    "int8-per-tensor": (-0.09, 0.42, 0.27, 8.5),
}


def synthetic_results() -> pd.DataFrame:
    """Two models × three resolutions × four schemes, plus zoo rows, with plausible trends."""
    rows = []
    packages = json.dumps({"numpy": "2.4.6", "python": "3.11.9"})
    for model, source, base in (("yolov8n-pose-synth", "ours", 0.55), ("st_yolov8n_pose", "zoo", 0.50)):
        for imgsz in (192, 256, 320):
            for scheme, (dap, lat_f, size_f, sqnr) in SCHEMES.items():
                if source == "zoo" and scheme != "int8-per-channel":
                    continue
                latency = (imgsz / 256) ** 2 * 20 * lat_f
                rows.append(dict(
                    variant=f"{model}_{imgsz}_{scheme}_uf", model=model, source=source, task="pose",
                    imgsz=imgsz, scheme=scheme, io="uf", path=f"v/{imgsz}/{scheme}.tflite",
                    model_sha256="ab" * 32, size_bytes=3.2e6 * size_f, metric="keypoints",
                    ap=base + dap + (imgsz - 256) / 1000, ap50=0.8, ap75=0.5, ar=0.6,
                    latency_ms_median=latency, latency_ms_p90=latency * 1.1, latency_ms_min=latency * 0.9,
                    threads=2, activation_ram_bytes=imgsz * imgsz * 48,
                    weight_granularity=scheme.removeprefix("int8-") if "int8" in scheme else math.nan,
                    worst_sqnr_db=sqnr, worst_sqnr_layer="model.22/cv4" if "int8" in scheme else math.nan,
                    config_hash="0123456789ab", dataset_hash="cd" * 32, packages=packages,
                ))  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def results() -> pd.DataFrame:
    return validate_results(synthetic_results())


def _minimal(**overrides) -> dict:
    row = dict(
        variant="v",
        model="m",
        source="ours",
        task="pose",
        imgsz=256,
        scheme="fp32",
        io="uf",
        metric="keypoints",
        ap=0.5,
        latency_ms_median=5.0,
    )
    row.update(overrides)
    return row


# ---- table -------------------------------------------------------------------------------------


def test_pareto_front_on_hand_made_table():
    df = pd.DataFrame({
        "variant": ["A", "B", "C", "D", "E", "F", "G", "H"],
        "latency_ms_median": [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, np.nan, 2.0],
        "ap": [0.3, 0.5, 0.4, 0.5, 0.7, 0.6, 0.9, 0.5],
    })  # fmt: skip
    # C is beaten by B (same latency, lower AP), D by B (slower, same AP), F by E; G has no latency;
    # H duplicates B exactly, so neither dominates the other.
    assert list(pareto_front(df)["variant"]) == ["A", "B", "H", "E"]


def test_pareto_front_matches_brute_force_dominance():
    rng = np.random.default_rng(0)
    for _ in range(20):
        df = pd.DataFrame(
            {"latency_ms_median": rng.integers(1, 8, 30).astype(float), "ap": rng.integers(0, 8, 30) / 10}
        )
        x, y = df["latency_ms_median"].to_numpy(), df["ap"].to_numpy()
        dominated = [
            any(x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i]) for j in range(len(df)))
            for i in range(len(df))
        ]
        expected = set(df.index[~np.array(dominated)])
        front = pareto_front(df)
        assert set(front.index) == expected
        assert front["latency_ms_median"].is_monotonic_increasing and front["ap"].is_monotonic_increasing


def test_recommend_respects_latency_budget(results):
    best = recommend(results, latency_budget_ms=12.0)
    assert best["latency_ms_median"] <= 12.0
    front = pareto_front(results)
    within = results[results["latency_ms_median"] <= 12.0]
    assert best["ap"] == within["ap"].max()
    assert best["variant"] in set(front["variant"])
    assert recommend(results, latency_budget_ms=1.0) is None
    assert recommend(results)["ap"] == results["ap"].max()


def test_load_results_names_file_and_missing_columns(tmp_path):
    pd.DataFrame([_minimal()]).drop(columns=["ap", "scheme"]).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(WorkbenchError) as err:
        load_results(tmp_path)
    assert str(tmp_path / "results.csv") in str(err.value)
    assert "scheme, ap" in str(err.value)
    with pytest.raises(WorkbenchError, match="results file not found"):
        load_results(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "overrides, problem",
    [
        ({"scheme": "int4"}, "scheme 'int4' is not one of"),
        ({"source": "theirs"}, "source 'theirs'"),
        ({"ap": 1.5}, "ap 1.5 is outside"),
        ({"latency_ms_median": -1.0}, "latency_ms_median -1.0 is negative"),
        ({"imgsz": 255.5}, "imgsz must be a positive integer"),
        ({"ap": "high"}, "ap is not a number"),
        ({"packages": "{not json"}, "packages is not a JSON object"),
    ],
)
def test_validate_results_rejects_bad_values(overrides, problem):
    with pytest.raises(WorkbenchError, match=problem) as err:
        validate_results(pd.DataFrame([_minimal(**overrides)]), source="r.csv")
    assert str(err.value).startswith("r.csv: row 'v'")


def test_validate_results_rejects_duplicate_variant():
    with pytest.raises(WorkbenchError, match="'v' appears more than once"):
        validate_results(pd.DataFrame([_minimal(), _minimal(ap=0.4)]))


def test_write_results_csv_round_trip_keeps_nan_and_fills_optional(tmp_path, results):
    path = write_results_csv(results, tmp_path / "results.csv")
    back = load_results(tmp_path)
    assert list(back.columns) == list(RESULT_COLUMNS)
    pd.testing.assert_frame_equal(back, results, check_dtype=False)
    assert back["worst_sqnr_db"].isna().sum() == (results["scheme"].isin(["fp32", "fp16"])).sum()
    # optional columns absent from the input appear as NaN
    minimal = validate_results(pd.DataFrame([_minimal()]))
    assert set(RESULT_COLUMNS) <= set(minimal.columns) and math.isnan(minimal.at[0, "ar"])
    assert path == tmp_path / "results.csv"


def test_write_results_csv_writes_nothing_on_invalid_table(tmp_path):
    with pytest.raises(WorkbenchError):
        write_results_csv(pd.DataFrame([_minimal(ap=2.0)]), tmp_path / "results.csv")
    assert list(tmp_path.iterdir()) == []


# ---- plots -------------------------------------------------------------------------------------


@pytest.mark.parametrize("plot", [plot_frontier, plot_ap_by_scheme, plot_size_and_ram, plot_sqnr])
def test_plots_write_png(tmp_path, results, plot):
    path = plot(results, tmp_path / "plots" / f"{plot.__name__}.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left


def test_plot_sqnr_without_int8_measurements_says_so(tmp_path, results):
    with pytest.raises(WorkbenchError, match="no int8 rows with worst_sqnr_db"):
        plot_sqnr(results.assign(worst_sqnr_db=np.nan), tmp_path / "sqnr.png")
    assert not (tmp_path / "sqnr.png").exists()


# ---- HTML --------------------------------------------------------------------------------------


def _complete_run(reports, name, df, finished="2025-01-02T00:00:00+00:00"):
    run = reports / name
    run.mkdir(parents=True)
    write_results_csv(df, run / "results.csv")
    (run / "status.json").write_text(
        json.dumps(
            {
                "state": "complete",
                "tag": name.split("-")[0],
                "config_hash": "0123456789ab",
                "finished": finished,
            }
        )
    )
    (run / "03_evaluate.html").write_text("<html>executed</html>")
    (run / "03_evaluate.ipynb").write_text("{}")
    return run


def test_build_run_report_answer_first_then_table_plots_links_provenance(tmp_path, results):
    run = _complete_run(tmp_path, "demo-0123456789ab", results)
    page = build_run_report(run, "Demo", {"name": "demo", "latency_budget_ms": 12})
    html = page.read_text()
    best = recommend(results, latency_budget_ms=12)
    assert f"<b>{best['variant']}</b>" in html
    assert html.index("frontier_keypoints.png") < html.index("<table")
    for plot in ("frontier_keypoints", "ap_by_scheme_keypoints", "size_and_ram", "sqnr"):
        assert (run / "plots" / f"{plot}.png").stat().st_size > 0
        assert f"plots/{plot}.png" in html
    assert "href='03_evaluate.html'" in html and "href='03_evaluate.ipynb'" in html
    assert "0123456789ab" in html and "numpy" in html and "2.4.6" in html
    assert "FAILED" not in html and "Complete" in html
    n_front = len(pareto_front(results))
    assert html.count("<td>★</td>") == n_front


def test_build_run_report_without_budget_lists_pareto_candidates(tmp_path, results):
    run = _complete_run(tmp_path, "demo-0123456789ab", results)
    html = build_run_report(run).read_text()
    assert f"the {len(pareto_front(results))} Pareto-optimal variant(s)" in html


def test_build_run_report_marks_failed_run(tmp_path):
    run = tmp_path / "demo-0123456789ab"
    run.mkdir()
    (run / "status.json").write_text(
        json.dumps({"state": "failed", "step": "02_quantize", "error": "cell [3] RuntimeError: <boom>"})
    )
    html = build_run_report(run).read_text()
    assert "FAILED at step <code>02_quantize</code>" in html
    assert "&lt;boom&gt;" in html  # escaped
    assert "No results.csv" in html


def test_build_run_report_rejects_invalid_results(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    pd.DataFrame([_minimal(scheme="int4")]).to_csv(run / "results.csv", index=False)
    with pytest.raises(WorkbenchError, match="results.csv: row 'v': scheme"):
        build_run_report(run)
    assert not (run / "index.html").exists()


def test_build_reports_index_lists_runs_newest_first(tmp_path, results):
    _complete_run(tmp_path, "old-0123456789ab", results.iloc[:3], finished="2025-01-01T00:00:00+00:00")
    _complete_run(tmp_path, "new-0123456789ab", results, finished="2025-02-01T00:00:00+00:00")
    failed = tmp_path / "broken-0123456789ab"
    failed.mkdir()
    (failed / "status.json").write_text(
        json.dumps({"state": "failed", "started": "2025-03-01T00:00:00+00:00"})
    )
    (failed / "results.csv").write_text("variant\nx\n")
    (tmp_path / "not-a-run").mkdir()
    html = build_reports_index(tmp_path).read_text()
    assert html.index("broken-") < html.index("new-") < html.index("old-")
    assert "not-a-run" not in html
    best = results.loc[results["ap"].idxmax()]
    assert f"{best['ap']:.3f} keypoints ({best['variant']})" in html
    assert "invalid results.csv" in html and "<tr class='failed'>" in html


def test_cli_rebuild_from_result_files_only(tmp_path, results, capsys):
    from workbench.cli import main

    run = _complete_run(tmp_path, "demo-0123456789ab", results)
    assert main(["report", "--rebuild", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["report"] == str(run / "index.html") and (run / "index.html").is_file()
    assert (tmp_path / "index.html").is_file()
    assert main(["report", "--rebuild", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_scheme_comparison_measures_what_each_scheme_costs(results):
    table = scheme_comparison(results).set_index(["model", "imgsz"])
    ours = table.loc[("yolov8n-pose-synth", 256)]
    assert ours["pt_minus_pc"] == pytest.approx(-0.07)  # -0.09 - (-0.02), see SCHEMES
    assert ours["int8_pc_minus_fp32"] == pytest.approx(-0.02)
    assert ours["pt_over_pc_latency"] == pytest.approx(0.42 / 0.45)
    zoo = table.loc[("st_yolov8n_pose", 256)]  # per-channel only: no per-tensor comparison
    assert math.isnan(zoo["pt_minus_pc"]) and math.isnan(zoo["fp32"])
    assert len(table) == 6


def test_build_run_report_answers_for_int8_and_compares_schemes(tmp_path, results):
    run = _complete_run(tmp_path, "demo-0123456789ab", results)
    html = build_run_report(run, "Demo", {"name": "demo", "latency_budget_ms": 12}).read_text()
    int8 = results[results["scheme"].str.startswith("int8")]
    best = recommend(int8, latency_budget_ms=12)
    assert (
        f"Int8 only (what NPUs such as STM32N6 and STM32MP2 run, budget 12 ms): <b>{best['variant']}</b>"
        in html
    )
    # without differences.csv no difference is printed bare: the page says intervals are missing
    assert "No intervals" in html and "pt_minus_pc" not in html and "-0.070" not in html
    diffs = pd.DataFrame(
        [dict(model="yolov8n-pose-synth", imgsz=256, comparison="int8-per-tensor − int8-per-channel",
              a="a", b="b", metric="ap", estimate=-0.070, low=-0.081, high=-0.059, excludes_zero=True,
              n_images=450, n_boot=1000),
         dict(model="yolov8n-pose-synth", imgsz=256, comparison="int8-per-channel − fp32",
              a="a", b="c", metric="ap", estimate=-0.004, low=-0.012, high=0.005, excludes_zero=False,
              n_images=450, n_boot=1000)]
    )  # fmt: skip
    diffs.to_csv(run / "differences.csv", index=False)
    html = build_run_report(run, "Demo", {"name": "demo"}).read_text()
    assert "per-tensor vs per-channel: -0.070 [-0.081, -0.059]." in html
    assert "int8 per-channel changes AP by -0.004 [-0.012, +0.005] (within noise)" in html
    assert "same 450 images" in html and "Published figures" in html and "51.12" in html
