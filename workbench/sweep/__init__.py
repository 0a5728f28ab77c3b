"""Sweeps as Dask task graphs with a queryable results store (issue 11).

- :mod:`~workbench.sweep.grid`: the sweep config, its axes and cells (content-hashed).
- :mod:`~workbench.sweep.tasks`: export and cell tasks (what workers run).
- :mod:`~workbench.sweep.store`: one Parquet row per cell, DuckDB queries.
- :mod:`~workbench.sweep.run`: :func:`run_sweep`.

On the same cluster code (:mod:`workbench.cluster`) and jobs (:mod:`workbench.jobs`) as the
report's graph (:mod:`workbench.graph`).
"""

from workbench.sweep.grid import AXES, Axis, Cell, SweepConfig
from workbench.sweep.run import SweepSummary, run_sweep
from workbench.sweep.store import query

__all__ = ["AXES", "Axis", "Cell", "SweepConfig", "SweepSummary", "query", "run_sweep"]
