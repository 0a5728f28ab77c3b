"""What every model family provides; the steps call these and never branch on model names."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.calibration import DEFAULT_CALIB_COUNT
from workbench.config import METRIC_OF_TASK, Task
from workbench.errors import WorkbenchError
from workbench.recipes.edits import ExportEdits

if TYPE_CHECKING:
    import numpy as np

    from workbench.config import RunConfig
    from workbench.data.prepare import PreparedDataset
    from workbench.evaluate import EvalRunner
    from workbench.exported import ExportResult


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB uint8 image becomes the model input.

    Example:
        >>> Preprocessing("resize", "nearest", (-1.0, 1.0)).to_dict()["input_range"]
        [-1.0, 1.0]
    """

    mode: str  # "letterbox" | "resize"
    interpolation: str  # "bilinear" | "nearest"
    input_range: tuple[float, float]

    def __post_init__(self) -> None:
        from workbench.preprocess import INTERPOLATIONS

        if self.mode not in ("letterbox", "resize"):
            raise ValueError(f"mode must be letterbox or resize, got {self.mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        lo, hi = self.input_range
        if not float(lo) < float(hi):
            raise ValueError(f"input_range must be increasing, got {self.input_range}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_range"] = [float(v) for v in self.input_range]
        return out


class ModelFamily(ABC):
    """One family of models. Subclasses are stateless; register one instance each."""

    name: str = ""
    tasks: tuple[Task, ...] = ()
    decoder: str = ""  # the decode/ module that reads its outputs
    export_edits: frozenset[str] = frozenset()  # the ExportEdits fields its export can change

    @abstractmethod
    def claims(self, model: str | Path) -> bool:
        """Whether ``model`` (a path or a model name) belongs to this family."""

    def check_task(self, task: Task, model: str | Path) -> None:
        if task not in self.tasks:
            raise WorkbenchError(
                f"the {self.name} family does {', '.join(t.value for t in self.tasks)}, not {task.value}",
                path=model,
            )

    def metric(self, task: Task) -> str:
        """COCO iou type of ``task``: keypoints, segm or bbox."""
        return METRIC_OF_TASK[Task(task)]

    @abstractmethod
    def dataset(self, cfg: RunConfig, need_training: bool | None = None) -> PreparedDataset:
        """The config's dataset, checked for what this family and task need to train and score."""

    @abstractmethod
    def retrain(
        self, cfg: RunConfig, start: Path | str, dataset: PreparedDataset, out: Path
    ) -> dict[str, Any]:
        """Fine-tune (or train) ``start`` for ``cfg.epochs`` into ``out``; a dict with ``weights``,
        ``train_seconds`` and ``val``. 0 epochs keeps ``start``."""

    def weights_for(self, weights: str | Path, imgsz: int) -> Path:
        """The weights file to export at ``imgsz`` (one file for every size unless a family says else)."""
        return Path(weights)

    def check_edits(self, edits: ExportEdits, model: str | Path) -> None:
        """Refuse, in one line, export edits this family cannot make."""
        foreign = [name for name in edits.changed() if name not in self.export_edits]
        if foreign:
            raise WorkbenchError(
                f"the {self.name} family's export cannot make the edit(s) {', '.join(foreign)} "
                f"(it makes: {', '.join(sorted(self.export_edits)) or 'none'})",
                path=model,
            )

    @abstractmethod
    def export(
        self,
        weights: str | Path,
        imgsz: int,
        out: Path,
        *,
        edits: ExportEdits = ExportEdits(),
        calib: str | Path | None = None,
        calib_count: int = DEFAULT_CALIB_COUNT,
        normalize: bool = True,
    ) -> ExportResult:
        """A float SavedModel at ``out`` with normalized outputs and the metadata quantize needs,
        made with ``edits`` (the recipes' export edits; :meth:`check_edits` refuses those it cannot
        make). Edits that learn from images take the first ``calib_count`` of the folder ``calib``.
        ``normalize=False`` keeps the model's own output units (float use only), where a family has them."""

    @abstractmethod
    def preprocessing(self, weights: str | Path) -> Preprocessing:
        """How images are prepared for this model (recorded in every converted file)."""

    # ---- evaluation: a family is the TFLiteDecoding of its .tflite files (workbench.evaluate) -----
    st_eval_iou: float = 0.5  # IoU of ST's detection AP for this family's models (their cards)
    weights_suffixes: tuple[str, ...] = ()  # float weights files its evaluation runner reads

    @abstractmethod
    def evaluation_runner(self, weights: str | Path) -> EvalRunner:
        """The runner that evaluates the family's float ``weights`` (one of ``weights_suffixes``)."""

    @abstractmethod
    def claims_outputs(self, outputs: list[np.ndarray], input_hw: tuple[int, int]) -> bool:
        """Whether a ``.tflite`` without a recorded family has this family's outputs (ST's zoo files)."""

    @abstractmethod
    def default_preprocess(self, protocol: str) -> str:
        """Pre-processing of a ``.tflite`` that records none, under ``protocol``'s convention."""

    @abstractmethod
    def output_classes(
        self, outputs: list[np.ndarray], metadata: dict[str, Any], task: Task, input_hw: tuple[int, int]
    ) -> int:
        """Classes that a ``.tflite``'s ``outputs`` hold for ``task``; WorkbenchError if they cannot."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
