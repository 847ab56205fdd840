"""One training or evaluation job built from a composed config: what ``svblur-train`` and
``svblur-eval`` run, and what :mod:`svblur.experiments.runner` runs many times.

- :func:`build`: data module, model, callbacks, loggers and trainer from a config;
- :func:`train`: fit (resuming from ``ckpt_path``), then test the best checkpoint;
- :func:`evaluate`: test a checkpoint and write ``metrics.csv`` / ``metrics.md`` /
  ``per_image.csv`` (:func:`write_reports`).

Checkpoints given by the user are read safely and checked against the model before
Lightning loads them, so a wrong file is answered with one
:class:`~svblur.checkpoints.CheckpointError` that names it.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from svblur.checkpoints import (
    CheckpointError,
    CheckpointNotFoundError,
    check_fits,
    read_checkpoint,
)
from svblur.errors import InputError

__all__ = [
    "apply_extras",
    "build",
    "check_checkpoint_fits",
    "evaluate",
    "finish",
    "instantiate_list",
    "metric_table",
    "metrics_as_floats",
    "read_training_checkpoint",
    "require",
    "resolve_ckpt_path",
    "train",
    "write_reports",
]

log = logging.getLogger("svblur")


def apply_extras(cfg: DictConfig) -> None:
    """Optional conveniences before the run: silence warnings, print the config."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        log.info("Configuration:\n%s", OmegaConf.to_yaml(cfg, resolve=True))


def require(cfg: DictConfig, key: str, expected: str) -> Any:
    """Return ``cfg[key]`` or raise an error that names the missing config field."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        raise InputError(f"config field '{key}' is missing: expected {expected}")
    return value


def check_depth_source(cfg: DictConfig) -> None:
    """Stop a run whose depth comes from a monocular model (``depth=hf``, the photo and
    folder SSR configs) when no model folder was given, with one line that says how."""
    depth = cfg.get("depth")
    if not isinstance(depth, DictConfig) or depth.get("name") != "hf":
        return
    if OmegaConf.select(depth, "path", default=None) in (None, ""):
        raise InputError(
            f"{cfg.get('task_name', 'this run')} estimates depth with a monocular model "
            "(depth=hf) and none was given: pass depth.path=DIR, a local transformers depth "
            "model folder (DPT, Depth Anything; written by save_pretrained, svblur downloads "
            "nothing), or depth=none for the kernel-only ablation"
        )


def instantiate_list(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group (callbacks, loggers)."""
    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"config group '{what}' must be a mapping, got {type(cfg).__name__}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("Instantiating %s <%s> (%s)", what, entry._target_, name)
            objects.append(instantiate(entry))
    return objects


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Seed, then build data module, model, callbacks, loggers and trainer from ``cfg``."""
    check_depth_source(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    # _convert_="all": plain lists/dicts, so that saved hyperparameters load with
    # torch.load(weights_only=True).
    datamodule = instantiate(
        require(cfg, "data", "a data config (data=synthetic, ...)"), _convert_="all"
    )
    model = instantiate(
        require(cfg, "model", "a model config (model=cmos, model=unet, ...)"), _convert_="all"
    )
    net_cfg = OmegaConf.select(cfg, "model.net")
    if hasattr(model, "net_config") and isinstance(net_cfg, DictConfig):
        model.net_config = OmegaConf.to_container(net_cfg, resolve=True)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    loggers = instantiate_list(cfg.get("logger"), "logger")
    trainer = instantiate(
        require(cfg, "trainer", "a trainer config (trainer=cpu, ...)"),
        callbacks=callbacks,
        logger=loggers or False,
    )
    hparams = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(hparams)
    return datamodule, model, trainer


def finish(loggers: list[Logger]) -> None:
    """Close W&B runs so that each job of a multirun gets its own run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()


def metrics_as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


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


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path`` and return its test metrics."""
    apply_extras(cfg)
    ckpt_path = Path(require(cfg, "ckpt_path", "the path of a checkpoint to evaluate"))
    if not ckpt_path.is_file():
        raise CheckpointNotFoundError(f"ckpt_path: no checkpoint file at '{ckpt_path}'")
    checkpoint = read_training_checkpoint(ckpt_path)
    datamodule, model, trainer = build(cfg)
    check_checkpoint_fits(checkpoint, model, ckpt_path, resume=False)
    del checkpoint
    try:
        log.info("Testing %s", ckpt_path)
        trainer.test(
            model=model, datamodule=datamodule, ckpt_path=str(ckpt_path), weights_only=True
        )
        metrics = metrics_as_floats(trainer.callback_metrics)
    finally:
        finish(trainer.loggers)
    if trainer.is_global_zero:
        report_dir = Path(cfg.get("report_dir") or cfg.paths.output_dir)
        groups = list(getattr(datamodule, "test_group_names", None) or [])
        written = write_reports(
            metrics, groups, getattr(model, "test_results", None) or [], report_dir
        )
        for path in written:
            log.info("Wrote %s", path)
    return metrics


def metric_table(metrics: dict[str, float], groups: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ``{"group": g, metric: value, ...}`` per test group plus ``mean``.

    Metric keys are ``test/<group>/<name>`` per group and ``test/<name>`` for the mean over
    groups (what the systems log); losses are left out. Without groups, one ``test`` row.
    """
    names = sorted(
        {
            key[len("test/") :]
            for key in metrics
            if key.startswith("test/")
            and not any(key.startswith(f"test/{g}/") for g in groups)
            and "loss" not in key
        }
    )
    if not groups:
        return [{"group": "test", **{n: metrics[f"test/{n}"] for n in names}}]
    rows = [
        {"group": g, **{n: metrics.get(f"test/{g}/{n}", float("nan")) for n in names}}
        for g in groups
    ]
    rows.append({"group": "mean", **{n: metrics[f"test/{n}"] for n in names}})
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_reports(
    metrics: dict[str, float],
    groups: Sequence[str],
    per_image: Sequence[dict[str, Any]],
    out_dir: Path,
) -> list[Path]:
    """Write ``metrics.csv``, ``metrics.md`` and (when given) ``per_image.csv``.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = metric_table(metrics, groups)
    if any(len(r) > 1 for r in rows):
        _write_csv(rows, out_dir / "metrics.csv")
        (out_dir / "metrics.md").write_text(_markdown(rows))
        written += [out_dir / "metrics.csv", out_dir / "metrics.md"]
    if per_image:
        _write_csv(list(per_image), out_dir / "per_image.csv")
        written.append(out_dir / "per_image.csv")
    return written
