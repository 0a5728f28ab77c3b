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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.config import validate_imgsz
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path, sha256_file, write_json
from workbench.offline import ensure_calibration_npy, import_tensorflow

EXPORT_META = "workbench_export.json"
ULTRALYTICS_TASK = {"pose": "pose", "segment": "seg", "detect": "detect"}


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

    def __post_init__(self) -> None:
        if self.task not in ULTRALYTICS_TASK.values():
            raise ValueError(f"unknown task {self.task!r}")
        if self.preprocess not in ("letterbox", "resize"):
            raise ValueError(f"preprocess must be letterbox or resize, got {self.preprocess!r}")
        lo, hi = (float(v) for v in self.input_range)
        if not lo < hi:
            raise ValueError(f"input_range must be increasing, got {self.input_range}")
        self.input_range = [lo, hi]

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
def _working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def export_saved_model(
    weights: str | Path, imgsz: int, out: str | Path, *, normalize: bool = True
) -> ExportResult:
    """Export ``weights`` at ``imgsz`` to ``out`` (a SavedModel folder), outputs normalized to [0, 1].

    The export runs in a scratch folder (Ultralytics writes beside the weights and into the working
    directory) and ``out`` appears only when complete. ``normalize=False`` keeps Ultralytics' pixel
    outputs (fine in float; :func:`workbench.quantize.quantize` refuses them for int8).

    Example:
        >>> export_saved_model("data/weights/yolov8n-pose-synth.pt", 256, "build/sm256")  # doctest: +SKIP
    """
    weights, out = Path(weights).resolve(), Path(out)
    imgsz = validate_imgsz(imgsz)
    if not weights.is_file():
        raise WorkbenchError("weights file not found", path=weights)
    from ultralytics import YOLO

    import_tensorflow()  # before Ultralytics' exporter pulls it in (see offline.import_tensorflow)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-export-") as scratch:
        scratch = Path(scratch)
        local = scratch / weights.name
        shutil.copyfile(weights, local)
        ensure_calibration_npy(scratch)
        try:
            model = YOLO(str(local))
        except Exception as err:  # corrupt or foreign checkpoints fail deep inside torch.load
            raise WorkbenchError(f"cannot load checkpoint: {err}", path=weights) from None
        task = ULTRALYTICS_TASK.get(model.task)
        if task is None:
            raise WorkbenchError(f"task {model.task!r} is not exportable here", path=weights)
        head = normalized_head() if normalize else contextlib.nullcontext()
        # onnx2tf builds a tf_keras model whose layer names come from process-wide counters: reset
        # them, or a second export in one process names its tensors differently (same numbers,
        # other .tflite bytes) and a file's hash would depend on what the process did before.
        import tf_keras

        tf_keras.backend.clear_session()
        with _working_dir(scratch), head, _quiet():
            exported = Path(model.export(format="saved_model", imgsz=imgsz, device="cpu", verbose=False))
        for tflite in exported.glob("*.tflite"):  # onnx2tf's own conversions; we quantize ourselves
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
        )
        meta = result.to_dict()
        meta.pop("saved_model")
        write_json(exported / EXPORT_META, meta)
        with atomic_path(out) as tmp:
            shutil.move(str(exported), tmp)
    return result


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnx2tf prints a line per op; keep the notebook output readable."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
