"""LightningModules (training systems), their losses, schedules and callbacks."""

from .callbacks import EarlyStopping, LastCheckpoint
from .fusion import CrossBranchFusion, cross_branch_fusion
from .gan_losses import GANLoss, PerceptualLoss
from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .pbasr import GANSRTask, PBaSRTask
from .schedules import StepDecayLR, WarmupCosineLR
from .sr import BlindSRTask, KernelBlindSRTask, NonBlindSRTask

__all__ = [
    "BlindSRTask",
    "BlurSemanticsLoss",
    "BlurSemanticsTask",
    "CrossBranchFusion",
    "EarlyStopping",
    "GANLoss",
    "GANSRTask",
    "KernelBlindSRTask",
    "LastCheckpoint",
    "NonBlindSRTask",
    "PBaSRTask",
    "PerceptualLoss",
    "StepDecayLR",
    "WarmupCosineLR",
    "cross_branch_fusion",
]
