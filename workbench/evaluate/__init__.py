"""Evaluate a model on a COCO dataset: runtime -> decode -> metrics, with prefetching.

A pass takes runners and one :class:`EvalSettings`. A runner adapts one model file: the generic
:class:`TFLiteRunner` runs a ``.tflite`` (ours or ST's zoo) through
:class:`~workbench.runtime.TFLiteModel` and the decoder of the file's family; each family's float
weights have its own runner (Ultralytics ``.pt`` through ``YOLO.predict`` with the same thresholds:
square letterbox, ``rect=False``, masks at original size; ST's Keras SSD ``.h5`` through tf_keras and
the SSD decoder). ``workbench.families.evaluation_runner(path)`` gives the runner of any model
file, so a float model and its int8 conversions are scored identically. This package never
imports the families: what it needs of them arrives through the runner.

Protocols:

- ``coco``: Ultralytics' val settings — confidence 0.001, NMS IoU 0.7, ``max_det`` (100) — and the
  COCO metric (faster-coco-eval by default) for the task's IoU type.
- ``st``: ST's model-card settings and metric (see :mod:`workbench.metrics.st`): pose NMS 0.1,
  detection NMS 0.5, confidence 0.001; AP at the family's evaluation IoU (SSD 0.4, YOLOv8
  detection 0.5).

Pre-processing of a .tflite, unless the settings give one: the file's
``metadata["workbench"]["preprocess"]``; else the family's default for the first protocol — for
ST's SSD, resize (ST's SSD scripts ``cv2.resize`` without keeping the aspect ratio); for YOLO,
letterbox under ``coco`` (Ultralytics' pipeline, which every YOLOv8 file was trained with) and
resize under ``st`` (stm32ai-modelzoo-services evaluates with ``aspect_ratio: fit``).

Measured on tiny-coco (16 images, 32 persons; box AP 0.50:0.95, letterbox minus resize, 200
image bootstraps): ST's YOLOv8 person detectors +0.040 (letterbox better in 94 % of bootstraps),
ST's pose files -0.019 (11 %), seg +0.006 (55 %), SSD -0.003 (37 %): no family differs
significantly, so the conventions above decide rather than the data.

Example:
    >>> # from workbench.families import evaluation_runner
    >>> # settings = EvalSettings("val.json", "val", "detect", protocols=("coco", "st"), max_images=50)
    >>> # results = evaluate_protocols(evaluation_runner("ssd_mobilenet_v1_025_256_int8.tflite"), settings)
"""

from workbench.evaluate.loop import COCO_SETTINGS, evaluate, evaluate_models, evaluate_protocols
from workbench.evaluate.result import TIMING_KEYS, EvalResult, ProtocolResults
from workbench.evaluate.runner import EvalRunner, OutputTransform, TFLiteDecoding, TFLiteRunner
from workbench.evaluate.settings import EvalSettings

__all__ = [
    "COCO_SETTINGS",
    "TIMING_KEYS",
    "EvalResult",
    "EvalRunner",
    "EvalSettings",
    "OutputTransform",
    "ProtocolResults",
    "TFLiteDecoding",
    "TFLiteRunner",
    "evaluate",
    "evaluate_models",
    "evaluate_protocols",
]
