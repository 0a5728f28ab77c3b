"""The results table: one row per variant, read and written as ``results.csv`` in a run folder.

Every number in a report comes from this table, so a report can be rebuilt from a finished run
folder alone (:func:`workbench.report.html.build_run_report`).

Example:
    >>> import pandas as pd
    >>> df = validate_results(pd.DataFrame([
    ...     dict(variant="a", model="m", source="ours", task="pose", imgsz=256, scheme="fp32",
    ...          io="uf", metric="keypoints", ap=0.50, latency_ms_median=9.0),
    ...     dict(variant="b", model="m", source="ours", task="pose", imgsz=256, scheme="int8-per-channel",
    ...          io="uf", metric="keypoints", ap=0.48, latency_ms_median=4.0),
    ...     dict(variant="c", model="m", source="ours", task="pose", imgsz=256, scheme="int8-per-tensor",
    ...          io="uf", metric="keypoints", ap=0.40, latency_ms_median=4.5)]))
    >>> list(pareto_front(df)["variant"])
    ['b', 'a']
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import METRICS, IOType, Scheme, Task
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path
from workbench.stepcache import RESULTS_CSV

# Columns every row must have a value for (AP and latency may still be NaN for a failed measure).
REQUIRED_COLUMNS = (
    "variant", "model", "source", "task", "imgsz", "scheme", "io", "metric", "ap", "latency_ms_median",
)  # fmt: skip
# Columns that may be absent from a file (filled with NaN) or NaN in a row, e.g. no SQNR for fp32.
OPTIONAL_COLUMNS = (
    "path", "model_sha256", "size_bytes", "ap50", "ap75", "ar", "ap_low", "ap_high", "ap50_low",
    "ap50_high", "protocol", "st_ap", "latency_ms_p90", "latency_ms_min",
    "threads", "activation_ram_bytes", "weight_granularity", "worst_sqnr_db", "worst_sqnr_layer",
    "config_hash", "dataset_hash", "packages", "recipe", "all_int8",
)  # fmt: skip
RESULT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

SOURCES = ("ours", "zoo")
_FRACTIONS = ("ap", "ap50", "ap75", "ar", "ap_low", "ap_high", "ap50_low", "ap50_high", "st_ap")
_NON_NEGATIVE = (
    "latency_ms_median",
    "latency_ms_p90",
    "latency_ms_min",
    "size_bytes",
    "activation_ram_bytes",
)
_NUMERIC = _FRACTIONS + _NON_NEGATIVE + ("imgsz", "threads", "worst_sqnr_db")


def validate_results(df: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """Check a results table and return a normalised copy (all columns present, canonical order).

    Args:
        df: one row per variant.
        source: file the table came from, named in errors.

    Raises:
        WorkbenchError: a required column is missing, a variant id repeats, or a value is out of range.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise WorkbenchError(
            f"results table lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}",
            path=source,
        )
    if df.empty:
        raise WorkbenchError("results table has no rows", path=source)
    out = df.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    extra = [c for c in out.columns if c not in RESULT_COLUMNS]
    out = out[list(RESULT_COLUMNS) + extra].reset_index(drop=True)

    for col in _NUMERIC:
        converted = pd.to_numeric(out[col], errors="coerce")
        bad = out[col].notna() & converted.isna()
        if bad.any():
            raise _row_error(out, bad, f"{col} is not a number ({out.loc[bad, col].iloc[0]!r})", source)
        out[col] = converted.astype(float)
    for col in ("variant", "model", "source", "task", "scheme", "io", "metric"):
        empty = out[col].isna() | (out[col].astype(str).str.strip() == "")
        if empty.any():
            raise _row_error(out, empty, f"{col} is empty", source)
        out[col] = out[col].astype(str)
    dupes = out["variant"][out["variant"].duplicated()]
    if len(dupes):
        raise WorkbenchError(f"variant {dupes.iloc[0]!r} appears more than once", path=source)

    allowed = {
        "source": SOURCES,
        "task": tuple(t.value for t in Task),
        "scheme": tuple(s.value for s in Scheme),
        "io": tuple(i.value for i in IOType),
        "metric": METRICS,
    }
    for col, values in allowed.items():
        bad = ~out[col].isin(values)
        if bad.any():
            raise _row_error(
                out, bad, f"{col} {out.loc[bad, col].iloc[0]!r} is not one of {', '.join(values)}", source
            )
    imgsz_bad = out["imgsz"].isna() | (out["imgsz"] <= 0) | (out["imgsz"] % 1 != 0)
    if imgsz_bad.any():
        raise _row_error(out, imgsz_bad, "imgsz must be a positive integer", source)
    out["imgsz"] = out["imgsz"].astype(int)
    for col in _FRACTIONS:
        bad = out[col].notna() & ((out[col] < 0) | (out[col] > 1))
        if bad.any():
            raise _row_error(out, bad, f"{col} {out.loc[bad, col].iloc[0]} is outside [0, 1]", source)
    for col in _NON_NEGATIVE:
        bad = out[col].notna() & (out[col] < 0)
        if bad.any():
            raise _row_error(out, bad, f"{col} {out.loc[bad, col].iloc[0]} is negative", source)
    out["recipe"] = out["recipe"].fillna("").astype(str)
    flags = out["all_int8"].map(_as_flag)
    bad = out["all_int8"].notna() & flags.isna()
    if bad.any():
        raise _row_error(out, bad, f"all_int8 {out.loc[bad, 'all_int8'].iloc[0]!r} is not true/false", source)
    out["all_int8"] = flags.astype(object)
    for i, text in out["packages"].items():
        if isinstance(text, str) and text.strip():
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                raise WorkbenchError(
                    f"row {out.at[i, 'variant']!r}: packages is not a JSON object", path=source
                )
    return out


def _as_flag(value) -> bool | None:
    """True/False from a bool or its CSV spelling; None for missing or anything else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    return {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}.get(text)


def _row_error(df: pd.DataFrame, mask: pd.Series, problem: str, source) -> WorkbenchError:
    first = mask[mask].index[0]
    variant = df.at[first, "variant"] if "variant" in df.columns else first
    return WorkbenchError(f"row {variant!r}: {problem}", path=source)


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """Read and validate ``run_dir/results.csv`` (or a CSV path given directly).

    Example:
        >>> load_results("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: /nonexistent/results.csv: results file not found
    """
    path = Path(run_dir)
    if path.suffix != ".csv":
        path = path / RESULTS_CSV
    if not path.is_file():
        raise WorkbenchError("results file not found", path=path)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"not a readable CSV: {err}", path=path) from None
    return validate_results(df, source=path)


def write_results_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Validate ``df`` and write it as CSV atomically; returns the path."""
    clean = validate_results(df, source=path)
    with atomic_path(path) as tmp:
        clean.to_csv(tmp, index=False)
    return Path(path)


def pareto_front(df: pd.DataFrame, x: str = "latency_ms_median", y: str = "ap") -> pd.DataFrame:
    """Rows not dominated by another row (lower-or-equal ``x`` and higher-or-equal ``y``, one strictly).

    Rows with NaN in ``x`` or ``y`` are left out. The result is sorted by ``x`` ascending, so ``y``
    increases along it; exact duplicates of a front point are all kept.
    """
    pts = df[df[x].notna() & df[y].notna()]
    order = pts.sort_values([x, y], ascending=[True, False], kind="mergesort")
    keep = []
    best_y, best_x = -math.inf, None
    for idx, xv, yv in zip(order.index, order[x], order[y], strict=True):
        if yv > best_y:
            keep.append(idx)
            best_y, best_x = yv, xv
        elif yv == best_y and xv == best_x:
            keep.append(idx)
    return order.loc[keep]


def recommend(
    df: pd.DataFrame,
    latency_budget_ms: float | None = None,
    metric: str | None = None,
    latency: str = "latency_ms_median",
) -> pd.Series | None:
    """The variant to ship: highest AP on the Pareto front whose latency fits the budget.

    Args:
        df: validated results table.
        latency_budget_ms: latency limit; None means no limit (the most accurate front point).
        metric: which metric's rows to compare (default: the table's only or most common metric).
        latency: the latency column: this CPU's median, or a target's ``<target>_latency_ms``
            (:func:`workbench.report.deploy.choose` picks the column and the target's rules).

    Returns:
        The chosen row, or None when no row fits the budget.
    """
    rows = df[df["metric"] == (metric or main_metric(df))]
    front = pareto_front(rows, x=latency)
    if latency_budget_ms is not None:
        front = front[front[latency] <= latency_budget_ms]
    if front.empty:
        return None
    return front.loc[front["ap"].idxmax()]


def scheme_comparison(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """AP of each model and resolution by scheme, and what each step of quantization costs.

    One row per (model, imgsz) with a column of AP per scheme present, plus ``int8_pc_minus_fp32``
    (what int8 costs) and ``pt_minus_pc`` (what per-tensor costs over per-channel: ST's card gives
    -0.027 AP0.5 for YOLOv8n-pose 256), and ``pt_over_pc_latency`` where both int8 schemes exist.

    Example:
        >>> df = validate_results(pd.DataFrame([
        ...     dict(variant=f"m_{s}", model="m", source="ours", task="pose", imgsz=256, scheme=s,
        ...          io="uf", metric="keypoints", ap=ap, latency_ms_median=ms)
        ...     for s, ap, ms in (("fp32", .6, 20.), ("int8-per-channel", .58, 10.), ("int8-per-tensor", .55, 8.))]))
        >>> scheme_comparison(df)[["pt_minus_pc", "pt_over_pc_latency"]].round(3).values.tolist()
        [[-0.03, 0.8]]
    """
    rows = df[df["metric"] == (metric or main_metric(df))]
    present = [s.value for s in Scheme if s.value in set(rows["scheme"])]
    keys = ["model", "imgsz"]
    ap = rows.pivot_table(index=keys, columns="scheme", values="ap", aggfunc="max")[present]
    latency = rows.pivot_table(index=keys, columns="scheme", values="latency_ms_median", aggfunc="min")
    pc, pt, fp32 = Scheme.INT8_PER_CHANNEL.value, Scheme.INT8_PER_TENSOR.value, Scheme.FP32.value
    out = ap.copy()
    if pc in ap and fp32 in ap:
        out["int8_pc_minus_fp32"] = ap[pc] - ap[fp32]
    if pc in ap and pt in ap:
        out["pt_minus_pc"] = ap[pt] - ap[pc]
        out["pt_over_pc_latency"] = latency[pt] / latency[pc]
    out.columns.name = None
    return out.reset_index().sort_values(keys, kind="mergesort").reset_index(drop=True)


def main_metric(df: pd.DataFrame) -> str:
    """The metric most rows report (ties broken by METRICS order)."""
    counts = df["metric"].value_counts()
    return max(counts.index, key=lambda m: (counts[m], -METRICS.index(m) if m in METRICS else 0))


def has_recipes(df: pd.DataFrame) -> bool:
    """Whether any row is a recovery recipe (a non-empty ``recipe``)."""
    return "recipe" in df and bool(df["recipe"].fillna("").astype(str).ne("").any())


def recovery_groups(df: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """The rows a recovery report compares, per (model, imgsz) that has recipe rows.

    Each frame holds the plain fp32, int8 per-channel and int8 per-tensor rows (in that order), then
    the recipe rows by scheme and recipe name.
    """
    order = {s.value: i for i, s in enumerate(Scheme)}
    bases = (Scheme.FP32.value, Scheme.INT8_PER_CHANNEL.value, Scheme.INT8_PER_TENSOR.value)
    recipe = df["recipe"].fillna("").astype(str) if "recipe" in df else pd.Series("", index=df.index)
    groups = {}
    for (model, imgsz), rows in df.assign(recipe=recipe).groupby(["model", "imgsz"], sort=True):
        with_recipe = rows["recipe"] != ""
        if not with_recipe.any():
            continue
        plain = rows[~with_recipe & rows["scheme"].isin(bases)]
        recipes = rows[with_recipe].sort_values(
            ["scheme", "recipe"], key=_scheme_key(order), kind="mergesort"
        )
        groups[(str(model), int(imgsz))] = pd.concat(
            [plain.sort_values("scheme", key=_scheme_key(order), kind="mergesort"), recipes]
        )
    return groups


def _scheme_key(order: dict[str, int]) -> Callable[[pd.Series], pd.Series]:
    """A sort key ranking a scheme column by Scheme order (other columns sort as they are)."""
    return lambda col: col.map(order) if col.name == "scheme" else col
