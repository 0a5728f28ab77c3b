"""Run a .tflite file: LiteRT interpreter, pre-processing, input quantization, output dequantization.

Integer inputs receive raw pixel codes whatever their real-value range — ``uint8: round(x*255)``,
``int8: round(x*255) - 128`` for ``x`` in [0, 1] — because that is what ST's zoo files and the
TFLite converter's integer I/O expect (ST's SSD, uint8 with scale 1/127.5 and zero point 127, reads
codes 0..255 as [-1, 1]; YOLO, scale 1/255 and zero point 0, as [0, 1]). The input's quantization
parameters are checked against that rule and a warning names the file if they look wrong. Float
inputs receive ``x`` mapped onto ``metadata["workbench"]["input_range"]`` (default [0, 1]).

Metadata rides along exactly as Ultralytics stores it: a ``metadata.json`` inside a zip archive
appended to the flatbuffer (see :func:`read_tflite_metadata`). Workbench keys live under
``metadata["workbench"]``.
"""

from __future__ import annotations

import io
import json
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_path
from workbench.preprocess import ImageTransform, letterbox, resize
from workbench.safeparse import loads_json

PREPROCESS_MODES = ("letterbox", "resize")
METADATA_NAME = "metadata.json"
MAX_METADATA_BYTES = 16 << 20  # ours and Ultralytics' are kilobytes; a zip bomb inflates to gigabytes
# Real-value ranges a 0..255 code range may sensibly stand for (zoo files carry no metadata).
_SENSIBLE_INPUT_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (-128.0, 127.0))


@dataclass
class TensorSpec:
    """One input or output tensor of a model.

    ``scale``/``zero_point`` are set for per-tensor quantized tensors, ``None`` otherwise;
    ``per_axis_scales_len`` is the number of scales (0 float, 1 per-tensor, >1 per-axis).

    Example:
        >>> TensorSpec("x", 0, (1, 8, 8, 3), "uint8", 1 / 255, 0, 1).is_quantized
        True
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int | None
    per_axis_scales_len: int

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.dtype = np.dtype(self.dtype).name

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> TensorSpec:
        """Build from one entry of LiteRT's ``get_input_details()``/``get_tensor_details()``."""
        qp = details.get("quantization_parameters") or {}
        scales = np.asarray(qp.get("scales", []))
        zps = np.asarray(qp.get("zero_points", []))
        per_tensor = len(scales) == 1 and float(scales[0]) != 0.0
        return cls(
            name=str(details["name"]),
            index=int(details["index"]),
            shape=tuple(details["shape"]),
            dtype=np.dtype(details["dtype"]).name,
            scale=float(scales[0]) if per_tensor else None,
            zero_point=int(zps[0]) if per_tensor and len(zps) else None,
            per_axis_scales_len=int(len(scales)),
        )

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        """Real values as float32: ``(q - zero_point) * scale``, or a float32 copy if not quantized."""
        if self.scale is None:
            return np.asarray(values, dtype=np.float32).copy()
        return (
            (np.asarray(values, dtype=np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)
        ).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


# ---- metadata ------------------------------------------------------------------------------------
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's epoch


def _zip_start(data: bytes) -> int | None:
    """Offset where an appended zip archive starts in ``data``, or None if there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        return None
    # zipfile shifts header offsets by the prepended flatbuffer's length, so the smallest one is it.
    return min((i.header_offset for i in infos), default=None)


def read_tflite_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` appended to a .tflite (Ultralytics' convention); ``{}`` if none.

    Example:
        >>> read_tflite_metadata("/nonexistent.tflite")
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: /nonexistent.tflite: model file not found
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("model file not found", path=path)
    try:
        with zipfile.ZipFile(path) as zf:
            if METADATA_NAME not in zf.namelist():
                return {}
            with zf.open(METADATA_NAME) as member:  # bounded: the declared size may lie
                raw = member.read(MAX_METADATA_BYTES + 1)
    except zipfile.BadZipFile:
        return {}
    if len(raw) > MAX_METADATA_BYTES:
        raise WorkbenchError(
            f"appended {METADATA_NAME} inflates to more than {MAX_METADATA_BYTES >> 20} MB; not a model's metadata",
            path=path,
        )
    try:
        meta = loads_json(raw, path=path)
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"appended {METADATA_NAME} is not valid JSON: {err}", path=path) from None
    if not isinstance(meta, dict):
        raise WorkbenchError(f"appended {METADATA_NAME} is not a JSON object", path=path)
    return meta


def write_tflite_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Replace (or add) the appended ``metadata.json`` of a .tflite, atomically.

    Other members of an existing appended archive are kept. The flatbuffer bytes are unchanged.

    Example:
        >>> # write_tflite_metadata("model.tflite", {"imgsz": [256, 256], "workbench": {"preprocess": "letterbox"}})
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("model file not found", path=path)
    try:
        text = json.dumps(metadata, indent=2)
    except (TypeError, ValueError) as err:
        raise WorkbenchError(f"metadata is not JSON-serializable: {err}", path=path) from None
    data = path.read_bytes()
    start = _zip_start(data)
    kept: list[tuple[zipfile.ZipInfo, bytes]] = []
    if start is not None:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            kept = [(i, zf.read(i)) for i in zf.infolist() if i.filename != METADATA_NAME]
        data = data[:start]
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        with zipfile.ZipFile(tmp, "a", zipfile.ZIP_DEFLATED) as zf:
            for info, blob in kept:
                zf.writestr(info, blob)
            # a fixed timestamp: the same model and metadata give the same bytes (and sha256)
            info = zipfile.ZipInfo(METADATA_NAME, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text)


# ---- model ---------------------------------------------------------------------------------------
def make_interpreter(path: str | Path, threads: int = 2, **kwargs: Any):
    """A LiteRT ``Interpreter`` with tensors allocated; bad files become a :class:`WorkbenchError`."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("model file not found", path=path)
    try:
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=int(threads), **kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            if "XNNPack" not in str(err) or "experimental_op_resolver_type" in kwargs:
                raise
            # XNNPACK refuses some graphs that mix float and int8 ops (selective quantization);
            # LiteRT's builtin kernels run them, more slowly
            from ai_edge_litert.interpreter import OpResolverType

            warnings.warn(
                f"{path}: XNNPACK cannot run this graph; using LiteRT's builtin kernels", stacklevel=2
            )
            kwargs = dict(
                kwargs, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
            interpreter = Interpreter(model_path=str(path), num_threads=int(threads), **kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkbenchError(f"not a loadable TFLite model ({first})", path=path) from None
    return interpreter


class TFLiteModel:
    """A .tflite model ready to run on RGB images.

    Args:
        path: the .tflite file.
        threads: interpreter threads.
        preprocess: "letterbox" or "resize"; default from ``metadata["workbench"]["preprocess"]``,
            else "letterbox" (Ultralytics files and ST's zoo files carry no such key).
        preserve_all_tensors: keep every intermediate tensor readable after ``run`` (for per-layer
            comparisons); runs the plain builtin kernels without the XNNPACK delegate, which would
            fuse ops and free intermediates.

    Example:
        >>> # model = TFLiteModel("yolov8n_256_quant_pc_uf_pose_coco-st.tflite")
        >>> # outputs, transform = model(image_rgb)      # float32 outputs, geometry back to the image
        >>> # boxes = transform.inverse_boxes(xyxy_in_input_pixels)
    """

    def __init__(
        self,
        path: str | Path,
        threads: int = 2,
        preprocess: str | None = None,
        *,
        preserve_all_tensors: bool = False,
    ):
        self._path = Path(path)
        extra: dict[str, Any] = {}
        if preserve_all_tensors:
            from ai_edge_litert.interpreter import OpResolverType

            extra = {
                "experimental_preserve_all_tensors": True,
                "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            }
        self._interpreter = make_interpreter(self._path, threads, **extra)
        self._metadata = read_tflite_metadata(self._path)
        self.threads = int(threads)
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise WorkbenchError(f"expected one input tensor, found {len(inputs)}", path=self._path)
        self._input = TensorSpec.from_details(inputs[0])
        self._outputs = [TensorSpec.from_details(d) for d in self._interpreter.get_output_details()]
        shape = self._input.shape
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise WorkbenchError(
                f"expected an NHWC input of shape (1, H, W, 3), got {shape}", path=self._path
            )
        wb = self._metadata.get("workbench", {})
        mode = preprocess or wb.get("preprocess") or "letterbox"
        if mode not in PREPROCESS_MODES:
            raise WorkbenchError(
                f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}", path=self._path
            )
        self._preprocess_mode = mode
        self._interpolation = wb.get("interpolation", "bilinear")
        lo, hi = wb.get("input_range", (0.0, 1.0))
        self._input_range = (float(lo), float(hi))
        self.last_invoke_ms: float | None = None
        self._check_input_quantization(expected=wb.get("input_range"))

    # ---- properties -----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def input(self) -> TensorSpec:
        return self._input

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._outputs)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._input.shape[1], self._input.shape[2]

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def preprocess_mode(self) -> str:
        return self._preprocess_mode

    @property
    def interpreter(self):
        """The underlying LiteRT interpreter (for timing and inspection)."""
        return self._interpreter

    # ---- running ---------------------------------------------------------------------------------
    def preprocess(self, image_rgb_uint8: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """Letterbox/resize to the input size; returns float32 (1, H, W, 3) in [0, 1] and the geometry."""
        if self._preprocess_mode == "letterbox":
            image, transform = letterbox(image_rgb_uint8, self.input_hw)
        else:
            image, transform = resize(image_rgb_uint8, self.input_hw, self._interpolation)
        return (image.astype(np.float32) / np.float32(255.0))[None], transform

    def quantize_input(self, x01: np.ndarray) -> np.ndarray:
        """The array to feed the input tensor for images ``x01`` in [0, 1] (see module docstring)."""
        x01 = np.asarray(x01, dtype=np.float32)
        if x01.shape != self._input.shape:
            raise WorkbenchError(
                f"input must have shape {self._input.shape}, got {x01.shape}", path=self._path
            )
        dtype = self._input.dtype
        if dtype == "uint8":
            return np.clip(np.round(x01 * 255.0), 0, 255).astype(np.uint8)
        if dtype == "int8":
            return np.clip(np.round(x01 * 255.0) - 128, -128, 127).astype(np.int8)
        if dtype in ("float32", "float16"):
            lo, hi = self._input_range
            return (lo + x01 * (hi - lo)).astype(dtype)
        raise WorkbenchError(f"unsupported input dtype {dtype}", path=self._path)

    def invoke_raw(self) -> float:
        """Run the interpreter on whatever input is set; returns and records the time in ms."""
        start = time.perf_counter()
        self._interpreter.invoke()
        self.last_invoke_ms = (time.perf_counter() - start) * 1e3
        return self.last_invoke_ms

    def run(self, x01: np.ndarray) -> list[np.ndarray]:
        """Run on float32 (1, H, W, 3) images in [0, 1]; returns float32 (dequantized) outputs."""
        self._interpreter.set_tensor(self._input.index, self.quantize_input(x01))
        self.invoke_raw()
        return [spec.dequantize(self._interpreter.get_tensor(spec.index)) for spec in self._outputs]

    def __call__(self, image_rgb_uint8: np.ndarray) -> tuple[list[np.ndarray], ImageTransform]:
        x, transform = self.preprocess(image_rgb_uint8)
        return self.run(x), transform

    def _check_input_quantization(self, expected: Any) -> None:
        spec = self._input
        if spec.dtype not in ("uint8", "int8") or spec.scale is None:
            return
        qmin, qmax = (0, 255) if spec.dtype == "uint8" else (-128, 127)
        real = ((qmin - spec.zero_point) * spec.scale, (qmax - spec.zero_point) * spec.scale)
        candidates = [tuple(expected)] if expected is not None else _SENSIBLE_INPUT_RANGES
        for lo, hi in candidates:
            tol = 0.02 * (hi - lo)
            if abs(real[0] - lo) <= tol and abs(real[1] - hi) <= tol:
                return
        warnings.warn(
            f"{self._path}: {spec.dtype} input (scale {spec.scale:.6g}, zero point {spec.zero_point}) maps pixel "
            f"codes onto [{real[0]:.4g}, {real[1]:.4g}], not a usual input range; raw pixel codes are fed anyway",
            stacklevel=3,
        )

    def __repr__(self) -> str:
        return (
            f"TFLiteModel({str(self._path)!r}, input={self._input.dtype}{list(self._input.shape)}, "
            f"outputs={len(self._outputs)}, preprocess={self._preprocess_mode!r})"
        )
