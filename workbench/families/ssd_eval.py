"""How the ``ssd`` family is evaluated: ST's Keras ``.h5`` in tf_keras with ST's pre-processing and
the SSD decoder, and the classes of an SSD ``.tflite``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.config import Task
from workbench.errors import WorkbenchError
from workbench.evaluate.runner import EvalRunner

if TYPE_CHECKING:
    from workbench.decode import Detections
    from workbench.evaluate.settings import EvalSettings

# Tracing the model into a graph costs about as much as 60 eager calls (measured on 2 busy cores:
# 130 s against 2.3 s a call, then 0.46 s a call): short passes run eagerly.
EAGER_IMAGES = 64


def check_ssd_task(task: Task) -> None:
    if task is not Task.DETECT:
        raise WorkbenchError(f"an SSD model cannot be evaluated as {task.value}")


def ssd_classes(
    outputs: list[np.ndarray], metadata: dict[str, Any], task: Task, input_hw: tuple[int, int]
) -> int:
    """Classes of ST's SSD outputs: the score columns but the background (column 0)."""
    check_ssd_task(task)
    # scores are the one output not 4 wide (boxes and anchors are); 3 classes + background
    # would also be 4 wide.
    wide = [o.shape[2] for o in outputs if o.shape[2] != 4]
    return (wide[0] if wide else 4) - 1


class KerasSsdRunner(EvalRunner):
    """ST's SSD ``.h5`` run by tf_keras on images prepared as its config yaml says (the float model
    every SSD conversion comes from), decoded with the SSD decoder."""

    description = "a Keras SSD .h5"

    def __init__(
        self,
        path: str | Path,
        *,
        load: Callable[[Path, Any], Any],
        config_for: Callable[[Path], Any],
        decoder: str,
        st_eval_iou: float,
    ):
        super().__init__(path)
        self.load, self.config_for = load, config_for  # the family's loading and ST config
        self.decoder, self.st_eval_iou = decoder, st_eval_iou

    def open(self, settings: EvalSettings) -> None:
        from workbench.offline import import_tensorflow

        try:
            check_ssd_task(settings.task)
        except WorkbenchError as err:
            raise WorkbenchError(err.message, path=self.path) from None
        config = self.config_for(self.path)
        model = self.load(self.path, config)
        h, w = (int(d) for d in model.inputs[0].shape[1:3])
        if settings.imgsz is not None and (h, w) != (settings.imgsz, settings.imgsz):
            raise WorkbenchError(
                f"model input is {h}x{w}, not the requested imgsz {settings.imgsz}", path=self.path
            )
        preprocessing = config.preprocessing
        self.input_hw, self.imgsz = (h, w), h if h == w else None
        self.preprocess_mode = settings.preprocess or preprocessing.mode
        self.interpolation = preprocessing.interpolation
        self.input_range = tuple(float(v) for v in preprocessing.input_range)
        self.input_key = (self.preprocess_mode, self.interpolation, (h, w))
        self.nc = int(model.outputs[0].shape[2]) - 1  # scores first (load checks), column 0 the background
        # a model without an anchors output takes them from its config (load checks they are there)
        self.anchors = None if len(model.outputs) == 3 else np.asarray(config.anchors, np.float32)[None]
        if settings.max_images is not None and settings.max_images <= EAGER_IMAGES:
            self.call = lambda x: model(x, training=False)
        else:
            self.call = import_tensorflow().function(lambda x: model(x, training=False))

    def prepare(self, image: np.ndarray):
        """Float (1, H, W, 3) in [0, 1] and the geometry, as a .tflite of this model is fed."""
        from workbench.preprocess import letterbox, resize

        if self.preprocess_mode == "letterbox":
            image, transform = letterbox(image, self.input_hw)
        else:
            image, transform = resize(image, self.input_hw, self.interpolation)
        return (image.astype(np.float32) / np.float32(255.0))[None], transform

    def run(self, prepared, **_: Any) -> list[np.ndarray]:
        lo, hi = self.input_range
        outputs = [np.asarray(o, np.float32) for o in self.call(lo + prepared[0] * (hi - lo))]
        return outputs if self.anchors is None else [*outputs, self.anchors]

    def decode(self, raw: list[np.ndarray], prepared, **options: Any) -> Detections:
        from workbench.decode import decode

        return decode(raw, Task.DETECT, prepared[1], decoder=self.decoder, **options)
