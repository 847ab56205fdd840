"""Training augmentation: aligned crops, and the blur-consistent flip and zoom of defocus
samples.

:func:`crop_windows` places the crops of the data sets (HR, LR and maps alike: a crop is
chosen on the LR grid). For defocus samples:
The augmentation acts on a *rendered record* (numpy, HWC) that still holds the blurred
HR image and returns the augmented record; the LR input is made afterwards, once, from
the augmented blurred HR by the sample pipeline (:func:`record_to_sample`), so it stays
consistent with the targets.

Zooming an image by ``z`` enlarges its blur in pixels by ``z`` as well, so by default
(``sigma_scaling="physical"``) the blur map is multiplied by the zoom. The authors'
released code divides sigma by the zoom instead; ``sigma_scaling="released"``
reproduces that for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import albumentations as A
import cv2
import numpy as np

from svblur.degradation.pipeline import SamplePipeline

__all__ = ["DefocusAugment", "SigmaScaling", "crop_windows", "record_to_sample"]

SigmaScaling = Literal["physical", "released"]


def crop_windows(
    size: tuple[int, int],
    crop: tuple[int, int] | None,
    scale: int = 1,
    rng: np.random.Generator | None = None,
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """The windows of a crop chosen on a grid of ``scale`` pixels, e.g. the LR grid, so that
    an HR image and its LR image (and maps) are cropped alike.

    Args:
        size: ``(h, w)`` of the grid (the LR size; the image's own size with ``scale=1``).
        crop: HR crop ``(H, W)``, each a multiple of ``scale`` that fits ``scale * size``
            (the caller checks, with its own message); ``None``: the whole image.
        scale: Grid step in HR pixels.
        rng: Draws the top, then the left edge; ``None``: the crop is centred.

    Returns:
        ``((rows, cols), (hr_rows, hr_cols))``: the window on the grid and on the HR image.
    """
    height, width = size
    if crop is None:
        rows, cols = slice(0, height), slice(0, width)
    else:
        crop_h, crop_w = crop[0] // scale, crop[1] // scale
        if rng is None:
            top, left = (height - crop_h) // 2, (width - crop_w) // 2
        else:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
        rows, cols = slice(top, top + crop_h), slice(left, left + crop_w)
    hr_window = (
        slice(rows.start * scale, rows.stop * scale),
        slice(cols.start * scale, cols.stop * scale),
    )
    return (rows, cols), hr_window


def record_to_sample(
    record: dict[str, np.ndarray],
    pipeline: SamplePipeline | int,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Turn a (rendered or augmented) record into the numpy arrays of a sample.

    Args:
        record: ``hr`` and ``hr_blurred`` ``(H, W, 3)`` float32, ``seg`` ``(H, W)``
            integer labels, ``depth`` ``(H, W)`` mm and the degradation's maps
            (``blur`` ``(H, W)`` sigma, ``blur_mask`` ``(H, W)``, ``kernels``
            ``(k*k, H, W)``).
        pipeline: The sample pipeline whose downsampling and LR steps make the LR
            (:meth:`~svblur.degradation.pipeline.SamplePipeline.to_lr`), or an LR factor
            for bicubic only.
        rng: The generator of the pipeline's random LR steps (``None`` for bicubic only).

    Returns:
        The record's entries with ``lr`` ``(H/scale, W/scale, 3)`` made from
        ``hr_blurred`` (bicubic only: ``clip(imresize(hr_blurred, 1/scale), 0, 1)``).
    """
    if not isinstance(pipeline, SamplePipeline):
        pipeline = SamplePipeline(None, scale=int(pipeline))
    return {**record, "lr": pipeline.to_lr(record["hr_blurred"], rng)}


class DefocusAugment:
    """Random horizontal flip and zoom-then-crop, applied consistently to every map.

    The zoom factor is drawn from ``zooms`` (the released code uses 1.0 / 1.2 / 1.5),
    the images are resized with bicubic interpolation (clipped to ``[0, 1]``), blur,
    labels and depth with nearest neighbour (no invented sigmas, classes or depths),
    then a random ``hr_size`` window is cropped. The blur map is multiplied by the zoom
    (``"physical"``, default) or divided by it (``"released"``). A ``blur_mask`` follows
    like the labels. A kernel field (``kernels``) is flipped with its kernels mirrored
    and cropped, but not zoomed (a zoom would need every kernel resampled): records with
    one keep their scale (the zoom is still drawn, so the random stream is the same).

    Args:
        hr_size: ``(H, W)`` of the output; each must be divisible by ``scale``.
        scale: LR downsampling factor.
        flip_p: Probability of a horizontal flip.
        zooms: Zoom factors to choose from uniformly, each ``>= 1``.
        sigma_scaling: How sigma follows the zoom, ``"physical"`` or ``"released"``.
    """

    def __init__(
        self,
        hr_size: tuple[int, int],
        scale: int = 4,
        flip_p: float = 0.5,
        zooms: Sequence[float] = (1.0, 1.2, 1.5),
        sigma_scaling: SigmaScaling = "physical",
    ) -> None:
        height, width = hr_size
        if height % scale or width % scale:
            raise ValueError(
                f"hr_size must be divisible by scale={scale}, got {tuple(hr_size)}; "
                f"use e.g. {(height // scale * scale, width // scale * scale)}"
            )
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        if len(zooms) == 0 or min(zooms) < 1.0:
            raise ValueError(f"zooms must be a non-empty sequence of factors >= 1, got {zooms}")
        if sigma_scaling not in ("physical", "released"):
            raise ValueError(
                f"sigma_scaling must be 'physical' or 'released', got {sigma_scaling!r}"
            )
        self.hr_size = (int(height), int(width))
        self.scale = int(scale)
        self.flip_p = float(flip_p)
        self.zooms = tuple(float(z) for z in zooms)
        self.sigma_scaling = sigma_scaling

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hr_size={self.hr_size}, scale={self.scale}, flip_p={self.flip_p}, "
            f"zooms={self.zooms}, sigma_scaling={self.sigma_scaling!r})"
        )

    def __call__(
        self, record: dict[str, np.ndarray], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Augment one record.

        Args:
            record: See :func:`record_to_sample`; maps at least ``hr_size`` large.
            rng: Random generator driving flip, zoom and crop position.

        Returns:
            The augmented record (the same keys, no ``lr``: :func:`record_to_sample`
            makes it), HR maps of size ``hr_size``.
        """
        in_h, in_w = record["hr"].shape[:2]
        out_h, out_w = self.hr_size
        flip = bool(rng.random() < self.flip_p)
        zoom = float(self.zooms[int(rng.integers(len(self.zooms)))])
        if "kernels" in record:
            zoom = 1.0
        new_h, new_w = max(out_h, round(in_h * zoom)), max(out_w, round(in_w * zoom))
        if (new_h, new_w) == (in_h, in_w):
            zoom = 1.0
        top = int(rng.integers(0, new_h - out_h + 1))
        left = int(rng.integers(0, new_w - out_w + 1))

        steps: list[A.BasicTransform] = []
        if flip:
            steps.append(A.HorizontalFlip(p=1.0))
        if zoom != 1.0:
            steps.append(
                A.Resize(
                    new_h,
                    new_w,
                    interpolation=cv2.INTER_CUBIC,
                    mask_interpolation=cv2.INTER_NEAREST,
                )
            )
        steps.append(A.Crop(x_min=left, y_min=top, x_max=left + out_w, y_max=top + out_h))
        pipeline = A.Compose(steps, additional_targets={"hr_blurred": "image"})
        mask_keys = ["seg", *(k for k in ("blur", "blur_mask") if k in record), "depth"]
        masks = [record[k].astype(np.uint8) if k == "seg" else record[k] for k in mask_keys]
        out = pipeline(image=record["hr"], hr_blurred=record["hr_blurred"], masks=masks)
        maps = dict(zip(mask_keys, out["masks"]))
        factor = zoom if self.sigma_scaling == "physical" else 1.0 / zoom
        augmented = {
            "hr": np.clip(out["image"], 0.0, 1.0).astype(np.float32),
            "hr_blurred": np.clip(out["hr_blurred"], 0.0, 1.0).astype(np.float32),
            "seg": np.asarray(maps["seg"]).astype(np.int64),
            "depth": np.asarray(maps["depth"], np.float32),
        }
        if "blur" in maps:
            augmented["blur"] = (np.asarray(maps["blur"], np.float32) * factor).astype(np.float32)
        if "blur_mask" in maps:
            augmented["blur_mask"] = np.asarray(maps["blur_mask"], np.float32)
        if "kernels" in record:
            augmented["kernels"] = _flip_and_crop_field(
                record["kernels"], flip, (top, left, out_h, out_w)
            )
        return augmented


def _flip_and_crop_field(
    kernels: np.ndarray, flip: bool, window: tuple[int, int, int, int]
) -> np.ndarray:
    """A kernel field ``(k*k, H, W)`` after a horizontal flip (of the image and of every
    kernel) and a crop ``(top, left, height, width)``."""
    k = math.isqrt(kernels.shape[0])
    field = kernels.reshape(k, k, *kernels.shape[1:])
    if flip:
        field = field[:, ::-1, :, ::-1]
    top, left, height, width = window
    field = field[:, :, top : top + height, left : left + width]
    return np.ascontiguousarray(field.reshape(k * k, height, width), np.float32)
