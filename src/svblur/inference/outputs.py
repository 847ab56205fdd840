"""Writing predictions: the files of one image, and the summary of a run.

Every file appears complete or not at all (written through :func:`svblur.io.atomic_path`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from svblur.degradation import blur_map_to_png
from svblur.io import atomic_path, atomic_write_bytes
from svblur.ops.colour import palette
from svblur.ops.pictures import blur_colorbar_image, kernel_field_picture

__all__ = ["save_outputs", "write_summary"]


def save_outputs(
    result: dict[str, torch.Tensor],
    out_dir: Path,
    stem: str,
    num_classes: int | None,
    blur_vmax: float | None,
    lr: torch.Tensor | None = None,
    scale: int = 4,
) -> list[Path]:
    """Write what ``result`` holds of one image into ``out_dir``.

    Files: ``<stem>_sr.png`` (``sr`` ``(3, H, W)``); ``<stem>_blur.png`` and
    ``<stem>_blur_x10.png`` (``blur`` ``(1, H, W)``: colour-mapped with a colour bar, and
    uint16 ``round(sigma * 10)``); ``<stem>_seg.png`` (``seg`` ``(H, W)`` labels, palette
    PNG); ``<stem>_kernels.png`` (``kernels`` ``(k*k, h, w)`` on the LR grid, drawn over the
    SR image, or over ``lr`` enlarged ``scale`` times). Each file appears complete or not
    at all.

    Args:
        result: What a predictor returned for the image (CPU tensors).
        out_dir: Output folder (created if missing).
        stem: What the file names start with.
        num_classes: Colours of the class map's palette; ``None``: the largest label + 1.
        blur_vmax: Sigma at the top of the colour bar; ``None`` or 0: the map's largest
            value (at least 1).
        lr: The LR image ``(3, h, w)``, under the kernel picture when there is no SR image.
        scale: SR factor.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "sr" in result:
        sr = (result["sr"].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = out_dir / f"{stem}_sr.png"
        with atomic_path(path) as temp:
            Image.fromarray(sr).save(temp, format="PNG")
        written.append(path)
    if "blur" in result:
        sigma = result["blur"][0].clamp(min=0)
        vmax = float(blur_vmax) if blur_vmax else max(1.0, float(sigma.max()))
        path = out_dir / f"{stem}_blur.png"
        with atomic_path(path) as temp:
            blur_colorbar_image(sigma, vmax).save(temp, format="PNG")
        written.append(path)
        path = out_dir / f"{stem}_blur_x10.png"
        blur_map_to_png(sigma.clamp(max=6553.5).numpy(), path)
        written.append(path)
    if "seg" in result:
        labels = result["seg"].clamp(0, 255).numpy().astype(np.uint8)
        seg = Image.fromarray(labels, mode="P")
        classes = min(num_classes or int(labels.max()) + 1, 256)
        colours = (palette(classes) * 255).round().to(torch.uint8).flatten().tolist()
        seg.putpalette(colours + [0] * (768 - len(colours)))
        path = out_dir / f"{stem}_seg.png"
        with atomic_path(path) as temp:
            seg.save(temp, format="PNG")
        written.append(path)
    if "kernels" in result:
        kernels = result["kernels"]
        k = round(kernels.shape[0] ** 0.5)
        if "sr" in result:
            image = result["sr"].clamp(0, 1)
        elif lr is not None:
            image = torch.nn.functional.interpolate(lr[None], scale_factor=scale)[0].clamp(0, 1)
        else:
            image = torch.zeros(3, *kernels.shape[1:])
        step_y = max(1, image.shape[1] // kernels.shape[1])
        step_x = max(1, image.shape[2] // kernels.shape[2])

        def kernel_at(y: int, x: int) -> torch.Tensor:
            row = min(y // step_y, kernels.shape[1] - 1)
            col = min(x // step_x, kernels.shape[2] - 1)
            return kernels[:, row, col].reshape(k, k)

        picture = kernel_field_picture(image, kernel_at, cells=6)
        array = (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = out_dir / f"{stem}_kernels.png"
        with atomic_path(path) as temp:
            Image.fromarray(array).save(temp, format="PNG")
        written.append(path)
    return written


def write_summary(summary: Mapping[str, Any], out_dir: Path) -> Path:
    """Write a run's summary as ``out_dir/summary.json`` (indented JSON); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    atomic_write_bytes(path, json.dumps(summary, indent=2).encode())
    return path
