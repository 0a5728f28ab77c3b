"""Report plots from a results table: PNG files written atomically, each function returns the path.

Figures are built with :class:`matplotlib.figure.Figure` (Agg canvas) rather than pyplot, so no
global GUI state is touched and plotting works headless and in parallel.

Example:
    >>> import pandas as pd, tempfile, pathlib
    >>> from workbench.report.table import validate_results
    >>> df = validate_results(pd.DataFrame([dict(variant="a", model="m", source="ours", task="pose",
    ...     imgsz=256, scheme="fp32", io="uf", metric="keypoints", ap=0.5, latency_ms_median=9.0)]))
    >>> plot_frontier(df, pathlib.Path(tempfile.mkdtemp()) / "f.png").stat().st_size > 0
    True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox

from workbench.config import Scheme
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path
from workbench.report.deploy import latency_axis
from workbench.report.table import has_recipes, main_metric, pareto_front, recovery_groups

SCHEME_ORDER = [s.value for s in Scheme]
SCHEME_MARKERS = {"fp32": "o", "fp16": "s", "int8-per-channel": "^", "int8-per-tensor": "v"}
SCHEME_SHORT = {"fp32": "fp32", "fp16": "fp16", "int8-per-channel": "i8-pc", "int8-per-tensor": "i8-pt"}
SCHEME_COLOURS = {
    "fp32": "#4c72b0",
    "fp16": "#8172b3",
    "int8-per-channel": "#55a868",
    "int8-per-tensor": "#dd8452",
}
METRIC_LABELS = {"keypoints": "pose AP (OKS)", "segm": "mask AP", "bbox": "box AP"}
DPI = 110


def _save(fig: Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)


def _resolution_colours(sizes) -> dict[int, tuple]:
    from matplotlib import colormaps

    sizes = sorted(set(int(s) for s in sizes))
    cmap = colormaps["viridis"]
    span = max(len(sizes) - 1, 1)
    return {s: cmap(0.1 + 0.75 * i / span) for i, s in enumerate(sizes)}


def _metric_rows(df: pd.DataFrame, metric: str | None) -> tuple[pd.DataFrame, str]:
    metric = metric or main_metric(df)
    return df[df["metric"] == metric], metric


def _short_model(name: str) -> str:
    return Path(str(name)).stem


def plot_frontier(
    df: pd.DataFrame,
    path: str | Path,
    *,
    metric: str | None = None,
    latency_budget_ms: float | None = None,
    title: str | None = None,
    target: str | None = None,
) -> Path:
    """AP against latency for every model × resolution × scheme, with the Pareto front.

    The latency is this CPU's median, or ``target``'s (``<target>_latency_ms``): a fitted estimate
    carries its error band as a horizontal bar, a figure measured on a board a black ring, and the
    axis label names each source (e.g. "Vela estimate"). Marker shape encodes the scheme, colour the
    input resolution; zoo models are drawn hollow. Where the table has them, vertical bars show
    each AP's bootstrap 95 % interval over images. The front is drawn as a step line.

    Raises:
        WorkbenchError: no row has both an AP and a latency (on the target).
    """
    axis = latency_axis(df, target)
    x = axis.column
    rows, metric = _metric_rows(df, metric)
    rows = rows[rows["ap"].notna() & rows[x].notna()]
    if rows.empty:
        raise WorkbenchError(
            f"no {metric} rows with both AP and latency{' on ' + target if target else ''} to plot"
        )
    colours = _resolution_colours(rows["imgsz"])
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    several_models = rows["model"].nunique() > 1
    band = rows[f"{target}_latency_error_pct"] if target else pd.Series(np.nan, index=rows.index)
    board = rows[f"{target}_latency_source"].eq("board") if target else pd.Series(False, index=rows.index)
    for i, r in rows.iterrows():
        colour = colours[int(r["imgsz"])]
        hollow = r["source"] == "zoo"
        ax.scatter(
            r[x], r["ap"], s=70, marker=SCHEME_MARKERS[r["scheme"]],
            facecolors="none" if hollow else [colour], edgecolors=[colour], linewidths=1.6, zorder=3,
        )  # fmt: skip
        if board[i]:  # measured on the board: ringed
            ax.scatter(r[x], r["ap"], s=220, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        xerr = r[x] * band[i] / 100 if pd.notna(band[i]) else None  # a fitted estimate's error
        yerr = None
        if pd.notna(r.get("ap_low")) and pd.notna(r.get("ap_high")):  # bootstrap 95 % interval
            yerr = [[r["ap"] - r["ap_low"]], [r["ap_high"] - r["ap"]]]
        if xerr is not None or yerr is not None:
            ax.errorbar(
                r[x], r["ap"], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, alpha=0.35, linewidth=1,
                zorder=2,
            )  # fmt: skip

    front = pareto_front(rows, x=x)
    fx = list(front[x]) + [rows[x].max() * 1.05]
    fy = list(front["ap"]) + [front["ap"].iloc[-1]]
    ax.step(fx, fy, where="post", color="#c44e52", linewidth=1.4, alpha=0.8, zorder=2)
    if latency_budget_ms is not None:
        ax.axvline(latency_budget_ms, color="#666666", linestyle="--", linewidth=1)
    lat = rows[x]
    if lat.min() > 0 and lat.max() / lat.min() > 20:  # wide latency range: log axis keeps points apart
        ax.set_xscale("log")
    ax.set_xlim(*ax.get_xlim())  # freeze limits so label positions measured below stay valid
    ax.set_ylim(*ax.get_ylim())
    _label_points(ax, fig, rows, x, several_models)
    ax.set_xlabel(axis.label if target else f"median latency (ms){_threads_note(rows)}")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title or f"Accuracy vs latency ({metric}{', ' + target if target else ''})")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=_frontier_legend(rows, colours, latency_budget_ms, board.any()), fontsize=8,
              loc="lower right", framealpha=0.9)  # fmt: skip
    return _save(fig, path)


def _label_points(ax, fig: Figure, rows: pd.DataFrame, x: str, several_models: bool) -> None:
    """Label each point, trying offsets alternately above and below until no label overprints."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    points = ax.transData.transform(rows[[x, "ap"]].to_numpy(float))
    placed = [Bbox.from_extents(px - 5, py - 5, px + 5, py + 5) for px, py in points]  # markers
    for _, r in rows.sort_values([x, "ap"]).iterrows():
        label = f"{int(r['imgsz'])} {SCHEME_SHORT[r['scheme']]}"
        if several_models:
            label = f"{_short_model(r['model'])} {label}"
        xy = (r[x], r["ap"])
        for dy in (3, -11, 12, -20, 21, -29, 30):
            text = _annotate(ax, label, xy, dy)
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            text.remove()
        else:  # crowded everywhere: keep the first position
            box = _annotate(ax, label, xy, 3).get_window_extent(renderer)
        placed.append(box)


def _frontier_legend(rows: pd.DataFrame, colours: dict, budget: float | None, board: bool) -> list:
    handles = [
        Line2D([], [], marker=SCHEME_MARKERS[s], linestyle="", color="#555555", label=s)
        for s in SCHEME_ORDER
        if s in set(rows["scheme"])
    ]
    handles += [Patch(color=c, label=f"{s} px") for s, c in colours.items()]
    handles.append(Line2D([], [], color="#c44e52", label="Pareto front"))
    if budget is not None:
        handles.append(Line2D([], [], color="#666666", linestyle="--", label=f"budget {budget:g} ms"))
    if (rows["source"] == "zoo").any():
        handles.append(
            Line2D([], [], marker="o", linestyle="", markerfacecolor="none", color="#555555",
                   label="zoo model (hollow)")
        )  # fmt: skip
    if board:
        handles.append(
            Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markersize=11, color="black",
                   label="measured on board")
        )  # fmt: skip
    return handles


def _annotate(ax, label: str, xy: tuple[float, float], dy: float):
    return ax.annotate(label, xy, xytext=(6, dy), textcoords="offset points", fontsize=7, color="#333333")


def _threads_note(rows: pd.DataFrame) -> str:
    threads = rows["threads"].dropna().unique()
    return f", {int(threads[0])} thread(s)" if len(threads) == 1 else ""


def _grouped_bars(ax, rows: pd.DataFrame, value: str, schemes: list[str]) -> list[str]:
    """Bars of ``value`` grouped by (model, imgsz), one bar per scheme; returns group labels."""
    groups = rows.groupby(["model", "imgsz"], sort=True)
    labels = []
    width = 0.8 / max(len(schemes), 1)
    for gi, ((model, imgsz), g) in enumerate(groups):
        labels.append(f"{_short_model(model)}\n{imgsz} px")
        for si, scheme in enumerate(schemes):
            vals = g.loc[g["scheme"] == scheme, value].dropna()
            if vals.empty:
                continue
            # several io types for one scheme: show the best so each bar is one number
            ax.bar(
                gi + (si - (len(schemes) - 1) / 2) * width,
                vals.max(),
                width * 0.95,
                color=SCHEME_COLOURS[scheme],
            )
    ax.legend(handles=[Patch(color=SCHEME_COLOURS[s], label=s) for s in schemes], fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    return labels


def plot_ap_by_scheme(df: pd.DataFrame, path: str | Path, *, metric: str | None = None) -> Path:
    """Grouped bars of AP: one group per model × resolution, one bar per scheme."""
    rows, metric = _metric_rows(df, metric)
    rows = rows[rows["ap"].notna()]
    if rows.empty:
        raise WorkbenchError(f"no {metric} rows with an AP to plot")
    schemes = [s for s in SCHEME_ORDER if s in set(rows["scheme"])]
    n_groups = rows.groupby(["model", "imgsz"]).ngroups
    fig = Figure(figsize=(max(5.0, 1.4 * n_groups + 2), 4.5))
    ax = fig.add_subplot()
    _grouped_bars(ax, rows, "ap", schemes)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_ylim(0, min(1.0, rows["ap"].max() * 1.15 + 0.02))
    ax.set_title(f"AP by resolution and scheme ({metric})")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def _bytes_unit(max_bytes: float) -> tuple[float, str]:
    return (1024**2, "MiB") if max_bytes >= 1024**2 else (1024, "KiB")


def plot_size_and_ram(df: pd.DataFrame, path: str | Path) -> Path:
    """Two panels of horizontal bars per variant: flash size of the model file, activation RAM."""
    rows = df[df["size_bytes"].notna() | df["activation_ram_bytes"].notna()]
    if rows.empty:
        raise WorkbenchError("no rows with size_bytes or activation_ram_bytes to plot")
    rows = rows.sort_values(["model", "imgsz", "scheme"], kind="mergesort")
    fig = Figure(figsize=(10, 1.2 + 0.32 * len(rows)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))
    colours = [SCHEME_COLOURS[s] for s in rows["scheme"]]
    for ax, col, name in zip(
        axes, ("size_bytes", "activation_ram_bytes"), ("flash (model file)", "activation RAM"), strict=True
    ):
        values = rows[col]
        scale, unit = _bytes_unit(values.max() if values.notna().any() else 0)
        ax.barh(y, (values / scale).fillna(0), color=colours)
        for yi, v in zip(y, values, strict=True):
            ax.annotate(
                "n/a" if pd.isna(v) else f"{v / scale:.1f}",
                (0 if pd.isna(v) else v / scale, yi),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_xlabel(f"{name} ({unit})")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y, list(rows["variant"]), fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("Memory: flash and activation RAM per variant")
    return _save(fig, path)


def plot_sqnr(df: pd.DataFrame, path: str | Path) -> Path:
    """Worst-layer SQNR (dB, higher is better) of int8 per-tensor vs per-channel, per resolution."""
    int8 = [Scheme.INT8_PER_CHANNEL.value, Scheme.INT8_PER_TENSOR.value]
    rows = df[df["scheme"].isin(int8) & df["worst_sqnr_db"].notna()]
    if rows.empty:
        raise WorkbenchError("no int8 rows with worst_sqnr_db to plot")
    schemes = [s for s in SCHEME_ORDER if s in set(rows["scheme"])]
    n_groups = rows.groupby(["model", "imgsz"]).ngroups
    fig = Figure(figsize=(max(5.0, 1.6 * n_groups + 2), 4.5))
    ax = fig.add_subplot()
    _grouped_bars(ax, rows, "worst_sqnr_db", schemes)
    ax.axhline(0, color="#333333", linewidth=0.8)
    ax.set_ylabel("worst-layer SQNR vs fp32 (dB)")
    ax.set_title("Quantization damage at the worst layer")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def plot_recovery(df: pd.DataFrame, path: str | Path, metric: str | None = None) -> Path:
    """Horizontal bars of AP with 95 % intervals, one panel per model × resolution with recipes.

    Bars: plain fp32, int8 per-channel and per-tensor, then each recipe; fp32's AP is a dashed line
    (its interval shaded), and int8 files that are not all-int8 are hatched.

    Raises:
        WorkbenchError: no row of ``metric`` has a recipe.
    """
    rows, metric = _metric_rows(df, metric)
    groups = recovery_groups(rows)
    if not groups:
        raise WorkbenchError(f"no {metric} rows with a recovery recipe to plot")
    sizes = [len(g) for g in groups.values()]
    fig = Figure(figsize=(8, 1.4 + 0.32 * sum(sizes) + 0.5 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False, height_ratios=sizes)[:, 0]
    shown = pd.concat(groups.values())
    top = shown[["ap", "ap_high"]].max().max()
    for ax, ((model, imgsz), g) in zip(axes, groups.items(), strict=True):
        y = np.arange(len(g))
        for yi, (_, r) in zip(y, g.iterrows(), strict=True):
            hatched = Scheme(r["scheme"]).is_int8 and r["all_int8"] is not True
            ax.barh(
                yi, 0 if pd.isna(r["ap"]) else r["ap"], color=SCHEME_COLOURS[r["scheme"]],
                hatch="///" if hatched else None, edgecolor="#333333", linewidth=0,
            )  # fmt: skip
            if pd.notna(r["ap_low"]) and pd.notna(r["ap_high"]):  # bootstrap 95 % interval
                ax.errorbar(
                    r["ap"], yi, xerr=[[r["ap"] - r["ap_low"]], [r["ap_high"] - r["ap"]]],
                    fmt="none", ecolor="#333333", capsize=2, linewidth=1,
                )  # fmt: skip
            end = r["ap_high"] if pd.notna(r["ap_high"]) else r["ap"]
            ax.annotate(
                "n/a" if pd.isna(r["ap"]) else f"{r['ap']:.3f}", (0 if pd.isna(end) else end, yi),
                xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
            )  # fmt: skip
        fp32 = g[(g["scheme"] == Scheme.FP32.value) & (g["recipe"] == "")]
        if not fp32.empty and pd.notna(fp32["ap"].iloc[0]):
            ref = fp32.iloc[0]
            ax.axvline(ref["ap"], color=SCHEME_COLOURS["fp32"], linestyle="--", linewidth=1)
            if pd.notna(ref["ap_low"]) and pd.notna(ref["ap_high"]):
                ax.axvspan(
                    ref["ap_low"], ref["ap_high"], color=SCHEME_COLOURS["fp32"], alpha=0.12, linewidth=0
                )
        labels = [f"{SCHEME_SHORT[s]} {r}".strip() for s, r in zip(g["scheme"], g["recipe"], strict=True)]
        if len(set(labels)) < len(labels):  # the same scheme and recipe in several io types
            labels = [f"{lab} ({io})" for lab, io in zip(labels, g["io"], strict=True)]
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{_short_model(model)} {imgsz} px", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlim(0, 1.0 if pd.isna(top) else min(1.0, top * 1.15 + 0.02))
    axes[-1].set_xlabel(METRIC_LABELS.get(metric, metric))
    schemes = [s for s in SCHEME_ORDER if s in set(shown["scheme"])]
    handles = [Patch(color=SCHEME_COLOURS[s], label=s) for s in schemes]
    handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="///", label="int8, not all-int8"))
    handles.append(Line2D([], [], color=SCHEME_COLOURS["fp32"], linestyle="--", label="fp32 AP"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    fig.suptitle(f"Recovery recipes: AP with 95 % intervals ({metric})")
    return _save(fig, path)


def write_all(
    df: pd.DataFrame,
    plot_dir: str | Path,
    *,
    latency_budget_ms: float | None = None,
    source: str | Path | None = None,
    target: str | None = None,
) -> dict[str, Path | str]:
    """Draw every report plot into ``plot_dir``; returns name → written path, or why it was not drawn.

    Names: ``frontier_<metric>`` and ``ap_by_scheme_<metric>`` for each metric in the table,
    ``size_and_ram``, ``sqnr``, and ``recovery`` when a row has a recipe. A plot with no data (e.g. no SQNR measured) is skipped with its
    reason. With ``source`` (the results file the table came from), a plot newer than it is kept, so
    the report page does not redraw what the compare notebook just drew.
    """
    plot_dir = Path(plot_dir)
    jobs: dict[str, tuple] = {}
    for metric in sorted(df["metric"].dropna().unique()):
        jobs[f"frontier_{metric}"] = (
            plot_frontier,
            {"metric": metric, "latency_budget_ms": latency_budget_ms, "target": target},
        )
        jobs[f"ap_by_scheme_{metric}"] = (plot_ap_by_scheme, {"metric": metric})
    jobs["size_and_ram"] = (plot_size_and_ram, {})
    jobs["sqnr"] = (plot_sqnr, {})
    if has_recipes(df):
        jobs["recovery"] = (plot_recovery, {})
    drawn: dict[str, Path | str] = {}
    for name, (func, kwargs) in jobs.items():
        path = plot_dir / f"{name}.png"
        if source is not None and path.is_file() and path.stat().st_mtime >= Path(source).stat().st_mtime:
            drawn[name] = path
            continue
        try:
            drawn[name] = func(df, plot_dir / f"{name}.png", **kwargs)
        except WorkbenchError as err:  # e.g. no SQNR in this run: say so instead of a blank plot
            drawn[name] = err.message
    return drawn
