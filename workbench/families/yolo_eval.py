"""How the ``yolo`` family is evaluated: its Ultralytics ``.pt`` through ``YOLO.predict``, and what a
``.tflite`` of a YOLO head needs (its classes, and a claim on bare files by their layout)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.config import TASK_OF_ULTRALYTICS, ULTRALYTICS_TASK, Task
from workbench.errors import WorkbenchError
from workbench.evaluate.runner import EvalRunner
from workbench.safeload import check_weights

if TYPE_CHECKING:
    from workbench.decode import Detections
    from workbench.evaluate.settings import EvalSettings


class UltralyticsRunner(EvalRunner):
    """Ultralytics ``YOLO.predict`` on each image (it letterboxes and decodes itself)."""

    description = "an Ultralytics .pt"
    alone = True
    one_protocol = True  # its NMS runs inside predict

    def __init__(self, path: str | Path, st_eval_iou: float):
        super().__init__(path)
        self.st_eval_iou = st_eval_iou

    def open(self, settings: EvalSettings) -> None:
        from ultralytics import YOLO

        check_weights(self.path)  # before Ultralytics unpickles it
        try:
            self.model = YOLO(str(self.path))
        except Exception as err:  # Ultralytics raises many types for a bad checkpoint
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""  # one line, not its advice
            raise WorkbenchError(
                f"not a loadable Ultralytics model ({type(err).__name__}: {first[:200]})", path=self.path
            ) from None
        if self.model.task != ULTRALYTICS_TASK[settings.task]:
            raise WorkbenchError(f"is a {self.model.task} model, not {settings.task.value}", path=self.path)
        self.imgsz = int(settings.imgsz or self.model.overrides.get("imgsz") or 640)
        self.preprocess_mode = "letterbox"
        self.input_key = ("letterbox", self.imgsz)
        self.nc = len(self.model.names)

    def prepare(self, image: np.ndarray):
        return np.ascontiguousarray(image[..., ::-1])  # Ultralytics takes numpy images as BGR

    def run(self, prepared: np.ndarray, *, conf: float, iou: float, max_det: int, classes: list[int]):
        """Ultralytics' letterbox, inference and NMS together (timed as ``invoke``)."""
        return self.model.predict(
            prepared,
            imgsz=self.imgsz,
            conf=conf,
            iou=iou,
            max_det=max_det,
            classes=classes,
            rect=False,  # square letterbox, as the .tflite files see
            retina_masks=True,  # masks at original size, as process_mask_native
            verbose=False,
            device="cpu",
        )[0]

    def decode(self, raw, prepared, **_: Any) -> Detections:
        from workbench.decode import Detections

        return Detections.from_ultralytics(raw)


def yolo_head_classes(
    outputs: list[np.ndarray], metadata: dict[str, Any], task: Task, input_hw: tuple[int, int]
) -> int:
    """Classes of a YOLO head's outputs for ``task``, after refusing a file of another task."""
    from workbench.decode.yolo import resolve_layout

    _refuse_other_task(metadata, outputs, task)
    names, kpt = metadata.get("names"), metadata.get("kpt_shape")
    _, _, nc, _ = resolve_layout(
        outputs, task, input_hw, len(names) if names else None, tuple(kpt) if kpt else None
    )
    return nc


def is_yolo_head(outputs: list[np.ndarray], input_hw: tuple[int, int]) -> bool:
    """Whether bare outputs (no metadata) are a YOLO head of some task: one the decoder can split."""
    from workbench.decode.yolo import resolve_layout

    for task in Task:
        try:
            resolve_layout(outputs, task, input_hw)
        except WorkbenchError:
            continue
        return True
    return False


def _refuse_other_task(meta: dict[str, Any], outputs: list[np.ndarray], task: Task) -> None:
    """A YOLO file of another task would decode into nonsense (e.g. 51 keypoint channels read as
    classes, AP 0): refuse it by its metadata, or, for bare files, by COCO pose's 56-channel head."""
    declared = meta.get("task")
    if declared and declared != ULTRALYTICS_TASK[task]:
        ours = TASK_OF_ULTRALYTICS[declared].value if declared in TASK_OF_ULTRALYTICS else declared
        raise WorkbenchError(
            f"is a {declared} model, not {task.value} (score its boxes with --task {ours} --iou-type bbox)"
        )
    heads = [o for o in outputs if o.ndim == 3]
    channels = min(heads[0].shape[1:]) if len(heads) == 1 else None
    if (
        task is Task.DETECT
        and not declared
        and not meta.get("names")
        and channels == 4 + 1 + 17 * 3
        and len(outputs) == 1
    ):
        raise WorkbenchError(
            "has a 56-channel head: COCO pose's layout (4 box + 1 score + 17x3 keypoints), not a detector; "
            "evaluate it with --task pose (add --iou-type bbox to score its boxes)"
        )
