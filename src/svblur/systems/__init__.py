"""LightningModules (training systems), their losses, schedules and callbacks."""

from .callbacks import EarlyStopping, LastCheckpoint
from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .schedules import StepDecayLR, WarmupCosineLR
from .sr import BlindSRTask, KernelBlindSRTask, NonBlindSRTask

__all__ = [
    "BlindSRTask",
    "BlurSemanticsLoss",
    "BlurSemanticsTask",
    "EarlyStopping",
    "KernelBlindSRTask",
    "LastCheckpoint",
    "NonBlindSRTask",
    "StepDecayLR",
    "WarmupCosineLR",
]
