"""One calibration per float model and calibration set, shared by the int8 conversions that need it.

The TFLite converter calibrates for every int8 conversion: it runs the float model over every
calibration image to record activation ranges. Per-channel and per-tensor conversions of one
SavedModel with the same images calibrate the same float model on the same inputs (the weights'
granularity is applied afterwards, by the MLIR quantizer), and calibration is most of an int8
conversion's time (YOLOv8n-pose at 256 px, 100 images: 13 of 16 s). Within
:func:`reuse_calibration`, TF's calibrator keeps its last results keyed by the sha256 of the exact
model bytes it is given and of every calibration sample, so a hit returns what calibrating again
would return, and the converted file is byte-identical (tests/test_calibration.py).

The calibration images are decoded and pre-processed once per task too: within
:func:`share_images`, the conversions asking for the same images (folder, count, size and
pre-processing) get the arrays the first one prepared, made read-only, so no conversion can change
what the next one calibrates on.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

import numpy as np

DEFAULT_CALIB_COUNT = 200
KEEP = 2  # calibrated float models kept in memory, each about the size of the fp32 file
_enabled = contextvars.ContextVar("workbench_reuse_calibration", default=False)
_results: OrderedDict[str, bytes] = OrderedDict()
_lock = threading.Lock()
_installed = False
_shared_images: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "workbench_shared_calibration_images", default=None
)
stats = {"calibrated": 0, "reused": 0, "images_prepared": 0, "images_shared": 0}  # the tests read it


def calibration_batches(
    folder: str | Path,
    imgsz: int,
    count: int = DEFAULT_CALIB_COUNT,
    *,
    preprocess: str = "letterbox",
    interpolation: str = "bilinear",
    input_range: tuple[float, float] | list[float] = (0.0, 1.0),
) -> list[np.ndarray]:
    """Up to ``count`` images prepared as evaluation prepares them, as (1,S,S,3) float32 in ``input_range``."""
    from workbench.data.images import list_images, load_image
    from workbench.preprocess import letterbox, resize

    lo, hi = (np.float32(v) for v in input_range)
    batches = []
    for path in list_images(folder, count):
        if preprocess == "letterbox":
            image, _ = letterbox(load_image(path), (imgsz, imgsz))
        else:
            image, _ = resize(load_image(path), (imgsz, imgsz), interpolation)
        batches.append((lo + image.astype(np.float32) / np.float32(255.0) * (hi - lo))[None])
    return batches


def calibration_fingerprint(folder: str | Path, count: int) -> str:
    """A digest of the first ``count`` images of ``folder`` (names and bytes): what an export edit
    learned from, so a cached export is reused only for the same images."""
    from workbench.data.images import list_images

    digest = hashlib.sha256()
    for path in list_images(folder, count):
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def reuse_calibration() -> Iterator[None]:
    """Within this block, a calibration already done in this process on the same model bytes and
    the same samples is reused instead of run again."""
    _install()
    token = _enabled.set(True)
    try:
        yield
    finally:
        _enabled.reset(token)


@contextlib.contextmanager
def share_images() -> Iterator[None]:
    """Within this block, :func:`prepared_images` prepares each set of calibration images once.
    The arrays live as long as the block (100 images at 320 px: 120 MB)."""
    token = _shared_images.set({})
    try:
        yield
    finally:
        _shared_images.reset(token)


def prepared_images(key: Hashable, prepare: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """``prepare()``, or within :func:`share_images` the read-only arrays an earlier call with the
    same ``key`` prepared (``key`` must name everything the arrays depend on)."""
    shared = _shared_images.get()
    if shared is None:
        return prepare()
    if key in shared:
        stats["images_shared"] += 1
        return list(shared[key])
    batches = prepare()
    for batch in batches:
        batch.setflags(write=False)
    shared[key] = batches
    stats["images_prepared"] += 1
    return list(batches)


def clear() -> None:
    with _lock:
        _results.clear()


def _key(model_content: bytes, dataset_gen: Callable) -> str | None:
    """sha256 of the model and of every sample; None for samples other than lists of arrays
    (signature dicts are left to TF)."""
    digest = hashlib.sha256(bytes(model_content))
    for sample in dataset_gen():
        if not isinstance(sample, list) or not all(isinstance(a, np.ndarray) for a in sample):
            return None
        for array in sample:
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _install() -> None:
    """Wrap TF's ``Calibrator.calibrate`` once; outside :func:`reuse_calibration` it only delegates."""
    global _installed
    with _lock:
        if _installed:
            return
        from tensorflow.lite.python.optimize import calibrator

        original = calibrator.Calibrator.calibrate

        def calibrate(self, dataset_gen):
            key = _key(self._model_content, dataset_gen) if _enabled.get() else None
            with _lock:
                hit = _results.get(key) if key else None
                if hit is not None:
                    _results.move_to_end(key)
                    stats["reused"] += 1
                    return hit
            result = original(self, dataset_gen)
            with _lock:
                stats["calibrated"] += 1
                if key:
                    _results[key] = result
                    while len(_results) > KEEP:
                        _results.popitem(last=False)
            return result

        calibrator.Calibrator.calibrate = calibrate
        _installed = True
