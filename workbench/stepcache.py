"""Which steps of a run folder are done, what each wrote, and what to remove before a step re-runs.

:func:`~workbench.pipeline.run_pipeline` keeps one record per finished notebook in
``<run>/steps/<name>.json``: the config hash, the notebook's sha256 and the parameters' hash it ran
with, and every file it wrote (found by comparing the folder before and after the step) with its
sha256. A step is cached while all of these still hold; a file changed or truncated since its step
finished (sha256 differs) makes the step run again. Before steps re-run, what they produced last
time is removed (:func:`invalidate`), so nothing stale passes for current.

Example:
    >>> is_cached(None, {"config_hash": "a", "notebook_sha256": "b", "params_hash": "c"}, Path("x.ipynb"))
    'not run yet'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.config import RunConfig
from workbench.fileio import sha256_file, write_json

STEPS_DIR = "steps"
RESULTS_CSV = "results.csv"  # the run's results table (written by the report layer)
# Outputs the report builder redraws from results.csv after the run: not hash-checked.
REDRAWN = ("plots/",)


def params_hash(params: Mapping[str, Any]) -> str:
    """Hash of a notebook's parameters; ``run_dir`` is left out, so a run folder moved or copied
    elsewhere keeps its cache."""
    content = {k: v for k, v in params.items() if k != "run_dir"}
    blob = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def expected_record(config: RunConfig, notebook: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a cached record of ``notebook`` must say to be reused."""
    return {
        "config_hash": config.hash,
        "notebook_sha256": sha256_file(notebook),
        "params_hash": params_hash(params),
    }


def read_record(path: Path) -> dict[str, Any] | None:
    """A step's record, or None when absent or corrupt (a corrupt record only costs a re-run)."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def latest_checksums(records: Mapping[str, dict[str, Any] | None]) -> dict[str, str]:
    """Output → the sha256 its last writer recorded (a later step may rewrite an earlier step's file)."""
    latest: dict[str, str] = {}
    for record in records.values():
        if record and isinstance(record.get("output_sha256"), dict):
            latest.update(record["output_sha256"])
    return latest


def is_cached(
    record: dict[str, Any] | None,
    expected: dict[str, Any],
    executed: Path,
    latest: dict[str, str] | None = None,
) -> str | None:
    """None if the step can be skipped, else why it must run.

    ``latest`` maps each output to the sha256 its last writer recorded (a later step may rewrite an
    earlier step's file); default: this record's own checksums.
    """
    if record is None:
        return "not run yet"
    if record.get("status") != "done":
        return f"last status {record.get('status')!r}"
    if record.get("config_hash") != expected["config_hash"]:
        return "config changed"
    if record.get("notebook_sha256") != expected["notebook_sha256"]:
        return "notebook changed"
    if record.get("params_hash") != expected["params_hash"]:
        return "parameters changed"
    if not executed.is_file():
        return "executed notebook missing"
    outputs = record.get("outputs", [])
    missing = [o for o in outputs if not (executed.parent / o).exists()]
    if missing:
        return f"output {missing[0]} missing"
    recorded = record.get("output_sha256")
    if outputs and not isinstance(recorded, dict):
        return "outputs recorded without checksums"
    latest = {**(recorded or {}), **(latest or {})}
    for output in outputs:
        if output.startswith(REDRAWN):
            continue
        path = executed.parent / output
        if path.is_file() and sha256_file(path) != latest.get(output):
            return f"output {output} changed since its step finished (sha256 differs)"
    return None


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of the run folder (records and hidden files aside) → (mtime, size)."""
    files = {}
    for path in run_dir.rglob("*"):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.parts[0] != STEPS_DIR and not rel.name.startswith("."):
            stat = path.stat()
            files[rel.as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return files


def write_record(
    run_dir: Path,
    stem: str,
    expected: dict[str, Any],
    before: dict[str, tuple[int, int]],
    skip: set[str],
    **timing: Any,
) -> list[str]:
    """Record step ``stem`` as done: the files that changed since ``before`` (a :func:`snapshot`),
    except those in ``skip``, with their sha256. Returns those outputs."""
    after = snapshot(run_dir)
    outputs = sorted(k for k, v in after.items() if before.get(k) != v and k not in skip)
    checksums = {k: sha256_file(run_dir / k) for k in outputs}
    write_json(run_dir / STEPS_DIR / f"{stem}.json", {
        "status": "done", **expected, **timing, "outputs": outputs, "output_sha256": checksums,
    })  # fmt: skip
    return outputs


def invalidate(run_dir: Path, todo: list[Path], records: Mapping[str, dict[str, Any] | None]) -> None:
    """Remove what the steps about to run produced last time, so nothing stale passes for current."""
    root = run_dir.resolve()
    rerun = {nb.stem for nb in todo}
    kept = {o for stem, r in records.items() if stem not in rerun for o in (r or {}).get("outputs", [])}
    stale = {run_dir / "index.html", run_dir / RESULTS_CSV}
    for nb in todo:
        stale |= {run_dir / STEPS_DIR / f"{nb.stem}.json", run_dir / nb.name, run_dir / f"{nb.stem}.html"}
        for output in (records.get(nb.stem) or {}).get("outputs", []):
            path = run_dir / output
            # a hand-edited record must not reach outside; a cached step's file stays
            if path.resolve().is_relative_to(root) and output not in kept:
                stale.add(path)
    for path in sorted(stale):
        if path.is_file() or path.is_symlink():
            path.unlink()
    for folder in sorted({p.parent for p in stale}, key=lambda p: -len(p.parts)):
        while folder != run_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # emptied output folders (eval/<variant>/, plots/) go too
            folder = folder.parent
