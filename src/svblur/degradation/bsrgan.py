"""BSRGAN's degradation: the ``bsrgan`` config's step from an HR image to its LR image.

BSRGAN (Zhang et al., ICCV 2021, "Designing a Practical Degradation Model for Deep Blind
Image Super-Resolution") applies each of its operations once, in an order shuffled per
image, and ends with a JPEG. PBaSR's released training loaders degrade every HR patch,
sharp or blurred, with it (BSRGAN's ``degradation_bsrgan``); the numbers below are that
function's. With ``s`` the target factor:

1. with probability 0.25, and only for ``s = 4``, a 2x pre-downsample (1/2 each: MATLAB's
   antialiased bicubic, or an OpenCV resize drawn from bilinear / bicubic / area); the
   steps below then work at the factor ``sf = 2``, else at ``sf = s``;
2. seven steps (:data:`BSRGAN_STEPS`) in a random order, except that the down-sampling
   comes before the resize to the target size (drawn the other way round, the two swap
   places):

   * ``blur_1``, ``blur_2``: a Gaussian kernel of odd size 7..25, isotropic with
     ``sigma ~ U(0, 2 + 0.2 sf)`` or, with probability 1/2, anisotropic with the two
     variances (eigenvalues of its covariance) ``U(0, 4 + sf)`` each and the angle of
     the first ``U(0, pi)``;
   * ``downsample``: with probability 0.75 a resize by ``1 / U(1, 2 sf)`` (bilinear,
     bicubic or area), else the nearest variant: a blur by a 25 x 25 Gaussian of
     ``sigma ~ U(0.1, 0.6 sf)`` centred ``(sf - 1) / 2`` pixels down and right (so that
     each kept pixel stands for the centre of its ``sf x sf`` block), then every
     ``sf``-th pixel;
   * ``resize``: to the target size ``(H // s, W // s)`` (bilinear, bicubic or area);
     after a shrink by more than ``sf`` it enlarges again, the paper's
     down-up-sampling;
   * ``noise``: Gaussian of level ``randint(2, 25)`` grey levels (of 255), per channel
     (probability 0.4), grey (0.4) or correlated across the channels (0.2), with the
     covariance ``|(25 / 255)^2 U^T D U|`` taken entry by entry (``U`` a random
     orthogonal matrix, ``D`` diagonal with entries ``U(0, 1)``; the release uses the
     top of the range here, not the drawn level);
   * ``jpeg``: with probability 0.9, quality ``randint(30, 95)``;
   * ``camera``: BSRGAN's processed camera-sensor noise, with probability
     ``camera_prob`` (0 by default, see below): the image is unprocessed to a random
     camera's Bayer raw data, given shot and read noise, and processed back
     (:func:`~svblur.degradation.camera_noise.add_camera_sensor_noise`);
3. a final JPEG of quality ``randint(30, 95)``.

:meth:`BSRGANDegradation.draw` draws the order and every step's parameters without an
image (a :class:`BSRGANPlan`), :meth:`BSRGANDegradation.apply` runs a plan on an image,
and calling the degradation does both.

Differences from the release, all deliberate:

* **Camera-sensor noise is off by default.** BSRGAN's step runs a learned ISP model
  (networks with their weight files) on the LR image and the HR target, with
  probability 0.25 when a model is given. BSRGAN's function and both of PBaSR's loaders
  call it without one, so the step never applies in the released training; with the
  default ``camera_prob=0`` it keeps its place in the shuffled order, changes nothing and
  draws nothing (a seed gives the release's plan and image). ``camera_prob=0.25`` is the
  paper's set-up, with Brooks et al.'s analytic camera model (CVPR 2019, see
  :mod:`~svblur.degradation.camera_noise`) in place of the learned ISP: it processes the
  raw data with the parameters it was unprocessed with, so the colours are kept and the
  HR target stays as it is. Its draw comes after every other (the plan of the other
  steps is the same for a seed whatever ``camera_prob``).
* One ``np.random.Generator`` per call draws everything (the release mixes Python's and
  numpy's global generators), so a sample is exact per seed.
* The nearest variant's Gaussian is evaluated at the shifted centre; the release
  interpolates the centred kernel bilinearly (``scipy.interpolate.interp2d``), which
  differs at the fraction of a percent level.
* No crop, and no mod-crop first: the caller crops, and the LR image is
  ``(H // s, W // s)`` for every ``H, W``.
* Blurs use ``cv2.filter2D`` on reflect-101 padding, which equals the release's
  ``scipy.ndimage.convolve(mode="mirror")`` for these symmetric kernels; JPEG is
  OpenCV's libjpeg, as in the release.

Operations are on float images in ``[0, 1]`` (numpy ``(H, W, 3)``, or tensors through
:func:`~svblur.degradation.noise.map_images`); resizes and noise clip to ``[0, 1]`` as
the release does, and the final JPEG leaves the output on the 8-bit grid ``k / 255``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from svblur.degradation.camera_noise import add_camera_sensor_noise, draw_camera_params
from svblur.degradation.fields import filter_image
from svblur.degradation.kernels import gaussian_kernel
from svblur.degradation.noise import (
    add_correlated_gaussian_noise,
    add_gaussian_noise,
    jpeg_compress,
    map_images,
)
from svblur.degradation.resize import imresize
from svblur.degradation.second_order import RESIZE_MODES, check_resize_modes

__all__ = ["BSRGAN_STEPS", "NOISE_KINDS", "BSRGANDegradation", "BSRGANPlan"]

ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)

BSRGAN_STEPS = ("blur_1", "blur_2", "downsample", "resize", "noise", "jpeg", "camera")
"""The shuffled steps, in BSRGAN's numbering (0..6)."""

NOISE_KINDS = ("color", "gray", "correlated")
"""The kinds of Gaussian noise: one field per channel, one shared, correlated channels."""

#: Side of the shifted Gaussian of the nearest down-sampling variant.
_NEAREST_KERNEL_SIZE = 25


@dataclass(frozen=True)
class BSRGANPlan:
    """One draw of BSRGAN's degradation: what happens to an image, in order.

    Attributes:
        scale: The target factor ``s``; the LR image is ``(H // s, W // s)``.
        prescale: The 2x pre-downsample: ``None``, ``"matlab"`` (antialiased bicubic) or
            an OpenCV mode (a key of :data:`~svblur.degradation.second_order.RESIZE_MODES`).
        stage_scale: The factor ``sf`` the shuffled steps work at (2 after a
            pre-downsample, else ``scale``).
        order: The seven names of :data:`BSRGAN_STEPS` in the order they run.
        steps: Each step's parameters, by name: ``blur_*`` ``{"kind": "iso", "size",
            "sigma"}`` or ``{"kind": "aniso", "size", "variances": [v1, v2], "theta"}``;
            ``downsample`` ``{"kind": "resize", "factor", "mode"}`` (shrink by
            ``factor``) or ``{"kind": "nearest", "sigma"}``; ``resize`` ``{"mode"}``;
            ``noise`` ``{"kind", "level"}`` (grey levels; ``"covariance"`` 3x3 too for
            ``correlated``); ``jpeg`` ``{"quality"}`` (``None``: skipped); ``camera`` ``{}``
            (skipped) or a camera of
            :func:`~svblur.degradation.camera_noise.draw_camera_params`.
        final_jpeg: The quality of the final JPEG.
    """

    scale: int
    prescale: str | None
    stage_scale: int
    order: tuple[str, ...]
    steps: Mapping[str, Mapping[str, Any]]
    final_jpeg: int

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain JSON-serialisable values."""
        record = asdict(self)
        record["order"] = list(self.order)
        record["steps"] = {name: dict(params) for name, params in self.steps.items()}
        return record


@dataclass
class BSRGANDegradation:
    """BSRGAN's degradation from an HR image to its ``1 / scale`` LR image.

    The defaults are the released ``degradation_bsrgan``'s (see the module docstring);
    ranges are ``(low, high)`` pairs, both ends included for the integer ones. Lists
    (e.g. from a Hydra config) are accepted and stored as tuples.

    Args:
        scale: The target factor; the output is exactly ``(H // scale, W // scale)``.
        prescale_prob: Probability of the 2x pre-downsample (used only for scale 4).
        kernel_range: Smallest and largest size of the two blurs' kernels, both odd.
        aniso_prob: Probability that a blur is anisotropic.
        resize_prob: Probability that the down-sampling is a resize by a random factor
            rather than the shifted-Gaussian nearest variant.
        resize_modes: Interpolations drawn from at each resize (keys of
            :data:`~svblur.degradation.second_order.RESIZE_MODES`).
        noise_range: Gaussian noise level in grey levels (integers); the correlated
            kind uses the top one.
        noise_kind_prob: Weights of :data:`NOISE_KINDS` (normalised when drawing).
        jpeg_prob: Probability of the shuffled JPEG step.
        jpeg_range: JPEG qualities of both JPEG steps (integers).
        camera_prob: Probability of the camera-sensor noise step (0: the release, which
            never applies it; 0.25: the BSRGAN paper's set-up with an ISP model).
    """

    scale: int = 4
    prescale_prob: float = 0.25
    kernel_range: tuple[int, int] = (7, 25)
    aniso_prob: float = 0.5
    resize_prob: float = 0.75
    resize_modes: tuple[str, ...] = ("bilinear", "bicubic", "area")
    noise_range: tuple[int, int] = (2, 25)
    noise_kind_prob: tuple[float, float, float] = (0.4, 0.4, 0.2)
    jpeg_prob: float = 0.9
    jpeg_range: tuple[int, int] = (30, 95)
    camera_prob: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or int(self.scale) != self.scale or self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}")
        self.scale = int(self.scale)
        for name in ("prescale_prob", "aniso_prob", "resize_prob", "jpeg_prob", "camera_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
            setattr(self, name, value)
        low, high = _int_pair(self.kernel_range, "kernel_range")
        if low % 2 == 0 or high % 2 == 0 or low < 1:
            raise ValueError(f"kernel_range must be two odd sizes low <= high, got {low, high}")
        self.kernel_range = (low, high)
        self.noise_range = _int_pair(self.noise_range, "noise_range")
        if self.noise_range[0] < 0:
            raise ValueError(f"noise_range must be >= 0 grey levels, got {self.noise_range}")
        self.jpeg_range = _int_pair(self.jpeg_range, "jpeg_range")
        if not 0 <= self.jpeg_range[0] <= self.jpeg_range[1] <= 100:
            raise ValueError(f"jpeg_range must lie in [0, 100], got {self.jpeg_range}")
        weights = tuple(float(w) for w in self.noise_kind_prob)
        if len(weights) != len(NOISE_KINDS) or min(weights) < 0 or not sum(weights) > 0:
            raise ValueError(
                f"noise_kind_prob must be {len(NOISE_KINDS)} non-negative weights of "
                f"{NOISE_KINDS} with a positive sum, got {self.noise_kind_prob}"
            )
        self.noise_kind_prob = weights  # type: ignore[assignment]
        self.resize_modes = check_resize_modes(self.resize_modes)

    def __call__(self, hr: ImageT, rng: np.random.Generator) -> ImageT:
        """Degrade an HR image (numpy ``(H, W, 3)``, tensor ``(3, H, W)`` or
        ``(B, 3, H, W)`` in ``[0, 1]``) to its LR image of ``H // scale, W // scale``, same
        type and dtype: :meth:`draw`, then :meth:`apply`, image by image."""
        return map_images(lambda img: self.apply(img, self.draw(rng), rng), hr, "BSRGAN")

    def draw(self, rng: np.random.Generator) -> BSRGANPlan:
        """Draw the order and the parameters of every step (no image needed).

        Args:
            rng: Source of the draw.

        Returns:
            The plan, for :meth:`apply`.
        """
        prescale, sf = None, self.scale
        if self.scale == 4 and rng.random() < self.prescale_prob:
            prescale = "matlab" if rng.random() < 0.5 else self._mode(rng)
            sf = 2
        order = [BSRGAN_STEPS[i] for i in rng.permutation(len(BSRGAN_STEPS))]
        first, second = order.index("downsample"), order.index("resize")
        if first > second:
            order[first], order[second] = order[second], order[first]
        steps = {
            "blur_1": self._draw_blur(rng, sf),
            "blur_2": self._draw_blur(rng, sf),
            "downsample": self._draw_downsample(rng, sf),
            "resize": {"mode": self._mode(rng)},
            "noise": self._draw_noise(rng),
            "jpeg": {"quality": self._quality(rng) if rng.random() < self.jpeg_prob else None},
        }
        final_jpeg = self._quality(rng)
        # Drawn last, and not at all when off, so that the rest of the plan (and the noise
        # fields drawn after it by __call__) are the release's for a seed.
        applies = self.camera_prob > 0 and rng.random() < self.camera_prob
        steps["camera"] = draw_camera_params(rng) if applies else {}
        return BSRGANPlan(self.scale, prescale, sf, tuple(order), steps, final_jpeg)

    def apply(self, image: np.ndarray, plan: BSRGANPlan, rng: np.random.Generator) -> np.ndarray:
        """Run a plan on one image.

        Args:
            image: RGB float image ``(H, W, 3)`` in ``[0, 1]``.
            plan: A draw of :meth:`draw` (its ``scale`` sets the output size).
            rng: Source of the noise fields.

        Returns:
            The LR image ``(H // plan.scale, W // plan.scale, 3)``, same dtype.

        Raises:
            ValueError: If the image is smaller than the scale or not RGB.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"BSRGAN expects an RGB image (H, W, 3), got shape {image.shape}")
        height, width = image.shape[:2]
        if height < plan.scale or width < plan.scale:
            raise ValueError(
                f"image of size {height}x{width} is smaller than the scale {plan.scale}; "
                f"use an HR image of at least {plan.scale}x{plan.scale}"
            )
        target = (height // plan.scale, width // plan.scale)
        out = image
        if plan.prescale == "matlab":
            out = np.clip(imresize(out, 0.5), 0.0, 1.0)
        elif plan.prescale is not None:
            out = _resize(out, (height // 2, width // 2), plan.prescale)
        for name in plan.order:
            out = _run_step(out, name, plan.steps[name], plan.stage_scale, target, rng)
        return jpeg_compress(out, plan.final_jpeg)

    def _mode(self, rng: np.random.Generator) -> str:
        return self.resize_modes[int(rng.integers(len(self.resize_modes)))]

    def _quality(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.jpeg_range[0], self.jpeg_range[1], endpoint=True))

    def _draw_blur(self, rng: np.random.Generator, sf: int) -> dict[str, Any]:
        low, high = self.kernel_range
        size = low + 2 * int(rng.integers(0, (high - low) // 2, endpoint=True))
        if rng.random() < self.aniso_prob:
            variances = (4.0 + sf) * rng.random(2)
            theta = math.pi * float(rng.random())
            return {"kind": "aniso", "size": size, "variances": variances.tolist(), "theta": theta}
        return {"kind": "iso", "size": size, "sigma": (2.0 + 0.2 * sf) * float(rng.random())}

    def _draw_downsample(self, rng: np.random.Generator, sf: int) -> dict[str, Any]:
        if rng.random() < self.resize_prob:
            factor = float(rng.uniform(1.0, 2.0 * sf))
            return {"kind": "resize", "factor": factor, "mode": self._mode(rng)}
        return {"kind": "nearest", "sigma": float(rng.uniform(0.1, 0.6 * sf))}

    def _draw_noise(self, rng: np.random.Generator) -> dict[str, Any]:
        low, high = self.noise_range
        level = int(rng.integers(low, high, endpoint=True))
        weights = np.asarray(self.noise_kind_prob) / sum(self.noise_kind_prob)
        kind = NOISE_KINDS[int(rng.choice(len(NOISE_KINDS), p=weights))]
        if kind != "correlated":
            return {"kind": kind, "level": level}
        rotation = np.linalg.svd(rng.random((3, 3)))[0]
        spread = np.diag(rng.random(3))
        covariance = np.abs((high / 255.0) ** 2 * rotation.T @ spread @ rotation)
        return {"kind": kind, "level": high, "covariance": covariance.tolist()}


def _run_step(
    image: np.ndarray,
    name: str,
    params: Mapping[str, Any],
    sf: int,
    target: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply one step of a plan (see :class:`BSRGANPlan` for ``params``)."""
    if name in ("blur_1", "blur_2"):
        if params["kind"] == "aniso":
            sigma_x, sigma_y = (math.sqrt(v) for v in params["variances"])
            kernel = gaussian_kernel(params["size"], sigma_x, sigma_y, params["theta"])
        else:
            kernel = gaussian_kernel(params["size"], params["sigma"])
        return filter_image(image, kernel)
    if name == "downsample":
        height, width = image.shape[:2]
        if params["kind"] == "resize":
            size = (int(height / params["factor"]), int(width / params["factor"]))
            return _resize(image, size, params["mode"])
        kernel = _shifted_gaussian(_NEAREST_KERNEL_SIZE, params["sigma"], (sf - 1) / 2)
        return np.clip(filter_image(image, kernel)[::sf, ::sf], 0.0, 1.0)
    if name == "resize":
        return _resize(image, target, params["mode"])
    if name == "noise":
        if params["kind"] == "correlated":
            return add_correlated_gaussian_noise(image, rng, np.asarray(params["covariance"]))
        sigma = params["level"] / 255.0
        return add_gaussian_noise(image, rng, sigma, gray=params["kind"] == "gray")
    if name == "jpeg":
        return image if params["quality"] is None else jpeg_compress(image, params["quality"])
    if name == "camera":
        return add_camera_sensor_noise(image, rng, params) if params else image
    raise ValueError(f"unknown BSRGAN step {name!r}; the steps are {BSRGAN_STEPS}")


def _resize(image: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """OpenCV resize to ``(height, width)`` (at least 1 x 1), clipped to ``[0, 1]``."""
    height, width = max(int(size[0]), 1), max(int(size[1]), 1)
    out = cv2.resize(image, (width, height), interpolation=RESIZE_MODES[mode])
    return np.clip(out, 0.0, 1.0)


def _shifted_gaussian(size: int, sigma: float, shift: float) -> np.ndarray:
    """An isotropic Gaussian ``(size, size)`` centred ``shift`` taps below and right of the
    centre, normalised to sum 1 (cross-correlation: output pixel ``p`` averages the input
    around ``p + shift``)."""
    offsets = np.arange(size) - (size - 1) / 2 - shift
    profile = np.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()


def _int_pair(bounds: Sequence[float], name: str) -> tuple[int, int]:
    if len(bounds) != 2 or int(bounds[0]) != bounds[0] or int(bounds[1]) != bounds[1]:
        raise ValueError(f"{name} must be a (low, high) pair of integers, got {bounds}")
    low, high = int(bounds[0]), int(bounds[1])
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {bounds}")
    return low, high
