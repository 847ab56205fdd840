"""What every svblur training system shares: optimizer and schedule from config factories,
in-place ``torch.compile``, a guard against non-finite steps, and the W&B run id in
checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from svblur.models.checkpoints import RECORD_KEY, network_record

log = logging.getLogger(__name__)

__all__ = ["TrainingSystem", "add_test_group_metrics"]


class TrainingSystem(L.LightningModule):
    """Base LightningModule. Subclasses set ``self.net``, ``self.optimizer_factory`` and
    ``self.scheduler_factory`` and save a ``compile`` hyperparameter.

    - :meth:`configure_optimizers`: ``optimizer_factory(params=trainable_parameters())``
      and, when given, ``scheduler_factory(optimizer, total_steps=, steps_per_epoch=)``
      stepped every batch.
    - :meth:`optimizer_step`: steps only on finite gradients; a NaN/inf step is skipped
      (weights and optimizer state untouched) and counted in ``train/skipped_steps``.
    - evaluation groups: metrics per group, logged per group and as their mean
      (:meth:`_log_metrics`), test groups from the data module's ``test_group_names``;
    - checkpoints carry ``wandb_run_id`` (so that resuming continues the same W&B run),
      ``skipped_steps`` and, under ``"svblur"``, what the system is and how its network is
      built (:attr:`net_config`), which :func:`svblur.models.load_network` and
      ``svblur-predict`` read.
    """

    skipped_steps: int = 0
    #: Whether the loaded checkpoint's BatchNorm statistics were recomputed for its weights.
    bn_recalibrated: bool = False
    #: How ``self.net`` is built (``{"_target_": ..., **kwargs}``, plain values), recorded
    #: in checkpoints so that :func:`svblur.models.load_network` can rebuild it; set by
    #: whoever builds the system from a config (``svblur-train`` does).
    net_config: dict[str, Any] | None = None

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

    def configure_optimizers(self) -> dict[str, Any]:
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

    # Evaluation groups: ``self.metrics`` maps "val", "test" and, when the data module
    # defines ``test_group_names`` (e.g. the five BSR groups), one entry per test group to
    # a ModuleDict of torchmetrics built by ``self._new_metrics()``.
    def in_progress_bar(self, name: str) -> bool:
        """Whether validation metric ``name`` is shown in the progress bar."""
        return True

    def _log_metrics(self, stage: str, groups: list[str]) -> None:
        """Log each group's metrics and, for several groups, their mean under ``stage``."""
        values: dict[str, list[torch.Tensor]] = {}
        for group in groups:
            for name, metric in self.metrics[group].items():
                if not metric.update_called:
                    continue
                value = metric.compute()
                metric.reset()
                values.setdefault(name, []).append(value)
                # torchmetrics already reduced the states over ranks: every rank holds the
                # same value, and sync_dist (a mean of equal values) keeps Lightning content.
                if group != stage:
                    self.log(
                        f"{stage}/{group}/{name}", value, add_dataloader_idx=False, sync_dist=True
                    )
        for name, vals in values.items():
            self.log(
                f"{stage}/{name}",
                torch.stack(vals).mean(),
                prog_bar=stage == "val" and self.in_progress_bar(name),
                add_dataloader_idx=False,
                sync_dist=True,
            )

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", ["val"])

    def on_test_start(self) -> None:
        add_test_group_metrics(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for logger in self.loggers:
            if type(logger).__name__ == "WandbLogger" and logger.version:
                checkpoint["wandb_run_id"] = str(logger.version)
        checkpoint["skipped_steps"] = self.skipped_steps
        checkpoint[RECORD_KEY] = network_record(type(self).__name__, self.net_config)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        # written by svblur.systems.BatchNormRecalibration
        self.bn_recalibrated = bool(checkpoint.get("bn_recalibrated", False))


def add_test_group_metrics(system: L.LightningModule) -> None:
    """Set ``system.test_groups`` from the data module's ``test_group_names`` and give each
    group its own metrics in ``system.metrics`` (built by ``system._new_metrics()``)."""
    datamodule = getattr(system.trainer, "datamodule", None)
    system.test_groups = list(getattr(datamodule, "test_group_names", None) or [])
    for group in system.test_groups:
        if group in system.metrics:
            raise ValueError(f"test group name '{group}' clashes with a metric group")
        system.metrics[group] = system._new_metrics().to(system.device)
