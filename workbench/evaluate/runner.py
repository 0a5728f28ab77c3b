"""How an evaluation pass runs one model file: the :class:`EvalRunner` interface and the generic
``.tflite`` runner.

A runner is made cheaply by the caller (``workbench.families.evaluation_runner`` picks the family's
runner for any model file) and opened by the pass once the ground truth has loaded, so a wrong
dataset fails before any model is read. Everything a family knows reaches the pass through the
runner: its decoder, its pre-processing default and ST's evaluation IoU for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from workbench.config import Task
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.decode import Detections
    from workbench.evaluate.settings import EvalSettings

OutputTransform = Callable[[list[np.ndarray]], list[np.ndarray]]


class EvalRunner(ABC):
    """One model file in an evaluation pass: prepare an image, run the model, decode its outputs.

    :meth:`open` loads the model and sets what the pass reads: ``imgsz`` (None if not square),
    ``preprocess_mode``, ``nc`` (the model's classes), ``st_eval_iou`` (ST's detection IoU for this
    model) and ``input_key`` (models of one pass must share it, as they share prepared images).
    """

    description = "a model"  # names the file's kind in messages
    alone = False  # pre-processes itself: cannot share prepared images with other models
    one_protocol = False  # runs its own NMS: one protocol's settings at a time

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise WorkbenchError("model file not found", path=self.path)
        self.imgsz: int | None = None
        self.preprocess_mode: str | None = None
        self.nc = 0
        self.st_eval_iou = 0.5
        self.input_key: tuple = ()

    @abstractmethod
    def open(self, settings: EvalSettings) -> None:
        """Load the model and check it against ``settings`` (task, imgsz)."""

    @abstractmethod
    def prepare(self, image: np.ndarray) -> Any:
        """An RGB uint8 image as this model's input (runs in worker threads: numpy/cv2 only)."""

    @abstractmethod
    def run(self, prepared: Any, *, conf: float, iou: float, max_det: int, classes: list[int]) -> Any:
        """The model's raw outputs for one prepared image."""

    @abstractmethod
    def decode(
        self, raw: Any, prepared: Any, *, conf: float, iou: float, max_det: int, classes: list[int]
    ) -> Detections:
        """Raw outputs as detections in original-image pixels."""


class TFLiteDecoding(Protocol):
    """What the family of a ``.tflite`` tells :class:`TFLiteRunner` (``workbench.families`` gives it)."""

    decoder: str  # the decoder's name in workbench.decode.DECODERS
    st_eval_iou: float

    def default_preprocess(self, protocol: str) -> str:
        """Pre-processing for a file that records none, under ``protocol``'s convention."""

    def output_classes(
        self, outputs: list[np.ndarray], metadata: dict[str, Any], task: Task, input_hw: tuple[int, int]
    ) -> int:
        """The class count its outputs hold for ``task``; WorkbenchError if they cannot hold ``task``."""


# (path, metadata, zero outputs, input (h, w)) -> the decoding of the family that claims the file
DecodingOf = Callable[[Path, dict[str, Any], list[np.ndarray], tuple[int, int]], TFLiteDecoding]


class TFLiteRunner(EvalRunner):
    """A ``.tflite`` (ours or ST's zoo) through :class:`~workbench.runtime.TFLiteModel` and the
    decoder its family names. ``decoding_of`` picks the family once the file is open."""

    description = "a .tflite"

    def __init__(
        self, path: str | Path, decoding_of: DecodingOf, output_transform: OutputTransform | None = None
    ):
        super().__init__(path)
        self.decoding_of = decoding_of
        self.output_transform = output_transform  # applied to float outputs before decoding

    def open(self, settings: EvalSettings) -> None:
        import torchvision  # noqa: F401  (the NMS backend; loaded here so decode timings exclude its import)

        from workbench.runtime import TFLiteModel

        self.model = TFLiteModel(self.path, threads=settings.threads, preprocess=settings.preprocess)
        meta = self.model.metadata
        zeros = [np.zeros(spec.shape, np.float32) for spec in self.model.outputs]
        decoding = self.decoding_of(self.path, meta, zeros, self.model.input_hw)
        recorded = meta.get("workbench", {})
        mode = (
            settings.preprocess
            or recorded.get("preprocess")
            or decoding.default_preprocess(settings.protocols[0])
        )
        if mode != self.model.preprocess_mode:
            self.model = TFLiteModel(self.path, threads=settings.threads, preprocess=mode)
        h, w = self.model.input_hw
        if settings.imgsz is not None and (h, w) != (settings.imgsz, settings.imgsz):
            raise WorkbenchError(
                f"model input is {h}x{w}, not the requested imgsz {settings.imgsz}", path=self.path
            )
        try:
            self.nc = decoding.output_classes(zeros, meta, settings.task, (h, w))
        except WorkbenchError as err:
            raise WorkbenchError(err.message, path=err.path or self.path) from None
        self.task, self.decoder, self.st_eval_iou = settings.task, decoding.decoder, decoding.st_eval_iou
        self.imgsz = h if h == w else None
        self.preprocess_mode = self.model.preprocess_mode
        self.input_key = (self.preprocess_mode, recorded.get("interpolation", "bilinear"), (h, w))
        self.normalized = recorded.get("normalized")
        kpt = meta.get("kpt_shape")
        self.kpt_shape = tuple(kpt) if kpt else None

    def prepare(self, image: np.ndarray):
        return self.model.preprocess(image)

    def run(self, prepared, **_: Any) -> list[np.ndarray]:
        outputs = self.model.run(prepared[0])
        return self.output_transform(outputs) if self.output_transform else outputs

    def decode(self, raw: list[np.ndarray], prepared, **options: Any) -> Detections:
        """``options``: conf, iou, max_det, classes."""
        from workbench.decode import decode

        return decode(
            raw,
            self.task,
            prepared[1],
            decoder=self.decoder,
            normalized=self.normalized,
            nc=self.nc,
            kpt_shape=self.kpt_shape,
            **options,
        )
