"""Procedural RGB-D scenes with semantics, and real RGB-D crops, for the offline data set.

Two scene sources feed :class:`svblur.data.SyntheticDefocus`:

* :func:`generate_scene` builds an indoor-like scene from scratch: a slanted wall and a
  floor seen in perspective (continuous depth), framed pictures hung on the wall and a
  rug lying on the floor ("decals": the class changes, the depth does not), and boxes,
  balls, pillars and plants standing in the room (depth discontinuities that coincide
  with class boundaries). Every surface is textured with a photograph shipped with
  scikit-image (``brick``, ``gravel``, ``grass``, ``astronaut`` ...), so the image has
  real high-frequency content. Each class has its own texture source, colour and shape,
  so the class is learnable from appearance. Every pixel is labelled (no ignore pixels).
* :func:`stereo_motorcycle_scene` crops the real Middlebury stereo pair shipped with
  scikit-image (``skimage.data.stereo_motorcycle``), with depth from its ground-truth
  disparity. It has no semantic annotation, so every pixel is labelled ``IGNORE_INDEX``:
  the segmentation loss and mIoU skip those samples and only the blur (and SR) targets
  are supervised. Inventing labels (e.g. depth bands) would teach the segmentation head
  classes that contradict the appearance-based classes of the procedural scenes.

Depth is in millimetres throughout, as :mod:`svblur.degradation` expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import cv2
import numpy as np
import skimage.data

from svblur.degradation import fill_invalid_depth
from svblur.metrics.functional import IGNORE_INDEX

__all__ = [
    "CLASS_NAMES",
    "MOTORCYCLE_CALIBRATION",
    "Scene",
    "generate_scene",
    "kind_to_class",
    "stereo_motorcycle_scene",
]

#: The eight surface kinds of a procedural scene, in class order for ``num_classes=8``.
CLASS_NAMES: tuple[str, ...] = ("wall", "floor", "picture", "rug", "box", "ball", "pillar", "plant")
_WALL, _FLOOR, _PICTURE, _RUG, _BOX, _BALL, _PILLAR, _PLANT = range(8)

#: Camera of ``skimage.data.stereo_motorcycle`` (Middlebury 2014 "Motorcycle",
#: ``calib.txt``: fx = 3979.911 px, doffs = 190.897 px, baseline = 193.001 mm at 2964 px
#: width), scaled to the 741 px wide copy scikit-image ships. ``depth_mm = baseline_mm *
#: focal_px / (disparity + doffs_px)`` then lies in about 1.7-3.5 m.
MOTORCYCLE_CALIBRATION: dict[str, float] = {
    "baseline_mm": 193.001,
    "focal_px": 3979.911 * 741 / 2964,
    "doffs_px": 190.897 * 741 / 2964,
}

# Per-kind appearance: scikit-image texture names and the RGB tint of grey textures.
_KIND_TEXTURES: dict[int, tuple[str, ...]] = {
    _WALL: ("brick",),
    _FLOOR: ("gravel",),
    _PICTURE: ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"),
    _RUG: ("text", "page"),
    _BOX: ("coins",),
    _BALL: ("moon",),
    _PILLAR: ("immunohistochemistry",),
    _PLANT: ("grass",),
}
_KIND_TINTS: dict[int, tuple[float, float, float]] = {
    _WALL: (0.85, 0.62, 0.48),
    _FLOOR: (0.55, 0.52, 0.45),
    _RUG: (0.75, 0.22, 0.22),
    _BOX: (0.35, 0.45, 0.85),
    _BALL: (0.95, 0.6, 0.2),
    _PLANT: (0.3, 0.75, 0.25),
}


@dataclass(frozen=True)
class Scene:
    """One RGB-D scene with semantics.

    Attributes:
        image: Sharp colour image, ``(H, W, 3)`` float32 in ``[0, 1]``.
        depth: Depth in millimetres, ``(H, W)`` float32, finite and positive.
        semantics: Class index per pixel, ``(H, W)`` int64 in ``[0, num_classes)`` or
            ``IGNORE_INDEX``.
        source: ``"procedural"`` or ``"stereo_motorcycle"``.
    """

    image: np.ndarray
    depth: np.ndarray
    semantics: np.ndarray
    source: str


def kind_to_class(kind: int, num_classes: int) -> int:
    """Class index of a surface kind (see :data:`CLASS_NAMES`) for ``num_classes`` classes.

    With 8 classes a kind is its own class. With fewer, neighbouring kinds are merged
    (``kind * num_classes // 8``; e.g. with 2 classes: room surfaces vs. objects). With
    more than 8, classes ``8..num_classes-1`` never occur.
    """
    if num_classes >= len(CLASS_NAMES):
        return kind
    return kind * num_classes // len(CLASS_NAMES)


@cache
def _texture(name: str) -> np.ndarray:
    """A scikit-image sample image as float32 in [0, 1]: ``(h, w)`` grey or ``(h, w, 3)``."""
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3:
        image = image[..., :3]
    out = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    out.setflags(write=False)
    return out


def _mirror(coords: np.ndarray, length: int) -> np.ndarray:
    """Fold arbitrary coordinates into ``[0, length - 1]`` by mirroring (tiles seamlessly)."""
    period = 2.0 * (length - 1)
    folded = np.mod(coords, period)
    return np.where(folded > length - 1, period - folded, folded)


def _sample_texture(
    kind: int, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, colour_jitter: float = 0.08
) -> np.ndarray:
    """Sample the kind's texture at texel coordinates ``(u, v)`` (columns, rows).

    Args:
        kind: Surface kind, selects texture source and tint.
        rng: Random generator (texture choice, offset, tint jitter).
        u: Texel column coordinates, ``(h, w)``.
        v: Texel row coordinates, ``(h, w)``.
        colour_jitter: Maximum per-channel tint jitter.

    Returns:
        ``(h, w, 3)`` float32 colours in ``[0, 1]``.
    """
    names = _KIND_TEXTURES[kind]
    texture = _texture(names[int(rng.integers(len(names)))])
    th, tw = texture.shape[:2]
    map_x = _mirror(u + rng.uniform(0, tw), tw).astype(np.float32)
    map_y = _mirror(v + rng.uniform(0, th), th).astype(np.float32)
    sampled = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if sampled.ndim == 2:
        tint = np.clip(
            np.asarray(_KIND_TINTS[kind]) + rng.uniform(-colour_jitter, colour_jitter, 3), 0, 1
        )
        sampled = (0.25 + 0.75 * sampled)[..., None] * tint.astype(np.float32)
    return sampled.astype(np.float32)


def _texel_rate(rng: np.random.Generator) -> float:
    """Texels per image pixel at a surface's reference depth (keeps detail near Nyquist)."""
    return float(rng.uniform(0.7, 1.8))


class _Canvas:
    """Z-buffered painter: keeps the nearest surface's colour, depth and kind per pixel."""

    def __init__(self, height: int, width: int) -> None:
        self.image = np.zeros((height, width, 3), np.float32)
        self.depth = np.full((height, width), np.inf, np.float32)
        self.kind = np.full((height, width), -1, np.int64)

    def paint(self, mask: np.ndarray, depth: np.ndarray, colour: np.ndarray, kind: int) -> None:
        visible = mask & (depth < self.depth)
        self.image[visible] = colour[visible]
        self.depth[visible] = depth[visible]
        self.kind[visible] = kind

    def decal(self, mask: np.ndarray, colour: np.ndarray, host: int, kind: int) -> None:
        """Paint over visible pixels of ``host`` without changing their depth."""
        visible = mask & (self.kind == host)
        self.image[visible] = colour[visible]
        self.kind[visible] = kind


def generate_scene(rng: np.random.Generator, size: tuple[int, int], num_classes: int = 8) -> Scene:
    """Generate one procedural indoor scene.

    Geometry (pinhole camera with a 50 mm-equivalent focal length, ``fx = 1.39 W``):

    * wall: a plane at 2.5-6 m whose depth varies linearly across the image (slant);
    * floor: below a random horizon, inverse depth linear in the row (a ground plane),
      from 0.7-1.5 m at the bottom row up to where it meets the wall (continuous crease);
    * 1-3 framed pictures on the wall and 0-1 rug on the floor (perspective-correct):
      decals, their depth is the host surface's;
    * 2-5 objects (box, ball, pillar, plant) standing on the floor between 1 m and the
      wall, each with its own depth profile (flat, spherical, cylindrical, bumpy);
      their outlines are depth discontinuities and class boundaries at once.

    Args:
        rng: Random generator; the scene is a pure function of its state.
        size: ``(H, W)`` in pixels.
        num_classes: Number of classes ``K``; see :func:`kind_to_class`.

    Returns:
        The :class:`Scene`; semantics are in ``[0, K)`` everywhere (nothing ignored).
    """
    height, width = size
    if height < 8 or width < 8:
        raise ValueError(f"size must be at least (8, 8), got {size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    canvas = _Canvas(height, width)
    fx = width * 50.0 / 36.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    full = np.ones((height, width), bool)

    # Wall: slanted plane.
    wall_distance = rng.uniform(2500.0, 6000.0)
    slope_x, slope_y = rng.uniform(-0.5, 0.5), rng.uniform(-0.1, 0.1)
    wall_depth = wall_distance * (1 + slope_x * (xs - cx) / width + slope_y * (ys - cy) / height)
    rate = _texel_rate(rng) * fx / wall_distance  # texels per mm on the wall
    wall_x, wall_y = (xs - cx) * wall_depth / fx, (ys - cy) * wall_depth / fx
    canvas.paint(full, wall_depth, _sample_texture(_WALL, rng, wall_x * rate, wall_y * rate), _WALL)

    # Floor: inverse depth linear in the row below the horizon.
    horizon = rng.uniform(0.3, 0.6) * height
    bottom_depth = rng.uniform(700.0, 1500.0)
    below = np.clip((ys - horizon) / (height - 1 - horizon), 1e-6, None)
    floor_depth = (bottom_depth / below).astype(np.float32)
    floor_mask = ys > horizon
    floor_x, floor_z = (xs - cx) * floor_depth / fx, floor_depth
    rate = _texel_rate(rng) * fx / (2.0 * bottom_depth)
    floor_colour = _sample_texture(_FLOOR, rng, floor_x * rate, floor_z * rate)
    canvas.paint(floor_mask, floor_depth, floor_colour, _FLOOR)

    # Rug on the floor (a decal in floor coordinates, so it is seen in perspective).
    if rng.random() < 0.7:
        centre_z = rng.uniform(1.1, 2.5) * bottom_depth
        centre_x = rng.uniform(-0.3, 0.3) * centre_z * width / fx
        half_w, half_d = rng.uniform(300, 900), rng.uniform(300, 1000)
        rug = (
            floor_mask
            & (np.abs(floor_x - centre_x) < half_w)
            & (np.abs(floor_z - centre_z) < half_d)
        )
        rate = _texel_rate(rng) * fx / centre_z
        canvas.decal(rug, _sample_texture(_RUG, rng, floor_x * rate, floor_z * rate), _FLOOR, _RUG)

    # Framed pictures on the wall.
    for _ in range(int(rng.integers(1, 4))):
        ph, pw = rng.uniform(0.15, 0.4) * height, rng.uniform(0.15, 0.4) * width
        top = rng.uniform(0.0, max(horizon - ph, 1.0))
        left = rng.uniform(-0.1 * pw, width - 0.9 * pw)
        inside = (ys >= top) & (ys < top + ph) & (xs >= left) & (xs < left + pw)
        rate = _texel_rate(rng)
        colour = _sample_texture(_PICTURE, rng, (xs - left) * rate, (ys - top) * rate)
        border = max(1.0, 0.06 * min(ph, pw))
        frame = inside & ~(
            (ys >= top + border)
            & (ys < top + ph - border)
            & (xs >= left + border)
            & (xs < left + pw - border)
        )
        colour[frame] = rng.uniform(0.05, 0.25)  # dark frame, part of the picture class
        canvas.decal(inside, colour, _WALL, _PICTURE)

    # Objects standing on the floor, between the camera and the wall.
    num_objects = int(rng.integers(2, 6))
    for _ in range(num_objects):
        kind = int(rng.choice([_BOX, _BALL, _PILLAR, _PLANT]))
        # At least 1 m away, so even a ball's front stays beyond 5 f (425 mm at f = 85 mm).
        depth_c = rng.uniform(max(0.9 * bottom_depth, 1000.0), 0.85 * wall_distance)
        foot = horizon + (height - 1 - horizon) * bottom_depth / depth_c  # floor row at depth_c
        x_c = rng.uniform(0.05, 0.95) * width
        px_per_mm = fx / depth_c
        rate = _texel_rate(rng)
        colour = _sample_texture(kind, rng, xs * rate, ys * rate)
        if kind == _BOX:
            half_w = rng.uniform(150, 450) * px_per_mm
            box_h = rng.uniform(300, 1000) * px_per_mm
            mask = (np.abs(xs - x_c) < half_w) & (ys <= foot) & (ys > foot - box_h)
            depth = depth_c * (1 + rng.uniform(-0.08, 0.08) * (xs - x_c) / max(half_w, 1.0))
        elif kind == _BALL:
            radius = rng.uniform(150, 400) * px_per_mm
            y_c = foot - radius
            rho2 = ((xs - x_c) ** 2 + (ys - y_c) ** 2) / max(radius, 1.0) ** 2
            mask = rho2 < 1
            bulge = np.sqrt(np.clip(1 - rho2, 0, 1))
            depth = depth_c - radius / px_per_mm * bulge
            colour = colour * (0.35 + 0.65 * bulge)[..., None]
        elif kind == _PILLAR:
            half_w = rng.uniform(100, 250) * px_per_mm
            mask = (np.abs(xs - x_c) < half_w) & (ys <= foot)
            bulge = np.sqrt(np.clip(1 - ((xs - x_c) / max(half_w, 1.0)) ** 2, 0, 1))
            depth = depth_c - half_w / px_per_mm * bulge
            colour = colour * (0.45 + 0.55 * bulge)[..., None]
        else:  # plant: bumpy blob from thresholded smooth noise inside an ellipse
            radius_x = rng.uniform(150, 450) * px_per_mm
            radius_y = rng.uniform(250, 600) * px_per_mm
            y_c = foot - radius_y
            noise = cv2.GaussianBlur(
                rng.standard_normal((height, width)).astype(np.float32),
                (0, 0),
                max(1.0, 0.15 * radius_x),
            )
            noise = np.clip(noise / (noise.std() + 1e-6), -2.0, 2.0)
            rho2 = ((xs - x_c) / max(radius_x, 1.0)) ** 2 + ((ys - y_c) / max(radius_y, 1.0)) ** 2
            mask = rho2 + 0.35 * noise < 1
            depth = depth_c * (1 + 0.03 * noise) - radius_x / px_per_mm * np.sqrt(
                np.clip(1 - rho2, 0, 1)
            )
        canvas.paint(mask, depth.astype(np.float32), colour, kind)

    # Soft global illumination gradient (keeps colour cues from being trivially exact).
    light = (
        1
        + rng.uniform(-0.15, 0.15) * (xs - cx) / width
        + rng.uniform(-0.1, 0.1) * (ys - cy) / height
    )
    image = np.clip(canvas.image * light[..., None], 0.0, 1.0).astype(np.float32)
    classes = np.array([kind_to_class(k, num_classes) for k in range(len(CLASS_NAMES))], np.int64)
    return Scene(
        image=image,
        depth=canvas.depth.astype(np.float32),
        semantics=classes[canvas.kind],
        source="procedural",
    )


@lru_cache(maxsize=1)
def _motorcycle() -> tuple[np.ndarray, np.ndarray]:
    """Left view (float32, [0, 1]) and hole-filled depth in mm of the motorcycle pair."""
    left, _right, disparity = skimage.data.stereo_motorcycle()
    disparity = np.asarray(disparity, np.float64)
    valid = np.isfinite(disparity) & (disparity > 0)
    cal = MOTORCYCLE_CALIBRATION
    depth = np.full(disparity.shape, np.nan, np.float64)
    depth[valid] = cal["baseline_mm"] * cal["focal_px"] / (disparity[valid] + cal["doffs_px"])
    depth = np.asarray(fill_invalid_depth(depth.astype(np.float32)), np.float32)
    image = left.astype(np.float32) / 255.0
    image.setflags(write=False)
    depth.setflags(write=False)
    return image, depth


def stereo_motorcycle_scene(rng: np.random.Generator, size: tuple[int, int]) -> Scene:
    """A random crop of the real ``stereo_motorcycle`` RGB-D pair, resized to ``size``.

    A crop ``k`` times the target size (``k`` drawn between a third of the largest
    possible factor and that factor, at least 1) is taken at a random position and
    resized with area averaging (colour) and nearest neighbour (depth, so no depths are
    invented across discontinuities). Invalid disparities (~7 %) were filled with
    ``svblur.degradation.fill_invalid_depth`` before cropping.

    Args:
        rng: Random generator.
        size: ``(H, W)`` of the output, at most the source size (500, 741) each.

    Returns:
        The :class:`Scene`; semantics are ``IGNORE_INDEX`` everywhere (no annotation).
    """
    image, depth = _motorcycle()
    height, width = size
    src_h, src_w = depth.shape
    k_max = min(src_h / height, src_w / width)
    if k_max < 1:
        raise ValueError(
            f"size must be at most {(src_h, src_w)} for the motorcycle scene, got {size}"
        )
    k = rng.uniform(max(1.0, k_max / 3), k_max)
    crop_h, crop_w = min(src_h, round(height * k)), min(src_w, round(width * k))
    top = int(rng.integers(0, src_h - crop_h + 1))
    left = int(rng.integers(0, src_w - crop_w + 1))
    crop_image = image[top : top + crop_h, left : left + crop_w]
    crop_depth = depth[top : top + crop_h, left : left + crop_w]
    out_image = cv2.resize(crop_image, (width, height), interpolation=cv2.INTER_AREA)
    out_depth = cv2.resize(crop_depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return Scene(
        image=np.clip(out_image, 0.0, 1.0).astype(np.float32),
        depth=out_depth.astype(np.float32),
        semantics=np.full((height, width), IGNORE_INDEX, np.int64),
        source="stereo_motorcycle",
    )
