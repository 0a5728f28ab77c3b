"""Report sections that state differences with their intervals, and the published figures.

Read from the run folder's ``differences.csv`` (written by 05_compare, see
:mod:`workbench.differences`), so a page can be rebuilt from its files alone.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd

from workbench.report.published import published_table

DIFFERENCES_CSV = "differences.csv"


def read_differences(run_dir: str | Path) -> pd.DataFrame | None:
    path = Path(run_dir) / DIFFERENCES_CSV
    return pd.read_csv(path) if path.is_file() else None


def interval_text(estimate: float, low: float, high: float) -> str:
    """``-0.088 [-0.101, -0.074]``, with the verdict a reader needs."""
    verdict = "" if low > 0 or high < 0 else " (within noise)"
    return f"{estimate:+.3f} [{low:+.3f}, {high:+.3f}]{verdict}"


def int8_loss_html(diffs: pd.DataFrame | None, results: pd.DataFrame) -> str:
    """Per model and resolution, what int8 and per-tensor cost in AP, plainly, with 95 % intervals."""
    if diffs is None or diffs.empty:
        return "<p class='muted'>No intervals: the run did not score the COCO protocol.</p>"
    ap = diffs[diffs["metric"] == "ap"]
    sentences = []
    fp32 = results[results["scheme"] == "fp32"].set_index(["model", "imgsz"])["ap"]
    for (model, imgsz), rows in ap.groupby(["model", "imgsz"], sort=True):
        by = {r.comparison: r for r in rows.itertuples()}
        parts = []
        pc, pt = by.get("int8-per-channel − fp32"), by.get("int8-per-tensor − fp32")
        base = fp32.get((model, imgsz))
        if pc is not None:
            share = f", {-pc.estimate / base:.0%} of fp32's {base:.3f}" if base and base > 0 else ""
            parts.append(
                f"int8 per-channel changes AP by {interval_text(pc.estimate, pc.low, pc.high)}{share}"
            )
        if pt is not None:
            parts.append(f"int8 per-tensor by {interval_text(pt.estimate, pt.low, pt.high)}")
        ptpc = by.get("int8-per-tensor − int8-per-channel")
        if ptpc is not None:
            parts.append(f"per-tensor vs per-channel: {interval_text(ptpc.estimate, ptpc.low, ptpc.high)}")
        if parts:
            sentences.append(f"<li><b>{escape(str(model))} at {imgsz} px</b>: " + "; ".join(parts) + ".</li>")
    n = int(diffs["n_images"].iloc[0])
    boot = int(diffs["n_boot"].iloc[0])
    intro = (
        f"<p>AP differences on the same {n} images, each with a paired bootstrap 95 % interval over "
        f"images ({boot} resamples). An interval that contains 0 is a difference this data cannot "
        "tell from noise.</p>"
    )
    return intro + (f"<ul>{''.join(sentences)}</ul>" if sentences else "") + differences_table_html(diffs)


def differences_table_html(diffs: pd.DataFrame) -> str:
    """Every stated difference (AP and AP50) as a table."""
    shown = diffs.pivot_table(
        index=["model", "imgsz", "comparison"],
        columns="metric",
        values=["estimate", "low", "high"],
        aggfunc="first",
    )
    rows = []
    for key in shown.index:
        cells = [escape(str(k)) for k in key]
        for metric in ("ap", "ap50"):
            if ("estimate", metric) in shown.columns and pd.notna(shown.loc[key, ("estimate", metric)]):
                cells.append(
                    interval_text(
                        shown.loc[key, ("estimate", metric)],
                        shown.loc[key, ("low", metric)],
                        shown.loc[key, ("high", metric)],
                    )
                )
            else:
                cells.append("—")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = (
        "<tr><th>model</th><th>imgsz</th><th>difference</th><th>AP [95 % CI]</th><th>AP50 [95 % CI]</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def published_html(task: str) -> str:
    table = published_table(task)
    if table.empty:
        return ""
    return (
        "<p class='banner running'>Published figures, quoted from the documents this project answers: "
        "measured by their authors on other images (COCO val2017 / COCO-Person) and other hardware. "
        "Not measured here; not comparable to the rows above except in rank.</p>"
        + table.to_html(index=False, na_rep="—", border=0)
    )
