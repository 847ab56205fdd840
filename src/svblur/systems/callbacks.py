"""Lightning callbacks of the training app."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["EarlyStopping", "LastCheckpoint"]


class EarlyStopping(callbacks.EarlyStopping):
    """Lightning's early stopping for runs that may end before validation has run.

    A run shorter than one epoch (``max_steps``), ``limit_val_batches=0`` or a
    ``check_val_every_n_epoch`` beyond ``max_epochs`` reaches the stopping check without
    the monitored metric. Lightning's callback then raises (``strict=True``) or skips the
    check silently (``strict=False``, which also hides a misspelt ``monitor``). This one
    warns once and skips the check while no validation has run in this process, and
    keeps ``strict`` for the checks after a validation: then a missing metric is a
    configuration error.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._validated = False
        self._warned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True
        super().on_validation_end(trainer, pl_module)

    def _validate_condition_metric(self, logs: dict[str, torch.Tensor]) -> bool:
        if self.monitor not in logs and not self._validated:
            if not self._warned:
                rank_zero_warn(
                    f"EarlyStopping(monitor={self.monitor!r}): no validation has run yet, so "
                    "the stopping check is skipped (the run is shorter than one validation "
                    "interval, or limit_val_batches=0)",
                    category=RuntimeWarning,
                )
                self._warned = True
            return False
        return super()._validate_condition_metric(logs)


class LastCheckpoint(ModelCheckpoint):
    """Keep ``<dirpath>/last.ckpt`` current: every ``every_n_train_steps`` steps (mid-epoch)
    and at the end of every epoch, so that a killed run loses at most that many steps and
    ``ckpt_path=last`` resumes it. Keeps no other checkpoint (best ones are the job of a
    monitoring :class:`~lightning.pytorch.callbacks.ModelCheckpoint`, which should then not
    also write ``last.ckpt``).

    Args:
        dirpath: Folder of ``last.ckpt``.
        every_n_train_steps: Steps between mid-epoch saves (``0``: epoch ends only).
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 200) -> None:
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps or None,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the epoch's validation, so the saved state includes it.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: epoch-end saving happens in :meth:`on_train_epoch_end`."""
