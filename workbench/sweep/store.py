"""The sweep's results store: one Parquet file per cell under ``<sweep>/results/``, queried with DuckDB.

Each file is written atomically (a crash leaves a cell's row whole or absent) with one fixed
schema: results.csv's columns (:data:`workbench.report.table.RESULT_COLUMNS`, provenance included)
plus the sweep's own (:data:`EXTRA_COLUMNS`), then every registered deployment target's columns
(:data:`TARGET_COLUMNS`, null for a target the sweep does not list); ``path`` is relative to the
sweep folder. A file written before the target columns existed is read with them null.
``results`` is a DuckDB view over all files.

Example:
    >>> # query("reports/sweeps/demo", "select scheme, avg(ap) from results group by scheme")
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, sha256_file
from workbench.report.table import RESULT_COLUMNS
from workbench.targets import list_targets
from workbench.targets.columns import column_names

RESULTS = "results"
CELL_FILE = re.compile(r"[0-9a-f]{16}\.parquet")  # <Cell.key>.parquet
STATUSES = ("ok", "failed")
EXTRA_COLUMNS = (
    "cell", "status", "error", "calib_images", "dataset", "weights_sha256", "n_images",
    "convert_seconds", "eval_seconds", "host", "latency_host",
)  # fmt: skip
_INT = {"imgsz", "threads", "size_bytes", "activation_ram_bytes", "calib_images", "n_images"}
_FLOAT = {
    "ap", "ap50", "ap75", "ar", "ap_low", "ap_high", "ap50_low", "ap50_high", "st_ap",
    "latency_ms_median", "latency_ms_p90", "latency_ms_min", "worst_sqnr_db",
    "convert_seconds", "eval_seconds",
}  # fmt: skip
_BOOL = {"all_int8"}
# <target>_<field> for every registered target: one schema for every sweep, whichever targets it lists
TARGET_COLUMNS = tuple(column_names(list_targets()))
_KINDS = {str: pa.string(), int: pa.int64(), float: pa.float64()}
COLUMNS = RESULT_COLUMNS + EXTRA_COLUMNS + tuple(c for c, _ in TARGET_COLUMNS)
SCHEMA = pa.schema(
    [
        (
            c,
            pa.int64()
            if c in _INT
            else pa.float64()
            if c in _FLOAT
            else pa.bool_()
            if c in _BOOL
            else pa.string(),
        )
        for c in RESULT_COLUMNS + EXTRA_COLUMNS
    ]
    + [(c, _KINDS[kind]) for c, kind in TARGET_COLUMNS]
)
_BASE_SCHEMA = pa.schema(list(SCHEMA)[: len(RESULT_COLUMNS + EXTRA_COLUMNS)])  # files from before targets


def results_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / RESULTS


def write_row(sweep_dir: str | Path, row: dict[str, Any]) -> Path:
    """Write one cell's row as ``results/<cell>.parquet``, atomically; unknown keys are an error."""
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise WorkbenchError(f"row has column(s) the store does not know: {', '.join(unknown)}")
    if row.get("status") not in STATUSES or not row.get("cell"):
        raise WorkbenchError(f"row needs a cell id and a status in {STATUSES}, got {row.get('status')!r}")
    clean = {c: _plain(row.get(c)) for c in COLUMNS}
    path = results_dir(sweep_dir) / f"{row['cell']}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist([clean], schema=SCHEMA), tmp)
    return path


def read_row(sweep_dir: str | Path, cell: str) -> dict[str, Any] | None:
    path = results_dir(sweep_dir) / f"{cell}.parquet"
    if not path.is_file():
        return None
    try:
        return pq.read_table(path).to_pylist()[0]
    except (pa.ArrowException, IndexError, OSError):
        return None  # an unreadable row is no row: the cell runs again


def is_cached(sweep_dir: str | Path, cell: str) -> bool:
    """A finished row exists and its converted file still hashes as recorded."""
    row = read_row(sweep_dir, cell)
    if row is None or row["status"] != "ok" or not row["path"]:
        return False
    path = Path(sweep_dir) / row["path"]
    return path.is_file() and sha256_file(path) == row["model_sha256"]


def query(sweep_dir: str | Path, sql: str):
    """Run ``sql`` with DuckDB over the store (the table ``results``); a pandas frame.

    Read-only over the store alone: the rows are loaded first, then DuckDB's access to files,
    the network and extensions is switched off and its configuration locked, so ``COPY ... TO``,
    ``read_csv('/etc/passwd')``, ``ATTACH`` or ``INSTALL`` are refused. Only files named like a
    cell with the store's schema are read; an unreadable one is skipped with a warning naming it.
    """
    import duckdb

    if not sql or not sql.strip():
        raise WorkbenchError("the query is empty; pass SQL over the table `results`")
    folder = results_dir(sweep_dir)
    table = _load_rows(folder)
    with duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    ) as con:
        con.register("loaded_rows", table)
        con.execute("create table results as select * from loaded_rows")
        con.unregister("loaded_rows")
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        try:
            return con.execute(sql).fetchdf()
        except duckdb.Error as err:
            raise WorkbenchError(f"query failed: {str(err).splitlines()[0]}") from None


def _load_rows(folder: Path) -> pa.Table:
    """Every readable cell file of ``folder`` as one table; a stray or damaged file is skipped, named."""
    tables = []
    for path in sorted(folder.glob("*.parquet")):
        if not CELL_FILE.fullmatch(path.name) or path.is_symlink():
            warnings.warn(f"{path}: not a cell of this sweep (name); skipped", stacklevel=3)
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            warnings.warn(f"{path}: unreadable ({str(err).splitlines()[0][:120]}); skipped", stacklevel=3)
            continue
        if table.schema.equals(_BASE_SCHEMA):  # written before the target columns: they are null
            table = pa.Table.from_pylist(table.to_pylist(), schema=SCHEMA)
        if not table.schema.equals(SCHEMA) or table.column("cell").to_pylist() != [path.stem]:
            warnings.warn(
                f"{path}: not a cell of this sweep (columns or cell id differ); skipped", stacklevel=3
            )
            continue
        tables.append(table)
    if not tables:
        raise WorkbenchError("no results yet: run the sweep first", path=folder)
    return pa.concat_tables(tables)


def _plain(value: Any) -> Any:
    """Store NaN as null, so SQL aggregates skip it."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
