"""The settings one evaluation pass shares across its models, checked once when made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.config import METRIC_OF_TASK, PROTOCOLS, TASK_OF_METRIC, Task
from workbench.errors import WorkbenchError

PREPROCESS_MODES = ("letterbox", "resize")
COCO_BACKENDS = ("faster", "pycocotools")


@dataclass(frozen=True)
class EvalSettings:
    """Dataset, protocols, thresholds and run options of an evaluation pass.

    Args:
        ann: COCO ground-truth JSON.
        images: folder the JSON's ``file_name`` entries are relative to.
        task: what the model predicts: pose, seg or detect.
        protocols: "coco" and/or "st", each once (a str names one); the first chooses the
            pre-processing when a model file records none (see :mod:`workbench.evaluate`).
        imgsz: input size; must match a .tflite's input (default: the model's), .pt default 640.
        conf: confidence threshold (default per protocol: 0.001).
        iou: NMS IoU threshold (default per protocol: coco 0.7; st pose 0.1, detect 0.5).
        max_det: detections kept per image.
        max_images: evaluate only the first N images of the JSON.
        threads: interpreter threads.
        preprocess: "letterbox" or "resize", overriding what a model file records.
        progress: show a tqdm bar.
        iou_type: metric of another task than the model's, e.g. "bbox" to score a pose model's boxes
            on a dataset without keypoints (default: the task's own: keypoints, segm, bbox).
        backend: COCO backend, "faster" or "pycocotools".
        exif_transpose: show the model each image as displayed (EXIF orientation applied), for
            labels drawn on rotated views; by default images are read in their stored frame, as
            COCO labels are, and tagged images are warned about.

    Raises:
        WorkbenchError: a value that would fail later or silently give a meaningless AP.

    Example:
        >>> s = EvalSettings("val.json", "val", "pose", protocols="st")
        >>> s.protocols, s.iou_type, s.task.value
        (('st',), 'keypoints', 'pose')
    """

    ann: Path
    images: Path
    task: Task
    protocols: tuple[str, ...] = ("coco",)
    imgsz: int | None = None
    conf: float | None = None
    iou: float | None = None
    max_det: int = 100
    max_images: int | None = None
    threads: int = 2
    preprocess: str | None = None
    progress: bool = True
    iou_type: str | None = None
    backend: str = "faster"
    exif_transpose: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalized once, here
        set_(self, "ann", Path(self.ann))
        set_(self, "images", Path(self.images))
        try:
            set_(self, "task", Task(self.task))
        except ValueError:
            raise WorkbenchError(
                f"unknown task {self.task!r}; expected one of {', '.join(t.value for t in Task)}"
            ) from None
        protocols = (self.protocols,) if isinstance(self.protocols, str) else tuple(self.protocols)
        if (
            not protocols
            or any(p not in PROTOCOLS for p in protocols)
            or len(set(protocols)) != len(protocols)
        ):
            raise WorkbenchError(
                f"protocol must be one of {', '.join(PROTOCOLS)} (each once), got {list(protocols)}"
            )
        set_(self, "protocols", protocols)
        set_(self, "iou_type", self.iou_type or METRIC_OF_TASK[self.task])
        if self.iou_type not in TASK_OF_METRIC:
            raise WorkbenchError(
                f"iou_type must be one of {', '.join(TASK_OF_METRIC)}, got {self.iou_type!r}"
            )
        self._check_numbers()
        if TASK_OF_METRIC[self.iou_type] not in (self.task, Task.DETECT):
            valid = sorted({METRIC_OF_TASK[self.task], "bbox"})
            raise WorkbenchError(
                f"iou_type {self.iou_type!r} needs a {TASK_OF_METRIC[self.iou_type].value} model; a "
                f"{self.task.value} model can be scored with: {', '.join(valid)}"
            )
        if "st" in protocols and (self.task is Task.SEG or self.iou_type != METRIC_OF_TASK[self.task]):
            raise WorkbenchError(
                f"protocol 'st' scores pose keypoints and detection boxes only (got task {self.task.value}, "
                f"iou_type {self.iou_type})"
            )
        if self.preprocess is not None and self.preprocess not in PREPROCESS_MODES:
            raise WorkbenchError(f"preprocess must be one of {PREPROCESS_MODES}, got {self.preprocess!r}")
        if self.backend not in COCO_BACKENDS:
            raise WorkbenchError(f"backend must be one of {', '.join(COCO_BACKENDS)}, got {self.backend!r}")

    def _check_numbers(self) -> None:
        """Refuse thresholds and counts that would silently give a meaningless AP."""
        for name, value in (("conf", self.conf), ("iou", self.iou)):
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise WorkbenchError(f"--{name} must be a number within [0, 1], got {value!r}")
        for name, value in (("max-det", self.max_det), ("threads", self.threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkbenchError(f"--{name} must be an integer of at least 1, got {value!r}")
        if self.max_images is not None and self.max_images < 1:
            raise WorkbenchError(f"max_images must be at least 1, got {self.max_images}")
        if self.imgsz is not None and (
            isinstance(self.imgsz, bool) or not isinstance(self.imgsz, int) or self.imgsz < 1
        ):
            raise WorkbenchError(f"imgsz must be a positive integer, got {self.imgsz!r}")
