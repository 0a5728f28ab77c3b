"""Report layer: results table, Pareto front, plots and HTML pages — from result files only.

A finished run folder (``reports/<run-id>/``) holds everything a report needs, so
``build_run_report(run_dir)`` can rebuild the page at any time without re-running anything.

Example:
    >>> from workbench.report import load_results, pareto_front, build_run_report  # doctest: +SKIP
    >>> df = load_results("reports/default-0123456789ab")  # doctest: +SKIP
    >>> pareto_front(df)[["variant", "ap", "latency_ms_median"]]  # doctest: +SKIP
"""

from workbench.report.html import build_reports_index, build_run_report, read_status, results_table_html
from workbench.report.plots import (
    plot_ap_by_scheme,
    plot_frontier,
    plot_recovery,
    plot_size_and_ram,
    plot_sqnr,
)
from workbench.report.table import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    RESULT_COLUMNS,
    RESULTS_CSV,
    load_results,
    main_metric,
    pareto_front,
    recommend,
    scheme_comparison,
    validate_results,
    write_results_csv,
)

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "RESULT_COLUMNS",
    "RESULTS_CSV",
    "build_reports_index",
    "build_run_report",
    "load_results",
    "main_metric",
    "pareto_front",
    "plot_ap_by_scheme",
    "plot_frontier",
    "plot_recovery",
    "plot_size_and_ram",
    "plot_sqnr",
    "read_status",
    "recommend",
    "results_table_html",
    "scheme_comparison",
    "validate_results",
    "write_results_csv",
]
