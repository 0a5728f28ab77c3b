"""The report's answer for a deployment target (``target:`` in a config): which latency it ranks on,
how each figure is labelled, and what the target's own numbers say about per-channel weights.

The rules use only the results table's ``<target>_*`` columns (:mod:`workbench.targets.columns`):

- **latency**: ``<target>_latency_ms``; a file with no figure on the target (an estimator's error,
  e.g. float ops ST publishes no figure for) is left out and named.
- **granularity**: per (model, resolution, io, recipe), per-channel and per-tensor int8 are
  compared on the target. Latencies within :data:`TIE_PCT` (or the estimate's own stated error, if
  larger) count as the same, and the more accurate file is kept (the N6 and Ethos-U run both at the
  same speed: per-channel). Per-channel slower than that (the MP2, where per-channel weights fall to
  the GPU) leaves per-tensor, unless per-tensor loses more than :data:`MAX_PT_AP_LOSS` AP.
- **placement**: the chosen file's share of MACs on the accelerator and the ops it leaves off it.

No board is named here: a new target gets the same treatment from its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from workbench.config import Scheme
from workbench.errors import WorkbenchError
from workbench.report.table import main_metric, recommend

TIE_PCT = 10.0  # latencies this close (in %) count as the same, unless the estimate's error is larger
MAX_PT_AP_LOSS = 0.05  # per-tensor replaces a slower per-channel file only if it loses at most this AP
HOST_COLUMN = "latency_ms_median"
SOURCE_SUFFIX = "_latency_source"
BOARD = "board"


@dataclass(frozen=True)
class LatencyAxis:
    """The latency a report ranks on: this CPU's median (no target) or a target's column."""

    target: str | None
    column: str
    label: str


@dataclass
class Choice:
    """A recommendation on one latency axis, and why (plain sentences, escaped when rendered)."""

    axis: LatencyAxis
    row: pd.Series | None
    notes: list[str] = field(default_factory=list)


def target_names(df: pd.DataFrame) -> list[str]:
    """The targets the table has columns for, in column order."""
    return [c[: -len(SOURCE_SUFFIX)] for c in df.columns if c.endswith(SOURCE_SUFFIX)]


def target_label(target: str, source: str) -> str:
    """How a figure of ``source`` on ``target`` is labelled: ``measured on board``, ``Vela estimate
    (NPU ops only)``, ``fitted estimate``, ``measured on this CPU`` (the target's own label)."""
    from workbench.targets import get_target

    if source == BOARD:
        return "measured on board"
    try:
        known = get_target(target)
    except WorkbenchError:  # a results file from a target since unregistered: its source as written
        return f"{source} estimate" if source in ("tool", "fitted") else str(source)
    return known.latency_label if source == known.latency_source else str(source)


def latency_axis(df: pd.DataFrame, target: str | None) -> LatencyAxis:
    """The column and axis label for ``target`` (None: this CPU's median latency)."""
    if target is None:
        return LatencyAxis(None, HOST_COLUMN, "median latency on this CPU (ms)")
    if f"{target}{SOURCE_SUFFIX}" not in df.columns:
        raise WorkbenchError(
            f"target {target!r} has no columns in the results table; run the report with it in `targets:`"
        )
    sources = df[f"{target}{SOURCE_SUFFIX}"].dropna().astype(str)
    labels = [target_label(target, s) for s in sorted(set(sources), key=lambda s: (s == BOARD, s))]
    errors = df.loc[sources.index[sources == "fitted"], f"{target}_latency_error_pct"].dropna()
    if len(errors):
        labels = [
            f"{lab} (±{errors.max():g} % median error, bars)" if "fitted" in lab else lab for lab in labels
        ]
    return LatencyAxis(
        target, f"{target}_latency_ms", f"{target} latency (ms): {', '.join(labels) or 'none'}"
    )


def figure_text(row: pd.Series, target: str | None) -> str:
    """One latency with its label: ``32.9 ms (fitted estimate, ±9.6 %)``, ``18.1 ms (measured on board)``."""
    if target is None:
        value = row.get(HOST_COLUMN)
        return "—" if pd.isna(value) else f"{value:.2f} ms (median on this CPU)"
    value = row.get(f"{target}_latency_ms")
    if pd.isna(value):
        error = row.get(f"{target}_error")
        return f"— ({error})" if isinstance(error, str) and error else "—"
    source = str(row.get(f"{target}{SOURCE_SUFFIX}"))
    pct = row.get(f"{target}_latency_error_pct")
    band = f", ±{pct:g} % median leave-one-out error" if source == "fitted" and pd.notna(pct) else ""
    return f"{value:.2f} ms ({target_label(target, source)}{band})"


def choose(
    df: pd.DataFrame,
    target: str | None,
    latency_budget_ms: float | None = None,
    metric: str | None = None,
    int8_only: bool = False,
) -> Choice:
    """The recommendation on ``target``'s latency (see the module docstring for the rules)."""
    metric = metric or main_metric(df)
    axis = latency_axis(df, target)
    rows = df[df["metric"] == metric]
    if int8_only:
        rows = rows[rows["scheme"].map(lambda s: Scheme(s).is_int8)]
    notes: list[str] = []
    if target is not None:
        missing = rows[rows[axis.column].isna()]
        if not missing.empty:
            errors = missing[f"{target}_error"].dropna().astype(str)
            why = f"; e.g. {errors.iloc[0]}" if len(errors) else ""
            notes.append(
                f"{len(missing)} file(s) have no latency on {target} and are left out: "
                f"{', '.join(missing['variant'].astype(str))}{why}"
            )
        rows, granularity = _granularity(rows[rows[axis.column].notna()], target)
        notes += granularity
    best = recommend(rows, latency_budget_ms, metric, latency=axis.column) if not rows.empty else None
    if best is not None and target is not None:
        notes.append(placement_text(best, target))
    return Choice(axis, best, notes)


def _granularity(rows: pd.DataFrame, target: str) -> tuple[pd.DataFrame, list[str]]:
    """Per-channel against per-tensor on ``target``: the rows kept, and a sentence per pair."""
    col, err = f"{target}_latency_ms", f"{target}_latency_error_pct"
    pc, pt = Scheme.INT8_PER_CHANNEL.value, Scheme.INT8_PER_TENSOR.value
    keep = pd.Series(True, index=rows.index)
    notes = []
    for (model, imgsz, _io, recipe), group in rows.groupby(["model", "imgsz", "io", "recipe"], sort=True):
        a, b = group[group["scheme"] == pc], group[group["scheme"] == pt]
        if a.empty or b.empty or a["ap"].isna().all() or b["ap"].isna().all():
            continue
        a, b = a.iloc[0], b.iloc[0]
        band = max([TIE_PCT] + [float(v) for v in (a.get(err), b.get(err)) if pd.notna(v)])
        ratio = a[col] / b[col]
        name = f"{model} {imgsz}{' +' + recipe if recipe else ''}"
        timing = f"{a[col]:.1f} vs {b[col]:.1f} ms"
        if abs(ratio - 1) * 100 <= band:
            winner, loser = (a, b) if a["ap"] >= b["ap"] else (b, a)
            keep[loser.name] = False
            notes.append(
                f"{name}: per-channel and per-tensor take the same time on {target} ({timing}, within "
                f"±{band:g} %), so the more accurate {winner['scheme']} is kept "
                f"(AP {winner['ap']:.3f} vs {loser['ap']:.3f})"
            )
        elif ratio > 1 and a["ap"] - b["ap"] <= MAX_PT_AP_LOSS:
            keep[a.name] = False
            share = a.get(f"{target}_accelerator_mac_share")
            where = f"; {share:.0%} of its MACs on the accelerator" if pd.notna(share) else ""
            notes.append(
                f"{name}: per-channel takes {ratio:.1f}x per-tensor's time on {target} ({timing}{where}), "
                f"so per-tensor is kept (AP {b['ap']:.3f}, {b['ap'] - a['ap']:+.3f} against per-channel)"
            )
        elif ratio > 1:
            notes.append(
                f"{name}: per-channel takes {ratio:.1f}x per-tensor's time on {target} ({timing}), but "
                f"per-tensor loses {a['ap'] - b['ap']:.3f} AP (more than {MAX_PT_AP_LOSS:g}): both stay"
            )
    return rows[keep], notes


def placement_text(row: pd.Series, target: str) -> str:
    """Where the chosen file runs on ``target``: MAC share and the ops that leave the accelerator."""
    share = row.get(f"{target}_accelerator_mac_share")
    fallback = row.get(f"{target}_fallback_ops")
    fallback = fallback if isinstance(fallback, str) and fallback.strip() else ""
    if pd.isna(share):
        return f"{row['variant']} on {target}: no accelerator figure (every op on the CPU)"
    off = f"off the accelerator: {fallback}" if fallback else "no op leaves the accelerator"
    return f"{row['variant']} on {target}: {share:.0%} of its MACs on the accelerator; {off}"


def targets_table(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """AP and each target's latency per variant (text cells, labelled), one row per variant."""
    metric = metric or main_metric(df)
    rows = df[df["metric"] == metric].sort_values(["source", "model", "imgsz", "scheme", "variant"])
    names = target_names(df)
    out = pd.DataFrame(
        {
            "variant": rows["variant"].astype(str),
            "source": rows["source"].astype(str),
            "AP": rows["ap"].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}"),
        }
    )
    if rows["st_ap"].notna().any():
        out["ST AP0.5"] = rows["st_ap"].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
    for name in names:
        out[name] = [_cell(r, name) for _, r in rows.iterrows()]
    off = [
        "; ".join(
            f"{n}: {r[f'{n}_fallback_ops']}"
            for n in names
            if pd.notna(r.get(f"{n}_latency_ms"))
            and isinstance(r.get(f"{n}_fallback_ops"), str)
            and r[f"{n}_fallback_ops"].strip()
        )  # fmt: skip  (a file with no figure on a target: its error says why, not a list of every op)
        for _, r in rows.iterrows()
    ]
    if any(off):
        out["ops off the accelerator"] = off
    return out.reset_index(drop=True)


def _cell(row: pd.Series, target: str) -> str:
    """A compact latency cell: ``32.9 ±3.2 ms est.``, ``19.4 ms Vela``, ``18.1 ms board``, ``—``."""
    value = row.get(f"{target}_latency_ms")
    if pd.isna(value):
        return "—"
    source = str(row.get(f"{target}{SOURCE_SUFFIX}"))
    pct = row.get(f"{target}_latency_error_pct")
    if source == "fitted" and pd.notna(pct):
        return f"{value:.1f} ±{value * pct / 100:.1f} ms (fitted)"
    short = {"tool": "tool est.", "measured": "measured", BOARD: "on board"}.get(source, source)
    if source == "tool":
        short = target_label(target, source).split(" (")[0]  # "Vela estimate"
    return f"{value:.1f} ms ({short})"


def markdown_table(table: pd.DataFrame) -> str:
    """A table of text cells as GitHub markdown (for docs)."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += [
        "| " + " | ".join(str(v).replace("|", "/") for v in r) + " |" for r in table.itertuples(index=False)
    ]
    return "\n".join(lines)
