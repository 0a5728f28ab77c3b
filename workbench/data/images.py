"""Image loading that accepts any PIL-readable image and fails clearly on a broken one.

EXIF orientation is by default **not** applied: COCO boxes, keypoints and masks (and the
``width``/``height`` in the JSON) are in the stored pixel frame, so rotating a tagged image would
move it away from its labels. Labels drawn on the displayed (rotated) image need
``exif_transpose=True``; :func:`exif_orientation` tells which images are tagged, so callers can
warn. Beware that ``cv2.imread`` *does* apply EXIF orientation unless given
``cv2.IMREAD_IGNORE_ORIENTATION``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from workbench.errors import WorkbenchError

# 16-bit greyscale modes: scaled to 8 bits rather than clipped (PIL's convert("RGB") clips).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 is upright; 2-8 flip and/or rotate for display


def exif_orientation(path: str | Path) -> int:
    """The image's EXIF orientation (1 when untagged), read from the header only."""
    try:
        with Image.open(path) as img:
            value = img.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError):
        return 1  # unreadable headers are load_image's to report
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def warn_exif(tagged: list[Path], total: int, exif_transpose: bool) -> None:
    """One warning for the images that carry an EXIF orientation (none if ``tagged`` is empty)."""
    if not tagged:
        return
    import warnings

    if exif_transpose:
        how = "rotated as displayed (--exif-transpose): their labels must be in the displayed frame"
    else:
        how = (
            "read in their stored pixel frame, as COCO labels are; if the labels were drawn on the "
            "displayed (rotated) images, pass --exif-transpose"
        )
    warnings.warn(
        f"{tagged[0]}: {len(tagged)} of {total} images carry an EXIF orientation; {how}", stacklevel=3
    )


def load_image(path: str | Path, exif_transpose: bool = False) -> np.ndarray:
    """Decode an image as RGB uint8, shape (H, W, 3), in its stored pixel frame (or, with
    ``exif_transpose``, rotated/flipped as its EXIF orientation says it is displayed).

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
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
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
