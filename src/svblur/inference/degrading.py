"""What a degradation does to your own images (``svblur-degrade``).

For every readable image ``<stem>.<ext>`` of ``input`` (a file or a folder; depth from
``<folder>/depth/<stem>.png|npy`` and labels from ``<folder>/semseg/<stem>.png`` where
present) it writes to ``output``, with the sample pipeline of ``degradation=NAME``
(:mod:`svblur.degradation.pipeline`):

- ``<stem>_lr.png``: the LR image (degradation, downsampling and LR steps);
- ``<stem>_hr.png``: the degraded HR image, before downsampling;
- ``<stem>_kernels.png``: the kernel field as a grid of kernels drawn over the image
  (for defocus: the Gaussian of the sigma map at each grid point);
- ``<stem>_blur.png``: the sigma map with a colour bar, where the degradation gives one;
- ``<stem>_mask.png``: the blur mask (white = blurred), for partial blur.

Images longer than ``max_size`` pixels are downscaled first (a 21x21 kernel field holds
441 values per pixel). Unreadable files, and images a degradation cannot use (defocus
without depth), are reported by name and skipped; ``summary.json`` lists them
(``svblur-degrade`` then exits with status 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from svblur.data.rgbd import load_image_sample
from svblur.degradation import SceneInput, fill_invalid_depth, gaussian_kernel, imresize
from svblur.degradation.pipeline import SamplePipeline
from svblur.errors import InputError
from svblur.io import atomic_path
from svblur.ops.pictures import blur_colorbar_image, kernel_field_picture

from .inputs import find_inputs
from .outputs import write_summary

log = logging.getLogger("svblur")

__all__ = ["degrade_images", "gaussians_of"]


def _save(array: np.ndarray, path: Path) -> Path:
    """Save an HWC float image in ``[0, 1]`` (or HW grey) as an 8-bit PNG, atomically."""
    u8 = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as temp:
        Image.fromarray(u8).save(temp, format="PNG")
    return path


def _scene(path: Path, scale: int, max_size: int, depth_scale: float) -> SceneInput:
    """The image (downscaled to ``max_size``, cropped to a multiple of ``scale``) with its
    depth and labels where its folder has them."""
    sample = load_image_sample(path, depth_scale)
    image, depth, seg = sample.image, sample.depth, sample.seg
    factor = min(1.0, max_size / max(image.shape[:2]))
    if factor < 1.0:
        image = np.clip(imresize(image, factor), 0.0, 1.0).astype(np.float32)
        rows = np.minimum(
            (np.arange(image.shape[0]) / factor).astype(int), sample.image.shape[0] - 1
        )
        cols = np.minimum(
            (np.arange(image.shape[1]) / factor).astype(int), sample.image.shape[1] - 1
        )
        depth = None if depth is None else depth[rows][:, cols]
        seg = None if seg is None else seg[rows][:, cols]
    height, width = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    if height < scale * 8 or width < scale * 8:
        raise InputError(f"{path}: {image.shape[1]}x{image.shape[0]} is too small to degrade")
    crop = (slice(0, height), slice(0, width))
    if depth is not None:
        depth = np.asarray(fill_invalid_depth(np.ascontiguousarray(depth[crop])), np.float64)
    return SceneInput(
        np.ascontiguousarray(image[crop]),
        depth,
        None if seg is None else np.ascontiguousarray(seg[crop]),
    )


def gaussians_of(sigma: np.ndarray) -> Callable[[int, int], torch.Tensor]:
    """The Gaussian kernel of a sigma map's pixel (to draw defocus as a kernel field)."""
    size = 2 * int(np.ceil(3 * max(float(sigma.max()), 0.5))) + 1

    def kernel_at(y: int, x: int) -> torch.Tensor:
        return torch.from_numpy(gaussian_kernel(size, float(sigma[y, x])))

    return kernel_at


def degrade_images(
    input_path: str | Path,
    output: str | Path,
    pipeline: SamplePipeline,
    *,
    seed: int = 0,
    cells: int = 12,
    max_size: int = 768,
    depth_scale: float = 1.0,
    invariant: bool = False,
    max_coc: float = 29.0,
) -> dict[str, Any]:
    """Degrade every image of ``input_path`` (a file or a folder) with ``pipeline`` and
    write the pictures (see the module docstring) and ``summary.json`` to ``output``.

    Args:
        input_path: An image file or a folder of them.
        output: The output folder (created).
        pipeline: The sample pipeline (``instantiate(cfg.degradation)``).
        seed: Seed of the degradation; image ``i`` draws from ``(seed, i)``.
        cells: Kernels per row of the kernel-field picture.
        max_size: Longer side images are downscaled to first.
        depth_scale: Divisor of depth PNG values (to metres).
        invariant: Space-invariant degradation.
        max_coc: Largest circle of confusion (defocus), in pixels.

    Returns:
        Summary: ``processed`` (names), ``failed`` (name -> reason), ``ignored``.
    """
    inputs, ignored = find_inputs(Path(input_path))
    out_dir = Path(output)
    scale = int(pipeline.scale)
    summary: dict[str, Any] = {"processed": [], "failed": {}, "ignored": [p.name for p in ignored]}
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(inputs):
        try:
            scene = _scene(path, scale, int(max_size), float(depth_scale))
            rng = np.random.default_rng([int(seed), index])
            degraded = pipeline.degrade(
                scene, rng, invariant=bool(invariant), max_coc=float(max_coc)
            )
            lr = pipeline.to_lr(degraded.image, rng)
        except (InputError, OSError, ValueError) as error:
            log.warning("skipping %s: %s", path.name, error)
            summary["failed"][path.name] = str(error)
            continue
        stem = path.stem
        _save(lr, out_dir / f"{stem}_lr.png")
        _save(degraded.image, out_dir / f"{stem}_hr.png")
        image = torch.from_numpy(np.ascontiguousarray(scene.image.transpose(2, 0, 1)))
        maps = degraded.maps
        if "kernels" in maps:
            picture = kernel_field_picture(image, torch.from_numpy(maps["kernels"]), int(cells))
        elif "blur" in maps:
            picture = kernel_field_picture(image, gaussians_of(maps["blur"]), int(cells))
        else:
            picture = None
        if picture is not None:
            _save(picture.permute(1, 2, 0).numpy(), out_dir / f"{stem}_kernels.png")
        if "blur" in maps:
            sigma = torch.from_numpy(maps["blur"])
            colour = blur_colorbar_image(sigma, max(1.0, float(sigma.max())))
            with atomic_path(out_dir / f"{stem}_blur.png") as temp:
                colour.save(temp, format="PNG")
        if "blur_mask" in maps:
            _save(maps["blur_mask"], out_dir / f"{stem}_mask.png")
        summary["processed"].append(path.name)
        log.info("%s: %s", path.name, ", ".join(sorted(maps)) or "no maps")
    write_summary(summary, out_dir)
    log.info(
        "done: %d degraded, %d failed, %d ignored; pictures in %s",
        len(summary["processed"]),
        len(summary["failed"]),
        len(summary["ignored"]),
        out_dir,
    )
    if summary["failed"]:
        log.warning("failed: %s", ", ".join(summary["failed"]))
    return summary
