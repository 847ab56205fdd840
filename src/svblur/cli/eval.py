"""``svblur-eval``: evaluate a checkpoint on the test split.

Example:
    svblur-eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
    svblur-eval experiment=nyuv2_bsr_stage3 data.root=/data/NYUv2-BSR ckpt_path=stage3.ckpt

Besides logging, it writes to the job's output folder (or ``report_dir=DIR``):

- ``metrics.csv`` / ``metrics.md``: one row per test group (e.g. ``Group1`` .. ``Group5``
  of the BSR data sets) plus their ``mean`` (the paper's tables), one column per metric;
  a single ``test`` row when the data module has no groups;
- ``per_image.csv``: one row per test image (group, index, name when the data set gives
  one, and each per-image metric) for systems that record them (the SR stages).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from svblur.experiments.training import evaluate

from ._common import CONFIG_PATH, exit_on_input_error, run_hydra_app

__all__ = ["evaluate", "main"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@exit_on_input_error("svblur-eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
