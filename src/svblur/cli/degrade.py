"""``svblur-degrade``: see what a degradation does to your own images.

Examples:
    svblur-degrade input=photos/ output=degraded/ degradation=motion_sv
    svblur-degrade input=photo.png output=out degradation=gaussian_sv seed=3

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
without depth), are reported and skipped; ``summary.json`` lists them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from svblur.experiments.training import apply_extras, require
from svblur.inference.degrading import degrade_images as degrade_folder

from ._common import CONFIG_PATH, exit_on_input_error, run_hydra_app

log = logging.getLogger("svblur")

__all__ = ["degrade_images", "main"]


def degrade_images(cfg: DictConfig) -> dict[str, Any]:
    """Degrade every image of ``cfg.input`` with ``cfg.degradation`` and write the pictures
    (:func:`svblur.inference.degrading.degrade_images` with the config's settings).

    Returns:
        Summary: ``processed`` (names), ``failed`` (name -> reason), ``ignored``.
    """
    apply_extras(cfg)
    source = Path(require(cfg, "input", "an image file or folder"))
    output = Path(require(cfg, "output", "the output folder (output=DIR)"))
    pipeline = instantiate(require(cfg, "degradation", "a degradation (degradation=NAME)"))
    return degrade_folder(
        source,
        output,
        pipeline,
        seed=int(cfg.seed),
        cells=int(cfg.cells),
        max_size=int(cfg.max_size),
        depth_scale=float(cfg.depth_scale),
        invariant=bool(cfg.invariant),
        max_coc=float(cfg.max_coc),
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="degrade")
@exit_on_input_error("svblur-degrade")
def _hydra_main(cfg: DictConfig) -> None:
    summary = degrade_images(cfg)
    if not summary["processed"] and summary["failed"]:
        raise SystemExit(1)


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
