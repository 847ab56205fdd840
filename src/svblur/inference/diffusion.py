"""SR of a photo by reverse diffusion, conditioned on what the network's SVKR estimates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from svblur.models import DiffusionSR, LatentDiffusionSR

__all__ = ["DiffusionPredictor"]


class DiffusionPredictor:
    """SR of one LR image by a diffusion SR network with its SVKR.

    The SVKR runs on the whole image; the denoiser in tiles that share one noise tensor:
    latent tiles for a :class:`~svblur.models.LatentDiffusionSR` (decoded by the VAE with
    its own tiling; see :meth:`LatentDiffusionSR.sample
    <svblur.models.LatentDiffusionSR.sample>`), image tiles for a
    :class:`~svblur.models.DiffusionSR` (:meth:`DiffusionSR.sample
    <svblur.models.DiffusionSR.sample>`).

    Args:
        net: A :class:`~svblur.models.LatentDiffusionSR` or
            :class:`~svblur.models.DiffusionSR` trained with ``condition="svkr"``.
        options: Keyword arguments of ``net.sample``: ``steps``, ``sampler``, ``seed``,
            ``tile_size``, ``tile_overlap`` (``None``: the network's default).
        device: Where the network runs.

    Returns (``__call__``):
        CPU float32 ``sr`` ``(3, H, W)`` and ``kernels`` ``(k*k, h, w)`` on the LR grid
        (the SVKR's HR field subsampled), as :func:`~svblur.inference.save_outputs` takes
        them.
    """

    def __init__(
        self,
        net: DiffusionSR | LatentDiffusionSR,
        options: Mapping[str, Any],
        device: torch.device,
    ) -> None:
        self.net = net
        self.options = dict(options)
        self.device = device
        #: Tile size used (for a summary shared with :class:`~svblur.inference.TiledPredictor`).
        self.used_tile_size = int(self.options["tile_size"])

    @torch.no_grad()
    def __call__(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sample the SR image of ``lr`` ``(1, 3, h, w)``."""
        lr = lr.to(self.device)
        conditions = self.net.estimate_conditions(lr)
        sr = self.net.sample(lr, conditions["depth"], conditions["kernels"], **self.options)
        kernels = conditions["kernels"]
        step = max(1, kernels.shape[-1] // lr.shape[-1])
        return {
            "sr": sr[0].float().cpu(),
            "kernels": kernels[0, :, ::step, ::step].float().cpu(),
        }
