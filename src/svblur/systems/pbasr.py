"""PBaSR (Qin et al., ECCV 2024): SR that stays good on partially blurred photos.

:class:`PBaSRTask` holds two copies of one generator, the general branch (general data)
and the blur branch (partially blurred data), each with its own discriminator and
optimizers, every step training each on its half of the batch
(:class:`~svblur.data.CombinedDataModule` gives ``{"general": ..., "blur": ...}``), with
the GAN objective of :mod:`svblur.systems.gan`. :class:`~svblur.systems.CrossBranchFusion`
mixes the branches every ``k`` steps. Validation, testing and the export use the merged
generator ``(W_G + W_B) / 2``: one plain network, no extra inference cost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from svblur.checkpoints import from_basicsr_rrdbnet

from .gan import EVAL_METRICS, GANSRTask, GANSystem

# GANSRTask and from_basicsr_rrdbnet were defined here before svblur.systems.gan and
# svblur.checkpoints held them; importing them from here keeps working.
__all__ = ["GANSRTask", "PBaSRTask", "from_basicsr_rrdbnet"]


class PBaSRTask(GANSystem):
    """PBaSR: a general and a blur branch of one generator, fused every ``k`` steps.

    Both branches start from the same anchor checkpoint (or the same random weights). Each
    step the general branch trains on ``batch["general"]`` against its discriminator, the
    blur branch on ``batch["blur"]`` against a discriminator conditioned on
    ``blur_mask``, with its GAN loss averaged over the whole image
    (``blur_gan_region="all"``, the paper's Eq. 1) or over the blurred region only
    (``"blurred"``, the default: svblur's behaviour before the option existed); each has
    its own Adam optimizers. Fusion is the :class:`~svblur.systems.CrossBranchFusion`
    callback (``callbacks.cross_branch_fusion`` in the configs). Evaluation and the export
    use the merged generator ``(W_G + W_B) / 2`` (buffers averaged too).

    Args:
        net: The generator; the blur branch is a copy of it.
        discriminator: The general branch's discriminator.
        blur_discriminator: The blur branch's (conditional) discriminator.

    The other arguments (optimizers, losses, weights, ``gan_kind``, ``blur_gan_region``,
    anchor, export) are those of :class:`GANSRTask`; ``anchor_discriminator_ckpt`` starts
    both discriminators from the anchor's (the blur branch's keeps its condition path at its
    initialization, so it starts equal to the anchor's discriminator whatever the mask).
    """

    branches = (("general", "discriminator"), ("blur", "blur_discriminator"))

    def __init__(
        self,
        net: nn.Module,
        discriminator: nn.Module,
        blur_discriminator: nn.Module,
        g_optimizer: Callable[..., Optimizer],
        d_optimizer: Callable[..., Optimizer],
        perceptual: nn.Module | None = None,
        anchor_ckpt: str | None = None,
        anchor_discriminator_ckpt: str | None = None,
        l1_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        gan_weight: float = 0.1,
        gan_kind: str = "vanilla",
        blur_gan_region: str = "blurred",
        scale: int = 4,
        eval_metrics: Sequence[str] = EVAL_METRICS,
        export_path: str | None = None,
        perceptual_metrics: Sequence[str] | None = None,
        perceptual_weights_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=[
                "net",
                "discriminator",
                "blur_discriminator",
                "g_optimizer",
                "d_optimizer",
                "perceptual",
            ],
            logger=False,
        )
        self.general = net
        self.blur = copy.deepcopy(net)
        self.discriminator = discriminator
        self.blur_discriminator = blur_discriminator
        self._init_shared(perceptual, g_optimizer, d_optimizer, gan_kind, blur_gan_region)

    def merged_generator(self) -> nn.Module:
        """A copy of the generator with ``(W_G + W_B) / 2`` (parameters and float buffers).

        The released ``ParallelNet_ncb.combinet`` (the ESRGAN anchor's evaluation network)
        is ``0.5 W_G + 0.5 W_B`` over parameters only; ``RRDBNet`` has no buffers, so for
        it the two are the same network.
        """
        merged = copy.deepcopy(self.general)
        blur = self.blur.state_dict()
        state = {
            key: (value + blur[key]) / 2 if value.is_floating_point() else value
            for key, value in self.general.state_dict().items()
        }
        merged.load_state_dict(state)
        return merged.eval()

    def eval_generator(self) -> nn.Module:
        return self.merged_generator()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.merged_generator()(lr)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if not ("general" in batch and "blur" in batch):
            raise ValueError(
                "PBaSRTask trains on {'general': batch, 'blur': batch} (data=pbasr_synthetic or "
                "a svblur.data.CombinedDataModule)"
            )
        g_general, g_blur, d_general, d_blur = self.optimizers()
        self._branch_step(
            "general", self.general, self.discriminator, batch["general"], g_general, d_general
        )
        self._branch_step("blur", self.blur, self.blur_discriminator, batch["blur"], g_blur, d_blur)
