"""Learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR

__all__ = ["StepDecayLR", "WarmupCosineLR"]


class WarmupCosineLR(LambdaLR):
    """Linear warm-up, then cosine decay to ``min_lr_ratio * base_lr``, stepped per batch.

    The CMOS recipe is 10 warm-up epochs of 700; ``warmup_epochs`` is converted to
    steps with ``steps_per_epoch`` so that the schedule is smooth within an epoch.

    Args:
        optimizer: The wrapped optimizer.
        total_steps: Number of optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch.
        warmup_epochs: Length of the linear warm-up, in epochs (may be fractional).
        min_lr_ratio: Final learning rate as a fraction of the base rate.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int = 1,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), self.total_steps - 1)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, self._factor, last_epoch=last_epoch)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


class StepDecayLR(MultiStepLR):
    """The learning rate times ``gamma`` at each milestone step (e.g. ArcSR: halved at
    2e4, 4e4, 8e4 and 2e5 steps), stepped per batch; accepts the ``total_steps`` /
    ``steps_per_epoch`` every svblur schedule factory is called with.

    Args:
        optimizer: The wrapped optimizer.
        milestones: Optimizer steps at which the rate is multiplied by ``gamma``.
        gamma: The factor.
        total_steps: Unused (the milestones are absolute).
        steps_per_epoch: Unused.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.5,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        super().__init__(optimizer, [int(m) for m in milestones], gamma, last_epoch=last_epoch)
