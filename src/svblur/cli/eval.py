"""``svblur-eval``: evaluate a checkpoint on the test split.

Example:
    svblur-eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ._common import (
    apply_extras,
    build,
    config_dir,
    ensure_tty_safe,
    finish,
    metrics_as_floats,
    require,
)

log = logging.getLogger("svblur")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path`` and return its test metrics."""
    apply_extras(cfg)
    ckpt_path = Path(require(cfg, "ckpt_path", "the path of a checkpoint to evaluate"))
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    datamodule, model, trainer = build(cfg)
    try:
        log.info("Testing %s", ckpt_path)
        trainer.test(
            model=model, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True
        )
        metrics = metrics_as_floats(trainer.callback_metrics)
    finally:
        finish(trainer.loggers)
    return metrics


@hydra.main(version_base="1.3", config_path=None, config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    evaluate(cfg)


def main() -> None:
    """Console-script entry point."""
    import sys

    ensure_tty_safe()
    if not any(a.startswith(("--config-path", "-cp", "--config-dir", "-cd")) for a in sys.argv):
        sys.argv.insert(1, f"--config-path={config_dir()}")
    _hydra_main()


if __name__ == "__main__":
    main()
