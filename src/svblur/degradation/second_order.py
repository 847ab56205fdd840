"""Real-ESRGAN's second-order degradation: the ``realesrgan`` config's step from an HR image
to its LR image.

Real-ESRGAN (Wang et al., ICCVW 2021) applies the classical model ``blur -> resize ->
noise -> JPEG`` twice; the second pass ends with a 2-D sinc filter (ringing and
overshoot), grouped with the resize to the target size, either before or after the last
JPEG::

    stage 1: blur (k1) -> random resize -> noise (Gaussian | Poisson) -> JPEG
    stage 2: blur (k2, prob. 0.8) -> random resize -> noise -> either
             [resize to (H // s, W // s) + sinc] -> JPEG   or
             JPEG -> [resize to (H // s, W // s) + sinc]      (order drawn 50/50)

It takes an HR-resolution image that an earlier step may already have blurred
(defocus, motion, PBaSR's partial blur) and returns the LR image. PBaSR (Qin et al.)
trains on BSRGAN's model instead (:mod:`svblur.degradation.bsrgan`, the ``bsrgan``
config); its released test LR images mix BSRGAN's and Real-ESRGAN's.

The default of every argument of :class:`SecondOrderDegradation` is the value of
Real-ESRGAN's ``options/train_realesrgan_x4plus.yml`` (the ``*2`` names are the second
stage) or, where that file has none, of its data set and model code:

* kernels: odd sizes 7..21 (``kernel_range``), types ``iso`` / ``aniso`` /
  ``generalized_iso`` / ``generalized_aniso`` / ``plateau_iso`` / ``plateau_aniso`` with
  probabilities 0.45 / 0.25 / 0.12 / 0.03 / 0.12 / 0.03, sigmas ``U(blur_sigma)`` per
  axis, rotation ``U(-pi, pi)`` for the anisotropic ones; a sinc kernel instead with
  probability ``sinc_prob`` (cutoff ``U(pi/3, pi)`` below size 13, ``U(pi/5, pi)`` from
  13 on); the shape ``beta`` of generalized / plateau kernels is drawn as BasicSR does,
  ``U(low, 1)`` or ``U(1, high)`` with probability 1/2 each (so with ``betap_range``
  ``(1, 2)`` half the plateau kernels have ``beta = 1``);
* resize: up / down / keep with ``resize_prob``, the factor ``U(1, high)`` or
  ``U(low, 1)`` of ``resize_range``, the mode drawn from area / bilinear / bicubic;
* noise: Gaussian with probability ``gaussian_noise_prob``, else Poisson; ``noise_range``
  in 8-bit grey levels; grey noise with probability ``gray_noise_prob``;
* JPEG quality from the integers of ``jpeg_range``; final sinc with probability
  ``final_sinc_prob`` (cutoff ``U(pi/3, pi)``, size from ``kernel_range``); the output is
  rounded to 8 bits.

Differences from Real-ESRGAN's implementation, all deliberate:

* One ``np.random.Generator`` per call draws everything (Real-ESRGAN mixes Python's and
  numpy's global generators), so a sample is exact per seed.
* Resizes use ``cv2.resize`` with ``INTER_AREA`` / ``INTER_LINEAR`` / ``INTER_CUBIC`` for
  ``F.interpolate``'s ``area`` / ``bilinear`` / ``bicubic``. Bilinear and bicubic agree
  to float precision (half-pixel centres, cubic ``a = -0.75``, no antialiasing), and so
  does area when enlarging or shrinking by an integer factor; for other shrink factors
  OpenCV weights the exact fractional pixel overlaps where torch's adaptive average
  pooling averages whole-pixel bins.
* JPEG is OpenCV's libjpeg at integer qualities instead of the differentiable
  ``DiffJPEG`` at real-valued ones.
* Kernels are applied with ``cv2.filter2D`` on the reflect-101 padded image (Real-ESRGAN's
  ``filter2D``: reflect padding, cross-correlation) without padding them to 21 x 21, which
  changes nothing. Every stage has an on/off probability (``blur_prob``, ``noise_prob``,
  ``jpeg_prob`` and their ``*2`` twins, all 1 by default as in Real-ESRGAN) so that a
  configuration can switch it off.
* Real-ESRGAN degrades the unsharp-masked ground truth (``USMSharp``) and crops the pair
  afterwards; both belong to the caller here (pass a sharpened HR image if wanted).

BSRGAN (Zhang et al., ICCV 2021), whose degradation PBaSR trains on, is a different,
single-pass model (its operations once each, in a random order, no sinc filter, no
Poisson noise, no second pass): :class:`svblur.degradation.BSRGANDegradation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch

from svblur.degradation.fields import filter_image
from svblur.degradation.kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    sinc_kernel,
)
from svblur.degradation.noise import (
    map_images,
    random_gaussian_noise,
    random_jpeg,
    random_poisson_noise,
)

__all__ = [
    "KERNEL_TYPES",
    "RESIZE_MODES",
    "SecondOrderDegradation",
    "check_resize_modes",
    "degrade_second_order",
]

ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
"""Blur kernel families of Real-ESRGAN (BasicSR's ``random_mixed_kernels``)."""

RESIZE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
"""OpenCV interpolation standing in for each of ``F.interpolate``'s modes."""


def check_resize_modes(names: Sequence[str]) -> tuple[str, ...]:
    """The names as a tuple, if they are a non-empty choice of :data:`RESIZE_MODES`' keys.

    Raises:
        ValueError: If one is unknown or there are none.
    """
    modes = tuple(names)
    if not modes or set(modes) - set(RESIZE_MODES):
        raise ValueError(f"resize_modes must be chosen from {tuple(RESIZE_MODES)}, got {modes}")
    return modes


# Real-ESRGAN's data set code hard-codes these sinc cutoffs (radians).
_SINC_CUTOFF = (math.pi / 3, math.pi)
_SINC_CUTOFF_LARGE = (math.pi / 5, math.pi)
_SINC_LARGE_FROM = 13

_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


@dataclass
class SecondOrderDegradation:
    """Real-ESRGAN's second-order degradation from an HR image to its ``1 / scale`` LR image.

    Every range is a ``(low, high)`` pair; ``resize_prob`` is the ``(up, down, keep)``
    probability triple. Noise levels are in 8-bit grey levels as in Real-ESRGAN's
    configuration (``noise_range = (1, 30)`` is ``sigma`` from 1/255 to 30/255). Lists
    (e.g. from a Hydra config) are accepted and stored as tuples.

    Args:
        scale: Downscaling factor; the output is exactly ``(H // scale, W // scale)``.
        kernel_range: Smallest and largest blur / sinc kernel size, both odd; every odd
            size in between is equally likely.
        kernel_list: Kernel families of the first blur (see :data:`KERNEL_TYPES`).
        kernel_prob: Weight of each family, same length as ``kernel_list`` (normalised
            when drawing).
        sinc_prob: Probability that the first blur is a sinc kernel instead.
        blur_sigma: Range of the first blur's Gaussian sigmas (pixels).
        betag_range: Shape range of generalized Gaussian kernels.
        betap_range: Shape range of plateau kernels.
        blur_prob: Probability of the first blur (1 in Real-ESRGAN).
        resize_prob: ``(up, down, keep)`` probabilities of the first random resize.
        resize_range: Factor range of the first random resize.
        noise_prob: Probability of the first noise (1 in Real-ESRGAN).
        gaussian_noise_prob: Probability that the noise is Gaussian rather than Poisson.
        noise_range: Gaussian sigma range in grey levels (of 255).
        poisson_scale_range: Poisson noise scale range.
        gray_noise_prob: Probability that the noise is grey (shared by the channels).
        jpeg_prob: Probability of the first JPEG (1 in Real-ESRGAN).
        jpeg_range: JPEG quality range of the first stage (integers, both ends included).
        second_blur_prob: Probability of the second blur.
        kernel_list2: As ``kernel_list``, second blur.
        kernel_prob2: As ``kernel_prob``, second blur.
        sinc_prob2: As ``sinc_prob``, second blur.
        blur_sigma2: As ``blur_sigma``, second blur.
        betag_range2: As ``betag_range``, second blur.
        betap_range2: As ``betap_range``, second blur.
        resize_prob2: As ``resize_prob``; the factor multiplies the target LR size.
        resize_range2: As ``resize_range``, second stage.
        noise_prob2: As ``noise_prob``, second stage.
        gaussian_noise_prob2: As ``gaussian_noise_prob``, second stage.
        noise_range2: As ``noise_range``, second stage.
        poisson_scale_range2: As ``poisson_scale_range``, second stage.
        gray_noise_prob2: As ``gray_noise_prob``, second stage.
        jpeg_prob2: As ``jpeg_prob``, second stage.
        jpeg_range2: As ``jpeg_range``, second stage.
        final_sinc_prob: Probability of the final sinc filter.
        resize_modes: Interpolations drawn from at each resize (keys of
            :data:`RESIZE_MODES`).
        quantize: Round the output to the 8-bit grid ``k / 255``, as Real-ESRGAN does.
    """

    scale: int = 4
    kernel_range: tuple[int, int] = (7, 21)
    # First stage.
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = _KERNEL_PROB
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    blur_prob: float = 1.0
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    noise_prob: float = 1.0
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 1.0
    jpeg_range: tuple[int, int] = (30, 95)
    # Second stage.
    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = _KERNEL_PROB
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    noise_prob2: float = 1.0
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_prob2: float = 1.0
    jpeg_range2: tuple[int, int] = (30, 95)
    # Final sinc filter and output.
    final_sinc_prob: float = 0.8
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    quantize: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.scale, int) and self.scale >= 1):
            raise ValueError(f"scale must be a positive integer, got {self.scale!r}")
        low, high = (int(v) for v in _pair(self.kernel_range, "kernel_range"))
        if low % 2 == 0 or high % 2 == 0 or not 1 <= low <= high:
            raise ValueError(f"kernel_range must be two odd sizes low <= high, got {low, high}")
        self.kernel_range = (low, high)
        for suffix in ("", "2"):
            names = tuple(getattr(self, "kernel_list" + suffix))
            unknown = sorted(set(names) - set(KERNEL_TYPES))
            if unknown:
                raise ValueError(f"unknown kernel types {unknown}; choose from {KERNEL_TYPES}")
            setattr(self, "kernel_list" + suffix, names)
            prob = _weights(getattr(self, "kernel_prob" + suffix), "kernel_prob" + suffix)
            if len(prob) != len(names):
                raise ValueError(
                    f"kernel_prob{suffix} has {len(prob)} entries for {len(names)} kernel types"
                )
            setattr(self, "kernel_prob" + suffix, prob)
            prob = _weights(getattr(self, "resize_prob" + suffix), "resize_prob" + suffix)
            if len(prob) != 3:
                raise ValueError(f"resize_prob{suffix} must be (up, down, keep), got {prob}")
            setattr(self, "resize_prob" + suffix, prob)
            for name in (
                "blur_sigma",
                "betag_range",
                "betap_range",
                "resize_range",
                "noise_range",
                "poisson_scale_range",
            ):
                setattr(self, name + suffix, _pair(getattr(self, name + suffix), name + suffix))
            low, high = getattr(self, "resize_range" + suffix)
            if not 0 < low <= 1 <= high:
                raise ValueError(
                    f"resize_range{suffix} must satisfy 0 < low <= 1 <= high, got {(low, high)}"
                )
            jpeg = tuple(
                int(q) for q in _pair(getattr(self, "jpeg_range" + suffix), "jpeg_range" + suffix)
            )
            if not 0 <= jpeg[0] <= jpeg[1] <= 100:
                raise ValueError(f"jpeg_range{suffix} must lie in [0, 100], got {jpeg}")
            setattr(self, "jpeg_range" + suffix, jpeg)
        self.resize_modes = check_resize_modes(self.resize_modes)

    def __call__(self, hr: ImageT, rng: np.random.Generator) -> ImageT:
        """Degrade an HR image to its LR image.

        Args:
            hr: RGB image in ``[0, 1]``: numpy ``(H, W, 3)`` or tensor ``(3, H, W)`` /
                ``(B, 3, H, W)`` (each image of a batch draws its own degradation).
            rng: Source of every random choice.

        Returns:
            The LR image ``(H // scale, W // scale, 3)`` (or ``(3, ...)`` /
            ``(B, 3, ...)``) in ``[0, 1]``, same type and dtype as ``hr``.

        Raises:
            ValueError: If the image is smaller than ``scale`` or not RGB.
        """
        return map_images(lambda img: self._degrade(img, rng), hr, "SecondOrderDegradation")

    def sample_blur_kernel(self, rng: np.random.Generator, stage: int = 1) -> np.ndarray:
        """Draw the blur kernel of the first or second stage.

        Args:
            rng: Source of the kernel's size, family and parameters.
            stage: 1 or 2.

        Returns:
            A normalised float64 kernel ``(k, k)`` with ``k`` odd in ``kernel_range``.
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        suffix = "" if stage == 1 else "2"
        size = self._kernel_size(rng)
        if rng.random() < getattr(self, "sinc_prob" + suffix):
            cutoff = _SINC_CUTOFF if size < _SINC_LARGE_FROM else _SINC_CUTOFF_LARGE
            return sinc_kernel(size, float(rng.uniform(*cutoff)))
        names = getattr(self, "kernel_list" + suffix)
        kind = names[_choice(rng, getattr(self, "kernel_prob" + suffix))]
        sigma_x = float(rng.uniform(*getattr(self, "blur_sigma" + suffix)))
        sigma_y, theta = sigma_x, 0.0
        if kind.endswith("aniso"):
            sigma_y = float(rng.uniform(*getattr(self, "blur_sigma" + suffix)))
            theta = float(rng.uniform(-math.pi, math.pi))
        if kind.startswith("generalized"):
            beta = _split_uniform(rng, getattr(self, "betag_range" + suffix))
            return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta)
        if kind.startswith("plateau"):
            beta = _split_uniform(rng, getattr(self, "betap_range" + suffix))
            return plateau_kernel(size, sigma_x, sigma_y, theta, beta)
        return gaussian_kernel(size, sigma_x, sigma_y, theta)

    def sample_final_sinc(self, rng: np.random.Generator) -> np.ndarray | None:
        """Draw the final sinc kernel, or ``None`` (probability ``1 - final_sinc_prob``).

        Args:
            rng: Source of the choice, the kernel size and the cutoff.

        Returns:
            A normalised float64 kernel ``(k, k)``, or ``None`` for no filter.
        """
        if not rng.random() < self.final_sinc_prob:
            return None
        size = self._kernel_size(rng)
        return sinc_kernel(size, float(rng.uniform(*_SINC_CUTOFF)))

    def _kernel_size(self, rng: np.random.Generator) -> int:
        low, high = self.kernel_range
        return low + 2 * int(rng.integers(0, (high - low) // 2, endpoint=True))

    def _resize(
        self, image: np.ndarray, size: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        mode = self.resize_modes[int(rng.integers(len(self.resize_modes)))]
        height, width = max(size[0], 1), max(size[1], 1)
        return cv2.resize(image, (width, height), interpolation=RESIZE_MODES[mode])

    def _random_factor(self, rng: np.random.Generator, stage: int) -> float:
        suffix = "" if stage == 1 else "2"
        low, high = getattr(self, "resize_range" + suffix)
        direction = _choice(rng, getattr(self, "resize_prob" + suffix))
        if direction == 0:
            return float(rng.uniform(1.0, high))
        if direction == 1:
            return float(rng.uniform(low, 1.0))
        return 1.0

    def _noise(self, image: np.ndarray, rng: np.random.Generator, stage: int) -> np.ndarray:
        suffix = "" if stage == 1 else "2"
        if not rng.random() < getattr(self, "noise_prob" + suffix):
            return image
        gray_prob = getattr(self, "gray_noise_prob" + suffix)
        if rng.random() < getattr(self, "gaussian_noise_prob" + suffix):
            low, high = getattr(self, "noise_range" + suffix)
            return random_gaussian_noise(image, rng, (low / 255.0, high / 255.0), gray_prob)
        scale_range = getattr(self, "poisson_scale_range" + suffix)
        return random_poisson_noise(image, rng, scale_range, gray_prob)

    def _jpeg(self, image: np.ndarray, rng: np.random.Generator, stage: int) -> np.ndarray:
        suffix = "" if stage == 1 else "2"
        if not rng.random() < getattr(self, "jpeg_prob" + suffix):
            return image
        return random_jpeg(image, rng, getattr(self, "jpeg_range" + suffix))

    def _degrade(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width, channels = image.shape
        if channels != 3:
            raise ValueError(
                f"SecondOrderDegradation expects an RGB image, got shape {image.shape}"
            )
        if height < self.scale or width < self.scale:
            raise ValueError(
                f"image of size {height}x{width} is smaller than the scale {self.scale}; "
                f"use an HR image of at least {self.scale}x{self.scale}"
            )
        out = image
        # First stage.
        if rng.random() < self.blur_prob:
            out = filter_image(out, self.sample_blur_kernel(rng, stage=1))
        factor = self._random_factor(rng, stage=1)
        out = self._resize(out, (int(height * factor), int(width * factor)), rng)
        out = self._noise(out, rng, stage=1)
        out = self._jpeg(out, rng, stage=1)
        # Second stage.
        if rng.random() < self.second_blur_prob:
            out = filter_image(out, self.sample_blur_kernel(rng, stage=2))
        factor = self._random_factor(rng, stage=2)
        size = (int(height / self.scale * factor), int(width / self.scale * factor))
        out = self._resize(out, size, rng)
        out = self._noise(out, rng, stage=2)
        target = (height // self.scale, width // self.scale)
        sinc = self.sample_final_sinc(rng)
        if rng.random() < 0.5:
            out = self._resize(out, target, rng)
            out = out if sinc is None else filter_image(out, sinc)
            out = self._jpeg(out, rng, stage=2)
        else:
            out = self._jpeg(out, rng, stage=2)
            out = self._resize(out, target, rng)
            out = out if sinc is None else filter_image(out, sinc)
        out = np.clip(out, 0.0, 1.0)
        if self.quantize:
            out = np.round(out * 255.0) / 255.0
        return out


def degrade_second_order(
    hr: ImageT, rng: np.random.Generator, scale: int = 4, **ranges: object
) -> ImageT:
    """Degrade an HR image with Real-ESRGAN's second-order model.

    A functional twin of :class:`SecondOrderDegradation`.

    Args:
        hr: RGB image in ``[0, 1]``: numpy ``(H, W, 3)`` or tensor ``(3, H, W)`` /
            ``(B, 3, H, W)``.
        rng: Source of every random choice.
        scale: Downscaling factor.
        **ranges: Any other argument of :class:`SecondOrderDegradation`.

    Returns:
        The LR image of size ``(H // scale, W // scale)``, same type and dtype as ``hr``.
    """
    return SecondOrderDegradation(scale=scale, **ranges)(hr, rng)


def _split_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """BasicSR's shape draw: ``U(low, 1)`` or ``U(1, high)`` with probability 1/2 each."""
    low, high = bounds
    pivot = min(max(1.0, low), high)
    if rng.random() < 0.5:
        return float(rng.uniform(low, pivot))
    return float(rng.uniform(pivot, high))


def _pair(bounds: Sequence[float], name: str) -> tuple[float, float]:
    if len(bounds) != 2 or not float(bounds[0]) <= float(bounds[1]):
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {bounds}")
    return float(bounds[0]), float(bounds[1])


def _weights(values: Sequence[float], name: str) -> tuple[float, ...]:
    weights = tuple(float(v) for v in values)
    if not weights or min(weights) < 0 or not sum(weights) > 0:
        raise ValueError(f"{name} must be non-negative weights with a positive sum, got {values}")
    return weights


def _choice(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    """Index drawn with probability proportional to ``weights`` (``random.choices``' rule)."""
    prob = np.asarray(weights) / sum(weights)
    return int(rng.choice(len(weights), p=prob))
