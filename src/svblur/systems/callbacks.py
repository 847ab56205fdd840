"""Lightning callbacks of the training app."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

__all__ = [
    "BN_RECALIBRATED_KEY",
    "BatchNormRecalibration",
    "EarlyStopping",
    "LastCheckpoint",
    "recompute_batch_norm_statistics",
    "reduce_batch_norm_statistics",
    "training_batch_norms",
]


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


#: Checkpoint key: whether the checkpoint's BatchNorm statistics were recomputed for its
#: weights (written by :class:`BatchNormRecalibration`).
BN_RECALIBRATED_KEY = "bn_recalibrated"


class BatchNormRecalibration(Callback):
    """Recompute BatchNorm running statistics for the current weights before evaluation.

    A BatchNorm in training mode normalizes with the batch's statistics and only tracks an
    exponential average of them (``momentum``). With the released HRNet's momentum 0.01
    that average trails the weights by about 100 steps, and it starts from ``(0, 1)``: in a
    run of a few hundred steps, eval mode then measures a different network from the one
    training optimized. This callback resets the statistics of every BatchNorm that trains
    and recomputes them as a plain average over the last ``num_batches`` training batches
    (what :func:`torch.optim.swa_utils.update_bn` does), with the system's own forward
    (:meth:`~svblur.systems.base.TrainingSystem.calibration_forward`), in train mode, under
    no gradient, the trainer's precision and a forked RNG (training continues bit for bit
    as without the callback).

    It runs before each validation (not the sanity check), before testing and when a
    checkpoint is saved (so that ``best.ckpt``, ``last.ckpt``, ``svblur-eval``,
    ``svblur-predict`` and exports read recalibrated statistics; the checkpoint records it
    under ``"bn_recalibrated"`` whether its statistics are current), and only when the
    statistics are stale: some training
    step ran since the last recalibration or the loaded checkpoint was not recalibrated.
    Under DDP each rank computes the statistics of its own batches and the ranks then
    average them, so every rank ends identical, with what one process would compute from
    all the ranks' batches.

    Args:
        num_batches: Training batches the statistics are averaged over (the most recent).
        horizon: Recalibrate only while ``global_step * momentum < horizon``, i.e. while
            the running average has seen fewer than ``horizon`` time constants (the
            smallest momentum of the network's BatchNorms counts; a cumulative
            ``momentum=None`` always counts as short). ``None``: always.
    """

    def __init__(self, num_batches: int = 16, horizon: float | None = 10.0) -> None:
        if num_batches < 1:
            raise ValueError(f"num_batches must be at least 1, got {num_batches}")
        self.num_batches = int(num_batches)
        self.horizon = horizon
        self._batches: deque[Any] = deque(maxlen=self.num_batches)
        self._fresh = False  # recomputed since the last training step
        self._current = False  # fresh, or not stale (long run, no BatchNorm)
        self._logged = False
        self._warned = False

    # ---------------------------------------------------------------- bookkeeping
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._batches.append(batch)
        self._fresh = False

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._fresh = bool(checkpoint.get(BN_RECALIBRATED_KEY, False))

    # ---------------------------------------------------------------- when to run
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._maybe_recalibrate(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_recalibrate(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._maybe_recalibrate(trainer, pl_module):
            # The state dict was taken before this hook: write the new statistics into it.
            state = checkpoint.get("state_dict")
            if isinstance(state, dict):
                for name, buffer in pl_module.named_buffers():
                    if name in state and _is_bn_buffer(pl_module, name):
                        state[name] = buffer.detach().clone()
        checkpoint[BN_RECALIBRATED_KEY] = self._current

    # ---------------------------------------------------------------- the work
    def stale(self, trainer: L.Trainer, norms: list[nn.modules.batchnorm._BatchNorm]) -> bool:
        """Whether the running statistics of ``norms`` need recomputing now."""
        if self._fresh or not norms:
            return False
        if self.horizon is None:
            return True
        momenta = [m.momentum for m in norms]
        if any(m is None for m in momenta):
            return True
        return trainer.global_step * min(momenta) < self.horizon

    def _maybe_recalibrate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.train()
        try:
            norms = training_batch_norms(pl_module)
            self._current = not self.stale(trainer, norms)
            if self._current:
                return False
            if not self._batches:
                # Nothing trained in this process (svblur-eval, a test of a loaded
                # checkpoint): the checkpoint says whether its statistics were recomputed.
                if not getattr(pl_module, "bn_recalibrated", False) and not self._warned:
                    rank_zero_warn(
                        "BatchNormRecalibration: the checkpoint's BatchNorm statistics were "
                        "not recomputed for its weights and no training batch was seen in "
                        "this process, so evaluation uses them as they are",
                        category=RuntimeWarning,
                    )
                    self._warned = True
                return False
            if not self._logged:
                rank_zero_info(
                    f"BatchNormRecalibration: recomputing the statistics of {len(norms)} "
                    f"BatchNorm layers over the last {len(self._batches)} training batches "
                    f"before evaluation (step {trainer.global_step}, momentum "
                    f"{min((m.momentum or 0.0) for m in norms):g}, horizon {self.horizon})"
                )
                self._logged = True
            devices = [pl_module.device] if pl_module.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                with trainer.precision_plugin.forward_context():
                    recompute_batch_norm_statistics(
                        norms, (partial(_calibration_forward, pl_module, b) for b in self._batches)
                    )
            if trainer.world_size > 1:
                reduce_batch_norm_statistics(norms, trainer.strategy.reduce)
            self._fresh = self._current = True
            return True
        finally:
            for module, mode in modes.items():
                module.training = mode


def _calibration_forward(pl_module: L.LightningModule, batch: Any) -> None:
    forward = getattr(pl_module, "calibration_forward", None)
    if forward is None:
        raise TypeError(
            f"BatchNormRecalibration: {type(pl_module).__name__} has BatchNorm layers but no "
            "calibration_forward(batch) to run a training batch through them"
        )
    forward(batch)


def _is_bn_buffer(root: nn.Module, name: str) -> bool:
    owner, _, leaf = name.rpartition(".")
    module = root.get_submodule(owner) if owner else root
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and leaf in (
        "running_mean",
        "running_var",
        "num_batches_tracked",
    )


def training_batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module`` that are in training mode and track statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.training
        and m.track_running_stats
        and m.running_mean is not None
    ]


def recompute_batch_norm_statistics(
    norms: list[nn.modules.batchnorm._BatchNorm], forwards: Iterable[Callable[[], Any]]
) -> None:
    """Reset ``norms`` and average their statistics over the forward passes ``forwards``.

    Each norm's momentum is set to ``None`` (a cumulative average) while the forwards run
    and restored afterwards, as :func:`torch.optim.swa_utils.update_bn` does.
    """
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    try:
        for forward in forwards:
            forward()
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def reduce_batch_norm_statistics(
    norms: list[nn.modules.batchnorm._BatchNorm],
    reduce: Callable[..., torch.Tensor],
) -> None:
    """Average per-rank statistics over the ranks (equal batch counts assumed).

    ``reduce(tensor, reduce_op="mean")`` is the strategy's all-reduce. Each rank's
    statistics are averages over its batches (of the batch means and of the batch
    variances), so their mean over the ranks is what one process would compute from all
    the ranks' batches.
    """
    for m in norms:
        m.running_mean.copy_(reduce(m.running_mean.double(), reduce_op="mean"))
        m.running_var.copy_(reduce(m.running_var.double(), reduce_op="mean"))
