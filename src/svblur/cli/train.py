"""``svblur-train``: train (and optionally test) a model from a Hydra config.

Examples:
    svblur-train
    svblur-train model=cmos trainer.max_epochs=5 data.batch_size=8
    svblur-train experiment=synthetic_stage1 logger=wandb
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from svblur.experiments.training import train

from ._common import CONFIG_PATH, exit_on_input_error, run_hydra_app

__all__ = ["main", "train"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_input_error("svblur-train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    optimized = cfg.get("optimized_metric")
    return metrics[optimized] if optimized else None


def main() -> None:
    """Console-script entry point."""
    run_hydra_app(_hydra_main)


if __name__ == "__main__":
    main()
