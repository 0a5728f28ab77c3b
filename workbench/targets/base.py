"""What every deployment target answers about a ``.tflite``: where each op runs, latency, memory.

A :class:`TargetEstimate` is either a set of figures with their source, or an error and no figures
at all, so a failed estimator can never leave a number that looks valid.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# measured: timed on this machine; tool: a vendor's compiler/estimator (Vela); fitted: a model fitted
# to published board figures (with its leave-one-out error); published: the vendor's own figure;
# board: measured on the board by its owner (a config's measured_latency CSV, workbench.targets.measured)
LATENCY_SOURCES = ("measured", "tool", "fitted", "published", "board")
ENGINES = ("npu", "gpu", "cpu", "unknown")


@dataclass(frozen=True)
class OpPlacement:
    """Where one op of the file runs, and the rule or tool that decided it."""

    index: int
    op: str
    engine: str
    decided_by: str

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")


@dataclass
class TargetEstimate:
    """One target's answer for one file (``--json`` prints :meth:`to_dict`)."""

    target: str
    model: str
    latency_ms: float | None = None
    latency_source: str | None = None
    latency_error_pct: float | None = None  # leave-one-out error of a fitted model; None otherwise
    sram_bytes: int | None = None  # peak activation memory in the target's internal RAM
    flash_bytes: int | None = None  # weights and constants in flash
    accelerator_mac_share: float | None = None  # MACs on the accelerator / all MACs; None: no accelerator
    fallback_ops: list[str] = field(default_factory=list)  # op names that leave the accelerator
    placement: list[OpPlacement] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)  # tool and version, or model and its error
    error: str | None = None

    def __post_init__(self) -> None:
        figures = (self.latency_ms, self.latency_source, self.sram_bytes, self.flash_bytes)
        if self.error is not None:
            if any(v is not None for v in figures) or self.accelerator_mac_share is not None:
                raise ValueError(f"a failed estimate carries no figures: {self.target} {self.error}")
            return
        if self.latency_source not in LATENCY_SOURCES:
            raise ValueError(f"latency_source must be one of {LATENCY_SOURCES}, got {self.latency_source!r}")
        if self.latency_ms is None or not (math.isfinite(self.latency_ms) and self.latency_ms > 0):
            raise ValueError(f"latency must be a positive number, got {self.latency_ms!r}")
        if (self.latency_source == "fitted") != (self.latency_error_pct is not None):
            raise ValueError("a fitted latency carries its leave-one-out error, and only a fitted one")
        for name in ("sram_bytes", "flash_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        share = self.accelerator_mac_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"accelerator_mac_share must lie in [0, 1], got {share}")

    @classmethod
    def failed(cls, target: str, model: str | Path, error: str, **provenance: Any) -> TargetEstimate:
        return cls(target=target, model=str(model), error=error, provenance=provenance)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["placement"] = [asdict(p) for p in self.placement]
        return out


class Target(ABC):
    """One deployment target. Subclasses are stateless apart from their settings; register one
    instance per name (:func:`workbench.targets.register_target`)."""

    name: str = ""
    description: str = ""
    latency_source: str = ""
    latency_label: str = ""  # how a report labels this target's latency, e.g. "Vela estimate"

    @abstractmethod
    def estimate(self, model: str | Path) -> TargetEstimate:
        """This target's figures for ``model`` (a .tflite); a failure is a :meth:`TargetEstimate.failed`
        estimate naming what failed, never an exception for an estimator's own crash."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
