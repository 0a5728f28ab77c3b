"""Letterbox/resize geometry: pixel-exact against Ultralytics, and invertible on real pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.errors import WorkbenchError
from workbench.preprocess import ImageTransform, letterbox, resize


@pytest.mark.parametrize(
    "orig_hw,size",
    [
        ((480, 640), 256),
        ((427, 640), 320),
        ((333, 500), (192, 256)),
        ((1, 300), 64),
        ((50, 40), 320),
        ((256, 256), 256),
    ],
)
def test_letterbox_matches_ultralytics_pixel_for_pixel(orig_hw, size):
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*orig_hw, 3), dtype=np.uint8)
    ours, _ = letterbox(image, size)
    theirs = LetterBox(size if isinstance(size, tuple) else (size, size))(image=image.copy())
    assert ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_inverse_boxes_match_ultralytics_scale_boxes():
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(1)
    for orig_hw in [(480, 640), (427, 640), (333, 500), (640, 361)]:
        _, t = letterbox(np.zeros((*orig_hw, 3), np.uint8), 256)
        xy = rng.uniform(-10, 266, (20, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0, 80, (20, 2))], 1)
        expected = scale_boxes((256, 256), boxes.copy(), orig_hw)
        np.testing.assert_allclose(t.inverse_boxes(boxes), expected, atol=1e-6)


def test_content_edges_land_where_the_transform_says():
    image = np.zeros((300, 500, 3), np.uint8)  # 0 content, 114 padding
    out, t = letterbox(image, (256, 320))
    content = np.argwhere(out[..., 0] != 114)
    (y0, x0), (y1, x1) = content.min(0), content.max(0) + 1
    np.testing.assert_allclose(t.forward_points([[0, 0], [500, 300]]), [[x0, y0], [x1, y1]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(24, 400),
    w=st.integers(24, 400),
    size=st.tuples(st.integers(2, 12), st.integers(2, 12)).map(lambda s: (s[0] * 32, s[1] * 32)),
    fx=st.floats(0.3, 0.7),
    fy=st.floats(0.3, 0.7),
)
def test_letterbox_then_inverse_points_recovers_a_drawn_point(h, w, size, fx, fy):
    """A blob drawn at (cx, cy) is found at forward(cx, cy) in the letterboxed pixels; inverse brings it back."""
    cx, cy = fx * w, fy * h
    gain = min(size[0] / h, size[1] / w)
    sigma = max(1.5, 1.5 / gain)  # at least ~1.5 px wide on both sides of the resize
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    if blob[[0, -1], :].max() > 1e-3 or blob[:, [0, -1]].max() > 1e-3:
        return  # blob would be cut by the border: centroid not defined by the point alone
    image = np.repeat(np.round(blob * 255).astype(np.uint8)[..., None], 3, axis=2)
    out, t = letterbox(image, size, color=0)
    weights = out[..., 0].astype(np.float64)
    oy, ox = np.mgrid[0 : size[0], 0 : size[1]] + 0.5
    found = np.array([(ox * weights).sum(), (oy * weights).sum()]) / weights.sum()
    recovered = t.inverse_points(found)
    # 0.5 px in model-input pixels, expressed in original pixels
    tol = 0.5 / np.asarray(t.scale_xy)
    assert np.all(np.abs(recovered - [cx, cy]) <= tol), (recovered, (cx, cy), tol)
    np.testing.assert_allclose(t.inverse_points(t.forward_points([cx, cy])), [cx, cy], atol=1e-9)


def test_resize_stretches_and_inverts():
    image = np.zeros((100, 200, 3), np.uint8)
    out, t = resize(image, (64, 32))
    assert out.shape == (64, 32, 3)
    assert t.pad_xy == (0.0, 0.0)
    np.testing.assert_allclose(t.inverse_boxes([[0, 0, 32, 64]]), [[0, 0, 200, 100]])


def test_inverse_boxes_are_clipped_to_the_original_image():
    _, t = letterbox(np.zeros((100, 200, 3), np.uint8), 64)  # pad 16 top/bottom
    np.testing.assert_allclose(t.inverse_boxes([[-5, 0, 70, 64]]), [[0, 0, 200, 100]])


def test_inverse_mask_crops_padding_at_any_mask_resolution():
    _, t = letterbox(np.zeros((120, 240, 3), np.uint8), 64)  # content rows 16..48 of 64
    for res in (64, 16):  # full-resolution and prototype-resolution masks
        mask = np.zeros((res, res), bool)
        mask[: res // 2, :] = True  # top half of the model input = top third of the content... in rows
        back = t.inverse_mask(mask)
        assert back.shape == (120, 240) and back.dtype == bool
        # model row 32 (half) is original row (32 - 16) / (32 / 120) = 60
        rows = np.flatnonzero(back[:, 100])
        assert rows.min() == 0 and abs(rows.max() + 1 - 60) <= 120 / res
    stack = t.inverse_mask(np.ones((3, 16, 16), np.float32))
    assert stack.shape == (3, 120, 240) and np.allclose(stack, 1)
    assert t.inverse_mask(np.zeros((0, 16, 16), bool)).shape == (0, 120, 240)


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)]
)
def test_bad_images_are_rejected_clearly(bad):
    with pytest.raises(WorkbenchError, match="RGB uint8"):
        letterbox(bad, 64)


def test_transform_validates():
    with pytest.raises(ValueError):
        ImageTransform((0, 10), (64, 64), (1.0, 1.0), (0.0, 0.0))
