"""Lightning callbacks of the training app."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["LastCheckpoint"]


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
