"""Sweeps as Dask task graphs with a queryable results store (issue 11).

- :mod:`~workbench.sweep.grid`: the sweep config, its axes and cells (content-hashed).
- :mod:`~workbench.sweep.cluster`: a local or existing `distributed` cluster.
- :mod:`~workbench.sweep.tasks`: export and cell tasks (what workers run).
- :mod:`~workbench.sweep.store`: one Parquet row per cell, DuckDB queries.
- :mod:`~workbench.sweep.run`: :func:`run_sweep`.
- :mod:`~workbench.sweep.executor`: the report's conversions and evaluations as a local graph.
"""

from workbench.sweep.grid import AXES, Axis, Cell, SweepConfig
from workbench.sweep.run import SweepSummary, run_sweep
from workbench.sweep.store import query

__all__ = ["AXES", "Axis", "Cell", "SweepConfig", "SweepSummary", "query", "run_sweep"]
