"""Sensor noise and JPEG compression for synthetic low-resolution images.

Images are RGB in ``[0, 1]``: a floating-point numpy array ``(H, W, 3)`` (the data
pipeline's layout) or a floating-point torch tensor ``(3, H, W)`` / ``(B, 3, H, W)``.
Every function returns the same type, dtype (and device) as its input, clipped to
``[0, 1]``; tensors go through the numpy path image by image, so one seed gives the same
result whichever layout holds the image (a CUDA tensor makes a round trip to the host,
and nothing is differentiable).

Randomness comes only from the ``np.random.Generator`` passed in. The noise is a few
lines of numpy rather than albumentations' ``GaussNoise`` / ``ISONoise``: those draw from
a generator owned by the transform object (seeded per ``Compose``, and from the global
numpy state in albumentations 1.x, which this project still allows), so they cannot
follow the per-sample generator that keeps seeding exact under DDP and on resume. JPEG
uses OpenCV's encoder directly (albumentations' ``ImageCompression`` wraps the same call
but draws its quality from its own generator).

Conventions follow Real-ESRGAN (Wang et al. 2021, BasicSR's ``degradations.py``):

* Gaussian noise ``n ~ N(0, sigma^2)`` with ``sigma`` in ``[0, 1]`` units (grey levels /
  255); "grey" noise is one field shared by the three channels. Real-ESRGAN draws
  ``sigma`` from ``[1, 30] / 255`` (``[1, 25] / 255`` in its second stage); ArcSR uses
  ``[0.2, 20] / 255``.
* Poisson (shot) noise: the image is quantised to 8 bits, ``q = round(255 x) / 255``;
  photon counts ``k ~ Poisson(q * levels)`` give the noise ``scale * (k / levels - q)``,
  which is added to ``x``. Its variance is ``scale^2 * q / levels``. Real-ESRGAN sets
  ``levels`` to the number of distinct 8-bit values in the image rounded up to a power of
  two (256 for any image with more than 128 of them) and draws ``scale`` from
  ``[0.05, 3]``; that is the default here (``levels=None``). BSRGAN instead fixes
  ``scale = 1`` and draws ``levels = 10 ** U(2, 4)``; pass ``levels`` for that.
  Grey Poisson noise is computed on the luma ``0.299 R + 0.587 G + 0.114 B`` and shared
  by the channels.
* JPEG through ``cv2.imencode`` (libjpeg, 4:2:0 chroma subsampling) at an integer
  quality; Real-ESRGAN and BSRGAN draw it from ``[30, 95]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import cv2
import numpy as np
import torch

__all__ = [
    "add_correlated_gaussian_noise",
    "add_gaussian_noise",
    "add_poisson_noise",
    "jpeg_compress",
    "jpeg_encode",
    "random_gaussian_noise",
    "random_jpeg",
    "random_poisson_noise",
]

ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)

# ITU-R BT.601 luma weights, as cv2.COLOR_RGB2GRAY and torchvision's rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114])


def map_images(
    fn: Callable[[np.ndarray], np.ndarray], image: ImageT, name: str = "image"
) -> ImageT:
    """Apply a function of one numpy ``(H, W, C)`` image to a numpy image or a tensor batch.

    The function receives a float32 array (float64 if the input is float64) and may
    change the spatial size; the result is cast back to the input's type, dtype and
    device. Images of a batch are processed in order, so a function that draws from a
    generator draws for image 0 first.

    Args:
        fn: Function of one image ``(H, W, C)`` returning an image ``(h, w, C)``.
        image: A floating-point numpy array ``(H, W, C)`` or a floating-point tensor
            ``(C, H, W)`` or ``(B, C, H, W)``.
        name: The calling function's name, for error messages.

    Returns:
        ``fn``'s result in the input's layout: ``(h, w, C)``, ``(C, h, w)`` or
        ``(B, C, h, w)``.

    Raises:
        TypeError: If the image is not a floating-point numpy array or tensor.
        ValueError: If its number of dimensions is not supported.
    """
    if isinstance(image, np.ndarray):
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(
                f"{name} expects a floating-point image in [0, 1], got dtype {image.dtype}; "
                "convert uint8 images with image.astype(np.float32) / 255"
            )
        if image.ndim != 3:
            raise ValueError(f"{name} expects a numpy image of shape (H, W, C), got {image.shape}")
        work_dtype = np.float64 if image.dtype == np.float64 else np.float32
        return fn(image.astype(work_dtype, copy=False)).astype(image.dtype, copy=False)
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(f"{name} expects a floating-point tensor in [0, 1], got {image.dtype}")
        if image.dim() not in (3, 4):
            raise ValueError(
                f"{name} expects a tensor of shape (C, H, W) or (B, C, H, W), got "
                f"{tuple(image.shape)}"
            )
        work_dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        batch = image.detach().to("cpu", work_dtype)
        batch = batch.unsqueeze(0) if image.dim() == 3 else batch
        outputs = [
            torch.from_numpy(np.ascontiguousarray(fn(item.permute(1, 2, 0).numpy())))
            for item in batch
        ]
        out = torch.stack(outputs).permute(0, 3, 1, 2).to(image.device, image.dtype)
        return out[0] if image.dim() == 3 else out.contiguous()
    raise TypeError(f"{name} expects a numpy array or a torch tensor, got {type(image).__name__}")


def _check_rgb(image: np.ndarray, name: str) -> None:
    if image.shape[-1] != 3:
        raise ValueError(f"{name} expects 3 (RGB) channels, got an image of shape {image.shape}")


def _gaussian(image: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
    height, width, channels = image.shape
    # Drawn in float64 whatever the image dtype, so a seed gives one noise field.
    noise = rng.standard_normal((height, width, 1 if gray else channels)) * sigma
    return np.clip(image + noise, 0.0, 1.0)


def _poisson(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float,
    gray: bool,
    levels: float | None,
) -> np.ndarray:
    if gray:
        _check_rgb(image, "add_poisson_noise(gray=True)")
        signal = (image.astype(np.float64) @ _LUMA)[..., None]
    else:
        signal = image.astype(np.float64)
    quantised = np.clip(np.round(signal * 255.0), 0.0, 255.0) / 255.0
    if levels is None:
        codes = np.round(quantised * 255.0).astype(np.intp)
        distinct = np.count_nonzero(np.bincount(codes.ravel(), minlength=256))
        levels = 2.0 ** math.ceil(math.log2(distinct))
    noise = rng.poisson(quantised * levels) / levels - quantised
    return np.clip(image + scale * noise, 0.0, 1.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _jpeg_quality(quality: float) -> int:
    rounded = int(round(quality))
    if not 0 <= rounded <= 100:
        raise ValueError(f"JPEG quality must be in [0, 100], got {quality}")
    return rounded


def _encode(image: np.ndarray, quality: int) -> np.ndarray:
    _check_rgb(image, "jpeg_compress")
    bgr = cv2.cvtColor(_to_uint8(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV failed to JPEG-encode an image of shape {image.shape}")
    return encoded


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    decoded = cv2.imdecode(_encode(image, quality), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB).astype(image.dtype) / 255.0


def add_gaussian_noise(
    image: ImageT, rng: np.random.Generator, sigma: float, gray: bool = False
) -> ImageT:
    """Add zero-mean Gaussian noise and clip to ``[0, 1]``.

    Args:
        image: RGB image in ``[0, 1]``: numpy ``(H, W, C)`` or tensor ``(C, H, W)`` /
            ``(B, C, H, W)``.
        rng: Source of the noise.
        sigma: Standard deviation in ``[0, 1]`` units (``10 / 255`` is "noise level 10").
        gray: One noise field shared by all channels instead of one per channel.

    Returns:
        The noisy image, same type, shape and dtype as ``image``.

    Raises:
        ValueError: If ``sigma < 0``.
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 (in [0, 1] units, e.g. 10 / 255), got {sigma}")
    return map_images(lambda img: _gaussian(img, rng, sigma, gray), image, "add_gaussian_noise")


def add_correlated_gaussian_noise(
    image: ImageT, rng: np.random.Generator, covariance: np.ndarray
) -> ImageT:
    """Add zero-mean Gaussian noise correlated across the channels and clip to ``[0, 1]``.

    Each pixel gets one draw of ``N(0, covariance)`` over its channels (BSRGAN's third
    kind of Gaussian noise, between colour and grey). The draw is numpy's
    ``multivariate_normal`` with its SVD factorisation, so a symmetric matrix that is not
    positive semi-definite (BSRGAN takes the absolute value of every entry of its drawn
    covariance) acts as the matrix with the same singular vectors and values.

    Args:
        image: Image in ``[0, 1]`` with ``C`` channels: numpy ``(H, W, C)`` or tensor
            ``(C, H, W)`` / ``(B, C, H, W)``.
        rng: Source of the noise.
        covariance: Symmetric ``(C, C)`` matrix in ``[0, 1]`` units squared.

    Returns:
        The noisy image, same type, shape and dtype as ``image``.

    Raises:
        ValueError: If the covariance is not a symmetric ``(C, C)`` matrix.
    """
    cov = np.asarray(covariance, np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not np.allclose(cov, cov.T):
        raise ValueError(f"covariance must be a symmetric (C, C) matrix, got {cov.tolist()}")

    def apply(img: np.ndarray) -> np.ndarray:
        height, width, channels = img.shape
        if channels != cov.shape[0]:
            raise ValueError(
                f"covariance is {cov.shape[0]}x{cov.shape[0]} for an image of {channels} channels"
            )
        mean = np.zeros(channels)
        noise = rng.multivariate_normal(mean, cov, (height, width), check_valid="ignore")
        return np.clip(img + noise, 0.0, 1.0)

    return map_images(apply, image, "add_correlated_gaussian_noise")


def random_gaussian_noise(
    image: ImageT,
    rng: np.random.Generator,
    sigma_range: tuple[float, float] = (1 / 255, 30 / 255),
    gray_prob: float = 0.4,
) -> ImageT:
    """Add Gaussian noise of a random level, grey with probability ``gray_prob``.

    Each image of a batch draws its own ``sigma ~ U(sigma_range)`` and grey/colour choice,
    as in Real-ESRGAN. The defaults are Real-ESRGAN's first-stage ``noise_range`` ``[1, 30]``
    (in grey levels) and ``gray_noise_prob`` 0.4.

    Args:
        image: RGB image in ``[0, 1]``: numpy ``(H, W, C)`` or tensor ``(C, H, W)`` /
            ``(B, C, H, W)``.
        rng: Source of the parameters and of the noise.
        sigma_range: ``(low, high)`` standard deviation in ``[0, 1]`` units.
        gray_prob: Probability of grey (channel-shared) noise.

    Returns:
        The noisy image, same type, shape and dtype as ``image``.
    """
    low, high = _ordered(sigma_range, "sigma_range", minimum=0.0)

    def apply(img: np.ndarray) -> np.ndarray:
        sigma = rng.uniform(low, high)
        gray = bool(rng.random() < gray_prob)
        return _gaussian(img, rng, sigma, gray)

    return map_images(apply, image, "random_gaussian_noise")


def add_poisson_noise(
    image: ImageT,
    rng: np.random.Generator,
    scale: float,
    gray: bool = False,
    levels: float | None = None,
) -> ImageT:
    """Add Poisson (shot) noise in Real-ESRGAN's convention and clip to ``[0, 1]``.

    The image is quantised to 8 bits, ``q = round(255 x) / 255`` (for grey noise, its
    luma); the noise ``scale * (Poisson(q * levels) / levels - q)`` has mean 0 and
    variance ``scale^2 * q / levels`` and is added to the unquantised image.

    Args:
        image: RGB image in ``[0, 1]``: numpy ``(H, W, 3)`` or tensor ``(3, H, W)`` /
            ``(B, 3, H, W)`` (any channel count for colour noise).
        rng: Source of the noise.
        scale: Noise amplitude multiplier (Real-ESRGAN draws it from ``[0.05, 3]``).
        gray: Noise computed on the luma and shared by the channels.
        levels: Photon count of a unit intensity. ``None`` uses Real-ESRGAN's rule: the
            number of distinct 8-bit values in the (luma) image rounded up to a power of
            two, i.e. 256 for natural images. BSRGAN uses ``10 ** U(2, 4)`` with
            ``scale = 1``.

    Returns:
        The noisy image, same type, shape and dtype as ``image``.

    Raises:
        ValueError: If ``scale < 0`` or ``levels <= 0``.
    """
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    if levels is not None and not levels > 0:
        raise ValueError(f"levels must be > 0 (or None for Real-ESRGAN's rule), got {levels}")
    return map_images(
        lambda img: _poisson(img, rng, scale, gray, levels), image, "add_poisson_noise"
    )


def random_poisson_noise(
    image: ImageT,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.05, 3.0),
    gray_prob: float = 0.4,
) -> ImageT:
    """Add Poisson noise of a random scale, grey with probability ``gray_prob``.

    Each image of a batch draws its own ``scale ~ U(scale_range)`` and grey/colour
    choice; ``levels`` follows Real-ESRGAN's rule (see :func:`add_poisson_noise`). The
    defaults are Real-ESRGAN's first-stage ``poisson_scale_range`` and ``gray_noise_prob``.

    Args:
        image: RGB image in ``[0, 1]``: numpy ``(H, W, 3)`` or tensor ``(3, H, W)`` /
            ``(B, 3, H, W)``.
        rng: Source of the parameters and of the noise.
        scale_range: ``(low, high)`` noise scale.
        gray_prob: Probability of grey (channel-shared) noise.

    Returns:
        The noisy image, same type, shape and dtype as ``image``.
    """
    low, high = _ordered(scale_range, "scale_range", minimum=0.0)

    def apply(img: np.ndarray) -> np.ndarray:
        scale = rng.uniform(low, high)
        gray = bool(rng.random() < gray_prob)
        return _poisson(img, rng, scale, gray, None)

    return map_images(apply, image, "random_poisson_noise")


def jpeg_encode(image: np.ndarray, quality: float) -> bytes:
    """JPEG-encode an RGB image with OpenCV, e.g. to measure the compressed size.

    Args:
        image: Numpy RGB image ``(H, W, 3)`` in ``[0, 1]`` (clipped, then rounded to
            uint8).
        quality: JPEG quality in ``[0, 100]``, rounded to the nearest integer.

    Returns:
        The JPEG file's bytes.

    Raises:
        TypeError: If the image is not a floating-point numpy array.
        ValueError: If the quality is out of range or the image is not ``(H, W, 3)``.
    """
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating):
        raise TypeError("jpeg_encode expects a floating-point numpy image (H, W, 3) in [0, 1]")
    if image.ndim != 3:
        raise ValueError(f"jpeg_encode expects a numpy image of shape (H, W, 3), got {image.shape}")
    return _encode(image, _jpeg_quality(quality)).tobytes()


def jpeg_compress(image: ImageT, quality: float) -> ImageT:
    """Compress an RGB image to JPEG at a given quality and decode it back.

    Args:
        image: RGB image in ``[0, 1]``: numpy ``(H, W, 3)`` or tensor ``(3, H, W)`` /
            ``(B, 3, H, W)``; clipped and rounded to 8 bits before encoding.
        quality: JPEG quality in ``[0, 100]``, rounded to the nearest integer.

    Returns:
        The decoded image, same type, shape and dtype as ``image``, on the 8-bit grid
        ``k / 255``.

    Raises:
        ValueError: If the quality is out of range or the image has not 3 channels.
    """
    quality = _jpeg_quality(quality)
    return map_images(lambda img: _jpeg(img, quality), image, "jpeg_compress")


def random_jpeg(
    image: ImageT, rng: np.random.Generator, quality_range: tuple[int, int] = (30, 95)
) -> ImageT:
    """JPEG-compress with a quality drawn uniformly from the integers in ``quality_range``.

    Each image of a batch draws its own quality. The default is Real-ESRGAN's and
    BSRGAN's ``[30, 95]`` (both ends included).

    Args:
        image: RGB image in ``[0, 1]``: numpy ``(H, W, 3)`` or tensor ``(3, H, W)`` /
            ``(B, 3, H, W)``.
        rng: Source of the qualities.
        quality_range: ``(low, high)`` integer qualities in ``[0, 100]``.

    Returns:
        The decoded image, same type, shape and dtype as ``image``.
    """
    low, high = (_jpeg_quality(q) for q in _ordered(quality_range, "quality_range"))

    def apply(img: np.ndarray) -> np.ndarray:
        return _jpeg(img, int(rng.integers(low, high, endpoint=True)))

    return map_images(apply, image, "random_jpeg")


def _ordered(
    bounds: tuple[float, float], name: str, minimum: float | None = None
) -> tuple[float, float]:
    """Validate a ``(low, high)`` range and return it as two floats."""
    if len(bounds) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {bounds}")
    low, high = float(bounds[0]), float(bounds[1])
    if not low <= high:
        raise ValueError(f"{name} must have low <= high, got {bounds}")
    if minimum is not None and low < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {bounds}")
    return low, high
