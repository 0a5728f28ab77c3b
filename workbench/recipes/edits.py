"""What a recipe set changes, split by who makes the change.

- :class:`ExportEdits`: changes to the float SavedModel (head, equalization, split convolutions,
  bias correction, fine-tuning, keypoint clamp). A model family makes them when it exports
  (``ModelFamily.export(..., edits=...)``); an export records them, and conversion refuses an export
  that does not carry the edits its recipes need.
- :class:`ConversionEdits`: changes to the TFLite conversion of that SavedModel (calibration count,
  who sets the ranges, blocks kept in float, int16 activations).

Both are frozen and hashable: a job is keyed by them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

HEADS = ("single", "split", "levels")  # the plain head, split-head, split-levels
GRANULARITIES = ("per-tensor", "per-channel")


@dataclass(frozen=True)
class ExportEdits:
    """The export a recipe set needs; ``ExportEdits()`` is the plain export.

    ``bias_correct`` / ``qat``: the int8 weight granularity they learn for (the scheme's), or None.
    ``split_channels``: split a convolution where that divides its per-tensor weight noise by at least
    this (the ``split-channels`` recipe sets :data:`~workbench.recipes.split_channels.MIN_GAIN`;
    an export made at another setting converts with the same recipe); None: no split.
    ``split_fine``: the split's finer form (``split-channels-fine``, ST's SSD: more parts, narrow convs
    summed; :data:`~workbench.recipes.split_channels_keras.FINE_GROUPS`).
    ``kpt_percentile``: clamp the split head's keypoint offsets at this percentile of the calibration
    images' values (the ``calib-percentile`` recipe).

    Example:
        >>> ExportEdits(head="levels", equalize=True).key
        'levels-head+equalized'
        >>> ExportEdits().key, ExportEdits() == ExportEdits(), len({ExportEdits(), ExportEdits()})
        ('', True, 1)
    """

    head: str = "single"
    equalize: bool = False
    st_optimize: bool = False
    split_channels: float | None = None
    split_fine: bool = False
    bias_correct: str | None = None
    qat: str | None = None
    kpt_percentile: float | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        for name in ("bias_correct", "qat"):
            if getattr(self, name) not in (None, *GRANULARITIES):
                raise ValueError(
                    f"{name} must be None or one of {GRANULARITIES}, got {getattr(self, name)!r}"
                )

    @property
    def key(self) -> str:
        """A short stable name for folder names: ``""`` for the plain export, else its edits joined by ``+``."""
        parts = [] if self.head == "single" else [f"{self.head}-head"]
        parts += ["equalized"] if self.equalize else []
        parts += ["st-optimized"] if self.st_optimize else []
        if self.split_channels:
            from workbench.recipes.split_channels import ALIGN, MIN_GAIN

            gain = float(self.split_channels)
            name = "split-channels" if gain == MIN_GAIN else f"split-channels{gain:g}"
            name = name if ALIGN == 1 else f"{name}-a{ALIGN}"  # runs cut at multiples of ALIGN
            parts += [f"{name}-fine" if self.split_fine else name]
        parts += [f"clip{self.kpt_percentile:g}"] if self.kpt_percentile is not None else []
        parts += [f"bc-{self.bias_correct}"] if self.bias_correct else []
        parts += [f"qat-{self.qat}"] if self.qat else []
        return "+".join(parts)

    @property
    def calibrated(self) -> bool:
        """Whether the edits learn from calibration images (so the export depends on them)."""
        return bool(self.bias_correct or self.qat or self.kpt_percentile is not None)

    def calibration_images(self, calib_count: int) -> int:
        """How many calibration images the edits learn from (0: none); the keypoint clamp takes the
        conversion's ``calib_count``."""
        from workbench.recipes.bias_correct import BIAS_CORRECTION_IMAGES
        from workbench.recipes.qat import QAT_IMAGES

        counts = [BIAS_CORRECTION_IMAGES if self.bias_correct else 0, QAT_IMAGES if self.qat else 0]
        return max(counts + [calib_count if self.kpt_percentile is not None else 0])

    def changed(self) -> list[str]:
        """The fields that differ from the plain export."""
        plain = ExportEdits()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(plain, f.name)]

    @classmethod
    def recorded(cls, export: Any) -> ExportEdits:
        """The edits an :class:`~workbench.exported.ExportResult` records having."""
        return cls(
            head=export.head,
            equalize=export.equalized,
            st_optimize=export.st_optimized,
            split_channels=_split_setting(export.split_channels),
            split_fine=export.split_fine,
            bias_correct=export.bias_corrected.split(":")[0] if export.bias_corrected else None,
            qat=export.qat.split(":")[0] if export.qat else None,
            kpt_percentile=export.kpt_percentile,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_setting(recorded: Any) -> float | None:
    """An export's recorded split-channels setting. Exports of the former gather path recorded
    ``true``: -1, a setting no recipe asks for, so they are exported again rather than reused."""
    if recorded is None or recorded is False:
        return None
    return -1.0 if recorded is True else float(recorded)


@dataclass(frozen=True)
class ConversionEdits:
    """How the conversion differs from the converter's plain min/max int8."""

    calib_count: int = 200
    activations: str = "int8"
    float_blocks: int = 0
    activation_ranges: str = "minmax"
    weight_ranges: str = "minmax"

    def __post_init__(self) -> None:
        if self.activations not in ("int8", "int16"):
            raise ValueError(f"activations must be int8 or int16, got {self.activations!r}")
        if self.activation_ranges not in ("minmax", "mse") or self.weight_ranges not in ("minmax", "octav"):
            raise ValueError(f"invalid range setting in {self}")
        if self.calib_count < 1 or self.float_blocks < 0:
            raise ValueError(f"invalid conversion edits: {self}")

    @property
    def ranges_by_library(self) -> bool:
        """Whether ai-edge-quantizer (:mod:`workbench.recipes.ranges`) sets the ranges, not the converter."""
        return (self.activation_ranges, self.weight_ranges) != ("minmax", "minmax")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
