"""``svblur-train``: train (and optionally test) a model from a Hydra config.

Examples:
    svblur-train
    svblur-train model=cmos trainer.max_epochs=5 data.batch_size=8
    svblur-train experiment=synthetic_cmos logger=wandb
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from ._common import apply_extras, build, config_dir, ensure_tty_safe, finish, metrics_as_floats

log = logging.getLogger("svblur")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model, then test the best checkpoint; return the logged metrics.

    Args:
        cfg: A config composed from ``conf/train.yaml``.

    Returns:
        Final training/validation metrics merged with the test metrics.
    """
    apply_extras(cfg)
    datamodule, model, trainer = build(cfg)
    metrics: dict[str, Any] = {}
    try:
        if cfg.get("train", True):
            log.info("Starting training")
            trainer.fit(
                model=model,
                datamodule=datamodule,
                ckpt_path=cfg.get("ckpt_path"),
                weights_only=True,
            )
            metrics.update(metrics_as_floats(trainer.callback_metrics))
        if cfg.get("test", False):
            best = None
            if trainer.checkpoint_callback is not None:
                best = trainer.checkpoint_callback.best_model_path or None
            if best is None and cfg.get("train", True):
                log.warning("No best checkpoint found; testing the current weights")
            log.info("Starting testing (checkpoint: %s)", best or "current weights")
            trainer.test(model=model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update(metrics_as_floats(trainer.callback_metrics))
    finally:
        finish(trainer.loggers)
    optimized = cfg.get("optimized_metric")
    if optimized and optimized not in metrics:
        raise KeyError(
            f"optimized_metric '{optimized}' was not logged; logged metrics: {sorted(metrics)}"
        )
    return metrics


@hydra.main(version_base="1.3", config_path=None, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    optimized = cfg.get("optimized_metric")
    return metrics[optimized] if optimized else None


def main() -> None:
    """Console-script entry point."""
    import sys

    ensure_tty_safe()
    if not any(a.startswith(("--config-path", "-cp", "--config-dir", "-cd")) for a in sys.argv):
        sys.argv.insert(1, f"--config-path={config_dir()}")
    _hydra_main()


if __name__ == "__main__":
    main()
