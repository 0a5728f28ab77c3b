"""Latencies measured on boards by their owners (a config's ``measured_latency:`` CSV).

The CSV is untrusted input: one header line ``file,target,ms`` (an optional ``note`` column is kept
as provenance), then one row per file and target. ``file`` is a variant name
(``yolo11n-pose_256_int8-per-channel_uf``), a ``.tflite`` file name, or the file's sha256 (64 hex
digits); ``target`` a registered target; ``ms`` a positive number. Every problem is one error naming
the CSV and its line. Each row replaces the estimate of that file on that target in the results
table (``<target>_latency_source: board``; the estimate it replaced is kept as ``<target>_estimate_ms``).

Example:
    >>> import tempfile, pathlib
    >>> csv = pathlib.Path(tempfile.mkdtemp()) / "board.csv"
    >>> _ = csv.write_text("file,target,ms\\nm_256_int8-per-tensor_uf,stm32mp2,18.1\\n")
    >>> read_measured_latency(csv, ["stm32mp2"])[0].ms
    18.1
    >>> _ = csv.write_text("file,target,ms\\nm.tflite,stm32mp9,18.1\\n")
    >>> read_measured_latency(csv, ["stm32mp2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workbench.errors.WorkbenchError: ...board.csv: line 2: unknown target 'stm32mp9'; valid targets: ...
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file

COLUMNS = ("file", "target", "ms")
OPTIONAL = ("note",)
MAX_BYTES = 1 << 20  # a board owner's table, not a data set
MAX_ROWS = 10_000
MAX_FIELD = 300
SHA256 = re.compile(r"[0-9a-f]{64}")
BOARD = "board"  # the latency_source of a figure from this CSV (workbench.targets.base.LATENCY_SOURCES)


@dataclass(frozen=True)
class BoardLatency:
    """One measured latency: the file it names, the target, the milliseconds, and where it came from."""

    file: str
    target: str
    ms: float
    line: int
    source: str  # the CSV's path
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_measured_latency(
    path: str | Path, targets: Sequence[str], known: Sequence[str] | None = None
) -> list[BoardLatency]:
    """Every row of the CSV at ``path``, validated; ``targets`` are the config's (a row must name
    one), ``known`` the registry's names (default: :func:`workbench.targets.list_targets`).

    Raises:
        WorkbenchError: naming the CSV and the line of the first bad row.
    """
    from workbench.targets import list_targets

    path = Path(path)
    known = list(known) if known is not None else list_targets()
    if not path.is_file():
        raise WorkbenchError("measured_latency file not found", path=path)
    if path.stat().st_size > MAX_BYTES:
        raise WorkbenchError(
            f"larger than {MAX_BYTES // 1024} KiB: not a table of board latencies", path=path
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkbenchError("not UTF-8 text", path=path) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise WorkbenchError("is empty; expected a header line file,target,ms", path=path) from None
    except csv.Error as err:
        raise WorkbenchError(f"line 1: not CSV ({err})", path=path) from None
    missing = [c for c in COLUMNS if c not in header]
    unknown = [h for h in header if h not in COLUMNS + OPTIONAL]
    if missing or unknown or len(set(header)) != len(header):
        raise WorkbenchError(
            f"line 1: header must be {','.join(COLUMNS)} (and optionally {','.join(OPTIONAL)}), got {','.join(header)}",
            path=path,
        )
    rows: list[BoardLatency] = []
    seen: dict[tuple[str, str], int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            row = _row(values, header, line, path, targets, known)
            first = seen.setdefault((row.file, row.target), line)
            if first != line:
                raise WorkbenchError(
                    f"line {line}: {row.file} on {row.target} is given twice (line {first} too)", path=path
                )
            rows.append(row)
            if len(rows) > MAX_ROWS:
                raise WorkbenchError(f"line {line}: more than {MAX_ROWS} rows", path=path)
    except csv.Error as err:
        raise WorkbenchError(f"line {reader.line_num}: not CSV ({err})", path=path) from None
    if not rows:
        raise WorkbenchError("has a header but no rows", path=path)
    return rows


def _row(
    values: list[str], header: list[str], line: int, path: Path, targets: Sequence[str], known: Sequence[str]
) -> BoardLatency:
    if len(values) != len(header):
        raise WorkbenchError(f"line {line}: {len(values)} fields, the header has {len(header)}", path=path)
    cell = {h: v.strip() for h, v in zip(header, values, strict=True)}
    for name, value in cell.items():
        if len(value) > MAX_FIELD or any(ord(ch) < 32 for ch in value):
            raise WorkbenchError(
                f"line {line}: {name} is not a plain value of at most {MAX_FIELD} characters", path=path
            )
    if not cell["file"]:
        raise WorkbenchError(
            f"line {line}: file is empty (a variant name, .tflite file name or sha256)", path=path
        )
    if "/" in cell["file"] or "\\" in cell["file"]:
        raise WorkbenchError(
            f"line {line}: file must be a name or a sha256, not a path: {cell['file']!r}", path=path
        )
    target = cell["target"]
    if target not in known:
        raise WorkbenchError(
            f"line {line}: unknown target {target!r}; valid targets: {', '.join(known)}", path=path
        )
    if target not in targets:
        raise WorkbenchError(
            f"line {line}: target {target!r} is not among the config's targets ({', '.join(targets) or 'none'}); add it to `targets:`",
            path=path,
        )
    try:
        ms = float(cell["ms"])
    except ValueError:
        raise WorkbenchError(f"line {line}: ms {cell['ms']!r} is not a number", path=path) from None
    if not (math.isfinite(ms) and 0 < ms < 1e7):
        raise WorkbenchError(
            f"line {line}: ms must be a positive number of milliseconds, got {cell['ms']!r}", path=path
        )
    return BoardLatency(cell["file"].lower() if SHA256.fullmatch(cell["file"].lower()) else cell["file"],
                        target, ms, line, str(path), cell.get("note", ""))  # fmt: skip


def match_files(
    measured: Sequence[BoardLatency], files: Sequence[dict[str, str]]
) -> list[tuple[BoardLatency, int]]:
    """Each measurement and the index of the one file it names among ``files`` (dicts with
    ``variant``, ``path`` and ``sha256``): by sha256, variant name or file name.

    Raises:
        WorkbenchError: a row names no file of the run, or a file name several files share.
    """
    out = []
    for row in measured:
        hits = [
            i for i, f in enumerate(files)
            if row.file in (f.get("sha256"), f.get("variant")) or row.file == Path(str(f.get("path") or "")).name
        ]  # fmt: skip
        if not hits:
            raise WorkbenchError(
                f"line {row.line}: {row.file!r} names no file of this run (a variant name, .tflite file name or sha256)",
                path=row.source,
            )
        if len(hits) > 1:
            names = ", ".join(str(files[i].get("variant")) for i in hits[:3])
            raise WorkbenchError(
                f"line {row.line}: {row.file!r} names {len(hits)} files ({names}); give the variant name or sha256",
                path=row.source,
            )
        out.append((row, hits[0]))
    return out


def apply_measured(
    rows: list[dict[str, Any]], measured: Sequence[BoardLatency], files: Sequence[dict[str, str]]
) -> None:
    """Put each board figure into the row of the file it names (``rows[i]`` for ``files[i]``), in
    place: latency, source ``board``, no error band; the estimate it replaces as ``<target>_estimate_ms``."""
    for row_of, i in match_files(measured, files):
        row, t = rows[i], row_of.target
        row[f"{t}_estimate_ms"] = row.get(f"{t}_latency_ms")
        row[f"{t}_estimate_source"] = row.get(f"{t}_latency_source")
        row[f"{t}_latency_ms"] = row_of.ms
        row[f"{t}_latency_source"] = BOARD
        row[f"{t}_latency_error_pct"] = None
        row[f"{t}_error"] = None
        row[f"{t}_measured_note"] = f"{Path(row_of.source).name} line {row_of.line}" + (
            f": {row_of.note}" if row_of.note else ""
        )


def csv_sha256(path: str | Path) -> str:
    return sha256_file(path)
