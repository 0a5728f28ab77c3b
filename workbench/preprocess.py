"""Image pre-processing for the models, and the geometry to map predictions back.

:func:`letterbox` reproduces Ultralytics' ``LetterBox`` (``auto=False, scale_fill=False,
scaleup=True, center=True``, pad value 114, ``cv2.INTER_LINEAR``) pixel for pixel, so a float
TFLite model evaluated here sees exactly the input Ultralytics' predictor would give it.
:func:`resize` is a plain stretch. Both return an :class:`ImageTransform` that maps points, boxes
and masks between original-image pixels and model-input pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from workbench.errors import WorkbenchError

PAD_VALUE = 114
# cv2 flags by the names configs use (ST's yaml says ``nearest`` or ``bilinear``).
INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class ImageTransform:
    """Geometry of one pre-processing: ``input = original * scale + pad`` per axis.

    Attributes:
        orig_hw: original image (height, width).
        input_hw: model input (height, width).
        scale_xy: (gain_x, gain_y) from original to input pixels (resized size / original size).
        pad_xy: (left, top) padding in input pixels.

    Example:
        >>> t = ImageTransform((100, 200), (64, 64), (0.32, 0.32), (0.0, 16.0))
        >>> t.inverse_points(np.array([[32.0, 32.0]])).tolist()
        [[100.0, 50.0]]
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale_xy: tuple[float, float]
    pad_xy: tuple[float, float]

    def __post_init__(self) -> None:
        if min(self.orig_hw) <= 0 or min(self.input_hw) <= 0:
            raise ValueError(f"image sizes must be positive: orig {self.orig_hw}, input {self.input_hw}")
        if min(self.scale_xy) <= 0:
            raise ValueError(f"scales must be positive, got {self.scale_xy}")

    def forward_points(self, xy: np.ndarray) -> np.ndarray:
        """Map original-image points (..., 2) to model-input pixels."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * np.asarray(self.scale_xy) + np.asarray(self.pad_xy)

    def inverse_points(self, xy: np.ndarray) -> np.ndarray:
        """Map model-input points (..., 2) back to original-image pixels (not clipped)."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.asarray(self.pad_xy)) / np.asarray(self.scale_xy)

    def inverse_boxes(self, xyxy: np.ndarray) -> np.ndarray:
        """Map model-input boxes (..., 4) in xyxy back to original pixels, clipped to the image."""
        xyxy = np.asarray(xyxy, dtype=np.float64)
        out = self.inverse_points(xyxy.reshape(*xyxy.shape[:-1], 2, 2)).reshape(xyxy.shape)
        h, w = self.orig_hw
        out[..., 0::2] = out[..., 0::2].clip(0, w)
        out[..., 1::2] = out[..., 1::2].clip(0, h)
        return out

    def inverse_mask(self, mask: np.ndarray) -> np.ndarray:
        """Resample masks from model-input space to the original image.

        ``mask`` is (H', W') or (N, H', W') covering the whole model input at any resolution
        (e.g. the 1/4-resolution prototype grid). Each original pixel centre is mapped to
        mask coordinates and sampled bilinearly, so padding is cropped without rounding.
        Boolean masks are thresholded at 0.5 after resampling; other dtypes come back float32.
        """
        mask = np.asarray(mask)
        if mask.ndim not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {mask.shape}")
        stack = mask[None] if mask.ndim == 2 else mask
        h0, w0 = self.orig_hw
        if len(stack) == 0:
            out = np.zeros((0, h0, w0), dtype=bool if mask.dtype == bool else np.float32)
            return out[0] if mask.ndim == 2 else out
        mh, mw = stack.shape[1:]
        fy, fx = mh / self.input_hw[0], mw / self.input_hw[1]
        # mask coordinate of original pixel centre x: ((x + .5) * gain + pad) * f - .5
        ax, ay = self.scale_xy[0] * fx, self.scale_xy[1] * fy
        bx = (0.5 * self.scale_xy[0] + self.pad_xy[0]) * fx - 0.5
        by = (0.5 * self.scale_xy[1] + self.pad_xy[1]) * fy - 0.5
        matrix = np.array([[ax, 0, bx], [0, ay, by]], dtype=np.float64)
        src = stack.astype(np.float32)
        out = np.empty((len(stack), h0, w0), dtype=np.float32)
        for i, m in enumerate(src):
            out[i] = cv2.warpAffine(
                m,
                matrix,
                (w0, h0),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
        if mask.dtype == bool:
            out = out > 0.5
        return out[0] if mask.ndim == 2 else out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise WorkbenchError(f"expected an RGB uint8 image of shape (H, W, 3), got {desc}")
    if min(image.shape[:2]) < 1:
        raise WorkbenchError(f"image is empty: shape {image.shape}")
    return image


def _size_hw(size_hw: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size_hw, (int, np.integer)):
        return int(size_hw), int(size_hw)
    h, w = (int(v) for v in size_hw)
    return h, w


def letterbox(
    image_rgb_uint8: np.ndarray, size_hw: int | tuple[int, int], color: int = PAD_VALUE
) -> tuple[np.ndarray, ImageTransform]:
    """Resize keeping aspect ratio, then pad to ``size_hw`` — Ultralytics' ``LetterBox`` exactly.

    Args:
        image_rgb_uint8: (H, W, 3) uint8 image.
        size_hw: target (height, width), or one int for a square.
        color: padding grey level (Ultralytics uses 114).

    Returns:
        The (h, w, 3) uint8 letterboxed image and its :class:`ImageTransform`.

    Example:
        >>> img, t = letterbox(np.zeros((480, 640, 3), np.uint8), 256)
        >>> img.shape, t.pad_xy
        ((256, 256, 3), (0.0, 32.0))
    """
    image = _check_image(image_rgb_uint8)
    h0, w0 = image.shape[:2]
    new_h, new_w = _size_hw(size_hw)
    r = min(new_h / h0, new_w / w0)
    # Same rounding as ultralytics.data.augment.LetterBox.get_params.
    unpad_w, unpad_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if (w0, h0) != (unpad_w, unpad_h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color,) * 3)
    transform = ImageTransform(
        orig_hw=(h0, w0),
        input_hw=(new_h, new_w),
        scale_xy=(unpad_w / w0, unpad_h / h0),  # per-axis gains, as ultralytics.utils.ops.scale_boxes
        pad_xy=(float(left), float(top)),
    )
    return out, transform


def resize(
    image_rgb_uint8: np.ndarray, size_hw: int | tuple[int, int], interpolation: str = "bilinear"
) -> tuple[np.ndarray, ImageTransform]:
    """Stretch to ``size_hw`` (aspect ratio not kept), bilinear or ``"nearest"`` (ST's SSD training).

    Example:
        >>> img, t = resize(np.zeros((100, 200, 3), np.uint8), (50, 50))
        >>> img.shape, t.scale_xy
        ((50, 50, 3), (0.25, 0.5))
    """
    image = _check_image(image_rgb_uint8)
    h0, w0 = image.shape[:2]
    new_h, new_w = _size_hw(size_hw)
    if interpolation not in INTERPOLATIONS:
        raise WorkbenchError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )
    if (h0, w0) != (new_h, new_w):
        image = cv2.resize(image, (new_w, new_h), interpolation=INTERPOLATIONS[interpolation])
    return image, ImageTransform((h0, w0), (new_h, new_w), (new_w / w0, new_h / h0), (0.0, 0.0))
