"""Image loading that accepts any PIL-readable image and fails clearly on a broken one.

EXIF orientation is deliberately **not** applied: COCO boxes, keypoints and masks (and the
``width``/``height`` in the JSON) are in the stored pixel frame, so rotating a tagged image would
move it away from its labels. Beware that ``cv2.imread`` *does* apply EXIF orientation unless given
``cv2.IMREAD_IGNORE_ORIENTATION``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from workbench.errors import WorkbenchError

# 16-bit greyscale modes: scaled to 8 bits rather than clipped (PIL's convert("RGB") clips).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image as RGB uint8, shape (H, W, 3), in its stored pixel frame.

    Greyscale, palette, RGBA (alpha dropped), CMYK and 16-bit greyscale images are converted, not
    rejected. A missing, unreadable or truncated file raises :class:`WorkbenchError` naming it.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
        >>> Image.new("L", (4, 3), 7).save(p)
        >>> load_image(p).shape, load_image(p).dtype.name
        ((3, 4, 3), 'uint8')
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("image file not found", path=path)
    try:
        with Image.open(path) as img:
            img.load()  # decodes fully: a truncated file fails here, not later
            if img.mode in _SIXTEEN_BIT_MODES:
                grey = np.asarray(img, dtype=np.float64) / 257.0
                return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise WorkbenchError(f"cannot decode image ({err})", path=path) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """Return ``(width, height)`` from the image header, without decoding the pixels.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"
        >>> Image.new("RGB", (5, 2)).save(p)
        >>> image_size(p)
        (5, 2)
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError("image file not found", path=path)
    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except (OSError, SyntaxError, ValueError) as err:
        raise WorkbenchError(f"cannot read image header ({err})", path=path) from None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str | Path, count: int | None = None) -> list[Path]:
    """The first ``count`` (default all) image files of ``folder``, sorted so selection is deterministic.

    Raises:
        WorkbenchError: the folder is missing or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WorkbenchError("image folder not found", path=folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise WorkbenchError("no images (.jpg/.png/...) in folder", path=folder)
    return files[:count]
