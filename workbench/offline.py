"""Make Ultralytics, TensorFlow and matplotlib safe to use offline.

Call :func:`configure` before importing Ultralytics (``workbench/__init__`` does it). It:

- sets ``YOLO_OFFLINE=1`` so Ultralytics makes no DNS probes and no pip auto-installs;
- keeps Ultralytics' settings, matplotlib's and TF's caches inside the project cache folder
  (``WORKBENCH_CACHE``, default ``<repo>/.cache``), so nothing is written to ``~``;
- puts a TTF at ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf`` (Ultralytics downloads it otherwise),
  copied from the DejaVuSans font that matplotlib ships;
- provides the calibration ``.npy`` that Ultralytics' TF export otherwise downloads
  (:func:`ensure_calibration_npy`), in whichever directory the export runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
CALIBRATION_NPY = "calibration_image_sample_data_20x128x128x3_float32.npy"


def cache_dir() -> Path:
    """The project cache folder (``WORKBENCH_CACHE`` or ``<repo>/.cache``)."""
    return Path(os.environ.get("WORKBENCH_CACHE", REPO_ROOT / ".cache")).resolve()


def configure() -> Path:
    """Set the offline environment. Idempotent; returns the cache folder."""
    root = cache_dir()
    yolo_dir = root / "ultralytics"
    env = {
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(yolo_dir),
        "YOLO_VERBOSE": os.environ.get("YOLO_VERBOSE", "False"),
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg"),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "TFHUB_CACHE_DIR": str(root / "tfhub"),
        "TORCH_HOME": str(root / "torch"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_DISABLED": "true",
        "WANDB_MODE": "disabled",
    }
    for key, value in env.items():
        os.environ.setdefault(key, value)
    os.environ["YOLO_OFFLINE"] = "1"
    for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    _install_font(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")
    return root


def _install_font(font_dir: Path) -> None:
    """Copy matplotlib's DejaVuSans as the fonts Ultralytics would download."""
    targets = [font_dir / "Arial.ttf", font_dir / "Arial.Unicode.ttf"]
    if all(t.exists() for t in targets):
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    font_dir.mkdir(parents=True, exist_ok=True)
    for target in targets:
        if not target.exists():
            shutil.copyfile(source, target)


def ensure_calibration_npy(directory: str | Path = ".") -> Path:
    """Write the small calibration array Ultralytics' TF export would download.

    The export only uses it for onnx2tf's own int8 check; we quantize with our own representative
    dataset, so deterministic noise in [0, 1] is enough.
    """
    path = Path(directory) / CALIBRATION_NPY
    if not path.exists():
        rng = np.random.default_rng(0)
        np.save(path, rng.random((20, 128, 128, 3), dtype=np.float32))
    return path


def import_tensorflow():
    """Import TensorFlow after torchvision, and return it.

    TensorFlow and torchvision's triton each bundle LLVM; with TensorFlow loaded first, a later
    ``import torchvision`` (Ultralytics' NMS, our decoder's NMS) dies with a segmentation fault.
    Loading torchvision first is safe in either order of use, so every TensorFlow import in the
    workbench goes through here.
    """
    import torchvision  # noqa: F401  (must precede tensorflow: see docstring)

    # isort: split
    import tensorflow as tf

    return tf
