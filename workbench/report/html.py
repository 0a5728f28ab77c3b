"""HTML pages: one per run (``<run>/index.html``) and one listing all runs (``reports/index.html``).

Pages are built from files in the run folder only — ``results.csv``, ``status.json``,
``config.yaml``, ``provenance.json`` and the executed notebooks' HTML — so they can be rebuilt
at any time with ``workbench report --rebuild RUN_DIR``.

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "demo-0123456789ab"
    >>> run.mkdir()
    >>> _ = (run / "status.json").write_text('{"state": "failed", "step": "02_quantize", "error": "boom"}')
    >>> "FAILED" in build_run_report(run).read_text()
    True
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import workbench.report.plots as plots
import workbench.report.sections as sections
from workbench.config import RETIRED_TARGETS, Scheme
from workbench.errors import WorkbenchError
from workbench.fileio import check_owned_file, write_text
from workbench.report.table import (
    RESULTS_CSV,
    load_results,
    main_metric,
    pareto_front,
    recommend,
    scheme_comparison,
)

STATUS_JSON = "status.json"
CONFIG_YAML = "config.yaml"
PROVENANCE_JSON = "provenance.json"
PLOTS_DIR = "plots"

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.banner{padding:.8em 1em;border-radius:4px;font-weight:600;margin:1em 0}
.failed{background:#fde2e1;border:2px solid #c62828;color:#8e0000}
.running{background:#fff4d6;border:2px solid #d99a00}
.complete{background:#e3f4e1;border:1px solid #3a8a32}
.headline{font-size:1.15em;background:#eef3fb;border-left:4px solid #4c72b0;padding:.6em 1em}
img{max-width:100%;border:1px solid #eee} code{background:#f5f5f5;padding:0 .2em}
.muted{color:#777}
"""

_DISPLAY = {
    "variant": "variant", "source": "source", "imgsz": "imgsz", "scheme": "scheme", "io": "io",
    "metric": "metric", "ap": "AP", "ap_ci": "AP 95 % CI", "ap50": "AP50", "ap75": "AP75", "ar": "AR",
    "st_ap": "ST AP0.5",
    "latency_ms_median": "median ms", "latency_ms_p90": "p90 ms", "threads": "threads",
    "size_bytes": "flash", "activation_ram_bytes": "act. RAM", "weight_granularity": "weights",
    "worst_sqnr_db": "worst SQNR dB", "worst_sqnr_layer": "worst layer", "recipe": "recipe",
    "all_int8": "all-int8",
}  # fmt: skip


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"not valid JSON: {err}", path=path) from None
    if not isinstance(data, dict):
        raise WorkbenchError("expected a JSON object", path=path)
    return data


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json`` (written by :mod:`workbench.pipeline`), or None if absent."""
    return _read_json(Path(run_dir) / STATUS_JSON)


def _human_bytes(n: float) -> str:
    if pd.isna(n):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _fmt(fmt: str):
    return lambda v: "—" if pd.isna(v) else fmt.format(v)


def results_table_html(df: pd.DataFrame) -> str:
    """The results table as HTML: best AP first per metric, Pareto-front rows starred."""
    on_front = set()
    for metric in df["metric"].unique():
        on_front |= set(pareto_front(df[df["metric"] == metric]).index)
    shown = df.assign(front=["★" if i in on_front else "" for i in df.index])
    if shown["ap_low"].notna().any():
        shown["ap_ci"] = [
            f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else "—"
            for lo, hi in zip(shown["ap_low"], shown["ap_high"], strict=True)
        ]
    shown = shown.sort_values(["metric", "ap"], ascending=[True, False], na_position="last")
    cols = ["front"] + [c for c in _DISPLAY if c in shown.columns and shown[c].notna().any()]
    shown = shown[cols].rename(columns={**_DISPLAY, "front": "Pareto"})
    formatters = {
        "AP": _fmt("{:.3f}"), "AP50": _fmt("{:.3f}"), "ST AP0.5": _fmt("{:.3f}"), "AP75": _fmt("{:.3f}"), "AR": _fmt("{:.3f}"),
        "median ms": _fmt("{:.2f}"), "p90 ms": _fmt("{:.2f}"), "threads": _fmt("{:.0f}"),
        "worst SQNR dB": _fmt("{:.1f}"), "flash": _human_bytes, "act. RAM": _human_bytes,
    }  # fmt: skip
    return shown.to_html(index=False, na_rep="—", formatters=formatters, escape=True, border=0)


def _headline(df: pd.DataFrame, metric: str, budget: float | None) -> str:
    rows = df[df["metric"] == metric]
    if budget is not None:
        best = recommend(rows, budget, metric)
        if best is None:
            fastest = (
                rows.loc[rows["latency_ms_median"].idxmin()]
                if rows["latency_ms_median"].notna().any()
                else None
            )
            extra = (
                f" The fastest is <b>{escape(fastest['variant'])}</b> at "
                f"{fastest['latency_ms_median']:.2f} ms."
                if fastest is not None
                else ""
            )
            return f"<p class='headline'>No variant meets the {budget:g} ms budget ({escape(metric)}).{extra}</p>"
        return (
            f"<p class='headline'>Recommended ({escape(metric)}, budget {budget:g} ms): "
            f"<b>{escape(best['variant'])}</b> — AP {best['ap']:.3f} at {best['latency_ms_median']:.2f} ms "
            f"median; the most accurate variant on the Pareto front within the budget.</p>"
        )
    front = pareto_front(rows)
    if front.empty:
        return f"<p class='headline'>No {escape(metric)} row has both AP and latency.</p>"
    table = front[["variant", "ap", "latency_ms_median"]].to_html(
        index=False, formatters={"ap": _fmt("{:.3f}"), "latency_ms_median": _fmt("{:.2f}")}, border=0
    )
    return (
        f"<p class='headline'>No latency budget set: the {len(front)} Pareto-optimal variant(s) "
        f"({escape(metric)}) are the candidates — pick the most accurate one your latency allows.</p>{table}"
    )


def _int8_answer(df: pd.DataFrame, metric: str, budget: float | None) -> str:
    """The choice among int8 variants only (what NPUs run), on this CPU's latency (no ``target:``)."""
    rows = df[(df["metric"] == metric) & df["scheme"].map(lambda s: Scheme(s).is_int8)]
    best = recommend(rows, budget, metric) if not rows.empty else None
    if best is None:
        return ""
    within = f", budget {budget:g} ms" if budget is not None else ""
    return (
        f"<p class='headline'>Int8 only (what NPUs such as STM32N6 and STM32MP2 run{within}): "
        f"<b>{escape(best['variant'])}</b> — AP {best['ap']:.3f} at {best['latency_ms_median']:.2f} ms "
        "median on this CPU. CPU latency ranks variants, it does not predict an NPU's: set "
        "<code>target:</code> to a board (<code>workbench targets</code>) to rank on its latency.</p>"
    )


def _answer(df: pd.DataFrame, metric: str, budget: float | None, target: str | None) -> str:
    """The headline: on this CPU without a target, else on the target's latency with its reasons."""
    if target is None:
        return _headline(df, metric, budget) + _int8_answer(df, metric, budget)
    return sections.target_answer_html(df, metric, budget, target)


def _scheme_table_html(df: pd.DataFrame, metric: str) -> str:
    table = scheme_comparison(df, metric)
    if table.empty:
        return ""
    fractions = [c for c in table.columns if c not in ("model", "imgsz", "pt_over_pc_latency")]
    table = table.drop(columns=[c for c in table.columns if "minus" in c])  # stated with intervals above
    formatters = {c: _fmt("{:.3f}") for c in fractions if c in table.columns}
    formatters["pt_over_pc_latency"] = _fmt("{:.2f}")
    return (
        "<p>AP by scheme for each model and resolution (differences, with their intervals, above); "
        "<code>pt_over_pc_latency</code> is the per-tensor / per-channel latency ratio on this CPU.</p>"
        + table.to_html(index=False, na_rep="—", formatters=formatters, border=0)
    )


def _status_banner(status: Mapping[str, Any] | None, has_results: bool) -> str:
    if status is None:
        note = "rebuilt from results.csv (no status.json)" if has_results else "no status.json and no results"
        return f"<p class='muted'>Status: {note}.</p>"
    state = str(status.get("state", "unknown"))
    if state == "failed":
        return (
            "<div class='banner failed'>FAILED at step "
            f"<code>{escape(str(status.get('step')))}</code>: {escape(str(status.get('error')))}<br>"
            "This run is incomplete; numbers below (if any) are partial. Fix the problem and re-run the "
            "same config to resume from the failed step.</div>"
        )
    if state == "running":
        return (
            f"<div class='banner running'>RUNNING — step <code>{escape(str(status.get('step')))}</code>; "
            "this page is not a finished report.</div>"
        )
    finished = status.get("finished", "")
    return f"<div class='banner complete'>Complete {escape(str(finished))}</div>"


def _provenance_html(run_dir: Path, df: pd.DataFrame | None) -> str:
    prov = _read_json(run_dir / PROVENANCE_JSON) or {}
    config_hashes = {prov["config_hash"]} if prov.get("config_hash") else set()
    dataset_hashes = {prov["dataset_hash"]} if prov.get("dataset_hash") else set()
    package_sets = [prov["packages"]] if prov.get("packages") else []
    if df is not None:
        config_hashes |= set(df["config_hash"].dropna().astype(str))
        dataset_hashes |= set(df["dataset_hash"].dropna().astype(str))
        for text in df["packages"].dropna().unique():
            packages = json.loads(text)
            if packages not in package_sets:
                package_sets.append(packages)
    parts = [
        f"<p>config hash: {', '.join(f'<code>{escape(h)}</code>' for h in sorted(config_hashes)) or '—'}<br>"
        f"dataset hash: {', '.join(f'<code>{escape(h[:16])}</code>' for h in sorted(dataset_hashes)) or '—'}</p>"
    ]
    if len(package_sets) > 1:
        parts.append("<p><b>Rows were produced with different package versions:</b></p>")
    for packages in package_sets:
        items = "".join(
            f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in sorted(packages.items())
        )
        parts.append(f"<table><tr><th>package</th><th>version</th></tr>{items}</table>")
    return "\n".join(parts)


def _notebook_links(run_dir: Path) -> str:
    pages = sorted(p for p in run_dir.glob("*.html") if p.name != "index.html")
    notebooks = {p.stem for p in run_dir.glob("*.ipynb")}
    if not pages and not notebooks:
        return "<p class='muted'>No executed notebooks in this folder.</p>"
    items = []
    for stem in sorted({p.stem for p in pages} | notebooks):
        links = []
        if (run_dir / f"{stem}.html").is_file():
            links.append(f"<a href='{escape(stem)}.html'>{escape(stem)}</a>")
        else:
            links.append(escape(stem))
        if stem in notebooks:
            links.append(f"(<a href='{escape(stem)}.ipynb'>ipynb</a>)")
        items.append(f"<li>{' '.join(links)}</li>")
    return f"<ul>{''.join(items)}</ul>"


def _plot_html(result: Path | str) -> str:
    """An <img> for a written plot, or the reason it was not drawn."""
    if isinstance(result, str):
        return f"<p class='muted'>Not plotted: {escape(result)}.</p>"
    return f"<img src='{PLOTS_DIR}/{escape(result.name)}' alt='{escape(result.stem)}'>"


def build_run_report(
    run_dir: str | Path,
    title: str | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    latency_budget_ms: float | None = None,
) -> Path:
    """Write ``run_dir/index.html`` (and ``run_dir/plots/*.png``) from the run folder's files.

    Args:
        run_dir: a run folder (``reports/<run-id>``).
        title: page title (default: the folder name).
        config: the run's config; default ``run_dir/config.yaml`` when present.
        latency_budget_ms: budget for the headline recommendation; default ``config["latency_budget_ms"]``.

    Returns:
        Path of the written ``index.html``. A failed or running run gets a page with a clear banner.

    Raises:
        WorkbenchError: the folder is missing, or ``results.csv`` exists but is invalid.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise WorkbenchError("run folder not found", path=run_dir)
    status = read_status(run_dir)
    if config is None and (run_dir / CONFIG_YAML).is_file():
        config = yaml.safe_load((run_dir / CONFIG_YAML).read_text()) or {}
    if latency_budget_ms is None and config and config.get("latency_budget_ms") is not None:
        latency_budget_ms = float(config["latency_budget_ms"])
    df = load_results(run_dir) if (run_dir / RESULTS_CSV).is_file() else None
    title = title or run_dir.name

    body = [f"<h1>{escape(title)}</h1>", _status_banner(status, df is not None)]
    if df is None:
        body.append("<p class='muted'>No results.csv in this run folder yet.</p>")
    else:
        target = (config or {}).get("target")
        target = None if target in RETIRED_TARGETS else target  # a run folder from before: its CPU answer
        drawn = plots.write_all(
            df, run_dir / PLOTS_DIR, latency_budget_ms=latency_budget_ms, source=run_dir / RESULTS_CSV,
            target=target,
        )  # fmt: skip
        metrics = sorted(df["metric"].unique(), key=lambda m: m != main_metric(df))
        diffs = sections.read_differences(run_dir)
        for metric in metrics:
            body.append(f"<h2>Answer ({escape(metric)})</h2>")
            body.append(_answer(df, metric, latency_budget_ms, target))
            body.append(_plot_html(drawn[f"frontier_{metric}"]))
            body.append(f"<h3>What int8 costs here ({escape(metric)})</h3>")
            body.append(sections.int8_loss_html(diffs, df[df["metric"] == metric]))
            body.append(f"<h3>AP by scheme ({escape(metric)})</h3>")
            body.append(_scheme_table_html(df, metric))
        recovery = sections.recovery_html(diffs, df[df["metric"] == metrics[0]])  # as the plot: main metric
        if recovery:
            body += ["<h2>Recovery</h2>", _plot_html(drawn["recovery"]), recovery]
        body.append("<h2>Results</h2>")
        body.append(
            f"<p><a href='{RESULTS_CSV}'>{RESULTS_CSV}</a> · ★ = on the Pareto front "
            "(no other variant is both faster and more accurate)</p>"
        )
        body.append(results_table_html(df))
        body.append(sections.targets_html(df, metrics[0]))
        body.append("<h2>AP by resolution and scheme</h2>")
        for metric in metrics:
            body.append(_plot_html(drawn[f"ap_by_scheme_{metric}"]))
        body.append("<h2>Published figures (not measured here)</h2>")
        body.append(sections.published_html(str(df["task"].iloc[0])))
        body.append("<h2>Memory</h2>")
        body.append(_plot_html(drawn["size_and_ram"]))
        body.append("<h2>Quantization damage</h2>")
        body.append(_plot_html(drawn["sqnr"]))
    body.append("<h2>Notebooks</h2>")
    body.append(_notebook_links(run_dir))
    body.append("<h2>Provenance</h2>")
    body.append(_provenance_html(run_dir, df))
    if config:
        body.append("<h2>Config</h2>")
        body.append(f"<pre>{escape(yaml.safe_dump(dict(config), sort_keys=True))}</pre>")
    body.append(f"<p class='muted'>Page built {_now()} from the files in this folder.</p>")
    return write_text(run_dir / "index.html", _page(title, "\n".join(body)))


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _run_summary(run_dir: Path) -> dict[str, Any]:
    """One row of the runs index; problems with a run's files are shown in its row, not raised."""
    row: dict[str, Any] = {"run": run_dir.name, "tag": "", "date": "", "status": "", "config": "", "best": ""}
    try:
        status = read_status(run_dir) or {}
    except WorkbenchError as err:
        status = {"state": f"unreadable status.json: {err.message}"}
    row["tag"] = status.get("tag") or status.get("config_name") or ""
    row["status"] = status.get("state") or "no status"
    row["config"] = status.get("config_hash") or ""
    row["date"] = status.get("finished") or status.get("started") or ""
    results = run_dir / RESULTS_CSV
    if results.is_file():
        if not row["date"]:
            row["date"] = _dt.datetime.fromtimestamp(results.stat().st_mtime, _dt.UTC).isoformat(
                timespec="seconds"
            )
        try:
            df = load_results(run_dir)
        except WorkbenchError as err:
            row["best"] = f"invalid results.csv: {err.message}"
        else:
            if not row["config"]:
                row["config"] = ", ".join(sorted(df["config_hash"].dropna().astype(str).unique()))
            rows = df[df["ap"].notna()]
            if not rows.empty:
                best = rows.loc[rows["ap"].idxmax()]
                row["best"] = f"{best['ap']:.3f} {best['metric']} ({best['variant']})"
    return row


def build_reports_index(reports_dir: str | Path) -> Path:
    """Write ``reports_dir/index.html`` listing every run folder (newest first).

    A run folder is any sub-folder with a ``status.json``, ``results.csv`` or ``index.html``.
    """
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise WorkbenchError("reports folder not found", path=reports_dir)
    runs = [
        d for d in sorted(reports_dir.iterdir())
        if d.is_dir() and any((d / f).is_file() for f in (STATUS_JSON, RESULTS_CSV, "index.html"))
    ]  # fmt: skip
    rows = sorted((_run_summary(d) for d in runs), key=lambda r: r["date"], reverse=True)
    lines = []
    for r in rows:
        link = (
            f"<a href='{escape(r['run'])}/index.html'>report</a>"
            if (reports_dir / r["run"] / "index.html").is_file()
            else "—"
        )
        cls = " class='failed'" if r["status"] == "failed" else ""
        cells = "".join(
            f"<td>{escape(str(r[k]))}</td>" for k in ("run", "tag", "date", "status", "config", "best")
        )
        lines.append(f"<tr{cls}>{cells}<td>{link}</td></tr>")
    header = "".join(
        f"<th>{h}</th>" for h in ("run id", "tag", "date", "status", "config hash", "best AP", "link")
    )
    table = f"<table><tr>{header}</tr>{''.join(lines)}</table>" if lines else "<p>No runs yet.</p>"
    body = f"<h1>Workbench runs</h1>\n{table}\n<p class='muted'>Index built {_now()}.</p>"
    check_owned_file(
        reports_dir / "index.html", "<title>Workbench runs</title>"
    )  # never a page of the user's
    return write_text(reports_dir / "index.html", _page("Workbench runs", body))
