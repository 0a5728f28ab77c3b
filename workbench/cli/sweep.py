"""`workbench sweep`: every (model × imgsz × scheme × calib_images × dataset) cell a Dask task,
results in a Parquet store queried with DuckDB."""

from __future__ import annotations

from pathlib import Path

from workbench.cli import print_json


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of conversions and evaluations on a Dask cluster")
    p.add_argument(
        "--config", required=True, help="sweep YAML: a RunConfig with lists along axes, and `exclude:`"
    )
    p.add_argument("--out", help="sweep folder (default: <out_dir>/sweeps/<name>)")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument(
        "--workers", type=int, help="local worker processes (default: one per core; 0: in-process, serial)"
    )
    p.add_argument("--query", metavar="SQL", help="run SQL over the stored rows (view `results`) instead")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.config import resolve_path
    from workbench.errors import WorkbenchError
    from workbench.safeload import trust_weights
    from workbench.sweep import SweepConfig, query, run_sweep
    from workbench.sweep.cluster import open_client

    sweep = SweepConfig.from_yaml(args.config)
    trust_weights(sweep.base.get("trust_weights") is True)  # local Dask workers inherit it (safeload)
    out = (
        Path(args.out)
        if args.out
        else resolve_path(sweep.base.get("out_dir", "reports")) / "sweeps" / sweep.name
    )
    if args.query is not None:  # "" is an empty query, refused; not "run the sweep"
        frame = query(out, args.query)
        if args.json:
            print_json(frame.to_dict(orient="records"))
        else:
            print(frame.to_string(index=False))
        return 0
    if args.workers is not None and args.workers < 0:
        raise WorkbenchError(f"--workers must be 0 (serial) or more, got {args.workers}")
    sweep.cells()  # every axis value checked before a cluster starts or a task is submitted
    if args.workers == 0 and not args.scheduler:
        summary = run_sweep(sweep, out)
    else:
        with open_client(args.scheduler, args.workers) as client:
            print(f"dashboard: {client.dashboard_link}", flush=True)
            summary = run_sweep(sweep, out, client=client)
    if args.json:
        print_json(summary.to_dict())
    else:
        where = f"; latency timed alone on {summary.latency_host}" if summary.latency_host else ""
        print(
            f"{summary}{where}; rows in {out}/results (query: workbench sweep --config {args.config} --query SQL)"
        )
    return 1 if summary.failed else 0
