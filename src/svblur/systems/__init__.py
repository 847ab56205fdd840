"""LightningModules (training systems), their losses, schedules and callbacks."""

from .callbacks import EarlyStopping, LastCheckpoint
from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .schedules import WarmupCosineLR
from .sr import BlindSRTask, NonBlindSRTask

__all__ = [
    "BlindSRTask",
    "BlurSemanticsLoss",
    "BlurSemanticsTask",
    "EarlyStopping",
    "LastCheckpoint",
    "NonBlindSRTask",
    "WarmupCosineLR",
]
