"""LightningModules (training systems), their losses, schedules and callbacks."""

from .callbacks import LastCheckpoint
from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .schedules import WarmupCosineLR
from .sr import BlindSRTask, NonBlindSRTask

__all__ = [
    "BlindSRTask",
    "BlurSemanticsLoss",
    "BlurSemanticsTask",
    "LastCheckpoint",
    "NonBlindSRTask",
    "WarmupCosineLR",
]
