"""Processed camera-sensor noise: BSRGAN's optional ISP step, after Brooks et al.

BSRGAN (Zhang et al., ICCV 2021, Sec. 3.4) adds "processed camera sensor noise": the
sRGB image is taken back to a camera's raw Bayer data, noise is added there, where it is
simple (independent per photosite, its variance affine in the signal), and the raw data
is processed forward again, so the noise comes out demosaicked, colour-corrected,
gamma-compressed and tone-mapped like a real photo's. The camera model is the one of
Brooks et al. (CVPR 2019, "Unprocessing Images for Learned Raw Denoising"):

* **unprocess** (:func:`unprocess`, then :func:`mosaic`): invert the smoothstep tone
  curve ``y = 3 x^2 - 2 x^3`` (``x = 1/2 - sin(arcsin(1 - 2 y) / 3)``), expand the
  gamma (``x^2.2``), map linear sRGB to camera RGB with a random colour matrix
  ``rgb2cam``, divide by the white-balance and digital gains
  ``rgb_gain * (red_gain, 1, blue_gain)``, and keep one colour per photosite of an RGGB
  Bayer pattern (red at even rows and columns, blue at odd rows and columns);
* **noise** (:func:`add_raw_noise`): ``x + n`` with ``n ~ N(0, shot_noise * x +
  read_noise)`` at every photosite, Poisson shot noise and Gaussian read noise in their
  heteroscedastic Gaussian approximation;
* **process** (:func:`demosaic`, then :func:`process`): bilinear demosaicking, the
  gains, ``cam2rgb = rgb2cam^-1``, a clip to ``[0, 1]``, gamma compression
  (``x^(1/2.2)``) and the smoothstep, with the very parameters of the unprocessing.

:func:`draw_camera_params` draws those parameters as Brooks does:

* ``rgb2cam``: a random convex combination (weights uniform, then normalised) of four
  cameras' XYZ -> camera matrices (:data:`XYZ_TO_CAMERA`), times the sRGB (D65) ->
  XYZ matrix (:data:`SRGB_TO_XYZ`), each row divided by its sum so that white stays
  white;
* ``rgb_gain = 1 / g`` with ``g ~ N(0.8, 0.1)`` (floored at 0.1, seven standard
  deviations below the mean, so that the gain stays finite); ``red_gain ~ U(1.9, 2.4)``,
  ``blue_gain ~ U(1.5, 1.9)`` (uniform, as in Brooks' release);
* ``log shot_noise ~ U(log 1e-4, log 1.2e-2)`` and ``log read_noise = 2.18 log shot_noise
  + 1.20 + N(0, 0.26^2)`` (natural logarithms; both are variances in raw units).

Where this differs from Brooks, it is so that the forward pass undoes the inverse
exactly: without noise, ``process(unprocess(x)) == x`` for every ``x`` in ``[0, 1]``
(to float rounding), and :func:`add_camera_sensor_noise` changes an image only by the
noise and the demosaicking (a flat image comes back unchanged). The gains are inverted
plainly (Brooks' highlight-preserving inversion bends bright pixels, which no forward
gain restores), the forward pass re-applies the digital gain too, and nothing is clipped
in the raw domain (the variance uses ``max(x, 0)``); the only clip is the one in linear
sRGB before the gamma. Processing with the unprocessing's parameters also means that,
unlike BSRGAN's learned ISP networks, the step keeps the colours, so the HR target needs
no matching change.

Images are float numpy arrays ``(H, W, 3)`` in ``[0, 1]`` of any size (odd sizes are
padded by one edge row or column to the even Bayer grid and cropped back); all
arithmetic is float64, and the result has the input's dtype. Randomness comes only from
the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CAMERA_PARAM_KEYS",
    "GAMMA",
    "SRGB_TO_XYZ",
    "XYZ_TO_CAMERA",
    "add_camera_sensor_noise",
    "add_raw_noise",
    "demosaic",
    "draw_camera_params",
    "mosaic",
    "process",
    "unprocess",
]

GAMMA = 2.2
"""The gamma of the approximate sRGB transfer curve (Brooks' ``x^(1/2.2)``)."""

XYZ_TO_CAMERA = (
    ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
)
"""Brooks et al.'s four XYZ -> camera colour matrices (from the DNG metadata of four
cameras); :func:`draw_camera_params` mixes them."""

SRGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
"""Linear sRGB -> CIE XYZ for the D65 white point."""

CAMERA_PARAM_KEYS = ("rgb2cam", "rgb_gain", "red_gain", "blue_gain", "shot_noise", "read_noise")
"""The fields of a camera draw (see :func:`draw_camera_params`)."""

#: Brooks' ranges (see the module docstring).
_LOG_SHOT_RANGE = (math.log(1e-4), math.log(1.2e-2))
_READ_SLOPE, _READ_INTERCEPT, _READ_STD = 2.18, 1.20, 0.26
_INV_RGB_GAIN_MEAN, _INV_RGB_GAIN_STD, _INV_RGB_GAIN_FLOOR = 0.8, 0.1, 0.1
_RED_GAIN_RANGE = (1.9, 2.4)
_BLUE_GAIN_RANGE = (1.5, 1.9)

# Bilinear demosaicking as a normalised convolution: each colour's samples are spread with
# these weights and divided by the spread of its sampling mask. Green sits on a
# quincunx, so its four edge neighbours suffice; red and blue need the eight around.
_GREEN_KERNEL = np.array([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]])
_RED_BLUE_KERNEL = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])


def draw_camera_params(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one camera: colour matrix, gains and noise levels, as Brooks et al. do.

    Args:
        rng: Source of the draw.

    Returns:
        Plain (JSON-serialisable) values keyed by :data:`CAMERA_PARAM_KEYS`: ``rgb2cam``
        (3 x 3 nested lists, linear sRGB -> camera RGB, rows summing to 1), ``rgb_gain``,
        ``red_gain``, ``blue_gain``, and the raw-domain variances ``shot_noise`` (per
        unit of signal) and ``read_noise``; their distributions are in the module
        docstring.
    """
    weights = rng.random(len(XYZ_TO_CAMERA))
    # U(0, 1) weights are zero with probability 2^-53 each; fall back to the plain mean.
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 0.25)
    xyz2cam = np.tensordot(weights, np.asarray(XYZ_TO_CAMERA), axes=1)
    rgb2cam = xyz2cam @ np.asarray(SRGB_TO_XYZ)
    rgb2cam = rgb2cam / rgb2cam.sum(axis=1, keepdims=True)
    inverse_gain = max(
        float(rng.normal(_INV_RGB_GAIN_MEAN, _INV_RGB_GAIN_STD)), _INV_RGB_GAIN_FLOOR
    )
    red_gain = float(rng.uniform(*_RED_GAIN_RANGE))
    blue_gain = float(rng.uniform(*_BLUE_GAIN_RANGE))
    log_shot = float(rng.uniform(*_LOG_SHOT_RANGE))
    log_read = _READ_SLOPE * log_shot + _READ_INTERCEPT + float(rng.normal(0.0, _READ_STD))
    return {
        "rgb2cam": rgb2cam.tolist(),
        "rgb_gain": 1.0 / inverse_gain,
        "red_gain": red_gain,
        "blue_gain": blue_gain,
        "shot_noise": math.exp(log_shot),
        "read_noise": math.exp(log_read),
    }


def add_camera_sensor_noise(
    image: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]
) -> np.ndarray:
    """Add processed camera-sensor noise: unprocess to Bayer raw, add noise, process back.

    Args:
        image: RGB float image ``(H, W, 3)`` in ``[0, 1]`` (values outside are clipped),
            any ``H, W >= 1``.
        rng: Source of the noise field.
        params: A camera, as :func:`draw_camera_params` returns it; zero ``shot_noise``
            and ``read_noise`` leave only the demosaicking's change.

    Returns:
        The noisy image ``(H, W, 3)`` in ``[0, 1]``, same dtype.

    Raises:
        ValueError: If the image is not a float ``(H, W, 3)`` array or ``params`` is not
            a valid camera.
    """
    _check_image(image)
    rgb2cam = _check_params(params)
    height, width = image.shape[:2]
    # Pad to even sides so that every colour has photosites, whatever the size.
    padded = np.pad(
        image.astype(np.float64), ((0, height % 2), (0, width % 2), (0, 0)), mode="edge"
    )
    bayer = mosaic(_unprocess(padded, rgb2cam, params))
    noisy = add_raw_noise(bayer, rng, params["shot_noise"], params["read_noise"])
    out = _process(demosaic(noisy), rgb2cam, params)
    return out[:height, :width].astype(image.dtype)


def unprocess(image: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """sRGB to linear camera RGB with the gains divided out (the raw data before
    the mosaic): inverse smoothstep, inverse gamma, ``rgb2cam``, inverse gains.

    Args:
        image: RGB float image ``(H, W, 3)`` in ``[0, 1]`` (values outside are clipped).
        params: A camera (:func:`draw_camera_params`).

    Returns:
        The raw RGB image ``(H, W, 3)``, float64 (not clipped: the colour matrix may take
        saturated colours slightly below 0 or above 1).
    """
    _check_image(image)
    return _unprocess(image.astype(np.float64), _check_params(params), params)


def process(raw: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Raw RGB back to sRGB, the inverse of :func:`unprocess`: gains, ``rgb2cam^-1``, a
    clip to ``[0, 1]``, gamma, smoothstep.

    Args:
        raw: Raw RGB image ``(H, W, 3)`` (e.g. :func:`demosaic`'s output).
        params: The camera the raw data was unprocessed with.

    Returns:
        The sRGB image ``(H, W, 3)`` in ``[0, 1]``, float64.
    """
    _check_image(raw, "raw")
    return _process(raw.astype(np.float64), _check_params(params), params)


def mosaic(raw: np.ndarray) -> np.ndarray:
    """Keep one colour per photosite of an RGGB Bayer pattern.

    Args:
        raw: Raw RGB image ``(H, W, 3)``.

    Returns:
        The Bayer image ``(H, W)``: red at (even row, even column), blue at (odd, odd),
        green elsewhere.
    """
    _check_image(raw, "raw")
    return np.sum(raw * _bayer_masks(raw.shape[:2]), axis=-1)


def demosaic(bayer: np.ndarray) -> np.ndarray:
    """Bilinear demosaicking of an RGGB Bayer image.

    Each missing colour is the mean of that colour's nearest photosites (two or four;
    green's four edge neighbours); at the border only the photosites inside count, so
    an image whose colours are each constant comes back exactly.

    Args:
        bayer: Bayer image ``(H, W)``, ``H, W >= 2`` (the pattern of :func:`mosaic`).

    Returns:
        The RGB image ``(H, W, 3)``, float64.

    Raises:
        ValueError: If ``bayer`` is not 2-D or smaller than one 2 x 2 Bayer cell.
    """
    if bayer.ndim != 2 or min(bayer.shape) < 2:
        raise ValueError(
            f"demosaic expects a Bayer image (H, W) with H, W >= 2, got shape {bayer.shape}"
        )
    bayer = bayer.astype(np.float64)
    masks = _bayer_masks(bayer.shape)
    channels = []
    for channel, kernel in enumerate((_RED_BLUE_KERNEL, _GREEN_KERNEL, _RED_BLUE_KERNEL)):
        mask = masks[..., channel]
        spread = cv2.filter2D(bayer * mask, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        weight = cv2.filter2D(mask, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        channels.append(spread / weight)
    return np.stack(channels, axis=-1)


def add_raw_noise(
    bayer: np.ndarray, rng: np.random.Generator, shot_noise: float, read_noise: float
) -> np.ndarray:
    """Heteroscedastic Gaussian noise: ``x + n``, ``n ~ N(0, shot_noise * max(x, 0) +
    read_noise)`` independently per photosite.

    Args:
        bayer: Raw image (any shape).
        rng: Source of the noise field (one standard normal per photosite).
        shot_noise: Shot-noise variance per unit of signal, ``>= 0``.
        read_noise: Signal-independent read-noise variance, ``>= 0``.

    Returns:
        The noisy raw image, float64, not clipped.
    """
    if not (shot_noise >= 0 and read_noise >= 0):
        raise ValueError(
            f"shot_noise and read_noise must be variances >= 0, got {shot_noise}, {read_noise}"
        )
    bayer = bayer.astype(np.float64)
    std = np.sqrt(shot_noise * np.maximum(bayer, 0.0) + read_noise)
    return bayer + std * rng.standard_normal(bayer.shape)


def _unprocess(image: np.ndarray, rgb2cam: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    tone = np.clip(image, 0.0, 1.0)
    linear = (0.5 - np.sin(np.arcsin(1.0 - 2.0 * tone) / 3.0)) ** GAMMA
    camera = linear @ rgb2cam.T
    return camera / _gains(params)


def _process(raw: np.ndarray, rgb2cam: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    camera = raw * _gains(params)
    linear = np.clip(camera @ np.linalg.inv(rgb2cam).T, 0.0, 1.0)
    tone = linear ** (1.0 / GAMMA)
    return 3.0 * tone**2 - 2.0 * tone**3


def _gains(params: Mapping[str, Any]) -> np.ndarray:
    """The per-channel gains ``rgb_gain * (red_gain, 1, blue_gain)``, raw -> camera RGB."""
    return float(params["rgb_gain"]) * np.array(
        [float(params["red_gain"]), 1.0, float(params["blue_gain"])]
    )


def _bayer_masks(shape: tuple[int, ...]) -> np.ndarray:
    """One-hot ``(H, W, 3)`` masks of the RGGB pattern's red, green and blue sites."""
    rows = np.arange(shape[0])[:, None] % 2
    cols = np.arange(shape[1])[None, :] % 2
    red = (rows == 0) & (cols == 0)
    blue = (rows == 1) & (cols == 1)
    return np.stack([red, ~(red | blue), blue], axis=-1).astype(np.float64)


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"camera noise expects an RGB {name} (H, W, 3), got {shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"camera noise expects a float {name} in [0, 1], got dtype {image.dtype}; "
            "convert 8-bit images with image.astype(np.float32) / 255"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"camera noise expects a non-empty {name}, got shape {image.shape}")


def _check_params(params: Mapping[str, Any]) -> np.ndarray:
    """Validate a camera and return its ``rgb2cam`` as a float64 3 x 3 array."""
    missing = [key for key in CAMERA_PARAM_KEYS if key not in params]
    if missing:
        raise ValueError(
            f"camera params lack {missing}; expected the keys {CAMERA_PARAM_KEYS} "
            "(see draw_camera_params)"
        )
    rgb2cam = np.asarray(params["rgb2cam"], dtype=np.float64)
    if rgb2cam.shape != (3, 3) or not np.isfinite(rgb2cam).all():
        raise ValueError(f"camera params' rgb2cam must be a finite 3 x 3 matrix, got {rgb2cam}")
    if abs(np.linalg.det(rgb2cam)) < 1e-8:
        raise ValueError(f"camera params' rgb2cam must be invertible, got {rgb2cam.tolist()}")
    for key in ("rgb_gain", "red_gain", "blue_gain"):
        if not float(params[key]) > 0:
            raise ValueError(f"camera params' {key} must be > 0, got {params[key]}")
    for key in ("shot_noise", "read_noise"):
        if not float(params[key]) >= 0:
            raise ValueError(f"camera params' {key} must be a variance >= 0, got {params[key]}")
    return rgb2cam
