"""Callbacks the app tests inject through Hydra (``+callbacks.x._target_=tests.helpers...``),
and readers of a run's logs."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import lightning as L


class RecordBatches(L.Callback):
    """Append ``{"step", "epoch", "fingerprint", "lr"}`` of every training batch to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        record = {
            "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
            "fingerprint": [float(batch["hr"].double().sum()), float(batch["blur"].sum())],
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class KillAtStep(L.Callback):
    """SIGKILL the training process once ``global_step`` reaches ``step`` (a hard fault)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def epoch_losses(run: Path) -> list[float]:
    """``train/loss_epoch`` of every epoch, from the run's CSV log."""
    (path,) = run.glob("csv/version_*/metrics.csv")
    with open(path) as f:
        return [
            float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")
        ]
