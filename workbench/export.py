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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from workbench.config import TASK_OF_ULTRALYTICS, validate_imgsz
from workbench.errors import WorkbenchError
from workbench.exported import EXPORT_META, HEADS, ExportResult
from workbench.fileio import atomic_path, sha256_file, write_json
from workbench.heads import normalized_head, split_head
from workbench.offline import ensure_calibration_npy, import_tensorflow
from workbench.safeload import check_weights

__all__ = [
    "EXPORT_META",
    "HEADS",
    "ExportResult",
    "export_saved_model",
]  # callers read the type from here too
# ``edit(model, task)`` changes the loaded PyTorch model before export (a family's export edits) and
# returns what to record of them: ExportResult fields (equalized, kpt_clip, bias_corrected, ...)
ModelEdit = Callable[[Any, str], dict[str, Any]]


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
    edit: ModelEdit | None = None,
) -> ExportResult:
    """Export ``weights`` at ``imgsz`` to ``out`` (a SavedModel folder), outputs normalized to [0, 1].

    The export runs in a scratch folder (Ultralytics writes beside the weights and into the working
    directory) and ``out`` appears only when complete. ``normalize=False`` keeps Ultralytics' pixel
    outputs (fine in float; :func:`workbench.quantize.quantize` refuses them for int8).
    ``head="split"`` / ``"levels"`` ends the graph before the decode (:func:`workbench.heads.split_head`,
    clamped at the ``kpt_clip`` that ``edit`` records, if any). ``edit`` changes the loaded model first
    (the yolo family's export edits: :meth:`workbench.families.yolo.YoloFamily.export`).

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
        record = edit(model.model, task) if edit is not None else {}
        decode = (
            split_head(record.get("kpt_clip"), levels=head == "levels")
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
            **record,
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
