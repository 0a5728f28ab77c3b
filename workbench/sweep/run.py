"""Run a sweep: validate every cell, skip cached ones, run the rest as a Dask task graph (one
export task per (weights, task, imgsz) that its cells depend on, one task per cell keyed by its
content hash), store each row as it finishes, then time the new files alone.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import workbench.sweep.store as store
from workbench.errors import WorkbenchError
from workbench.fileio import write_text
from workbench.runlock import raise_if_interrupted, run_lock
from workbench.sweep.grid import Cell, SweepConfig
from workbench.sweep.tasks import cell_task, export_task, failed_row

CELL_THREADS = 1  # a cell's interpreter: one core per worker


@dataclass
class SweepSummary:
    """What a sweep run did: cells run now (``done``), found in the store (``cached``), ``failed``."""

    sweep_dir: str
    cells: int
    done: int
    cached: int
    failed: int
    latency_host: str | None = None
    dashboard: str | None = None

    def __post_init__(self) -> None:
        if (
            min(self.done, self.cached, self.failed) < 0
            or self.done + self.cached + self.failed != self.cells
        ):
            raise ValueError(
                f"done {self.done} + cached {self.cached} + failed {self.failed} != {self.cells} cells"
            )

    def __str__(self) -> str:
        return f"{self.done} done, {self.cached} cached, {self.failed} failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_sweep(
    sweep: SweepConfig, sweep_dir: str | Path, client=None, progress: bool = True, bench: bool = True
) -> SweepSummary:
    """Run every cell of ``sweep`` not already in the store; ``client=None`` runs in-process, serially.

    Every axis value and every dataset is checked before any task is submitted. A failing cell
    stores its error and the others go on.
    """
    sweep_dir = Path(sweep_dir).resolve()
    with run_lock(sweep_dir):  # two sweeps into one folder would compute every cell twice
        return _run_locked(sweep, sweep_dir, client, progress, bench)


def _run_locked(sweep: SweepConfig, sweep_dir: Path, client, progress: bool, bench: bool) -> SweepSummary:
    from workbench.plan import make_plan

    cells = sweep.cells()
    datasets = {}  # one plan per dataset: prepared (and its files hashed) once for every cell
    for cell in cells:
        tag = str(cell.values.get("datasets"))
        if tag not in datasets:
            datasets[tag] = make_plan(cell.config, need_training=False).dataset
    write_text(sweep_dir / "sweep.yaml", Path(sweep.source).read_text() if sweep.source else "")
    todo = [c for c in cells if not store.is_cached(sweep_dir, c.key)]
    runner = _run_distributed if client is not None else _run_serial
    rows = runner(todo, datasets, sweep_dir, client, progress)
    failed = sum(1 for r in rows if r["status"] == "failed")
    host = _time_alone(cells, sweep, sweep_dir, client) if bench else None
    _estimate_targets(cells, sweep_dir, progress)
    return SweepSummary(
        str(sweep_dir), len(cells), len(rows) - failed, len(cells) - len(todo), failed, host,
        client.dashboard_link if client is not None else None,
    )  # fmt: skip


def _export_folder(sweep_dir: Path, cell: Cell) -> str:
    return str(sweep_dir / "saved_models" / cell.export_key)


def _run_serial(todo: list[Cell], datasets, sweep_dir: Path, _client, progress: bool) -> list[dict]:
    exports: dict[str, Any] = {}
    rows = []
    for cell in tqdm(todo, desc="sweep cells", unit="cell", disable=not progress):
        raise_if_interrupted()  # a signal whose exception was lost (raised inside a __del__) stops here
        try:
            if cell.export_key not in exports:
                exports[cell.export_key] = export_task(
                    cell.weights, cell.config.imgsz[0], _export_folder(sweep_dir, cell), cell.family
                )
            dataset = datasets[str(cell.values.get("datasets"))]
            row = cell_task(cell, exports[cell.export_key], dataset, str(sweep_dir), CELL_THREADS)
        except Exception as err:  # a cell's failure is its row; the others go on
            row = failed_row(cell, err)
        store.write_row(sweep_dir, row)
        rows.append(row)
    return rows


def _run_distributed(todo: list[Cell], datasets, sweep_dir: Path, client, progress: bool) -> list[dict]:
    from distributed import as_completed

    # A cluster may serve several sweep folders: the folder is part of each task's key, so a cell
    # never takes another folder's result (its files live in that folder).
    where = hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:8]
    exports, futures = {}, {}
    for cell in todo:
        if cell.export_key not in exports:
            exports[cell.export_key] = client.submit(
                export_task, cell.weights, cell.config.imgsz[0], _export_folder(sweep_dir, cell), cell.family,
                key=f"export-{cell.export_key}-{where}",
            )  # fmt: skip
        dataset = datasets[str(cell.values.get("datasets"))]
        future = client.submit(
            cell_task, cell, exports[cell.export_key], dataset, str(sweep_dir), CELL_THREADS,
            key=f"cell-{cell.key}-{where}",
        )  # fmt: skip
        futures[future.key] = (future, cell)
    rows = []
    done = as_completed([f for f, _ in futures.values()])
    for future in tqdm(done, total=len(futures), desc="sweep cells", unit="cell", disable=not progress):
        cell = futures[future.key][1]
        row = failed_row(cell, future.exception()) if future.status == "error" else future.result()
        store.write_row(sweep_dir, row)
        rows.append(row)
    return rows


def _latency(paths: list[str], threads: int, runs: int, seed: int):
    from workbench.bench import bench_models

    return socket.gethostname(), bench_models(paths, threads=threads, runs=runs, seed=seed)


def _time_alone(cells: list[Cell], sweep: SweepConfig, sweep_dir: Path, client) -> str | None:
    """Latency of every stored file that lacks it, after the grid, interleaved, on one worker."""
    rows = [store.read_row(sweep_dir, c.key) for c in cells]
    on_host = "host" in cells[0].config.targets  # the host target's figures are these timings
    pending = [
        r for r in rows
        if r and r["status"] == "ok" and (r["latency_ms_median"] is None or (on_host and r.get("host_latency_ms") is None))
    ]  # fmt: skip
    if not pending:
        return None
    base = cells[0].config
    args = ([str(sweep_dir / r["path"]) for r in pending], base.threads, base.bench_runs, base.seed)
    if client is None:
        host, timings = _latency(*args)
    else:
        worker = sorted(client.scheduler_info()["workers"])[0]
        host, timings = client.submit(_latency, *args, workers=[worker], pure=False).result()
    for row, timing in zip(pending, timings, strict=True):
        if timing.sha256 != row["model_sha256"]:
            raise WorkbenchError("file changed while it was timed", path=sweep_dir / row["path"])
        row.update(
            latency_ms_median=timing.median_ms,
            latency_ms_p90=timing.p90_ms,
            latency_ms_min=timing.min_ms,
            threads=timing.threads,
            latency_host=host,
        )
        if on_host:
            from workbench.targets import get_target
            from workbench.targets.columns import columns

            row.update(columns(get_target("host").from_timing(timing)))
        store.write_row(sweep_dir, row)
    return host


def _estimate_targets(cells: list[Cell], sweep_dir: Path, progress: bool) -> None:
    """Each stored file's figures on the sweep's targets (but ``host``: its timings, above), for
    every row that has none yet: a target added to a finished sweep costs its estimates only, since
    ``targets`` is not part of a cell's key."""
    from workbench.targets import TargetEstimate, get_target
    from workbench.targets.columns import columns

    names = [t for t in cells[0].config.targets if t != "host"]
    rows = [store.read_row(sweep_dir, c.key) for c in cells] if names else []
    for row in tqdm([r for r in rows if r and r["status"] == "ok"], desc="targets", disable=not progress):
        todo = [t for t in names if row.get(f"{t}_latency_source") is None and row.get(f"{t}_error") is None]
        if not todo:
            continue
        path = sweep_dir / row["path"]
        for name in todo:
            try:
                estimate = get_target(name).estimate(path)
            except WorkbenchError as err:  # e.g. Vela not installed: that target's cell says so
                estimate = TargetEstimate.failed(name, path, err.message)
            row.update(columns(estimate))
        store.write_row(sweep_dir, row)
