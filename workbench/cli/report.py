"""`workbench report`: run the notebooks for a config and build the HTML report, or rebuild one.

Examples::

    workbench report --config configs/default.yaml --tag baseline
    workbench report --rebuild reports/baseline-3f2a9c1d0e4b

One process per run folder: a second ``workbench report`` on the same config and tag is refused
(exit 2, naming the process that holds the folder) unless ``--wait`` is given. Any failure,
including SIGTERM and Ctrl-C, leaves ``status.json`` saying ``failed`` at the step, a FAILED page
and an updated index.
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.runlock import Interrupted, run_lock
from workbench.safeload import trust_weights

NOTEBOOK_GLOB = "0[1-5]_*.ipynb"


def register(sub) -> None:
    parser = sub.add_parser("report", help="run the pipeline notebooks and build the HTML report")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=Path, help="run config YAML: run the notebooks, then build the report")
    what.add_argument(
        "--rebuild",
        type=Path,
        metavar="RUN_DIR",
        help="rebuild a run folder's report from its result files only (no notebook runs)",
    )
    parser.add_argument("--tag", help="run label (default: the config's name); run id is <tag>-<config hash>")
    parser.add_argument("--force", action="store_true", help="re-run every notebook even if cached")
    parser.add_argument(
        "--reports-dir", type=Path, help="parent of run folders (default: the config's out_dir)"
    )
    parser.add_argument(
        "--notebooks-dir",
        type=Path,
        help=f"folder holding the pipeline notebooks {NOTEBOOK_GLOB} (default: the repository's notebooks/)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="if another process is running this run folder, wait for it"
    )
    parser.add_argument(
        "--latency-budget",
        type=float,
        metavar="MS",
        help="latency budget for the recommended variant (ms: on the config's target, else median here)",
    )
    parser.add_argument(
        "--allow-download",
        action="store_true",
        help="let Ultralytics download weights named in the config but found nowhere locally",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object describing the result")
    parser.set_defaults(func=run)


def run(args) -> int:
    from workbench.config import RunConfig, resolve_path
    from workbench.pipeline import STATUS_JSON, run_id_for, run_pipeline
    from workbench.report import build_reports_index, build_run_report

    if args.rebuild is not None:
        return _rebuild(args)

    from workbench.cluster import ReportCluster
    from workbench.steps import preflight

    config = RunConfig.from_yaml(args.config, allow_download=True if args.allow_download else None)
    trust_weights(config.trust_weights)  # kernels and Dask workers inherit it
    # weights, data fields and image files are checked before the first notebook starts
    plan = preflight(config, source=str(args.config))
    notebooks_dir = args.notebooks_dir or resolve_path("notebooks")
    notebooks = sorted(notebooks_dir.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise WorkbenchError(f"no pipeline notebooks matching {NOTEBOOK_GLOB}", path=notebooks_dir)
    reports_dir = args.reports_dir or Path(config.out_dir)
    run_dir = reports_dir / run_id_for(config, args.tag)
    title = f"{config.name}: {config.task.value}, {', '.join(map(str, config.imgsz))} px"
    with run_lock(run_dir, wait=args.wait), ReportCluster(config.workers) as cluster:
        try:
            result = run_pipeline(
                config,
                notebooks,
                reports_dir,
                tag=args.tag,
                force=args.force,
                step_context=cluster.step,
                plan=plan,
            )
        except BaseException as err:
            # WorkbenchError, SIGTERM, Ctrl-C, a bug: if execution started, show it on the pages
            if (run_dir / STATUS_JSON).is_file():
                page = build_run_report(
                    run_dir, title, config.to_dict(), latency_budget_ms=args.latency_budget
                )
                build_reports_index(reports_dir)
                if isinstance(err, Interrupted):
                    err.detail = f"run marked failed; {page}"
            raise
        page = build_run_report(
            result.run_dir, title, config.to_dict(), latency_budget_ms=args.latency_budget
        )
        index = build_reports_index(reports_dir)
    return _done(args, {**result.to_dict(), "report": str(page), "index": str(index)}, page)


def _rebuild(args) -> int:
    from workbench.pipeline import STATUS_JSON
    from workbench.report import RESULTS_CSV, build_reports_index, build_run_report

    run_dir = args.rebuild
    if not run_dir.is_dir():
        raise WorkbenchError("run folder not found", path=run_dir)
    if not any((run_dir / name).is_file() for name in (STATUS_JSON, RESULTS_CSV)):
        raise WorkbenchError(
            f"not a run folder (no {STATUS_JSON} or {RESULTS_CSV}); pass reports/<run-id>", path=run_dir
        )
    with run_lock(run_dir, wait=args.wait):
        page = build_run_report(run_dir, latency_budget_ms=args.latency_budget)
        index = build_reports_index(run_dir.resolve().parent)
    return _done(args, {"run_dir": str(run_dir), "report": str(page), "index": str(index)}, page)


def _done(args, summary: dict, page: Path) -> int:
    from workbench.cli import print_json

    if args.json:
        print_json(summary)
    else:
        print(f"report: {page}")
    return 0
