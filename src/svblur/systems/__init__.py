"""LightningModules (training systems), their losses, schedules and callbacks.

Every system derives from :class:`TrainingSystem` and states its ``kind``, its metrics and
its steps (see :mod:`svblur.systems.base`)."""

from .base import TrainingSystem
from .callbacks import BatchNormRecalibration, EarlyStopping, LastCheckpoint
from .diffusion import DiffusionSRTask
from .fusion import CrossBranchFusion, cross_branch_fusion
from .gan import GANSRTask, GANSystem
from .gan_losses import GANLoss, PerceptualLoss
from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .pbasr import PBaSRTask
from .schedules import StepDecayLR, WarmupCosineLR
from .sr import BlindSRTask, KernelBlindSRTask, NonBlindSRTask
from .ssr import KernelCodeSRTask, KernelEstimationTask, SVKRTask, assemble_svkr, load_svkr

__all__ = [
    "BatchNormRecalibration",
    "BlindSRTask",
    "BlurSemanticsLoss",
    "BlurSemanticsTask",
    "CrossBranchFusion",
    "DiffusionSRTask",
    "EarlyStopping",
    "GANLoss",
    "GANSRTask",
    "GANSystem",
    "KernelBlindSRTask",
    "KernelCodeSRTask",
    "KernelEstimationTask",
    "LastCheckpoint",
    "NonBlindSRTask",
    "PBaSRTask",
    "PerceptualLoss",
    "SVKRTask",
    "StepDecayLR",
    "TrainingSystem",
    "WarmupCosineLR",
    "assemble_svkr",
    "cross_branch_fusion",
    "load_svkr",
]
