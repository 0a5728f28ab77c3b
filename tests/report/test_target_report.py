"""`target:` in reports (issue 19): the recommendation and frontier on a target's latency, figures
labelled by source, the measured_latency CSV as untrusted input."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from workbench.config import RunConfig
from workbench.errors import WorkbenchError
from workbench.report import build_run_report, plot_frontier, validate_results, write_results_csv
from workbench.report.deploy import choose, latency_axis, targets_table
from workbench.targets.measured import apply_measured, read_measured_latency

PC, PT = "int8-per-channel", "int8-per-tensor"
# per target: (latency of per-channel, of per-tensor) at 256 px, source, error %, MAC share pc / pt
BOARDS = {
    "stm32n6": ((32.9, 32.9), "fitted", 9.6, (1.0, 1.0)),  # the N6 runs both on the NPU
    "stm32mp2": ((101.0, 17.4), "fitted", 10.1, (0.0, 1.0)),  # per-channel falls to the GPU
    "ethos-u55-256": ((19.37, 18.30), "tool", None, (1.0, 1.0)),
}


def results(fallback: str = "1x DEQUANTIZE") -> pd.DataFrame:
    """One model at 256 and 320 px: fp32 (no figure on a board), per-channel 0.015 AP above per-tensor."""
    rows = []
    for imgsz in (256, 320):
        scale = (imgsz / 256) ** 2
        for scheme, ap in (("fp32", 0.52), (PC, 0.50), (PT, 0.485)):
            row = dict(
                variant=f"m_{imgsz}_{scheme}_uf", model="m", source="ours", task="pose", imgsz=imgsz,
                scheme=scheme, io="uf", metric="keypoints", ap=ap + (imgsz - 256) / 1000,
                latency_ms_median=20.0 * scale, path=f"variants/m/{imgsz}/{scheme}-uf.tflite",
                model_sha256=f"{imgsz:02x}{len(scheme):02x}".ljust(64, "0"),
            )  # fmt: skip
            for target, (ms, source, pct, share) in BOARDS.items():
                on_board = scheme != "fp32"
                k = 0 if scheme == PC else 1
                row |= {
                    f"{target}_latency_ms": ms[k] * scale if on_board else None,
                    f"{target}_latency_source": source if on_board else None,
                    f"{target}_latency_error_pct": pct if on_board else None,
                    f"{target}_accelerator_mac_share": share[k] if on_board else None,
                    f"{target}_fallback_ops": fallback if on_board else "",
                    f"{target}_error": None if on_board else "no op runs on the NPU",
                }
            rows.append(row)
    return validate_results(pd.DataFrame(rows))


@pytest.mark.parametrize(
    "target, scheme",
    [("stm32n6", PC), ("ethos-u55-256", PC), ("stm32mp2", PT)],
)
def test_the_recommendation_follows_the_targets_latency(target, scheme):
    choice = choose(results(), target)
    assert choice.row is not None and choice.row["scheme"] == scheme and choice.row["imgsz"] == 320
    text = " ".join(choice.notes)
    assert "m_256_fp32" in text  # left out: no figure on the board, said so
    if scheme == PT:
        assert "per-channel takes 5.8x per-tensor's time" in text and "0% of its MACs" in text
    else:
        assert "take the same time" in text


def test_without_a_target_the_cpu_decides_and_a_budget_still_applies():
    df = results()
    assert choose(df, None).row["scheme"] == "fp32"  # the CPU runs fp32: most accurate
    tight = choose(df, "stm32mp2", latency_budget_ms=20.0)
    assert tight.row["variant"] == "m_256_int8-per-tensor_uf"
    assert choose(df, "stm32n6", latency_budget_ms=1.0).row is None


def test_per_tensor_is_not_taken_when_it_loses_too_much():
    df = results()
    df.loc[df["scheme"] == PT, "ap"] -= 0.2  # a broken per-tensor file
    choice = choose(df, "stm32mp2")
    assert choice.row["scheme"] == PC and "both stay" in " ".join(choice.notes)


def test_the_page_names_the_ops_that_leave_the_accelerator(tmp_path):
    for target, scheme in (("stm32n6", PC), ("stm32mp2", PT)):
        run = tmp_path / target
        run.mkdir()
        write_results_csv(results(fallback="2x GATHER, 1x DEQUANTIZE"), run / "results.csv")
        (run / "config.yaml").write_text(yaml.safe_dump({"target": target}))
        page = build_run_report(run).read_text()
        headline = re.search(r"Recommended for <b>(.*?)</b>.*?<b>(.*?)</b>(.*?)</p>", page)
        assert headline and headline.group(1) == target and scheme in headline.group(2)
        assert "fitted estimate, ±" in headline.group(3)
        assert "off the accelerator: 2x GATHER, 1x DEQUANTIZE" in page
        assert "<h2>Deployment targets" in page and (run / "plots" / "frontier_keypoints.png").is_file()


def test_figures_are_labelled_estimate_tool_or_measured_on_board(tmp_path):
    df = results().to_dict("records")
    board = read_csv(tmp_path, "file,target,ms,note\nm_320_int8-per-tensor_uf,stm32mp2,25.0,MP257F-DK2\n")
    apply_measured(
        df, board, [{"variant": r["variant"], "path": r["path"], "sha256": r["model_sha256"]} for r in df]
    )
    df = validate_results(pd.DataFrame(df))
    measured = df[df["variant"] == "m_320_int8-per-tensor_uf"].iloc[0]
    assert measured["stm32mp2_latency_source"] == "board" and measured["stm32mp2_latency_ms"] == 25.0
    assert measured["stm32mp2_estimate_ms"] == pytest.approx(17.4 * 1.5625)  # the estimate it replaced
    assert pd.isna(measured["stm32mp2_latency_error_pct"])
    table = targets_table(df).set_index("variant")
    assert table.loc["m_320_int8-per-tensor_uf", "stm32mp2"] == "25.0 ms (on board)"
    assert table.loc["m_256_int8-per-tensor_uf", "stm32mp2"] == "17.4 ±1.8 ms (fitted)"
    assert table.loc["m_256_int8-per-tensor_uf", "ethos-u55-256"] == "18.3 ms (Vela estimate)"
    assert table.loc["m_256_fp32_uf", "stm32n6"] == "—"
    label = latency_axis(df, "stm32mp2").label
    assert "fitted estimate (±10.1 % median error, bars)" in label and "measured on board" in label
    assert "Vela estimate (NPU ops only)" in latency_axis(df, "ethos-u55-256").label
    assert "measured on board" in " ".join(choose(df, "stm32mp2").notes + [label])
    png = plot_frontier(df, tmp_path / "f.png", target="stm32mp2")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_target_the_table_lacks_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="target 'ethos-u85-256' has no columns"):
        plot_frontier(results(), tmp_path / "f.png", target="ethos-u85-256")


# ---- config ----------------------------------------------------------------------------------
def test_target_names_a_registered_target_and_joins_targets():
    cfg = RunConfig(target="stm32n6", targets=["host"])
    assert cfg.targets == ["host", "stm32n6"]
    with pytest.raises(WorkbenchError, match="'npu' is no longer accepted: name a board: stm32mp2"):
        RunConfig(target="npu")
    with pytest.raises(WorkbenchError, match="name `host`"):
        RunConfig(target="cpu")


def test_an_unknown_target_is_refused_by_the_plan(tmp_path):
    from workbench.plan import make_plan

    with pytest.raises(
        WorkbenchError, match=r"cfg.yaml: unknown target 'stm32h9'; valid targets: ethos-u55-128"
    ):
        make_plan(RunConfig(target="stm32h9"), source=str(tmp_path / "cfg.yaml"))


# ---- measured_latency: untrusted input -------------------------------------------------------
def read_csv(folder, text: str, targets=("host", "stm32mp2", "stm32n6")):
    path = folder / "board.csv"
    path.write_text(text)
    return read_measured_latency(path, list(targets))


@pytest.mark.parametrize(
    "text, problem",
    [
        ("file,target\nm.tflite,stm32mp2\n", "line 1: header must be file,target,ms"),
        ("file,target,ms\nm.tflite,stm32mp9,3\n", "line 2: unknown target 'stm32mp9'; valid targets:"),
        (
            "file,target,ms\nm.tflite,ethos-u55-256,3\n",
            "line 2: target 'ethos-u55-256' is not among the config's targets",
        ),
        (
            "file,target,ms\na.tflite,stm32mp2,3\nb.tflite,stm32mp2,-1\n",
            "line 3: ms must be a positive number",
        ),
        ("file,target,ms\na.tflite,stm32mp2,fast\n", "line 2: ms 'fast' is not a number"),
        ("file,target,ms\na.tflite,stm32mp2,nan\n", "line 2: ms must be a positive number"),
        (
            "file,target,ms\na.tflite,stm32mp2,3\n\na.tflite,stm32mp2,4\n",
            "line 4: a.tflite on stm32mp2 is given twice",
        ),
        ("file,target,ms\n../a.tflite,stm32mp2,3\n", "line 2: file must be a name or a sha256, not a path"),
        ("file,target,ms\na.tflite,stm32mp2\n", "line 2: 2 fields, the header has 3"),
        ("file,target,ms\n", "has a header but no rows"),
        ("", "is empty"),
    ],
)
def test_a_bad_measured_latency_csv_is_one_error_naming_the_file_and_line(tmp_path, text, problem):
    with pytest.raises(WorkbenchError) as err:
        read_csv(tmp_path, text)
    assert str(err.value).startswith(f"{tmp_path / 'board.csv'}: ") and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_measured_rows_must_name_one_file_of_the_run(tmp_path):
    df = results().to_dict("records")
    files = [{"variant": r["variant"], "path": r["path"], "sha256": r["model_sha256"]} for r in df]
    by_sha = read_csv(tmp_path, f"file,target,ms\n{files[1]['sha256'].upper()},stm32n6,30\n")
    apply_measured(df, by_sha, files)
    assert df[1]["stm32n6_latency_source"] == "board" and df[1]["stm32n6_latency_ms"] == 30
    with pytest.raises(WorkbenchError, match=r"board.csv: line 2: 'gone.tflite' names no file of this run"):
        apply_measured(df, read_csv(tmp_path, "file,target,ms\ngone.tflite,stm32n6,3\n"), files)
    with pytest.raises(WorkbenchError, match=r"line 2: 'int8-per-tensor-uf.tflite' names 2 files"):
        apply_measured(df, read_csv(tmp_path, "file,target,ms\nint8-per-tensor-uf.tflite,stm32n6,3\n"), files)


def test_the_cli_refuses_a_bad_csv_before_any_work(tmp_path, capsys):
    from workbench.cli import main

    (tmp_path / "board.csv").write_text("file,target,ms\nm.tflite,stm32mp2,soon\n")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "target": "stm32mp2",
                "measured_latency": str(tmp_path / "board.csv"),
                "out_dir": str(tmp_path / "reports"),
            }
        )  # fmt: skip
    )
    assert main(["report", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tmp_path / 'board.csv'}: line 2: ms 'soon' is not a number" in err
    assert "Traceback" not in err and not (tmp_path / "reports").exists()


def test_the_csv_content_counts_in_the_config_hash(tmp_path):
    path = tmp_path / "board.csv"
    path.write_text("file,target,ms\na.tflite,stm32mp2,3\n")
    before = RunConfig(target="stm32mp2", measured_latency=str(path)).hash
    path.write_text("file,target,ms\na.tflite,stm32mp2,4\n")
    assert RunConfig(target="stm32mp2", measured_latency=str(path)).hash != before


def test_a_run_folder_of_the_old_target_npu_rebuilds_on_the_cpu(tmp_path):
    write_results_csv(results(), tmp_path / "results.csv")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"target": "npu"}))
    page = build_run_report(tmp_path).read_text()
    assert "Int8 only" in page and "Recommended for" not in page


def test_compare_puts_the_board_figure_in_results_csv(tmp_path, monkeypatch):
    """steps.compare: the plan's board rows replace the estimates in results.csv, labelled."""
    import dataclasses
    import json

    import workbench.differences
    from workbench.plan import make_plan
    from workbench.report import load_results
    from workbench.steps import compare
    from workbench.targets.measured import BoardLatency

    cfg = RunConfig(model="data/weights/yolov8n-pose-synth.pt", imgsz=[96], synth_train=4, synth_val=2,
                    synth_imgsz=96, epochs=0, target="stm32mp2")  # fmt: skip
    df = results()
    board = BoardLatency("m_256_int8-per-tensor_uf", "stm32mp2", 16.0, 2, str(tmp_path / "board.csv"), "DK2")
    plan = dataclasses.replace(make_plan(cfg), measured=(board,))
    variants = [
        {k: r[k] for k in ("model", "source", "task", "imgsz", "scheme", "io", "path")}
        | {"name": r["variant"], "sha256": r["model_sha256"], "size_bytes": 1000}
        for r in df.to_dict("records")
    ]
    evaluated = [
        {"variant": r["variant"], "metric": "keypoints", "ap": r["ap"]} for r in df.to_dict("records")
    ]
    timed = [
        {
            k: v
            for k, v in r.items()
            if k == "variant" or k == "latency_ms_median" or k.startswith("stm32mp2_")
        }
        for r in df.to_dict("records")
    ]
    for step, rows in (("variants", variants), ("evaluate", evaluated), ("benchmark", timed)):
        (tmp_path / "results").mkdir(exist_ok=True)
        (tmp_path / "results" / f"{step}.json").write_text(json.dumps(rows, default=str))
    monkeypatch.setattr(
        workbench.differences,
        "ap_differences",
        lambda *a, **k: (pd.DataFrame({"variant": []}), pd.DataFrame()),
    )
    compare(plan, tmp_path)
    out = load_results(tmp_path).set_index("variant")
    row = out.loc["m_256_int8-per-tensor_uf"]
    assert row["stm32mp2_latency_ms"] == 16.0 and row["stm32mp2_latency_source"] == "board"
    assert (
        row["stm32mp2_estimate_ms"] == pytest.approx(17.4)
        and row["stm32mp2_measured_note"] == "board.csv line 2: DK2"
    )
    assert out.loc["m_320_int8-per-tensor_uf", "stm32mp2_latency_source"] == "fitted"  # others: estimates
    assert (tmp_path / "plots" / "frontier_keypoints.png").is_file()


def test_target_text_on_the_page_is_escaped(tmp_path):
    write_results_csv(results(fallback="1x <script>alert(1)</script>"), tmp_path / "results.csv")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"target": "stm32n6"}))
    page = build_run_report(tmp_path).read_text()
    assert "<script>" not in page and "1x &lt;script&gt;alert(1)&lt;/script&gt;" in page
