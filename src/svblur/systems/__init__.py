"""LightningModules (training systems), their losses and schedules."""

from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .schedules import WarmupCosineLR

__all__ = ["BlurSemanticsLoss", "BlurSemanticsTask", "WarmupCosineLR"]
