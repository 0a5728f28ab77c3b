"""The report's Recovery part on a hand-made results table and differences.csv: table, plot, page."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from workbench.differences import _pairs
from workbench.errors import WorkbenchError
from workbench.report import build_run_report, plot_recovery, validate_results, write_results_csv
from workbench.report.plots import write_all
from workbench.report.sections import interval_text, recovery_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PC, PT = "int8-per-channel", "int8-per-tensor"
ROWS = [  # imgsz, scheme, recipe, AP, all-int8
    (256, "fp32", "", 0.40, None),
    (256, PC, "", 0.35, True),
    (256, PT, "", 0.30, True),
    (256, PC, "split-head", 0.37, True),
    (256, PC, "split-head+int16x8", 0.39, False),  # more accurate, but not all-int8
    (256, PT, "split-head", 0.33, True),
    (256, PT, "equalize", 0.31, True),
    (192, "fp32", "", 0.30, None),
    (192, PC, "", 0.26, True),
    (192, PC, "split-head", 0.28, False),
    (320, "fp32", "", 0.45, None),  # no recipe at this size: no recovery table
    (320, PC, "", 0.41, True),
]


def _variant(imgsz: int, scheme: str, recipe: str) -> str:
    return f"m_{imgsz}_{scheme}" + (f"_{recipe}" if recipe else "")


def recovery_results() -> pd.DataFrame:
    rows = [
        dict(variant=_variant(imgsz, scheme, recipe), model="m", source="ours", task="pose", imgsz=imgsz,
             scheme=scheme, io="uf", metric="keypoints", ap=ap, ap_low=ap - 0.01, ap_high=ap + 0.01,
             latency_ms_median=10.0, recipe=recipe, all_int8=all_int8)
        for imgsz, scheme, recipe, ap, all_int8 in ROWS
    ]  # fmt: skip
    return validate_results(pd.DataFrame(rows))


def recovery_differences(results: pd.DataFrame) -> pd.DataFrame:
    """The comparisons 05_compare states (differences._pairs), with AP(a) − AP(b) ± 0.012."""
    ap = results.set_index("variant")["ap"]
    rows = []
    for model, imgsz, comparison, a, b in _pairs(results):
        estimate = ap[a] - ap[b]
        for metric in ("ap", "ap50"):
            rows.append(dict(
                model=model, imgsz=imgsz, comparison=comparison, a=a, b=b, metric=metric,
                estimate=estimate, low=estimate - 0.012, high=estimate + 0.012,
                excludes_zero=abs(estimate) > 0.012, n_images=450, n_boot=1000,
            ))  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def results() -> pd.DataFrame:
    return recovery_results()


@pytest.fixture
def diffs(results, tmp_path) -> pd.DataFrame:
    path = tmp_path / "differences.csv"
    recovery_differences(results).to_csv(path, index=False)
    return pd.read_csv(path)


def _diff(diffs: pd.DataFrame, a: str, comparison: str) -> str:
    row = diffs[(diffs["a"] == a) & (diffs["comparison"] == comparison) & (diffs["metric"] == "ap")].iloc[0]
    return interval_text(row["estimate"], row["low"], row["high"])


def _part(html: str, imgsz: int) -> str:
    """One (model, imgsz) part of the section, from its heading to the next."""
    return html[html.index(f"m at {imgsz} px") :].split("<h3>")[0]


def test_recovery_section_lists_every_recipe_row_with_its_intervals(results, diffs):
    html = recovery_html(diffs, results)
    assert html.count("<table>") == 2 and "m at 256 px" in html and "m at 192 px" in html
    assert "m at 320 px" not in html
    for row in results[results["recipe"] != ""].itertuples():
        label = f"{row.scheme}+{row.recipe}"
        assert row.variant in html
        assert f"{row.ap:.3f} [{row.ap_low:.3f}, {row.ap_high:.3f}]" in html
        assert _diff(diffs, row.variant, f"{label} − fp32") in html
        assert _diff(diffs, row.variant, f"{label} − {row.scheme}") in html
    # the int16x8 row: +0.040 over plain per-channel, -0.010 from fp32 (within noise), not all-int8
    row = html[html.index("m_256_int8-per-channel_split-head+int16x8") :].split("</tr>")[0]
    assert "<td>no</td>" in row and "-0.010 [-0.022, +0.002] (within noise)" in row
    assert "+0.040 [+0.028, +0.052]" in row


def test_recovery_section_names_best_all_int8_rows_not_a_more_accurate_mixed_one(results, diffs):
    html = recovery_html(diffs, results)
    sentence = _part(html, 256).split("</p>")[0]
    assert (
        "Best all-int8 int8-per-channel: <b>split-head</b> (m_256_int8-per-channel_split-head), AP 0.370, "
        "-0.030 [-0.042, -0.018] from fp32." in sentence
    )
    assert (
        "Best all-int8 int8-per-tensor: <b>split-head</b> (m_256_int8-per-tensor_split-head), AP 0.330, "
        "-0.070 [-0.082, -0.058] from fp32." in sentence
    )
    assert "int16x8" not in sentence
    # at 192 the only per-channel recipe is not all-int8: the plain file is the best all-int8 one
    at_192 = _part(html, 192).split("</p>")[0]
    assert "Best all-int8 int8-per-channel: <b>plain</b> (m_192_int8-per-channel)" in at_192
    assert "No all-int8 int8-per-tensor row." in at_192


def test_recovery_section_without_differences_shows_no_bare_differences(results):
    html = recovery_html(None, results)
    assert "no differences.csv" in html and "no interval against fp32" in html
    assert "0.370 [0.360, 0.380]" in html and "+0.020" not in html


def test_recovery_section_and_plot_need_recipe_rows(results, tmp_path):
    plain = results[results["recipe"] == ""]
    assert recovery_html(None, plain) == ""
    with pytest.raises(WorkbenchError, match="no keypoints rows with a recovery recipe"):
        plot_recovery(plain, tmp_path / "recovery.png")
    assert "recovery" not in write_all(plain, tmp_path / "plots")


def test_plot_recovery_writes_png(results, tmp_path):
    path = plot_recovery(results, tmp_path / "plots" / "recovery.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left
    assert write_all(results, tmp_path / "all")["recovery"] == tmp_path / "all" / "recovery.png"


def _run(tmp_path, name: str, results: pd.DataFrame):
    run = tmp_path / name
    run.mkdir()
    write_results_csv(results, run / "results.csv")
    (run / "status.json").write_text(json.dumps({"state": "complete", "finished": "2025-01-02T00:00:00"}))
    recovery_differences(results).to_csv(run / "differences.csv", index=False)
    return run


def test_run_report_has_recovery_part_only_with_recipe_rows(results, tmp_path):
    html = build_run_report(_run(tmp_path, "rec-0123456789ab", results)).read_text()
    assert "<h2>Recovery</h2>" in html and "plots/recovery.png" in html
    assert (
        html.index("What int8 costs here") < html.index("<h2>Recovery</h2>") < html.index("<h2>Results</h2>")
    )
    assert "Best all-int8 int8-per-tensor: <b>split-head</b>" in html
    plain = build_run_report(_run(tmp_path, "plain-0123456789ab", results[results["recipe"] == ""]))
    assert "<h2>Recovery</h2>" not in plain.read_text()
    assert not (plain.parent / "plots" / "recovery.png").exists()
