"""Evaluate a model on a COCO dataset: runtime -> decode -> metrics, with prefetching.

One call, one protocol, whatever the model format: a ``.tflite`` (ours or ST's zoo) runs through
:class:`~workbench.runtime.TFLiteModel` and :func:`~workbench.decode.decode`; an Ultralytics
``.pt`` runs through ``YOLO(model).predict`` with the same thresholds (square letterbox,
``rect=False``, masks at original size) and :meth:`Detections.from_ultralytics`. So a float model
and its int8 conversions are scored identically.

Protocols:

- ``coco``: Ultralytics' val settings — confidence 0.001, NMS IoU 0.7, ``max_det`` (100) — and the
  COCO metric (faster-coco-eval by default) for the task's IoU type.
- ``st``: ST's model-card settings and metric (see :mod:`workbench.metrics.st`): pose NMS 0.1,
  detection NMS 0.5, confidence 0.001; AP at IoU 0.4 for SSD, 0.5 for YOLOv8 detection.

Pre-processing of a .tflite, unless given (:func:`default_preprocess`): the file's
``metadata["workbench"]["preprocess"]``; else resize for ST's SSD layout (ST's SSD scripts
``cv2.resize`` without keeping the aspect ratio); else the protocol's convention — letterbox for
``coco`` (Ultralytics' pipeline, which every YOLOv8 file was trained with) and resize for ``st``
(stm32ai-modelzoo-services evaluates with ``aspect_ratio: fit``).

Measured on tiny-coco (16 images, 32 persons; box AP 0.50:0.95, letterbox minus resize, 200
image bootstraps): ST's YOLOv8 person detectors +0.040 (letterbox better in 94 % of bootstraps),
ST's pose files -0.019 (11 %), seg +0.006 (55 %), SSD -0.003 (37 %): no family differs
significantly, so the conventions above decide rather than the data.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from workbench.config import METRIC_OF_TASK, PROTOCOLS, TASK_OF_METRIC, Task
from workbench.decode import Detections, decode, model_family
from workbench.decode.yolo import resolve_layout
from workbench.errors import WorkbenchError
from workbench.fileio import sha256_file, write_json
from workbench.metrics import CocoEvaluator, MetricResult, StEvaluator, default_category_map
from workbench.metrics.st import ST_EVAL_IOU, ST_SETTINGS
from workbench.safeload import check_weights

COCO_SETTINGS = {"conf": 0.001, "iou": 0.7}  # Ultralytics' val defaults
PREFETCH = 4  # images decoded and pre-processed ahead of the interpreter
TIMING_KEYS = ("load", "preprocess", "invoke", "decode", "metric", "wall")


@dataclass
class EvalResult:
    """Scores and costs of one evaluation.

    AP fields follow :class:`~workbench.metrics.MetricResult` (NaN when undefined). ``seconds``
    holds summed stage times: ``load`` (image decoding) and ``preprocess`` run in worker threads
    and overlap ``invoke`` (model run incl. input quantization/output dequantization), ``decode``
    (NMS, inverse transform, masks) and ``metric`` (COCO/ST evaluation); ``wall`` is end to end.

    Example:
        >>> r = EvalResult(0.5, 0.7, 0.5, 0.4, 0.6, 0.6, n_images=2, n_instances=3, n_detections=9,
        ...                seconds={k: 0.0 for k in TIMING_KEYS}, model="m.tflite", sha256="0" * 64,
        ...                task="pose", protocol="coco", iou_type="keypoints")
        >>> r.to_dict()["AP50"]
        0.7
    """

    AP: float
    AP50: float
    AP75: float
    APm: float
    APl: float
    AR: float
    n_images: int
    n_instances: int
    n_detections: int
    seconds: dict[str, float]
    model: str
    sha256: str
    task: str
    protocol: str
    iou_type: str
    imgsz: int | None = None
    preprocess: str | None = None
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    headline: str = "AP"
    metrics: dict[str, Any] = field(default_factory=dict)
    exif_transpose: bool = False

    def __post_init__(self) -> None:
        for key in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
            value = math.nan if getattr(self, key) is None else float(getattr(self, key))
            if not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise ValueError(f"{key} = {value} is not a fraction in [0, 1]")
            setattr(self, key, value)
        missing = [k for k in TIMING_KEYS if k not in self.seconds]
        if missing:
            raise ValueError(f"seconds lacks {', '.join(missing)}")
        if min(self.n_images, self.n_instances, self.n_detections) < 0:
            raise ValueError("counts must be non-negative")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds["wall"] if self.seconds["wall"] > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        out = asdict(self)
        for key in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
            out[key] = None if math.isnan(out[key]) else out[key]
        return out

    def to_pandas(self):
        """One-row frame: scores, counts, stage seconds."""
        import pandas as pd

        row = {k: v for k, v in self.to_dict().items() if k not in ("seconds", "metrics")}
        row.update({f"s_{k}": v for k, v in self.seconds.items()})
        return pd.DataFrame([row])


def evaluate(
    model_path: str | Path,
    ann: str | Path,
    images: str | Path,
    task: Task | str,
    imgsz: int | None = None,
    protocol: str = "coco",
    conf: float | None = None,
    iou: float | None = None,
    max_det: int = 100,
    max_images: int | None = None,
    out_dir: str | Path | None = None,
    threads: int = 2,
    preprocess: str | None = None,
    progress: bool = True,
    iou_type: str | None = None,
    backend: str = "faster",
    exif_transpose: bool = False,
    output_transform: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
) -> EvalResult:
    """Evaluate ``model_path`` on a COCO dataset and optionally write the results files.

    The annotation file is validated for what the metric needs (keypoints for pose, masks for
    seg) before the model is opened, so a wrong dataset fails in milliseconds.

    Args:
        model_path: .tflite or Ultralytics .pt.
        ann: COCO ground-truth JSON.
        images: folder the JSON's ``file_name`` entries are relative to.
        task: what the model predicts: pose, seg or detect.
        imgsz: input size; must match a .tflite's input (default: the model's), .pt default 640.
        protocol: "coco" or "st" (see module docstring).
        conf: confidence threshold (default per protocol: 0.001).
        iou: NMS IoU threshold (default per protocol: coco 0.7; st pose 0.1, detect 0.5).
        max_det: detections kept per image.
        max_images: evaluate only the first N images of the JSON.
        out_dir: if given, write ``detections.json`` (COCO results) and ``metrics.json`` there, atomically.
        threads: interpreter threads.
        preprocess: "letterbox" or "resize" for .tflite (default: see module docstring).
        progress: show a tqdm bar.
        iou_type: metric of another task than the model's, e.g. "bbox" to score a pose model's boxes
            on a dataset without keypoints (default: the task's own: keypoints, segm, bbox).
        backend: COCO backend, "faster" or "pycocotools".
        exif_transpose: show the model each image as displayed (EXIF orientation applied), for
            labels drawn on rotated views; by default images are read in their stored frame, as
            COCO labels are, and tagged images are warned about.
        output_transform: applied to a .tflite's float outputs before decoding (e.g. the
            diagnosis's int8 rounding of a float model's outputs).

    Returns:
        The :class:`EvalResult`.

    Example:
        >>> # r = evaluate("yolov8n_256_quant_pc_uf_pose_coco-st.tflite", "person_keypoints_val2017.json",
        >>> #              "val2017", task="pose", max_images=200)
        >>> # r.AP, r.seconds["invoke"]
    """
    _check_out_dir(out_dir)  # evaluate_protocols below writes nothing itself
    results = evaluate_protocols(
        model_path, ann, images, task, (protocol,), imgsz=imgsz, conf=conf, iou=iou, max_det=max_det,
        max_images=max_images, out_dir=None, threads=threads, preprocess=preprocess, progress=progress,
        iou_type=iou_type, backend=backend, exif_transpose=exif_transpose,
        output_transform=output_transform,
    )  # fmt: skip
    result = results[protocol]
    if out_dir is not None:
        _write(Path(out_dir), result, results.detections[protocol])
    return result


class ProtocolResults(dict):
    """``{protocol: EvalResult}`` of one pass, with each protocol's COCO results list in ``detections``."""

    def __init__(self, results: dict[str, EvalResult], detections: dict[str, list[dict[str, Any]]]):
        super().__init__(results)
        self.detections = detections


def evaluate_protocols(
    model_path: str | Path,
    ann: str | Path,
    images: str | Path,
    task: Task | str,
    protocols: Sequence[str] = ("coco",),
    imgsz: int | None = None,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int = 100,
    max_images: int | None = None,
    out_dir: str | Path | None = None,
    threads: int = 2,
    preprocess: str | None = None,
    progress: bool = True,
    iou_type: str | None = None,
    backend: str = "faster",
    exif_transpose: bool = False,
    output_transform: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
) -> ProtocolResults:
    """Score one model under several protocols from one inference pass over the images.

    The model runs once per image; each protocol then applies its own NMS settings and metric. The
    pre-processing is chosen once, by the first protocol (:func:`default_preprocess`), so the
    protocols differ in NMS and metric only. With ``out_dir``, each protocol's ``detections.json``
    and ``metrics.json`` land in ``out_dir/<protocol>/``. Arguments as :func:`evaluate`.
    """
    out_dirs = None if out_dir is None else [out_dir]
    return evaluate_models(
        [model_path], ann, images, task, protocols, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det,
        max_images=max_images, out_dirs=out_dirs, threads=threads, preprocess=preprocess,
        progress=progress, iou_type=iou_type, backend=backend, exif_transpose=exif_transpose,
        output_transform=output_transform,
    )[0]  # fmt: skip


def evaluate_models(
    model_paths: Sequence[str | Path],
    ann: str | Path,
    images: str | Path,
    task: Task | str,
    protocols: Sequence[str] = ("coco",),
    imgsz: int | None = None,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int = 100,
    max_images: int | None = None,
    out_dirs: Sequence[str | Path] | None = None,
    threads: int = 2,
    preprocess: str | None = None,
    progress: bool = True,
    iou_type: str | None = None,
    backend: str = "faster",
    exif_transpose: bool = False,
    output_transform: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
) -> list[ProtocolResults]:
    """:func:`evaluate_protocols` of several models in one pass: each image is decoded and
    pre-processed once and fed to every model (e.g. every scheme of one image size).

    The models must share input size and pre-processing (float and int8 files of one export do:
    inputs are prepared in [0, 1] and quantized per model), so each model's scores are exactly
    those of its own pass. ``load`` and ``preprocess`` seconds are shared, and ``wall`` is the
    whole pass, in every model's result. ``out_dirs``: one folder per model, or None.
    """
    from workbench.data.coco import load_coco

    wall = time.perf_counter()
    try:
        task = Task(task)
    except ValueError:
        raise WorkbenchError(
            f"unknown task {task!r}; expected one of {', '.join(t.value for t in Task)}"
        ) from None
    protocols = list(protocols)
    if not protocols or any(p not in PROTOCOLS for p in protocols) or len(set(protocols)) != len(protocols):
        raise WorkbenchError(f"protocol must be one of {', '.join(PROTOCOLS)} (each once), got {protocols}")
    iou_type = iou_type or METRIC_OF_TASK[task]
    if iou_type not in TASK_OF_METRIC:
        raise WorkbenchError(f"iou_type must be one of {', '.join(TASK_OF_METRIC)}, got {iou_type!r}")
    _check_arguments(task, iou_type, conf, iou, max_det, threads, None)
    for out_dir in out_dirs or ():
        _check_out_dir(out_dir)
    if "st" in protocols and (task is Task.SEG or iou_type != METRIC_OF_TASK[task]):
        raise WorkbenchError(
            f"protocol 'st' scores pose keypoints and detection boxes only (got task {task.value}, iou_type {iou_type})"
        )
    if max_images is not None and max_images < 1:
        raise WorkbenchError(f"max_images must be at least 1, got {max_images}")
    model_paths = [Path(p) for p in model_paths]
    if not model_paths:
        raise WorkbenchError("no model to evaluate")
    if out_dirs is not None and len(out_dirs) != len(model_paths):
        raise WorkbenchError(f"{len(out_dirs)} output folders for {len(model_paths)} models")
    for model_path in model_paths:
        if not model_path.is_file():
            raise WorkbenchError("model file not found", path=model_path)
        if model_path.suffix not in (".tflite", ".pt"):
            raise WorkbenchError("model must be a .tflite or an Ultralytics .pt file", path=model_path)
        if model_path.suffix == ".pt" and len(model_paths) > 1:
            raise WorkbenchError(
                "an Ultralytics .pt is evaluated alone (it pre-processes itself)", path=model_path
            )

    # Ground truth first: a dataset that cannot score this task fails before any model is opened.
    dataset = load_coco(ann, images, task=TASK_OF_METRIC[iou_type])
    entries = dataset.images[:max_images] if max_images else list(dataset.images)
    if not entries:
        raise WorkbenchError("has no images to evaluate", path=ann)

    runners = [
        _TFLiteRunner(path, task, threads, preprocess, imgsz, protocols[0], output_transform)
        if path.suffix == ".tflite"
        else _UltralyticsRunner(path, task, imgsz)
        for path in model_paths
    ]
    if output_transform is not None and any(p.suffix != ".tflite" for p in model_paths):
        raise WorkbenchError("output_transform applies to .tflite models only", path=model_paths[0])
    inputs = {(r.preprocess_mode, getattr(getattr(r, "model", None), "input_hw", None)) for r in runners}
    if len(inputs) > 1:
        raise WorkbenchError(
            f"models of one pass must share input size and pre-processing, got {sorted(map(str, inputs))}",
            path=model_paths[0],
        )
    all_scorers = []
    for path, runner in zip(model_paths, runners, strict=True):
        category_map = default_category_map(dataset.to_dict(), runner.nc)
        if not category_map:
            raise WorkbenchError(
                f"none of the model's {runner.nc} classes has a category in the ground truth", path=ann
            )
        scorers = [
            _Scorer(p, task, iou_type, dataset, category_map, runner, backend, conf, iou, max_det)
            for p in protocols
        ]
        # Ultralytics runs its own NMS inside predict: one protocol's settings at a time.
        if len(scorers) > 1 and isinstance(runner, _UltralyticsRunner):
            raise WorkbenchError("an Ultralytics .pt is evaluated under one protocol at a time", path=path)
        all_scorers.append(scorers)

    seconds = [dict.fromkeys(TIMING_KEYS, 0.0) for _ in runners]
    name = model_paths[0].name if len(model_paths) == 1 else f"{len(model_paths)} models"
    bar = tqdm(total=len(entries), desc=f"evaluate {name}", unit="img", disable=not progress)
    tagged: list[Path] = []  # images with an EXIF orientation
    for entry, prepared, (t_load, t_pre) in _prefetch(entries, dataset, runners[0], exif_transpose, tagged):
        for runner, scorers, spent in zip(runners, all_scorers, seconds, strict=True):
            spent["load"] += t_load
            spent["preprocess"] += t_pre
            start = time.perf_counter()
            raw = runner.run(prepared, **scorers[0].options)
            spent["invoke"] += time.perf_counter() - start
            for scorer in scorers:
                scorer.update(entry, raw, prepared, spent)
        bar.update(1)
    bar.close()
    from workbench.data.images import warn_exif

    warn_exif(tagged, len(entries), exif_transpose)

    outs = []
    for index, (path, runner, scorers, spent) in enumerate(
        zip(model_paths, runners, all_scorers, seconds, strict=True)
    ):
        results, detections = {}, {}
        for scorer in scorers:
            start = time.perf_counter()
            metric: MetricResult = scorer.evaluator.compute()
            spent["metric"] += time.perf_counter() - start
            results[scorer.protocol] = scorer.result(
                metric, entries, path, runner, spent, wall, exif_transpose
            )
            detections[scorer.protocol] = scorer.coco_results
        out = ProtocolResults(results, detections)
        if out_dirs is not None:
            for protocol, result in out.items():
                _write(Path(out_dirs[index]) / protocol, result, detections[protocol])
        outs.append(out)
    return outs


def _write(out_dir: Path, result: EvalResult, detections: list[dict[str, Any]]) -> None:
    write_json(out_dir / "detections.json", detections, indent=None)
    write_json(out_dir / "metrics.json", result.to_dict())


class _Scorer:
    """One protocol's NMS settings, metric and collected detections over an evaluation pass."""

    def __init__(self, protocol, task, iou_type, dataset, category_map, runner, backend, conf, iou, max_det):
        settings = dict(COCO_SETTINGS) if protocol == "coco" else dict(ST_SETTINGS[task])
        self.protocol, self.task, self.iou_type = protocol, task, iou_type
        self.conf = settings["conf"] if conf is None else float(conf)
        self.iou = settings["iou"] if iou is None else float(iou)
        self.max_det = max_det
        self.runner, self.category_map = runner, category_map
        if protocol == "coco":
            self.evaluator: CocoEvaluator | StEvaluator = CocoEvaluator(
                dataset, iou_type, backend, category_map
            )
        else:
            self.evaluator = StEvaluator(dataset, task, ST_EVAL_IOU[runner.family], category_map)
        # Classes without a GT category are dropped before NMS (e.g. an 80-class model on person-only GT).
        self.options = {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": max_det,
            "classes": sorted(category_map),
        }
        self.coco_results: list[dict[str, Any]] = []
        self.n_det = 0

    def update(self, entry: dict, raw, prepared, seconds: dict[str, float]) -> None:
        start = time.perf_counter()
        det = self.runner.decode(raw, prepared, **self.options)
        seconds["decode"] += time.perf_counter() - start
        start = time.perf_counter()
        self.evaluator.update(entry["id"], det)
        self.coco_results.extend(det.to_coco(entry["id"], self.category_map, TASK_OF_METRIC[self.iou_type]))
        seconds["metric"] += time.perf_counter() - start
        self.n_det += len(det)

    def result(
        self,
        metric: MetricResult,
        entries,
        model_path: Path,
        runner,
        seconds,
        wall: float,
        exif_transpose: bool,
    ) -> EvalResult:
        return EvalResult(
            AP=metric.AP,
            AP50=metric.AP50,
            AP75=metric.AP75,
            APm=metric.APm,
            APl=metric.APl,
            AR=metric.AR,
            n_images=len(entries),
            n_instances=metric.n_gt,
            n_detections=self.n_det,
            seconds=dict(seconds, wall=time.perf_counter() - wall),
            model=str(model_path),
            sha256=sha256_file(model_path),
            task=self.task.value,
            protocol=self.protocol,
            iou_type=self.iou_type,
            imgsz=runner.imgsz,
            preprocess=runner.preprocess_mode,
            conf=self.conf,
            iou=self.iou,
            max_det=self.max_det,
            headline=metric.headline,
            metrics=metric.to_dict(),
            exif_transpose=exif_transpose,
        )


# ---- runners: one per model format ---------------------------------------------------------------
def default_preprocess(metadata: dict[str, Any], family: str, protocol: str) -> str:
    """Pre-processing of a .tflite given its metadata, output family ("yolo"/"ssd") and protocol.

    Example:
        >>> default_preprocess({}, "yolo", "coco"), default_preprocess({}, "yolo", "st"), default_preprocess({}, "ssd", "coco")
        ('letterbox', 'resize', 'resize')
    """
    chosen = metadata.get("workbench", {}).get("preprocess")
    if chosen:
        return chosen
    if family == "ssd" or protocol == "st":
        return "resize"
    return "letterbox"


class _TFLiteRunner:
    """TFLiteModel + decode; prepares images in worker threads (pure numpy/cv2)."""

    def __init__(
        self,
        path: Path,
        task: Task,
        threads: int,
        preprocess: str | None,
        imgsz: int | None,
        protocol: str,
        output_transform: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
    ):
        import torchvision  # noqa: F401  (the NMS backend; loaded here so decode timings exclude its import)

        from workbench.runtime import TFLiteModel, read_tflite_metadata

        meta = read_tflite_metadata(path)
        wb = meta.get("workbench", {})
        self.output_transform = output_transform
        self.model = TFLiteModel(path, threads=threads, preprocess=preprocess or "letterbox")
        zeros = [np.zeros(spec.shape, np.float32) for spec in self.model.outputs]
        self.family = model_family(zeros)
        mode = preprocess or default_preprocess(meta, self.family, protocol)
        if mode != self.model.preprocess_mode:
            self.model = TFLiteModel(path, threads=threads, preprocess=mode)
        h, w = self.model.input_hw
        if imgsz is not None and (h, w) != (imgsz, imgsz):
            raise WorkbenchError(f"model input is {h}x{w}, not the requested imgsz {imgsz}", path=path)
        self.task = task
        self.imgsz = h if h == w else None
        self.preprocess_mode = self.model.preprocess_mode
        self.normalized = wb.get("normalized")
        kpt = meta.get("kpt_shape")
        self.kpt_shape = tuple(kpt) if kpt else None
        names = meta.get("names")
        if self.family == "ssd":
            if task is not Task.DETECT:
                raise WorkbenchError(f"an SSD model cannot be evaluated as {task.value}", path=path)
            # scores are the one output not 4 wide (boxes and anchors are); 3 classes + background
            # would also be 4 wide. Column 0 is the background.
            wide = [spec.shape[2] for spec in self.model.outputs if spec.shape[2] != 4]
            self.nc = (wide[0] if wide else 4) - 1
        else:
            _refuse_other_task(meta, zeros, task, path)
            try:
                _, _, self.nc, _ = resolve_layout(
                    zeros, task, (h, w), len(names) if names else None, self.kpt_shape
                )
            except WorkbenchError as err:
                raise WorkbenchError(err.message, path=path) from None

    def prepare(self, image: np.ndarray):
        return self.model.preprocess(image)

    def run(self, prepared, **_: Any) -> list[np.ndarray]:
        outputs = self.model.run(prepared[0])
        return self.output_transform(outputs) if self.output_transform else outputs

    def decode(self, raw: list[np.ndarray], prepared, **kw: Any) -> Detections:
        """``kw``: conf, iou, max_det, classes."""
        return decode(
            raw,
            self.task,
            prepared[1],
            normalized=self.normalized,
            nc=self.nc,
            kpt_shape=self.kpt_shape,
            **kw,
        )


def _refuse_other_task(meta: dict[str, Any], outputs: list[np.ndarray], task: Task, path: Path) -> None:
    """A YOLO file of another task would decode into nonsense (e.g. 51 keypoint channels read as
    classes, AP 0): refuse it by its metadata, or, for bare files, by COCO pose's 56-channel head."""
    names = {Task.POSE: "pose", Task.SEG: "segment", Task.DETECT: "detect"}
    declared = meta.get("task")
    if declared and declared != names[task]:
        raise WorkbenchError(
            f"is a {declared} model, not {task.value} (score its boxes with --task {declared.replace('segment', 'seg')} --iou-type bbox)",
            path=path,
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
            "evaluate it with --task pose (add --iou-type bbox to score its boxes)",
            path=path,
        )


class _UltralyticsRunner:
    """Ultralytics ``YOLO.predict`` on each image (it letterboxes and decodes itself)."""

    TASK_NAMES = {Task.POSE: "pose", Task.SEG: "segment", Task.DETECT: "detect"}

    def __init__(self, path: Path, task: Task, imgsz: int | None):
        from ultralytics import YOLO

        check_weights(path)
        try:
            self.model = YOLO(str(path))
        except Exception as err:  # Ultralytics raises many types for a bad checkpoint
            raise WorkbenchError(
                f"not a loadable Ultralytics model ({type(err).__name__}: {err})", path=path
            ) from None
        if self.model.task != self.TASK_NAMES[task]:
            raise WorkbenchError(f"is a {self.model.task} model, not {task.value}", path=path)
        self.task = task
        self.imgsz = int(imgsz or self.model.overrides.get("imgsz") or 640)
        self.preprocess_mode = "letterbox"
        self.family = "yolo"
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
        return Detections.from_ultralytics(raw)


def _prefetch(entries: list[dict], dataset, runner, exif_transpose: bool, tagged: list[Path]):
    """Yield (entry, prepared input, (load s, preprocess s)) in order, loading ahead in threads.

    Paths of images with an EXIF orientation are appended to ``tagged``.
    """
    from workbench.data.images import exif_orientation, load_image

    def work(entry: dict):
        start = time.perf_counter()
        path = dataset.image_path(entry)
        image = load_image(path, exif_transpose)
        rotated = exif_orientation(path) != 1
        if rotated:
            tagged.append(path)
        if image.shape[:2] != (entry["height"], entry["width"]):
            hint = (" (it carries an EXIF orientation: " + ("drop --exif-transpose" if exif_transpose
                    else "labels in the displayed frame need --exif-transpose") + ")") if rotated else ""  # fmt: skip
            raise WorkbenchError(
                f"image is {image.shape[1]}x{image.shape[0]} but the annotations say "
                f"{entry['width']}x{entry['height']}{hint}",
                path=path,
            )
        loaded = time.perf_counter()
        prepared = runner.prepare(image)
        return prepared, (loaded - start, time.perf_counter() - loaded)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        queue: collections.deque = collections.deque()
        items = iter(entries)
        for entry in items:
            queue.append((entry, pool.submit(work, entry)))
            if len(queue) >= PREFETCH:
                break
        while queue:
            entry, future = queue.popleft()
            nxt = next(items, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(work, nxt)))
            prepared, times = future.result()
            yield entry, prepared, times


def _check_arguments(task: Task, iou_type: str, conf, iou, max_det, threads, out_dir) -> None:
    """Refuse thresholds and counts that would silently give a meaningless AP."""
    for name, value in (("conf", conf), ("iou", iou)):
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise WorkbenchError(f"--{name} must be a number within [0, 1], got {value!r}")
    for name, value in (("max-det", max_det), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorkbenchError(f"--{name} must be an integer of at least 1, got {value!r}")
    if TASK_OF_METRIC[iou_type] not in (task, Task.DETECT):
        valid = sorted({METRIC_OF_TASK[task], "bbox"})
        raise WorkbenchError(
            f"iou_type {iou_type!r} needs a {TASK_OF_METRIC[iou_type].value} model; a {task.value} "
            f"model can be scored with: {', '.join(valid)}"
        )
    _check_out_dir(out_dir)


def _check_out_dir(out_dir) -> None:
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise WorkbenchError(
            "--out names an existing file; it must be a folder (created if missing)", path=out_dir
        )
