"""Export an Ultralytics ``.pt`` to a float TF SavedModel whose head outputs normalized coordinates.

Why normalized: the SavedModel export emits pixel coordinates in one ``(1, 4+nc+3K, N)`` tensor.
Full-int8 gives that tensor one scale, so boxes in [0, imgsz] and scores in [0, 1] share it and every
score collapses to a few levels. Dividing coordinates by the image size inside the head (Ultralytics'
``tf_wrapper``, used by its Edge TPU path; ST's zoo models do the same) keeps all channels in [0, 1].
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.config import METRIC_OF_TASK, TASK_OF_ULTRALYTICS, validate_imgsz
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, sha256_file, write_json
from workbench.offline import ensure_calibration_npy, import_tensorflow
from workbench.safeload import check_weights

EXPORT_META = "workbench_export.json"
HEADS = ("single", "split", "levels")


@dataclass
class ExportResult:
    """A float SavedModel with normalized outputs and the metadata that travels with it."""

    saved_model: Path
    task: str
    imgsz: int
    names: dict[int, str]
    kpt_shape: list[int] | None
    normalized: bool
    weights: str
    weights_sha256: str
    seconds: float
    ultralytics: dict[str, Any] = field(default_factory=dict)
    # How images become the model input; quantize calibrates and the runtime feeds the same way.
    family: str = "yolo"
    preprocess: str = "letterbox"
    interpolation: str = "bilinear"
    input_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    head: str = "single"
    equalized: bool = False
    split_channels: bool = False  # convolutions split by channel range (the split-channels recipe)
    kpt_clip: list[float] | None = None
    bias_corrected: str | None = None  # "<granularity>:<calibration digest>" (the bias-correct recipe)
    qat: str | None = None  # "<granularity>:<calibration digest>" (the qat recipe)

    def __post_init__(self) -> None:
        if self.task not in METRIC_OF_TASK:
            raise ValueError(f"unknown task {self.task!r}")
        if self.preprocess not in ("letterbox", "resize"):
            raise ValueError(f"preprocess must be letterbox or resize, got {self.preprocess!r}")
        lo, hi = (float(v) for v in self.input_range)
        if not lo < hi:
            raise ValueError(f"input_range must be increasing, got {self.input_range}")
        self.input_range = [lo, hi]
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["saved_model"] = str(self.saved_model)
        out["names"] = {str(k): v for k, v in self.names.items()}
        return out

    @classmethod
    def load(cls, saved_model: str | Path) -> ExportResult:
        """Read the metadata written beside a SavedModel by :func:`export_saved_model`."""
        meta_path = Path(saved_model) / EXPORT_META
        if not Path(saved_model).is_dir():
            raise WorkbenchError("SavedModel folder not found", path=saved_model)
        if not meta_path.is_file():
            raise WorkbenchError(f"no {EXPORT_META}: not exported by `workbench export`", path=saved_model)
        meta = json.loads(meta_path.read_text())
        meta["saved_model"] = Path(saved_model)
        meta["names"] = {int(k): v for k, v in meta["names"].items()}
        return cls(**meta)


@contextlib.contextmanager
def normalized_head() -> Iterator[None]:
    """Temporarily make Detect/Pose heads (and subclasses: Segment) decode to normalized coordinates."""
    from ultralytics.nn.modules import Detect, Pose
    from ultralytics.utils.export import tensorflow as tfx

    saved = (Detect._get_decode_boxes, Pose.kpts_decode)

    def kpts_decode(self, kpts):
        return tfx._tf_kpts_decode(self, kpts, is_pose26=False)

    Detect._get_decode_boxes = tfx._tf_decode_boxes
    Pose.kpts_decode = kpts_decode
    try:
        yield
    finally:
        Detect._get_decode_boxes, Pose.kpts_decode = saved


@contextlib.contextmanager
def split_head(kpt_clip: Sequence[float] | None = None, levels: bool = False) -> Iterator[None]:
    """Temporarily make Detect/Pose heads stop before the decode, with one output per quantity.

    Outputs, each (1, C, N) over the N anchors of strides 8/16/32 and each with its own int8 scale
    once quantized: box distances left/top/right/bottom from the anchor in stride units (the DFL
    expectation, 0..reg_max-1), class scores (sigmoid), and for pose the keypoint offsets
    (1, 2K, N) before ``(2·v + anchor − 0.5)·stride`` and their visibilities (1, K, N, sigmoid).
    Every output is then in units of its anchor's stride, so int8 rounding costs the same fraction
    of a small person as of a large one; :func:`workbench.decode.yolo.assemble_split_head` finishes
    the decode in float, as NPU deployments do. ``kpt_clip`` = (low, high) clamps the keypoint
    offsets in the graph (the ``calib-percentile`` recipe), so min/max calibration sees that range.

    ``levels=True`` (the ``split-levels`` recipe) goes further: no concatenation across the three
    stride levels (an int8 CONCATENATION gives its inputs one shared scale, so the level with the
    widest range sets the step of all three), and the keypoint conv is cut in two, x/y rows and
    visibility rows, so the visibility logits no longer set the offsets' scale. The outputs are
    then 4 (detect: 2) per level, (1, C, N_level) each, stride 8 first; the float maths is unchanged.
    """
    import torch
    from ultralytics.nn.modules import Detect, Pose

    saved = (Detect._inference, Pose._inference, Detect.forward_head, Pose.forward_head)

    def detect_inference(self, x):
        if levels:
            return tuple(
                out
                for box, score in zip(x["boxes"], x["scores"], strict=True)
                for out in (self.dfl(box), score.sigmoid())
            )
        return self.dfl(x["boxes"]), x["scores"].sigmoid()

    def clip(xy):
        if kpt_clip is None:
            return xy
        # c·clamp(x/c, −1, 1), not clamp(x, lo, hi): the converter folds 1/c into the conv and fuses
        # the clamp as RELU_N1_TO_1, so the conv's own int8 range becomes ±c; a bare clamp is a
        # MINIMUM/MAXIMUM pair that keeps the conv's full range
        c = max(abs(float(v)) for v in kpt_clip)
        return (xy / c).clamp(-1.0, 1.0) * c

    def pose_inference(self, x):
        if levels:  # per level: box, scores, offsets[, visibilities]
            detect = detect_inference(self, x)
            return tuple(
                out
                for i, (xy, vis) in enumerate(x["kpts"])
                for out in (*detect[2 * i : 2 * i + 2], clip(xy), *(() if vis is None else (vis.sigmoid(),)))
            )
        bs, (k, d) = x["kpts"].shape[0], self.kpt_shape
        kpts = x["kpts"].view(bs, k, d, -1)
        xy = kpts[:, :, :2].reshape(bs, 2 * k, -1)
        outputs = (*detect_inference(self, x), clip(xy))
        return (*outputs, kpts[:, :, 2].sigmoid()) if d == 3 else outputs

    def detect_levels(self, x, box_head=None, cls_head=None):
        if box_head is None or cls_head is None:
            return {}
        bs = x[0].shape[0]
        return {
            "boxes": [box_head[i](x[i]).view(bs, 4 * self.reg_max, -1) for i in range(self.nl)],
            "scores": [cls_head[i](x[i]).view(bs, self.nc, -1) for i in range(self.nl)],
            "feats": x,
        }

    def pose_levels(self, x, box_head, cls_head, pose_head):
        preds = detect_levels(self, x, box_head, cls_head)
        if pose_head is not None:
            bs, (k, d) = x[0].shape[0], self.kpt_shape
            rows = torch.arange(k * d).view(k, d)
            xy_rows, vis_rows = rows[:, :2].reshape(-1), rows[:, 2] if d == 3 else None
            preds["kpts"] = []
            for i in range(self.nl):
                *body, last = pose_head[i]
                feat = torch.nn.Sequential(*body)(x[i])
                xy = torch.nn.functional.conv2d(feat, last.weight[xy_rows], last.bias[xy_rows])
                vis = None
                if vis_rows is not None:
                    vis = torch.nn.functional.conv2d(feat, last.weight[vis_rows], last.bias[vis_rows]).view(
                        bs, k, -1
                    )
                preds["kpts"].append((xy.view(bs, 2 * k, -1), vis))
        return preds

    Detect._inference, Pose._inference = detect_inference, pose_inference
    if levels:
        Detect.forward_head, Pose.forward_head = detect_levels, pose_levels
    try:
        yield
    finally:
        Detect._inference, Pose._inference, Detect.forward_head, Pose.forward_head = saved


def keypoint_offset_percentiles(
    weights: str | Path, batches: Sequence[Any], percentile: float, equalize: bool = False
) -> list[float]:
    """(low, high) percentiles of a pose model's split-head keypoint offsets over ``batches``.

    Runs the float PyTorch model on the calibration inputs ((1, S, S, 3) in [0, 1]); the values
    are what :func:`split_head`'s ``kpt_clip`` takes.
    """
    import numpy as np
    import torch
    from ultralytics import YOLO

    check_weights(weights)
    model = YOLO(str(weights)).model.float().eval()
    if equalize:
        from workbench.recipes.equalize import equalize_model

        equalize_model(model)
    values = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a multi-threaded pool ran 15x slower here beside other jobs on 2 cores
    try:
        with torch.no_grad(), split_head():
            for batch in batches:
                outputs, _ = model(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))
                values.append(outputs[2].numpy().ravel())
    finally:
        torch.set_num_threads(threads)
    low, high = np.percentile(np.concatenate(values), [100 - percentile, percentile])
    return [round(float(low), 4), round(float(high), 4)]


@contextlib.contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def export_saved_model(
    weights: str | Path,
    imgsz: int,
    out: str | Path,
    *,
    normalize: bool = True,
    head: str = "single",
    equalize: bool = False,
    split_channels: bool = False,
    kpt_clip: Sequence[float] | None = None,
    bias_correct: tuple[str, Sequence[Any]] | None = None,
    qat: tuple[str, Sequence[Any]] | None = None,
) -> ExportResult:
    """Export ``weights`` at ``imgsz`` to ``out`` (a SavedModel folder), outputs normalized to [0, 1].

    The export runs in a scratch folder (Ultralytics writes beside the weights and into the working
    directory) and ``out`` appears only when complete. ``normalize=False`` keeps Ultralytics' pixel
    outputs (fine in float; :func:`workbench.quantize.quantize` refuses them for int8).
    ``head="split"`` ends the graph before the decode (:func:`split_head`); ``equalize`` applies
    cross-layer equalization to the fused float model first (:mod:`workbench.recipes.equalize`);
    ``split_channels`` splits its convolutions by channel range (:mod:`workbench.recipes.split_channels`,
    last, as the split modules are no longer plain convolutions);
    ``bias_correct`` = (tag, calibration batches) then corrects the biases for int8 weights at the
    tag's granularity (``per-tensor:…`` or ``per-channel:…``, :mod:`workbench.recipes.bias_correct`);
    ``qat`` = (tag, calibration batches) fine-tunes under int8 weights at the tag's granularity
    (:mod:`workbench.recipes.qat`).

    Example:
        >>> export_saved_model("data/weights/yolov8n-pose-synth.pt", 256, "build/sm256")  # doctest: +SKIP
    """
    weights, out = Path(weights).resolve(), Path(out)
    imgsz = validate_imgsz(imgsz)
    if head not in HEADS:
        raise WorkbenchError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if not weights.is_file():
        raise WorkbenchError("weights file not found", path=weights)
    from ultralytics import YOLO

    import_tensorflow()  # before Ultralytics' exporter pulls it in (see offline.import_tensorflow)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-export-") as scratch:
        scratch = Path(scratch)
        local = scratch / weights.name
        check_weights(weights)
        shutil.copyfile(weights, local)
        ensure_calibration_npy(scratch)
        try:
            model = YOLO(str(local))
        except Exception as err:  # corrupt or foreign checkpoints fail deep inside torch.load
            raise WorkbenchError(f"cannot load checkpoint: {err}", path=weights) from None
        task = TASK_OF_ULTRALYTICS.get(model.task)
        if task is None:
            raise WorkbenchError(f"task {model.task!r} is not exportable here", path=weights)
        if head != "single" and task not in ("pose", "detect"):
            raise WorkbenchError(
                f"a split head is built for pose and detect models, not {task}", path=weights
            )
        from workbench.recipes.qat import QAT_TASKS

        if qat is not None and task not in QAT_TASKS:
            raise WorkbenchError(
                f"qat distils the split head's outputs, built for pose and detect models, not {task}",
                path=weights,
            )
        if equalize:
            from workbench.recipes.equalize import equalize_model

            equalize_model(model.model)
        if bias_correct is not None:
            from workbench.recipes.bias_correct import correct_biases

            correct_biases(
                model.model, bias_correct[1], per_channel=bias_correct[0].startswith("per-channel")
            )
        if qat is not None:
            from workbench.recipes.qat import finetune_int8

            finetune_int8(model.model, qat[1], per_channel=qat[0].startswith("per-channel"))
        if split_channels:
            from workbench.recipes.split_channels import split_model

            split_model(model.model)
        decode = (
            split_head(kpt_clip, levels=head == "levels")
            if head != "single"
            else normalized_head()
            if normalize
            else contextlib.nullcontext()
        )
        # onnx2tf builds a tf_keras model whose layer names come from process-wide counters: reset
        # them, or a second export in one process names its tensors differently (same numbers,
        # other .tflite bytes) and a file's hash would depend on what the process did before.
        import tf_keras

        tf_keras.backend.clear_session()
        with _working_dir(scratch), decode, _quiet(), _no_onnx2tf_tflite():
            exported = Path(model.export(format="saved_model", imgsz=imgsz, device="cpu", verbose=False))
        for tflite in exported.glob("*.tflite"):  # onnx2tf's (empty) files; we quantize ourselves
            tflite.unlink()
        ultra_meta = yaml.safe_load((exported / "metadata.yaml").read_text())
        result = ExportResult(
            saved_model=out,
            task=task,
            imgsz=imgsz,
            names={int(k): v for k, v in model.names.items()},
            kpt_shape=list(ultra_meta["kpt_shape"]) if ultra_meta.get("kpt_shape") else None,
            normalized=normalize,
            weights=str(weights),
            weights_sha256=sha256_file(weights),
            seconds=round(time.perf_counter() - started, 1),
            ultralytics=_jsonable(ultra_meta),
            head=head,
            equalized=equalize,
            split_channels=split_channels,
            kpt_clip=None if kpt_clip is None else [float(v) for v in kpt_clip],
            bias_corrected=None if bias_correct is None else bias_correct[0],
            qat=None if qat is None else qat[0],
        )
        meta = result.to_dict()
        meta.pop("saved_model")
        write_json(exported / EXPORT_META, meta)
        with atomic_path(out) as tmp:
            shutil.move(str(exported), tmp)
    return result


@contextlib.contextmanager
def _no_onnx2tf_tflite() -> Iterator[None]:
    """onnx2tf converts the SavedModel it has written to float32 and float16 .tflite files, which
    we delete (quantize converts from the SavedModel): give it a converter that converts nothing.
    The SavedModel is written before, and is the same either way."""
    from types import SimpleNamespace

    converter = import_tensorflow().lite.TFLiteConverter
    saved = converter.__dict__["from_concrete_functions"]

    class Nothing:  # takes the options onnx2tf sets, returns an empty flatbuffer
        def __init__(self):
            self.target_spec = SimpleNamespace()

        def convert(self) -> bytes:
            return b""

    converter.from_concrete_functions = lambda *args, **kwargs: Nothing()
    try:
        yield
    finally:
        converter.from_concrete_functions = saved


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnx2tf prints a line per op; keep the notebook output readable."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
