"""The one base of every svblur LightningModule: :class:`TrainingSystem`.

A system states three things and inherits the rest:

- its :attr:`~TrainingSystem.kind` (what it computes, one of
  :data:`svblur.checkpoints.kinds.SYSTEM_KINDS`), which the checkpoint record, prediction
  and the comparison runner read instead of listing classes;
- its metrics (:meth:`~TrainingSystem.build_metrics`, one set per evaluation group);
- its steps (``training_step``, ``validation_step``, ``test_step``).

The base owns the optimizer and schedule from config factories, in-place
``torch.compile``, the guard against non-finite steps, the metric groups per stage and
test group, the logging of loss terms and metrics, and the checkpoint record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from svblur.checkpoints import RECORD_KEY, network_record

log = logging.getLogger(__name__)

__all__ = ["TrainingSystem", "add_test_group_metrics", "log_panel"]


class TrainingSystem(L.LightningModule):
    """Base LightningModule of every svblur system.

    Subclasses set :attr:`kind`, implement :meth:`build_metrics` and call
    :meth:`init_metrics` at the end of ``__init__``; systems trained by automatic
    optimization also set ``self.net``, ``self.optimizer_factory`` and
    ``self.scheduler_factory`` and save a ``compile`` hyperparameter.

    - :meth:`configure_optimizers`: ``optimizer_factory(params=trainable_parameters())``
      and, when given, ``scheduler_factory(optimizer, total_steps=, steps_per_epoch=)``
      stepped every batch.
    - :meth:`optimizer_step`: steps only on finite gradients; a NaN/inf step is skipped
      (weights and optimizer state untouched) and counted in ``train/skipped_steps``.
    - evaluation groups: ``self.metrics`` maps ``"val"``, ``"test"`` and, when the data
      module defines ``test_group_names`` (e.g. the five BSR groups), one entry per test
      group to the metrics :meth:`build_metrics` makes; each group is logged as
      ``{stage}/{group}/<metric>`` and the groups' mean as ``{stage}/<metric>``
      (:meth:`_log_metrics`).
    - checkpoints carry ``wandb_run_id`` (so that resuming continues the same W&B run),
      ``skipped_steps`` and, under ``"svblur"``, the system's name and :attr:`kind` and
      how its network is built (:attr:`net_config`), which
      :func:`svblur.checkpoints.load_network` and ``svblur-predict`` read.
    """

    #: What the system computes (see :mod:`svblur.checkpoints.kinds`); every concrete
    #: system states it.
    kind: ClassVar[str | None] = None
    #: The evaluation stages that get metrics at construction (test groups are added when
    #: testing starts).
    metric_stages: ClassVar[tuple[str, ...]] = ("val", "test")

    skipped_steps: int = 0
    #: Whether the loaded checkpoint's BatchNorm statistics were recomputed for its weights.
    bn_recalibrated: bool = False
    #: How ``self.net`` is built (``{"_target_": ..., **kwargs}``, plain values), recorded
    #: in checkpoints so that :func:`svblur.checkpoints.load_network` can rebuild it; set
    #: by whoever builds the system from a config (``svblur-train`` does).
    net_config: dict[str, Any] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.test_groups: list[str] = []

    # ------------------------------------------------------------------ what a system states
    def build_metrics(self) -> nn.Module:
        """A new set of metrics for one evaluation group (an ``nn.ModuleDict`` of
        torchmetrics by name; a metric whose ``compute`` returns a dict is logged as
        ``<name>/<key>``)."""
        raise NotImplementedError(f"{type(self).__name__} must define build_metrics()")

    def init_metrics(self) -> None:
        """Give every stage of :attr:`metric_stages` its metrics (end of ``__init__``)."""
        self.metrics = nn.ModuleDict({stage: self.build_metrics() for stage in self.metric_stages})

    def in_progress_bar(self, name: str) -> bool:
        """Whether validation metric ``name`` is shown in the progress bar."""
        return True

    def record(self) -> dict[str, Any]:
        """The record written under ``checkpoint["svblur"]`` (see
        :func:`svblur.checkpoints.network_record`); systems may add entries."""
        return network_record(type(self).__name__, self.net_config, self.kind)

    # ------------------------------------------------------------------ optimization
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters handed to the optimizer."""
        return [p for p in self.parameters() if p.requires_grad]

    def calibration_forward(self, batch: dict[str, torch.Tensor]) -> None:
        """Run a training batch through the networks as training does, for
        :class:`~svblur.systems.BatchNormRecalibration` (called in train mode, without
        gradients). The default is :meth:`predict_maps`, or ``self(batch["lr"])``."""
        predict = getattr(self, "predict_maps", None)
        if predict is not None:
            predict(batch)
        else:
            self(batch["lr"])

    def setup(self, stage: str) -> None:
        if self.hparams.get("compile") and stage == "fit":
            # In place (nn.Module.compile): parameter names, and so checkpoints, stay
            # those of the plain network.
            self.net.compile()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.trainable_parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else 1
        steps_per_epoch = max(1, total_steps // max(1, max_epochs))
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step only on finite gradients: a NaN/inf step is skipped and counted.

        The closure (forward, loss, backward) runs first; if any gradient is not finite
        (after the DDP all-reduce, so every rank decides alike) the gradients are zeroed,
        the weights and optimizer state stay untouched, and ``train/skipped_steps``
        counts it. With fp16 mixed precision the GradScaler already does this (and must
        see the step to lower its scale), so it is left to it.
        """
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if optimizer_closure is not None:
            optimizer_closure()
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        finite = all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
        if finite:
            optimizer.step()
        else:
            optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            log.warning(
                "non-finite gradients at epoch %d, batch %d: optimizer step skipped "
                "(%d skipped so far)",
                epoch,
                batch_idx,
                self.skipped_steps,
            )
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ logging
    def _log_terms(
        self,
        stage: str,
        terms: Mapping[str, torch.Tensor],
        batch_size: int,
        loss: torch.Tensor | None = None,
    ) -> None:
        """Log loss terms as ``{stage}/loss/<name>`` and, when given, their total as
        ``{stage}/loss`` (in the progress bar): per step and per epoch in training (stage
        ``train`` or ``train/<branch>``), per epoch and averaged over the processes in
        evaluation."""
        training = stage.split("/")[0] == "train"
        options = {
            "on_step": training,
            "on_epoch": True,
            "batch_size": max(1, int(batch_size)),
            "sync_dist": not training,
            "add_dataloader_idx": False,
        }
        for name, term in terms.items():
            self.log(f"{stage}/loss/{name}", term.detach(), **options)
        if loss is not None:
            self.log(f"{stage}/loss", loss.detach(), prog_bar=True, **options)

    def _test_group(self, dataloader_idx: int) -> tuple[str, str]:
        """The metric group of a test data loader and the stage its losses are logged
        under: ``("test", "test")``, or ``(group, "test/<group>")`` with test groups."""
        if not self.test_groups:
            return "test", "test"
        group = self.test_groups[dataloader_idx]
        return group, f"test/{group}"

    def _log_metrics(self, stage: str, groups: list[str]) -> None:
        """Log each group's metrics and, for several groups, their mean (NaN groups, e.g.
        an empty region, left out) under ``stage``."""
        values: dict[str, list[torch.Tensor]] = {}
        for group in groups:
            for name, metric in self.metrics[group].items():
                if not metric.update_called:
                    continue
                value = metric.compute()
                metric.reset()
                entries = (
                    {f"{name}/{key}": v for key, v in value.items()}
                    if isinstance(value, Mapping)
                    else {name: value}
                )
                for key, v in entries.items():
                    values.setdefault(key, []).append(torch.as_tensor(v))
                    # torchmetrics already reduced the states over ranks: every rank holds
                    # the same value, and sync_dist (a mean of equal values) keeps
                    # Lightning content.
                    if group != stage:
                        self.log(
                            f"{stage}/{group}/{key}", v, add_dataloader_idx=False, sync_dist=True
                        )
        for key, vals in values.items():
            self.log(
                f"{stage}/{key}",
                torch.stack(vals).float().nanmean(),
                prog_bar=stage == "val" and self.in_progress_bar(key),
                add_dataloader_idx=False,
                sync_dist=True,
            )

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", ["val"])

    def on_test_start(self) -> None:
        add_test_group_metrics(self)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_groups or ["test"])

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for logger in self.loggers:
            if type(logger).__name__ == "WandbLogger" and logger.version:
                checkpoint["wandb_run_id"] = str(logger.version)
        checkpoint["skipped_steps"] = self.skipped_steps
        checkpoint[RECORD_KEY] = self.record()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        # written by svblur.systems.BatchNormRecalibration
        self.bn_recalibrated = bool(checkpoint.get("bn_recalibrated", False))


def add_test_group_metrics(system: TrainingSystem) -> None:
    """Set ``system.test_groups`` from the data module's ``test_group_names`` and give each
    group its own metrics in ``system.metrics`` (built by ``system.build_metrics()``)."""
    datamodule = getattr(system.trainer, "datamodule", None)
    system.test_groups = list(getattr(datamodule, "test_group_names", None) or [])
    for group in system.test_groups:
        if group in system.metrics:
            raise ValueError(f"test group name '{group}' clashes with a metric group")
        system.metrics[group] = system.build_metrics().to(system.device)


def log_panel(logger: Any, key: str, image: torch.Tensor, step: int, caption: str) -> None:
    """Send a ``(3, H, W)`` image in ``[0, 1]`` to any Lightning logger.

    W&B and TensorBoard get it through their image APIs; other loggers (CSV) get a
    PNG in ``<log_dir>/images/``.
    """
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        logger.log_image(key=key, images=[array], caption=[caption], step=step)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, image.clamp(0, 1), global_step=step)
    elif getattr(logger, "log_dir", None):
        from torchvision.utils import save_image

        folder = Path(logger.log_dir) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        save_image(image, folder / f"{key.replace('/', '_')}_step{step:07d}.png")
