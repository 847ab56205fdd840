"""The kernel-field stages of the sample pipeline: one kernel per HR pixel.

:class:`GaussianFieldBlur` (spatially variant Gaussian kernels, guided by depth as in
SSR), :class:`MotionFieldBlur` (region-wise motion, as ArcSR) and :class:`PartialBlur`
(defocus or motion in parts of the image, with the mask, as PBaSR). The fields come from
:mod:`svblur.degradation.field_synthesis` and are applied with
:func:`~svblur.degradation.fields.apply_kernel_field`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from svblur.errors import InputError

from .defocus_blur import SYNDOF_MAX_COC, DefocusBlur
from .field_synthesis import (
    DEFAULT_FOCUS_QUANTILE,
    depth_gaussian_field,
    depth_sigma,
    field_from_kernel,
    focus_at_quantile,
    gaussian_field,
    motion_field,
)
from .fields import apply_kernel_field
from .kernels import gaussian_kernel, motion_kernel
from .sample import Degraded, SceneInput

__all__ = ["GaussianFieldBlur", "MotionFieldBlur", "PartialBlur"]


def _apply_field(image: np.ndarray, kernels: torch.Tensor) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))[None]
    out = apply_kernel_field(x, kernels.to(torch.float32)[None])
    return out[0].permute(1, 2, 0).numpy()


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return low if high <= low else float(rng.uniform(low, high))


@dataclass(frozen=True)
class GaussianFieldBlur:
    """Spatially variant Gaussian kernels, one per HR pixel (SSR's degradation, MANet's
    kernels).

    With depth (``depth_guided`` and a scene with depth), the kernel width follows the
    depth (:func:`~svblur.degradation.depth_gaussian_field`):

    - ``model="camera"`` (``degradation=gaussian_sv``): a thin lens, ``sigma =
      clip(A * |1 / z_f - 1 / z|, 0, cap)`` HR pixels with depth ``z`` and focus
      ``z_f`` in mm and the defocus in 1/m (:func:`~svblur.degradation.signed_defocus`).
      ``A`` (px * m, the blur per dioptre) is drawn per image from ``aperture_range``; the
      camera focuses at the depth quantile ``focus_quantile`` of the scene
      (:func:`~svblur.degradation.focus_at_quantile`, so that a network given the depth
      map can recompute the focus: :class:`~svblur.models.GroundTruthDepth`), or, with
      ``None``, at the depth of a random pixel. Isotropic unless ``aspect_range`` says
      otherwise (defocus is; anisotropy is no function of depth). A space-invariant draw
      uses the sigma of a random pixel for the whole image. See
      ``docs/ssr_stage1_identifiability.md`` for why the kernels must follow quantities
      the network sees;
    - ``model="linear"`` (the first design, kept for comparison): the largest sigma of the
      image, ``sigma_max``, is drawn from ``sigma_range`` and given to the pixel farthest
      (in depth) from a focal plane at the depth of a random pixel, sigma falling
      linearly to 0 at the focal plane; ``aspect`` and ``theta`` are drawn per image. A
      space-invariant draw uses one kernel of width ``sigma_max`` for the image.

    Without depth, either model blends a few random Gaussians with smooth weights
    (:func:`~svblur.degradation.gaussian_field`; sigmas from ``sigma_range``), or uses one
    for a space-invariant draw. Maps: ``kernels``, and ``blur`` (sigma) when the kernels
    are isotropic Gaussians of a known sigma (not blends).

    Args:
        kernel_size: Odd kernel side ``k`` (SSR: 21).
        sigma_range: ``"linear"``: range of the largest sigma in HR pixels; without depth:
            the range the blended Gaussians are drawn from.
        aspect_range: Range of ``sigma_y / sigma_x`` (``(1, 1)``: isotropic); ``None``:
            ``(1, 1)`` for ``"camera"``, ``(0.3, 1)`` for ``"linear"``.
        depth_guided: Use depth when the scene has it.
        num_kernels: Kernels blended when there is no depth.
        model: ``"camera"`` or ``"linear"`` (see above).
        aperture_range: ``"camera"``: range of ``A`` in px * m.
        sigma_cap: ``"camera"``: the largest sigma in HR pixels; ``None``: ``(kernel_size -
            1) / 5`` (2.5 sigma within the support: 4 for 21x21 kernels).
        focus_quantile: ``"camera"``: where it focuses, a depth quantile in ``[0, 1]``, or
            ``None`` for a random pixel's depth.
    """

    kernel_size: int = 21
    sigma_range: tuple[float, float] = (0.5, 4.0)
    aspect_range: tuple[float, float] | None = None
    depth_guided: bool = True
    num_kernels: int = 4
    model: Literal["camera", "linear"] = "linear"
    aperture_range: tuple[float, float] = (24.0, 36.0)
    sigma_cap: float | None = None
    focus_quantile: float | None = DEFAULT_FOCUS_QUANTILE

    def __post_init__(self) -> None:
        # configs give lists: stored as float pairs, so that equal settings compare equal
        for name in ("sigma_range", "aspect_range", "aperture_range"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.model not in ("camera", "linear"):
            raise ValueError(f"model: expected 'camera' or 'linear', got {self.model!r}")
        low, high = self.aperture_range
        if not 0 <= low <= high:
            raise ValueError(
                f"aperture_range: expected 0 <= min <= max (px * m), got {self.aperture_range!r}"
            )
        if self.sigma_cap is not None and not self.sigma_cap > 0:
            raise ValueError(f"sigma_cap: expected a positive sigma, got {self.sigma_cap!r}")
        if self.focus_quantile is not None and not 0 <= self.focus_quantile <= 1:
            raise ValueError(
                f"focus_quantile: expected a quantile in [0, 1] or None, got {self.focus_quantile!r}"
            )

    @property
    def aspect_bounds(self) -> tuple[float, float]:
        """``aspect_range``, or the model's default when it is ``None``."""
        if self.aspect_range is None:
            return (1.0, 1.0) if self.model == "camera" else (0.3, 1.0)
        low, high = self.aspect_range
        return low, high

    @property
    def cap(self) -> float:
        """The camera's largest sigma: ``sigma_cap``, or ``(kernel_size - 1) / 5``."""
        if self.sigma_cap is None:
            return (int(self.kernel_size) - 1) / 5.0
        return float(self.sigma_cap)

    @property
    def isotropic(self) -> bool:
        return self.aspect_bounds == (1.0, 1.0)

    def __call__(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False, **_: Any
    ) -> Degraded:
        guided = self.depth_guided and scene.depth is not None
        if self.model == "camera" and guided:
            return self._camera(scene, rng, invariant)
        return self._linear(scene, rng, invariant, guided)

    def _camera(self, scene: SceneInput, rng: np.random.Generator, invariant: bool) -> Degraded:
        depth = np.asarray(scene.depth, np.float64)
        k = int(self.kernel_size)
        aperture = _uniform(rng, self.aperture_range)
        if self.focus_quantile is None:
            focus = float(depth.flat[int(rng.integers(depth.size))])
        else:
            focus = float(focus_at_quantile(depth, float(self.focus_quantile)))
        aspect = _uniform(rng, self.aspect_bounds)
        theta = float(rng.uniform(0.0, math.pi))
        cap = self.cap
        meta: dict[str, Any] = {
            "kind": "gaussian_field",
            "model": "camera",
            "aperture": aperture,
            "focus_depth": focus,
            "aspect": aspect,
            "theta": theta,
        }
        sigma = depth_sigma(depth, focus, cap, model="camera", aperture=aperture)
        if invariant:
            pixel = int(rng.integers(depth.size))
            sigma = np.full(depth.shape, sigma.flat[pixel])
            kernel = gaussian_kernel(k, sigma.flat[0], aspect * sigma.flat[0], theta)
            kernels = field_from_kernel(kernel, depth.shape).contiguous()
            meta.update(space_variant=False, sigma=float(sigma.flat[0]))
        else:
            kernels = depth_gaussian_field(
                depth, k, focus, cap, model="camera", aperture=aperture, aspect=aspect, theta=theta
            )
            meta.update(space_variant=True)
        maps = {"kernels": kernels.numpy()}
        if self.isotropic:
            maps["blur"] = sigma.astype(np.float32)
        return Degraded(_apply_field(scene.image, kernels), maps, meta)

    def _linear(
        self, scene: SceneInput, rng: np.random.Generator, invariant: bool, guided: bool
    ) -> Degraded:
        shape = scene.image.shape[:2]
        k = int(self.kernel_size)
        sigma_max = _uniform(rng, self.sigma_range)
        meta: dict[str, Any] = {"kind": "gaussian_field", "model": "linear", "sigma_max": sigma_max}
        sigma_map = None
        if invariant:
            aspect = _uniform(rng, self.aspect_bounds)
            theta = float(rng.uniform(0.0, math.pi))
            kernel = gaussian_kernel(k, sigma_max, aspect * sigma_max, theta)
            kernels = field_from_kernel(kernel.astype(np.float32), shape).contiguous()
            sigma_map = np.full(shape, sigma_max, np.float32)
            meta.update(space_variant=False, aspect=aspect, theta=theta)
        elif guided:
            depth = np.asarray(scene.depth, np.float64)
            focus = float(depth.flat[int(rng.integers(depth.size))])
            aspect = _uniform(rng, self.aspect_bounds)
            theta = float(rng.uniform(0.0, math.pi))
            kernels = depth_gaussian_field(depth, k, focus, sigma_max, aspect=aspect, theta=theta)
            sigma_map = depth_sigma(depth, focus, sigma_max).astype(np.float32)
            meta.update(space_variant=True, focus_depth=focus, aspect=aspect, theta=theta)
        else:
            kernels = gaussian_field(
                k,
                shape,
                rng,
                num_kernels=self.num_kernels,
                sigma_range=(float(self.sigma_range[0]), sigma_max),
                isotropic_prob=1.0 if self.isotropic else 0.0,
            )
            meta.update(space_variant=True)
        maps = {"kernels": kernels.numpy()}
        if self.isotropic and sigma_map is not None:
            maps["blur"] = sigma_map
        return Degraded(_apply_field(scene.image, kernels), maps, meta)


def _regions(scene: SceneInput, layers: int, rng: np.random.Generator) -> np.ndarray:
    """Regions that move together: the labels, else depth layers, else a random ellipse
    (an object) on the background."""
    if scene.seg is not None:
        return np.asarray(scene.seg, np.int64)
    if scene.depth is not None:
        depth = np.asarray(scene.depth, np.float64)
        edges = np.quantile(depth, np.linspace(0, 1, layers + 1)[1:-1])
        return np.digitize(depth, edges).astype(np.int64)
    height, width = scene.image.shape[:2]
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    ry, rx = rng.uniform(0.15, 0.35) * height, rng.uniform(0.15, 0.35) * width
    y, x = np.ogrid[:height, :width]
    return (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0).astype(np.int64)


@dataclass(frozen=True)
class MotionFieldBlur:
    """Region-wise motion blur (ArcSR's degradation): the background shakes with the
    camera, moving objects (regions of the segmentation, else depth layers) move linearly
    in their own directions. A space-invariant draw blurs the whole image with one
    camera-shake kernel. Maps: ``kernels``.

    Args:
        kernel_size: Odd kernel side ``k``.
        background_length: Range of the camera-shake path length in HR pixels.
        object_length: Range of the moving objects' path length in HR pixels.
        num_moving: Moving regions per image.
        feather: Width (px) over which neighbouring regions' kernels blend.
        depth_layers: Layers cut from depth when the scene has no segmentation.
    """

    kernel_size: int = 21
    background_length: tuple[float, float] = (1.0, 8.0)
    object_length: tuple[float, float] = (3.0, 15.0)
    num_moving: int = 1
    feather: float = 1.0
    depth_layers: int = 4

    def __call__(
        self, scene: SceneInput, rng: np.random.Generator, *, invariant: bool = False, **_: Any
    ) -> Degraded:
        shape = scene.image.shape[:2]
        k = int(self.kernel_size)
        if invariant:
            length = _uniform(rng, self.background_length)
            kernel = motion_kernel(k, rng, length=length).astype(np.float32)
            kernels = torch.from_numpy(kernel).reshape(-1, 1, 1).expand(k * k, *shape)
            kernels = kernels.contiguous()
            meta = {"kind": "motion_field", "space_variant": False, "length": length}
        else:
            kernels = motion_field(
                _regions(scene, self.depth_layers, rng),
                k,
                rng,
                num_moving=self.num_moving,
                background_length=tuple(self.background_length),
                object_length=tuple(self.object_length),
                feather=float(self.feather),
            )
            meta = {"kind": "motion_field", "space_variant": True}
        return Degraded(_apply_field(scene.image, kernels), {"kernels": kernels.numpy()}, meta)


@dataclass(frozen=True)
class PartialBlur:
    """Blur in parts of the image, with the binary mask (PBaSR / ReBlurSR's photos).

    ``source="defocus"``: a shallow depth of field focused on a random pixel; the mask
    marks where the blur sigma exceeds ``threshold`` (the rest is in focus).
    ``source="motion"``: one or more regions (segmentation, else depth layers) move while
    the rest stays still; the mask marks the moving regions' blurred extent (kernel
    support beyond ``threshold`` of its peak mass, dilated by the motion).

    Args:
        source: ``"defocus"`` or ``"motion"``.
        defocus: The defocus degradation (``source="defocus"``).
        kernel_size: Odd kernel side (``source="motion"``).
        object_length: Range of the moving regions' path length in HR pixels.
        num_moving: Moving regions per image.
        threshold: Sigma (px) above which a pixel counts as blurred (defocus); kernel
            mass off the centre above which it counts as blurred (motion).
    """

    source: Literal["defocus", "motion"] = "defocus"
    defocus: DefocusBlur = field(default_factory=DefocusBlur)
    kernel_size: int = 21
    object_length: tuple[float, float] = (5.0, 15.0)
    num_moving: int = 1
    threshold: float = 0.5

    def __call__(
        self,
        scene: SceneInput,
        rng: np.random.Generator,
        *,
        invariant: bool = False,
        max_coc: float = SYNDOF_MAX_COC,
    ) -> Degraded:
        if self.source == "defocus":
            out = self.defocus(scene, rng, invariant=False, max_coc=max_coc)
            mask = (out.maps["blur"] > self.threshold).astype(np.float32)
            return Degraded(out.image, {**out.maps, "blur_mask": mask}, {**out.meta})
        if self.source != "motion":
            raise InputError(
                f"partial blur source must be 'defocus' or 'motion', got {self.source!r}"
            )
        k = int(self.kernel_size)
        regions = _regions(scene, 4, rng)
        kernels = motion_field(
            regions,
            k,
            rng,
            num_moving=self.num_moving,
            background_length=(0.0, 0.0),
            object_length=tuple(self.object_length),
            feather=0.0,
        )
        centre = kernels[(k * k) // 2].numpy()
        mask = (centre < 1.0 - 1e-6).astype(np.float32)
        maps = {"kernels": kernels.numpy(), "blur_mask": mask}
        meta = {"kind": "partial_motion", "blurred_fraction": float(mask.mean())}
        return Degraded(_apply_field(scene.image, kernels), maps, meta)
