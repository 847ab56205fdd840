"""``svblur-degrade``: see what a degradation does to your own images.

Examples:
    svblur-degrade input=photos/ output=degraded/ degradation=motion_sv
    svblur-degrade input=photo.png output=out degradation=gaussian_sv seed=3

The work, and the pictures it writes, are those of
:func:`svblur.inference.degrading.degrade_images`; this module reads the config. The
exit status is 1 when any input fails (each named in the log, the summary and on
stderr), 2 for a bad argument, 0 otherwise.
"""

from __future__ import annotations

import logging
import sys
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
    failed = summary["failed"]
    if failed:
        # any input that failed fails the command (ignored non-image files do not)
        print(
            f"svblur-degrade: error: {len(failed)} of {len(failed) + len(summary['processed'])} "
            f"inputs failed: {', '.join(sorted(failed))} (reasons in the log and summary.json)",
            file=sys.stderr,
        )
        raise SystemExit(1)


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
