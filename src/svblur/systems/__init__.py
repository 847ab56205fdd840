"""LightningModules (training systems), their losses, schedules and callbacks."""

from .callbacks import BatchNormRecalibration, EarlyStopping, LastCheckpoint
from .diffusion import DiffusionSRTask
from .fusion import CrossBranchFusion, cross_branch_fusion
from .gan_losses import GANLoss, PerceptualLoss
from .losses import BlurSemanticsLoss
from .multitask import BlurSemanticsTask
from .pbasr import GANSRTask, PBaSRTask
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
    "KernelBlindSRTask",
    "KernelCodeSRTask",
    "KernelEstimationTask",
    "LastCheckpoint",
    "NonBlindSRTask",
    "PBaSRTask",
    "PerceptualLoss",
    "SVKRTask",
    "StepDecayLR",
    "WarmupCosineLR",
    "assemble_svkr",
    "cross_branch_fusion",
    "load_svkr",
]
