"""Report sections that state differences with their intervals, and the published figures.

Read from the run folder's ``differences.csv`` (written by 05_compare, see
:mod:`workbench.differences`), so a page can be rebuilt from its files alone.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

import workbench.report.deploy as deploy
from workbench.config import Scheme
from workbench.errors import WorkbenchError
from workbench.report.published import published_table
from workbench.report.table import recovery_groups

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


def _ap_text(row: pd.Series) -> str:
    """``0.312 [0.297, 0.327]``: AP with its bootstrap 95 % interval when there is one."""
    if pd.isna(row["ap"]):
        return "—"
    if pd.isna(row["ap_low"]) or pd.isna(row["ap_high"]):
        return f"{row['ap']:.3f}"
    return f"{row['ap']:.3f} [{row['ap_low']:.3f}, {row['ap_high']:.3f}]"


Differences = dict[tuple[str, str], Any]  # (variant a, comparison) -> a differences.csv row


def _difference(by_pair: Differences, row: pd.Series, base: str) -> str:
    """AP(row) − AP(plain ``base``) with its interval, as differences.csv states it; "—" if it does not."""
    label = f"{row['scheme']}+{row['recipe']}" if row["recipe"] else row["scheme"]
    d = by_pair.get((row["variant"], f"{label} − {base}"))
    return "—" if d is None else interval_text(d.estimate, d.low, d.high)


def recovery_html(diffs: pd.DataFrame | None, results: pd.DataFrame) -> str:
    """Per model and resolution with recovery recipes: plain and recipe rows, what each recipe wins
    back (with 95 % intervals), and the best all-int8 per-channel and per-tensor rows.

    Returns "" when no row has a recipe.
    """
    groups = recovery_groups(results)
    if not groups:
        return ""
    by_pair: Differences = {}
    if diffs is not None:
        by_pair = {(r.a, r.comparison): r for r in diffs[diffs["metric"] == "ap"].itertuples()}
    fp32 = Scheme.FP32.value
    parts = [
        "<p>Recovery recipes against the plain files of the same model and resolution. "
        "<i>All-int8</i>: every op runs on 8-bit integers, what an NPU needs; a recipe that leaves "
        "float or int16 ops is not. Differences: paired bootstrap 95 % intervals over images"
        + ("" if by_pair else " (none here: no differences.csv in this run)")
        + ".</p>"
    ]
    head = "".join(
        f"<th>{h}</th>"
        for h in ("variant / recipe", "scheme", "all-int8", "AP [95 % CI]", "AP − fp32 [95 % CI]",
                  "AP − plain scheme [95 % CI]")
    )  # fmt: skip
    for (model, imgsz), rows in groups.items():
        lines = []
        for _, row in rows.iterrows():
            flag = row["all_int8"]  # True/False, None when not inspected (validate_results)
            unknown = flag is None and Scheme(row["scheme"]).is_int8
            cells = [
                (f"<b>{escape(row['recipe'])}</b>" if row["recipe"] else "plain")
                + f" <span class='muted'>{escape(row['variant'])}</span>",
                escape(row["scheme"]),
                "—" if unknown else "yes" if flag is True else "no",
                _ap_text(row),
                "—" if row["scheme"] == fp32 else _difference(by_pair, row, fp32),
                _difference(by_pair, row, row["scheme"]) if row["recipe"] else "—",
            ]
            lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        best = " ".join(
            _best_all_int8_text(rows, scheme, by_pair)
            for scheme in (Scheme.INT8_PER_CHANNEL, Scheme.INT8_PER_TENSOR)
        )
        parts.append(
            f"<h3>{escape(model)} at {imgsz} px</h3><p>{best}</p>"
            f"<table><tr>{head}</tr>{''.join(lines)}</table>"
        )
    return "\n".join(parts)


def _best_all_int8_text(rows: pd.DataFrame, scheme: Scheme, by_pair: Differences) -> str:
    """A sentence naming the most accurate all-int8 row of ``scheme`` and how far it is from fp32."""
    mask = (rows["scheme"] == scheme.value) & rows["all_int8"].map(lambda v: v is True) & rows["ap"].notna()
    if not mask.any():
        return f"No all-int8 {scheme.value} row."
    best = rows.loc[rows.loc[mask, "ap"].idxmax()]
    name = escape(best["recipe"]) if best["recipe"] else "plain"
    gap = _difference(by_pair, best, Scheme.FP32.value)
    gap = "no interval against fp32" if gap == "—" else f"{gap} from fp32"
    return (
        f"Best all-int8 {scheme.value}: <b>{name}</b> ({escape(best['variant'])}), "
        f"AP {best['ap']:.3f}, {gap}."
    )


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


def target_answer_html(df: pd.DataFrame, metric: str, budget: float | None, target: str) -> str:
    """The recommendation on ``target``'s latency, its label and error, and the reasons."""
    try:
        choice = deploy.choose(df, target, budget, metric)
    except WorkbenchError as err:
        return f"<p class='headline'>No answer for target {escape(target)}: {escape(err.message)}</p>"
    within = f", budget {budget:g} ms" if budget is not None else ""
    notes = "".join(f"<li>{escape(n)}</li>" for n in choice.notes)
    notes = f"<ul>{notes}</ul>" if notes else ""
    if choice.row is None:
        return (
            f"<p class='headline'>No variant with a latency on {escape(target)} "
            f"{'meets the budget' if budget is not None else 'to recommend'} ({escape(metric)}{within}).</p>{notes}"
        )
    best = choice.row
    return (
        f"<p class='headline'>Recommended for <b>{escape(target)}</b> ({escape(metric)}{within}): "
        f"<b>{escape(best['variant'])}</b> — AP {best['ap']:.3f} at "
        f"{escape(deploy.figure_text(best, target))}; the most accurate variant on the Pareto front of "
        f"{escape(target)}'s latency{' within the budget' if budget is not None else ''}.</p>{notes}"
    )


def targets_html(df: pd.DataFrame, metric: str) -> str:
    """Every variant's latency on each target of the table, each figure labelled by its source."""
    if not deploy.target_names(df):
        return ""
    table = deploy.targets_table(df, metric)
    return (
        f"<h2>Deployment targets ({escape(metric)})</h2><p>Each latency labelled by where it comes "
        "from: <i>measured</i> on this CPU, <i>on board</i> (the config's <code>measured_latency</code> "
        "CSV), a vendor tool's estimate (Vela: NPU ops only), or <i>fitted</i> to published board "
        "figures with its leave-one-out error. — : no figure (the results table's "
        "<code>&lt;target&gt;_error</code> says why).</p>"
        + table.to_html(index=False, na_rep="—", escape=True, border=0)
    )
