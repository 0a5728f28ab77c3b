"""Every variant's figures on the config's targets, as result-table columns ``<target>_<field>``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from workbench.targets.base import TargetEstimate

FIELDS = (
    "latency_ms", "latency_source", "latency_error_pct", "sram_bytes", "flash_bytes",
    "accelerator_mac_share", "fallback_ops", "error",
)  # fmt: skip


# each field's kind, for stores with a fixed schema (workbench.sweep.store)
FIELD_KINDS = {
    "latency_ms": float, "latency_source": str, "latency_error_pct": float, "sram_bytes": int,
    "flash_bytes": int, "accelerator_mac_share": float, "fallback_ops": str, "error": str,
}  # fmt: skip


def column_names(names: Sequence[str]) -> list[tuple[str, type]]:
    """Every ``<target>_<field>`` column of the targets ``names``, with its kind."""
    return [(f"{name}_{f}", FIELD_KINDS[f]) for name in names for f in FIELDS]


def columns(estimate: TargetEstimate) -> dict[str, Any]:
    """One estimate as columns; the ops off the accelerator summarised (``55x GATHER, 1x DEQUANTIZE``)."""
    out = {f"{estimate.target}_{name}": getattr(estimate, name) for name in FIELDS}
    counts = Counter(estimate.fallback_ops).most_common()
    out[f"{estimate.target}_fallback_ops"] = ", ".join(f"{n}x {op}" for op, n in counts)
    return out


def target_columns(
    paths: Sequence[str | Path], names: Sequence[str], timings: Sequence | None = None
) -> list[dict]:
    """Columns of every file in ``paths`` on every target in ``names`` (one dict per file); the
    ``host`` target takes ``timings`` (the files' :class:`~workbench.bench.BenchResult`, in order)
    when given instead of timing the files again."""
    from workbench.targets import get_target

    targets = [get_target(name) for name in names]
    rows: list[dict] = [{} for _ in paths]
    for target in targets:
        for i, path in enumerate(tqdm(paths, desc=f"target {target.name}", unit="file")):
            if target.name == "host" and timings is not None:
                estimate = target.from_timing(timings[i])
            else:
                estimate = target.estimate(path)
            rows[i].update(columns(estimate))
    return rows
