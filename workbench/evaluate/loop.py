"""The evaluation pass: images loaded ahead in threads, each fed to every runner, scored per protocol."""

from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from workbench.config import TASK_OF_METRIC
from workbench.errors import WorkbenchError
from workbench.evaluate.result import TIMING_KEYS, EvalResult, ProtocolResults
from workbench.evaluate.runner import EvalRunner
from workbench.evaluate.settings import EvalSettings
from workbench.fileio import sha256_file, write_json
from workbench.metrics import CocoEvaluator, MetricResult, StEvaluator, default_category_map
from workbench.metrics.st import ST_SETTINGS

COCO_SETTINGS = {"conf": 0.001, "iou": 0.7}  # Ultralytics' val defaults
PREFETCH = 4  # images decoded and pre-processed ahead of the interpreter


def evaluate(runner: EvalRunner, settings: EvalSettings, out_dir: str | Path | None = None) -> EvalResult:
    """Evaluate one model under the one protocol of ``settings``; optionally write the results files.

    The annotation file is validated for what the metric needs (keypoints for pose, masks for
    seg) before the model is opened, so a wrong dataset fails in milliseconds.

    Args:
        runner: the model file's runner (``workbench.families.evaluation_runner(path)``).
        settings: dataset, protocol, thresholds (see :class:`EvalSettings`).
        out_dir: if given, write ``detections.json`` (COCO results) and ``metrics.json`` there, atomically.

    Example:
        >>> # from workbench.families import evaluation_runner
        >>> # r = evaluate(evaluation_runner("yolov8n_256_quant_pc_uf_pose_coco-st.tflite"),
        >>> #              EvalSettings("person_keypoints_val2017.json", "val2017", "pose", max_images=200))
        >>> # r.AP, r.seconds["invoke"]
    """
    if len(settings.protocols) != 1:
        raise WorkbenchError(
            f"evaluate scores one protocol, got {list(settings.protocols)}; use evaluate_protocols for several"
        )
    _check_out_dir(out_dir)  # evaluate_protocols below writes nothing itself
    (protocol,) = settings.protocols
    results = evaluate_protocols(runner, settings)
    if out_dir is not None:
        _write(Path(out_dir), results[protocol], results.detections[protocol])
    return results[protocol]


def evaluate_protocols(
    runner: EvalRunner, settings: EvalSettings, out_dir: str | Path | None = None
) -> ProtocolResults:
    """Score one model under every protocol of ``settings`` from one inference pass over the images.

    The model runs once per image; each protocol then applies its own NMS settings and metric. The
    pre-processing is chosen once, by the first protocol, so the protocols differ in NMS and metric
    only. With ``out_dir``, each protocol's ``detections.json`` and ``metrics.json`` land in
    ``out_dir/<protocol>/``.
    """
    return evaluate_models([runner], settings, None if out_dir is None else [out_dir])[0]


def evaluate_models(
    runners: Sequence[EvalRunner], settings: EvalSettings, out_dirs: Sequence[str | Path] | None = None
) -> list[ProtocolResults]:
    """:func:`evaluate_protocols` of several models in one pass: each image is decoded and
    pre-processed once and fed to every model (e.g. every scheme of one image size).

    The models must share input size and pre-processing (float and int8 files of one export do:
    inputs are prepared in [0, 1] and quantized per model), so each model's scores are exactly
    those of its own pass. ``load`` and ``preprocess`` seconds are shared, and ``wall`` is the
    whole pass, in every model's result. ``out_dirs``: one folder per model, or None.
    """
    from workbench.data.coco import load_coco
    from workbench.data.images import warn_exif

    wall = time.perf_counter()
    runners = list(runners)
    _check_pass(runners, out_dirs)
    # Ground truth first: a dataset that cannot score this task fails before any model is opened.
    dataset = load_coco(settings.ann, settings.images, task=TASK_OF_METRIC[settings.iou_type])
    entries = dataset.images[: settings.max_images] if settings.max_images else list(dataset.images)
    if not entries:
        raise WorkbenchError("has no images to evaluate", path=settings.ann)
    for runner in runners:
        runner.open(settings)
    inputs = {runner.input_key for runner in runners}
    if len(inputs) > 1:
        raise WorkbenchError(
            f"models of one pass must share input size and pre-processing, got {sorted(map(str, inputs))}",
            path=runners[0].path,
        )
    all_scorers = [_scorers(runner, settings, dataset) for runner in runners]

    seconds = [dict.fromkeys(TIMING_KEYS, 0.0) for _ in runners]
    name = runners[0].path.name if len(runners) == 1 else f"{len(runners)} models"
    bar = tqdm(total=len(entries), desc=f"evaluate {name}", unit="img", disable=not settings.progress)
    tagged: list[Path] = []  # images with an EXIF orientation
    for entry, prepared, (t_load, t_pre) in _prefetch(
        entries, dataset, runners[0], settings.exif_transpose, tagged
    ):
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
    warn_exif(tagged, len(entries), settings.exif_transpose)

    outs = []
    for index, (scorers, spent) in enumerate(zip(all_scorers, seconds, strict=True)):
        results, detections = {}, {}
        for scorer in scorers:
            start = time.perf_counter()
            metric: MetricResult = scorer.evaluator.compute()
            spent["metric"] += time.perf_counter() - start
            results[scorer.protocol] = scorer.result(metric, len(entries), spent, wall)
            detections[scorer.protocol] = scorer.coco_results
        out = ProtocolResults(results, detections)
        if out_dirs is not None:
            for protocol, result in out.items():
                _write(Path(out_dirs[index]) / protocol, result, detections[protocol])
        outs.append(out)
    return outs


def _check_pass(runners: list[EvalRunner], out_dirs: Sequence[str | Path] | None) -> None:
    """What a pass over these runners would get wrong, refused before any file is read."""
    for out_dir in out_dirs or ():
        _check_out_dir(out_dir)
    if not runners:
        raise WorkbenchError("no model to evaluate")
    if out_dirs is not None and len(out_dirs) != len(runners):
        raise WorkbenchError(f"{len(out_dirs)} output folders for {len(runners)} models")
    for runner in runners:
        if runner.alone and len(runners) > 1:
            raise WorkbenchError(
                f"{runner.description} is evaluated alone (it pre-processes itself)", path=runner.path
            )


def _scorers(runner: EvalRunner, settings: EvalSettings, dataset) -> list[_Scorer]:
    category_map = default_category_map(dataset.to_dict(), runner.nc)
    if not category_map:
        raise WorkbenchError(
            f"none of the model's {runner.nc} classes has a category in the ground truth", path=settings.ann
        )
    if len(settings.protocols) > 1 and runner.one_protocol:
        raise WorkbenchError(
            f"{runner.description} is evaluated under one protocol at a time", path=runner.path
        )
    return [_Scorer(protocol, settings, dataset, category_map, runner) for protocol in settings.protocols]


def _write(out_dir: Path, result: EvalResult, detections: list[dict[str, Any]]) -> None:
    write_json(out_dir / "detections.json", detections, indent=None)
    write_json(out_dir / "metrics.json", result.to_dict())


class _Scorer:
    """One protocol's NMS settings, metric and collected detections over an evaluation pass."""

    def __init__(self, protocol: str, settings: EvalSettings, dataset, category_map, runner: EvalRunner):
        defaults = dict(COCO_SETTINGS) if protocol == "coco" else dict(ST_SETTINGS[settings.task])
        self.protocol, self.settings, self.runner, self.category_map = (
            protocol,
            settings,
            runner,
            category_map,
        )
        self.conf = defaults["conf"] if settings.conf is None else float(settings.conf)
        self.iou = defaults["iou"] if settings.iou is None else float(settings.iou)
        if protocol == "coco":
            self.evaluator: CocoEvaluator | StEvaluator = CocoEvaluator(
                dataset, settings.iou_type, settings.backend, category_map
            )
        else:
            self.evaluator = StEvaluator(dataset, settings.task, runner.st_eval_iou, category_map)
        # Classes without a GT category are dropped before NMS (e.g. an 80-class model on person-only GT).
        self.options = {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": settings.max_det,
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
        task = TASK_OF_METRIC[self.settings.iou_type]
        self.coco_results.extend(det.to_coco(entry["id"], self.category_map, task))
        seconds["metric"] += time.perf_counter() - start
        self.n_det += len(det)

    def result(
        self, metric: MetricResult, n_images: int, seconds: dict[str, float], wall: float
    ) -> EvalResult:
        return EvalResult(
            AP=metric.AP,
            AP50=metric.AP50,
            AP75=metric.AP75,
            APm=metric.APm,
            APl=metric.APl,
            AR=metric.AR,
            n_images=n_images,
            n_instances=metric.n_gt,
            n_detections=self.n_det,
            seconds=dict(seconds, wall=time.perf_counter() - wall),
            model=str(self.runner.path),
            sha256=sha256_file(self.runner.path),
            task=self.settings.task.value,
            protocol=self.protocol,
            iou_type=self.settings.iou_type,
            imgsz=self.runner.imgsz,
            preprocess=self.runner.preprocess_mode,
            conf=self.conf,
            iou=self.iou,
            max_det=self.settings.max_det,
            headline=metric.headline,
            metrics=metric.to_dict(),
            exif_transpose=self.settings.exif_transpose,
        )


def _prefetch(entries: list[dict], dataset, runner: EvalRunner, exif_transpose: bool, tagged: list[Path]):
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


def _check_out_dir(out_dir) -> None:
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise WorkbenchError(
            "--out names an existing file; it must be a folder (created if missing)", path=out_dir
        )
