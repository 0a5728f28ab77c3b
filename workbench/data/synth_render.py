"""Synthetic people, drawn: one image and its exact COCO labels from ``(seed, split, index, imgsz, preset)``.

Cartoon people (capsule limbs, a torso, a head with eyes, nose and ears) posed by random joint
angles, on textured backgrounds with distractor shapes, partly occluding each other and cut by the
image border, drawn procedurally with OpenCV. Labels come from the drawing itself, so they are
exact. An image never depends on how many were drawn before it; bump :data:`GENERATOR_VERSION`
whenever the pixels or labels change. :mod:`workbench.data.synth` writes them as a dataset.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

GENERATOR_VERSION = "1.2"

SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1}
_SHIFT = 4  # cv2 sub-pixel bits: points are passed as round(x * 16)
_ONE = 1 << _SHIFT
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


@dataclass(frozen=True)
class Preset:
    """How hard the generated images are.

    Attributes:
        people: inclusive range of people per image.
        height: range of a person's height as a fraction of the image side.
        tilt: maximum whole-body rotation, degrees.
        yaw: maximum head turn (face features shift sideways by this fraction of the head width).
        truncation: probability that a person may be placed partly outside the image.
        max_overlap: largest allowed intersection of two people's boxes over the smaller box.
        clutter: inclusive range of distractor shapes drawn behind people.
        occluders: inclusive range of distractor shapes drawn on top of people.
        contrast: background contrast in [0, 1].
        backgrounds: background kinds to choose from.
        noise: maximum standard deviation of the pixel noise added at the end.
    """

    name: str
    people: tuple[int, int]
    height: tuple[float, float]
    tilt: float
    yaw: float
    truncation: float
    max_overlap: float
    clutter: tuple[int, int]
    occluders: tuple[int, int]
    contrast: float
    backgrounds: tuple[str, ...]
    noise: float


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("easy", (1, 2), (0.45, 0.90), 5, 0.0, 0.0, 0.10, (0, 2), (0, 0), 0.35,
               ("gradient", "noise"), 3.0),
        Preset("standard", (1, 3), (0.30, 0.85), 12, 0.25, 0.25, 0.35, (1, 4), (0, 1), 0.6,
               ("gradient", "noise", "stripes", "checker"), 5.0),
        Preset("full", (0, 4), (0.15, 0.85), 20, 0.5, 0.5, 0.7, (2, 7), (0, 3), 1.0,
               ("gradient", "noise", "stripes", "checker"), 8.0),
    )
}  # fmt: skip


# ---- shapes ------------------------------------------------------------------------------------
@dataclass
class _Shape:
    """One drawing primitive, in body units until :func:`_transform` places it in the image."""

    kind: str  # "capsule" (2 pts, size=(radius,)) | "ellipse" (1 pt, size=semi-axes) | "poly"
    pts: np.ndarray
    size: tuple[float, ...] = ()
    angle: float = 0.0  # ellipse rotation, degrees
    color: tuple[int, int, int] = (0, 0, 0)
    stripes: tuple[float, float, tuple[int, int, int]] | None = None  # (period px, angle, colour)
    decor: bool = False  # drawn inside the silhouette: leaves the mask unchanged


def _fix(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, dtype=np.float64) * _ONE).astype(np.int32)


def _draw(shapes: list[_Shape], img: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
    """Draw ``shapes`` antialiased into ``img`` and/or as 255 (no antialiasing) into ``mask``."""
    for s in shapes:
        targets = []
        if img is not None:
            targets.append((img, s.color, cv2.LINE_AA))
        if mask is not None and not s.decor:
            targets.append((mask, 255, cv2.LINE_8))
        for canvas, color, line in targets:
            if s.kind == "capsule":
                a, b = _fix(s.pts)
                thick = max(1, int(round(2 * s.size[0])))
                cv2.line(canvas, tuple(map(int, a)), tuple(map(int, b)), color, thick, line, _SHIFT)
            elif s.kind == "ellipse":
                c = tuple(map(int, _fix(s.pts[0])))
                axes = tuple(max(_ONE // 2, int(round(v * _ONE))) for v in s.size)
                cv2.ellipse(canvas, c, axes, s.angle, 0, 360, color, -1, line, _SHIFT)
            else:
                cv2.fillPoly(canvas, [_fix(s.pts)], color, line, _SHIFT)
        if img is not None and s.stripes is not None:
            _stripe(img, s)


def _stripe(img: np.ndarray, s: _Shape) -> None:
    """Paint stripes of ``s.stripes`` inside polygon ``s``."""
    period, angle, color = s.stripes
    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(s.pts.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(s.pts.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return
    local = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(local, [_fix(s.pts - [x0, y0])], 1, cv2.LINE_8, _SHIFT)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    u = xx * math.cos(math.radians(angle)) + yy * math.sin(math.radians(angle))
    sel = (local > 0) & ((u // max(period, 2.0)) % 2 == 1)
    img[y0:y1, x0:x1][sel] = color


def _transform(shapes: list[_Shape], scale: float, theta: float, origin: np.ndarray) -> list[_Shape]:
    """Scale by ``scale``, rotate by ``theta`` degrees (clockwise on screen), move to ``origin``."""
    c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    m = scale * np.array([[c, -s], [s, c]])
    out = []
    for sh in shapes:
        stripes = (
            None if sh.stripes is None else (sh.stripes[0] * scale, sh.stripes[1] + theta, sh.stripes[2])
        )
        out.append(
            _Shape(sh.kind, sh.pts @ m.T + origin, tuple(v * scale for v in sh.size), sh.angle + theta,
                   sh.color, stripes, sh.decor)
        )  # fmt: skip
    return out


# ---- colours -----------------------------------------------------------------------------------
_SKIN = np.array([[70, 100, 150], [90, 130, 190], [120, 160, 220], [150, 190, 240], [60, 80, 115]], float)


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    """A random BGR colour (floats 0-255) with saturation and value in the given ranges."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(float)


def _c(color: np.ndarray, factor: float = 1.0) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(float(v) * factor))) for v in color)


# ---- people ------------------------------------------------------------------------------------
@dataclass
class _Person:
    shapes: list[_Shape]
    keypoints: np.ndarray  # (17, 2) cv2 pixel coordinates (pixel centres at integers)
    box: np.ndarray  # x0, y0, x1, y1 of the drawn extent, for layout
    height: float  # pixels, used as depth: smaller people are drawn first (farther away)


def _unit(phi: float) -> np.ndarray:
    """Direction at ``phi`` degrees from straight down, positive towards +x."""
    return np.array([math.sin(math.radians(phi)), math.cos(math.radians(phi))])


def _limb(a: np.ndarray, b: np.ndarray, r: float, color: tuple[int, int, int]) -> list[_Shape]:
    """A capsule with a dark outline: where limbs meet, the outline marks the joint."""
    dark = _c(color, 0.45)
    return [_Shape("capsule", np.array([a, b]), (r * 1.25,), color=dark),
            _Shape("capsule", np.array([a, b]), (r,), color=color, decor=True)]  # fmt: skip


def _body(rng: np.random.Generator, preset: Preset) -> tuple[list[_Shape], np.ndarray]:
    """Pose and dress one person in body units (height ~1, origin at the hip centre, y down).

    The person faces the camera, so their left side (COCO ``left_*``) is on the image's right
    (+x). Joint centres sit on capsule ends; face keypoints sit on drawn eyes, nose and ears.
    """
    j = lambda: rng.uniform(0.92, 1.08)  # noqa: E731  proportion jitter
    head_w, head_h = 0.064 * j(), 0.08 * j()
    torso, shoulder, hip = 0.29 * j(), 0.105 * j(), 0.066 * j()
    upper_arm, forearm, thigh, shin = 0.16 * j(), 0.15 * j(), 0.235 * j(), 0.225 * j()
    arm_r, leg_r = 0.032 * j(), 0.045 * j()

    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.1)
    shirt = _hsv(rng, (0.45, 1.0), (0.35, 1.0))
    pants = _hsv(rng, (0.3, 1.0), (0.2, 0.8))
    shoe = _hsv(rng, (0.0, 0.6), (0.05, 0.35))
    hair = _hsv(rng, (0.2, 0.8), (0.05, 0.45))
    short_sleeves = rng.random() < 0.4
    side_shade = {1: 1.0, -1: 0.82}  # left limbs a little brighter than right ones

    kp = np.zeros((17, 2))
    neck_base = np.array([0.0, -torso])
    neck_top = neck_base + [0.0, -0.03]
    head_tilt = rng.uniform(-12, 12)
    head_c = neck_top + _unit(180 + head_tilt) * head_h * 0.85
    yaw = rng.uniform(-preset.yaw, preset.yaw) * head_w
    rot = np.array([[math.cos(math.radians(head_tilt)), -math.sin(math.radians(head_tilt))],
                    [math.sin(math.radians(head_tilt)), math.cos(math.radians(head_tilt))]])  # fmt: skip

    def on_head(x: float, y: float) -> np.ndarray:
        return head_c + rot @ np.array([x * head_w, y * head_h])

    kp[0] = on_head(yaw / head_w * 0.6, 0.38)
    kp[1], kp[2] = on_head(0.38 + yaw / head_w * 0.5, 0.0), on_head(-0.38 + yaw / head_w * 0.5, 0.0)
    kp[3], kp[4] = on_head(0.97 + yaw / head_w * 0.15, 0.08), on_head(-0.97 + yaw / head_w * 0.15, 0.08)

    legs, arms = [], []
    for side in (1, -1):  # COCO left (image right), then right
        i = 0 if side == 1 else 1
        sh_pt = np.array([side * shoulder, -torso + 0.025])
        for _ in range(20):  # keep hands off the head so head keypoints stay visible
            a = rng.uniform(5, 60) if rng.random() < 0.6 else rng.uniform(60, 165)
            phi = side * a
            elbow = sh_pt + _unit(phi) * upper_arm * rng.uniform(0.85, 1.0)
            phi2 = phi + side * rng.choice([-1, 1]) * rng.uniform(0, 130)
            wrist = elbow + _unit(phi2) * forearm * rng.uniform(0.85, 1.0)
            clear = head_w * 1.1 + arm_r * 2
            if min(np.linalg.norm(elbow - head_c), np.linalg.norm(wrist - head_c)) > clear:
                break
        kp[5 + i], kp[7 + i], kp[9 + i] = sh_pt, elbow, wrist
        shade = side_shade[side]
        hand = wrist + _unit(phi2) * arm_r * 0.9
        fore_color = _c(skin, shade) if short_sleeves else _c(shirt, shade * 0.85)
        arms += [
            *_limb(sh_pt, elbow, arm_r, _c(shirt, shade * 0.92)),
            *_limb(elbow, wrist, arm_r * 0.88, fore_color),
            _Shape("ellipse", hand[None], (arm_r * 0.95, arm_r * 0.95), color=_c(skin, shade)),
        ]

        hip_pt = np.array([side * hip, 0.0])
        phi = side * rng.uniform(-4, 32)
        knee = hip_pt + _unit(phi) * thigh * rng.uniform(0.8, 1.0)
        phi2 = phi + rng.choice([-1, 1]) * rng.uniform(0, 35)
        ankle = knee + _unit(phi2) * shin * rng.uniform(0.8, 1.0)
        kp[11 + i], kp[13 + i], kp[15 + i] = hip_pt, knee, ankle
        foot = ankle + np.array([side * leg_r * 0.9, leg_r * 0.5])
        legs += [
            *_limb(hip_pt, knee, leg_r, _c(pants, shade)),
            *_limb(knee, ankle, leg_r * 0.85, _c(pants, shade * 0.8)),
            _Shape("ellipse", foot[None], (leg_r * 1.5, leg_r * 0.8), color=_c(shoe, shade)),
        ]

    stripes = None
    if rng.random() < 0.35:
        stripes = (rng.uniform(0.02, 0.05), rng.uniform(0, 180), _c(_hsv(rng, (0.3, 1.0), (0.3, 1.0))))
    w_sh, w_hip = shoulder + arm_r * 0.8, hip + leg_r * 1.1
    shapes = legs + [
        _Shape("poly", np.array([[-w_hip, -0.04], [w_hip, -0.04], [w_hip, 0.05], [-w_hip, 0.05]]),
               color=_c(pants)),
        _Shape("poly", np.array([[-w_sh, -torso - 0.005], [w_sh, -torso - 0.005], [w_hip, -0.02],
                                 [-w_hip, -0.02]]), color=_c(shirt), stripes=stripes),
    ] + arms + [
        _Shape("capsule", np.array([neck_base, head_c]), (0.024,), color=_c(skin, 0.9)),
        _Shape("ellipse", kp[3][None], (0.24 * head_w, 0.36 * head_h), head_tilt, _c(skin, 0.85)),
        _Shape("ellipse", kp[4][None], (0.24 * head_w, 0.36 * head_h), head_tilt, _c(skin, 0.85)),
        _Shape("ellipse", head_c[None], (head_w, head_h), head_tilt, _c(skin)),
    ]  # fmt: skip
    if rng.random() < 0.85:  # a hair cap on top of the head, above the eyes
        shapes.append(_Shape("ellipse", on_head(0, -0.62)[None], (head_w * 1.04, head_h * 0.45), head_tilt,
                             _c(hair)))  # fmt: skip
    eye = max(0.15 * head_w, 0.0)
    shapes += [
        _Shape("ellipse", kp[1][None], (eye, eye * 1.2), head_tilt, (20, 20, 20), decor=True),
        _Shape("ellipse", kp[2][None], (eye, eye * 1.2), head_tilt, (20, 20, 20), decor=True),
        _Shape("ellipse", kp[0][None], (0.13 * head_w, 0.13 * head_w), 0, _c(skin * [0.55, 0.55, 0.85]),
               decor=True),
        _Shape("capsule", np.array([on_head(-0.3 + yaw / head_w * 0.5, 0.66),
                                    on_head(0.3 + yaw / head_w * 0.5, 0.66)]), (0.025 * head_w,),
               color=(40, 40, 150), decor=True),
    ]  # fmt: skip
    return shapes, kp


def _extent(shapes: list[_Shape]) -> np.ndarray:
    """x0, y0, x1, y1 of everything ``shapes`` draw."""
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for s in shapes:
        pad = max(s.size) if s.size else 0.0
        lo = np.minimum(lo, s.pts.min(0) - pad)
        hi = np.maximum(hi, s.pts.max(0) + pad)
    return np.concatenate([lo, hi])


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two boxes over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / smaller)


def _layout(rng: np.random.Generator, size: int, preset: Preset) -> list[_Person]:
    """Pose, scale and place the people of one image, sorted far (drawn first) to near."""
    people: list[_Person] = []
    for _ in range(int(rng.integers(preset.people[0], preset.people[1] + 1))):
        for _attempt in range(30):
            shapes, kp = _body(rng, preset)
            height = rng.uniform(*preset.height) * size
            theta = rng.uniform(-preset.tilt, preset.tilt)
            placed = _transform(shapes + [_Shape("poly", kp)], height, theta, np.zeros(2))
            ext = _extent(placed[:-1])
            span = ext[2:] - ext[:2]
            if span.max() > 0.98 * size:  # fit big or sprawling people inside the image
                factor = 0.98 * size / span.max()
                height, ext, span = height * factor, ext * factor, span * factor
            lo, hi = -ext[:2], size - ext[2:]
            if rng.random() < preset.truncation:
                lo, hi = lo - 0.45 * span, hi + 0.45 * span
            origin = rng.uniform(lo, np.maximum(hi, lo))
            box = ext + np.tile(origin, 2)
            if all(_overlap(box, p.box) <= preset.max_overlap for p in people):
                placed = _transform(shapes + [_Shape("poly", kp)], height, theta, origin)
                people.append(_Person(placed[:-1], placed[-1].pts, box, height))
                break
    return sorted(people, key=lambda p: p.height)


# ---- backgrounds and distractors ---------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    """Pixel row and column coordinates divided by ``size``, shape (2, size, size)."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32) / size
    grid.flags.writeable = False
    return grid


def _background(rng: np.random.Generator, size: int, preset: Preset) -> np.ndarray:
    kind = preset.backgrounds[rng.integers(len(preset.backgrounds))]
    sat = (0.0, 0.35) if preset.name == "easy" else (0.0, 0.9)
    base = _hsv(rng, sat, (0.3, 0.9))
    other = np.clip(base + rng.normal(0, 110 * preset.contrast, 3), 0, 255)
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "gradient":
        t = (u - u.min()) / max(float(np.ptp(u)), 1e-6)
    elif kind == "noise":
        grid = rng.random((int(rng.integers(3, 12)),) * 2).astype(np.float32)
        t = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == "stripes":
        t = 0.5 + 0.5 * np.sign(np.sin(u * 2 * math.pi * rng.uniform(4, 20)))
    else:  # checker
        n = rng.uniform(3, 12)
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        t = ((np.floor(u * n) + np.floor(v * n)) % 2).astype(np.float32)
    t = np.clip(t, 0, 1)[..., None]
    img = base.astype(np.float32) * (1 - t) + other.astype(np.float32) * t
    img += rng.standard_normal((size, size, 1), dtype=np.float32) * (4 * preset.contrast)  # fine grain
    return np.clip(img, 0, 255).astype(np.uint8)


def _distractor(rng: np.random.Generator, size: int, preset: Preset) -> list[_Shape]:
    kinds = ["circle", "rect", "ellipse"] + ([] if preset.name == "easy" else ["capsule", "capsule"])
    kind = kinds[rng.integers(len(kinds))]
    c = rng.uniform(0, size, 2)
    r = rng.uniform(0.03, 0.15) * size
    color = _c(_hsv(rng, (0.0, 1.0), (0.1, 1.0)))
    if kind == "circle":
        return [_Shape("ellipse", c[None], (r, r), color=color)]
    if kind == "ellipse":
        return [_Shape("ellipse", c[None], (r, r * rng.uniform(0.3, 1)), rng.uniform(0, 180), color)]
    if kind == "capsule":  # limb-like: teaches the model that a lone capsule is not a person
        end = c + r * 2 * _unit(rng.uniform(0, 360))
        return [_Shape("capsule", np.array([c, end]), (r * rng.uniform(0.12, 0.3),), color=color)]
    half = r * rng.uniform(0.3, 1.0, 2)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    t = math.radians(rng.uniform(0, 90))
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    stripes = (
        (rng.uniform(2, 8), rng.uniform(0, 180), _c(_hsv(rng, (0, 1), (0, 1))))
        if rng.random() < 0.4
        else None
    )
    return [_Shape("poly", corners @ rot.T + c, color=color, stripes=stripes)]


# ---- one image ---------------------------------------------------------------------------------
def _polygons(mask: np.ndarray, up: int = 4) -> list[list[float]]:
    """COCO polygons of ``mask``'s outer contours.

    Contours are traced on a ``up``-times upsampled crop, so they run an eighth of a pixel outside
    the boundary pixels' centres and rasterize back to (nearly) the same pixels, even for thin limbs.
    """
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    big = cv2.resize(crop, None, fx=up, fy=up, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for contour in contours:
        contour = cv2.approxPolyDP(contour, 0.5 * up, True).reshape(-1, 2)
        if len(contour) >= 3:
            xy = (contour + 0.5) / up + [x0, y0]
            polys.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polys


def render_sample(
    seed: int, split: str, index: int, imgsz: int = 256, preset: str = "standard"
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image and its COCO annotations (without ``id``/``image_id``).

    Coordinates follow COCO: pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``.

    Args:
        seed: dataset seed.
        split: ``"train"`` or ``"val"`` (different images for the same index).
        index: image index within the split.
        imgsz: image side in pixels.
        preset: one of :data:`PRESETS`.

    Returns:
        The BGR uint8 image and one annotation dict per person.

    Example:
        >>> img, anns = render_sample(0, "train", 3, 128, "easy")
        >>> img.shape, 1 <= len(anns) <= 2
        ((128, 128, 3), True)
    """
    p = PRESETS[preset]
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    size = imgsz
    img = _background(rng, size, p)
    clutter = [
        s for _ in range(int(rng.integers(p.clutter[0], p.clutter[1] + 1))) for s in _distractor(rng, size, p)
    ]
    people = _layout(rng, size, p)
    occluders = [s for _ in range(int(rng.integers(p.occluders[0], p.occluders[1] + 1)))
                 for s in _distractor(rng, size, p)]  # fmt: skip

    # Visibility, nearest first: whatever is drawn later hides what lies beneath it.
    cover = np.zeros((size, size), np.uint8)
    _draw(occluders, mask=cover)
    kept: list[tuple[_Person, np.ndarray, np.ndarray, np.ndarray]] = []
    min_area = max(12.0, 0.001 * size * size)
    for person in reversed(people):
        full = np.zeros_like(cover)
        _draw(person.shapes, mask=full)
        # Grow what lies in front by a pixel so antialiased edges leave no 1-px slivers "visible".
        front = cv2.dilate(cover, _CROSS)
        visible = cv2.bitwise_and(full, cv2.bitwise_not(front))
        xy = np.round(person.keypoints + 0.5, 2)  # cv2 pixel centres are integers; COCO's are at +0.5
        inside = np.all((xy >= 0) & (xy < size), axis=1)
        px = np.clip(np.floor(xy).astype(int), 0, size - 1)
        hidden = front[px[:, 1], px[:, 0]] > 0
        v = np.where(inside, np.where(hidden, 1, 2), 0)
        area = int(np.count_nonzero(visible))
        # Drop people too hidden or cut to be fair to annotate; they are then not drawn at all.
        if area < min_area or area < 0.3 * np.count_nonzero(full) or (v == 2).sum() < 3:
            continue
        cv2.bitwise_or(cover, full, dst=cover)
        kept.append((person, visible, np.where(v[:, None] > 0, xy, 0.0), v))
    kept.reverse()

    _draw(clutter, img)
    for person, *_ in kept:
        _draw(person.shapes, img)
    _draw(occluders, img)
    if p.name != "easy" and rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(0, p.noise)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)

    anns = []
    for _person, visible, xy, v in kept:
        ys, xs = np.nonzero(visible)
        x0, y0 = int(xs.min()), int(ys.min())
        keypoints = []
        for (x, y), vis in zip(xy, v, strict=True):
            keypoints += [round(float(x), 2), round(float(y), 2), int(vis)]
        anns.append(
            {
                "category_id": 1,
                "keypoints": keypoints,
                "num_keypoints": int((v > 0).sum()),
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                "area": int(len(xs)),
                "segmentation": _polygons(visible),
                "iscrowd": 0,
            }
        )
    return img, anns
