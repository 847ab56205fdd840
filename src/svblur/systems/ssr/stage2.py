"""SSR stage 2: :class:`KernelCodeSRTask`, non-blind SR on the kernel field's per-pixel
PCA code."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from svblur.degradation import GaussianFieldBlur, KernelPCA
from svblur.errors import InputError
from svblur.models.ssr import fit_kernel_pca

from ..sr import NonBlindSRTask
from .stage1 import kernel_target

__all__ = ["KernelCodeSRTask"]

log = logging.getLogger(__name__)


class KernelCodeSRTask(NonBlindSRTask):
    """SSR stage 2: non-blind SR on the ground-truth kernel field's per-pixel PCA code.

    The network (an :class:`~svblur.models.RRDBSFT` with ``kernel_channels = n``) gets
    ``pca.encode(avg_pool(batch["kernels"]))``: the field averaged to the LR grid and
    encoded, exactly what :class:`~svblur.models.SVKR` gives it at inference
    (:meth:`SVKR.sr_condition <svblur.models.SVKR.sr_condition>`). The basis is fitted at
    construction from ``kernel_distribution`` (the degradation's
    :class:`~svblur.degradation.GaussianFieldBlur` settings, :func:`fit_kernel_pca`), or
    read from ``pca_path``; it lives in the buffers ``pca_mean``, ``pca_components`` and
    ``pca_explained``, so a checkpoint carries it and loading never refits. Loss and
    metrics: those of :class:`~svblur.systems.NonBlindSRTask` (L1, PSNR/SSIM-Y).

    Args:
        net: An :class:`~svblur.models.RRDBSFT` with ``kernel_channels`` set.
        kernel_distribution: ``GaussianFieldBlur`` arguments (``kernel_size``, ``model``,
            ``sigma_range``, ``sigma_cap``, ``aspect_range``, ``depth_guided``) the basis
            is fitted to.
        pca_path: A basis saved by :meth:`KernelPCA.save
            <svblur.degradation.KernelPCA.save>`, used instead of fitting.
        pca_kernels: Kernels drawn for the fit.
        pca_seed: Seed of that draw.
        **kwargs: See :class:`~svblur.systems.sr.SuperResolutionTask`.
    """

    def __init__(
        self,
        net: nn.Module,
        kernel_distribution: dict[str, Any] | None = None,
        pca_path: str | None = None,
        pca_kernels: int = 5000,
        pca_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        components = getattr(net, "kernel_channels", None)
        if components is None:
            raise InputError(
                "KernelCodeSRTask needs an RRDBSFT conditioned on kernel codes: set "
                "model.net.kernel_channels to the number of PCA components (MANet: 15)"
            )
        super().__init__(net, **kwargs)
        if pca_path:
            pca = KernelPCA.load(pca_path)
        elif kernel_distribution:
            blur = GaussianFieldBlur(**kernel_distribution)
            pca = fit_kernel_pca(blur, pca_kernels, int(components), pca_seed)
        else:
            raise InputError(
                "KernelCodeSRTask needs the kernel distribution to fit its PCA basis to "
                "(model.kernel_distribution, from degradation=gaussian_sv) or model.pca_path"
            )
        if pca.num_components != components:
            raise InputError(
                f"the PCA basis has {pca.num_components} components, the network takes "
                f"{components}: set model.net.kernel_channels={pca.num_components}"
            )
        pca.register_buffers(self)

    @property
    def pca(self) -> KernelPCA:
        """The kernel basis (from the buffers)."""
        return KernelPCA.from_buffers(self)

    def kernel_code(self, kernels: torch.Tensor, lr_size: tuple[int, int]) -> torch.Tensor:
        """The network's condition: ``(B, k*k, H, W)`` field -> ``(B, n, h, w)`` code."""
        target = kernel_target({"kernels": kernels}, self.pca_mean.numel(), lr_size)
        return self.pca.encode(target)

    def predict_maps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        lr = batch["lr"]
        if "kernels" not in batch:
            kernel_target(batch, 0, (0, 0))  # raises the error that names the fix
        code = self.kernel_code(batch["kernels"], (lr.shape[-2], lr.shape[-1]))
        return {"sr": self.net(lr, kernels=code.to(lr.dtype))}

    def forward(self, lr: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """SR ``(B, 3, H, W)`` of ``lr`` given its kernel field ``(B, k*k, H, W)``."""
        return self.net(lr, kernels=self.kernel_code(kernels, (lr.shape[-2], lr.shape[-1])))
