"""``svblur-train``: train (and optionally test) a model from a Hydra config.

Examples:
    svblur-train
    svblur-train model=cmos trainer.max_epochs=5 data.batch_size=8
    svblur-train experiment=synthetic_stage1 logger=wandb
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from svblur.models.checkpoints import (
    CheckpointError,
    CheckpointNotFoundError,
    check_fits,
    read_checkpoint,
)

from ._common import (
    CONFIG_PATH,
    apply_extras,
    build,
    exit_on_input_error,
    finish,
    metrics_as_floats,
    run_hydra_app,
)

log = logging.getLogger("svblur")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` as given, or for ``ckpt_path=last``
    the newest ``checkpoints/last.ckpt`` of this job's output folder or, failing that, of
    the earlier runs under ``${paths.log_dir}/${task_name}``."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if str(ckpt_path) != "last":
        if not Path(ckpt_path).is_file():
            raise CheckpointNotFoundError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
        return str(ckpt_path)
    output = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if output.is_file():
        return str(output)
    root = Path(cfg.paths.log_dir) / str(cfg.get("task_name", "train"))
    found = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointNotFoundError(
            f"ckpt_path=last: no checkpoints/last.ckpt in '{output.parent.parent}' or under "
            f"'{root}'; pass the checkpoint's path instead"
        )
    log.info("ckpt_path=last resolved to %s", found[-1])
    return str(found[-1])


def read_training_checkpoint(path: str | Path) -> Mapping:
    """A Lightning checkpoint of an svblur run, read safely; one-line errors otherwise."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint (no 'state_dict' entry); expected a "
            "checkpoint written by svblur-train (checkpoints/*.ckpt)"
        )
    return checkpoint


def check_checkpoint_fits(
    checkpoint: Mapping, model: L.LightningModule, path: str | Path, resume: bool
) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``checkpoint`` fits ``model``
    (and, to ``resume`` training, carries the optimizer state)."""
    if resume and "optimizer_states" not in checkpoint:
        raise CheckpointError(
            f"{path}: holds weights only (no optimizer state), so training cannot resume "
            "from it; resume from checkpoints/last.ckpt of the run, or start the model from "
            "these weights with the model's checkpoint options"
        )
    check_fits(model, checkpoint["state_dict"], str(path))


def _resume_wandb_run(cfg: DictConfig, checkpoint: Mapping) -> None:
    """Point the W&B logger at the run recorded in the checkpoint (same run continues)."""
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    if wandb_cfg is None or wandb_cfg.get("id"):
        return
    run_id = checkpoint.get("wandb_run_id")
    if run_id:
        log.info("Resuming W&B run %s", run_id)
        with open_dict(wandb_cfg):
            wandb_cfg.id = run_id
            wandb_cfg.resume = "allow"


def train(cfg: DictConfig, weights_path: str | Path | None = None) -> dict[str, float]:
    """Fit the model, then test the best checkpoint; return the logged metrics.

    ``ckpt_path`` resumes training (step count, LR schedule, data order, W&B run) from a
    checkpoint file, or from the newest ``last.ckpt`` with ``ckpt_path=last``.

    Args:
        cfg: A config composed from ``conf/train.yaml``.
        weights_path: Where to save the weights at the end of training (a Lightning
            checkpoint without optimizer state, whatever the checkpoint callbacks do), e.g.
            for a later stage to start from; ``None`` saves nothing more.

    Returns:
        Final training/validation metrics merged with the test metrics.
    """
    apply_extras(cfg)
    ckpt_path = resolve_ckpt_path(cfg) if cfg.get("train", True) else None
    checkpoint = None if ckpt_path is None else read_training_checkpoint(ckpt_path)
    if checkpoint is not None:
        _resume_wandb_run(cfg, checkpoint)
    datamodule, model, trainer = build(cfg)
    if checkpoint is not None:
        check_checkpoint_fits(checkpoint, model, ckpt_path, resume=True)
        del checkpoint
    metrics: dict[str, Any] = {}
    try:
        if cfg.get("train", True):
            log.info("Starting training")
            trainer.fit(
                model=model,
                datamodule=datamodule,
                ckpt_path=ckpt_path,
                weights_only=True,
            )
            metrics.update(metrics_as_floats(trainer.callback_metrics))
            if weights_path is not None:
                trainer.save_checkpoint(weights_path, weights_only=True)
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
