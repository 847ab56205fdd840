"""A compact per-pixel code of kernel fields: principal components of the kernels.

RRDB-SFT-style networks (MANet, SSR's non-blind SR) do not take a ``k*k`` kernel per pixel
but a short code: the kernel's coordinates in a PCA basis fitted to the kernels a
degradation draws (MANet: 15 components of 21x21 kernels). :class:`KernelPCA` fits that
basis, encodes fields ``(B, k*k, H, W) -> (B, n, H, W)`` and decodes them back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from svblur.checkpoints import read_checkpoint
from svblur.errors import InputError
from svblur.io import atomic_path

__all__ = ["KernelPCA"]


class KernelPCA:
    """Principal components of ``k x k`` kernels (row-major, as in kernel fields).

    Args:
        mean: Mean kernel ``(k*k,)``.
        components: Orthonormal basis ``(n, k*k)``, strongest first.
        explained: Share of the kernels' variance each component explains ``(n,)``.
    """

    def __init__(
        self, mean: torch.Tensor, components: torch.Tensor, explained: torch.Tensor
    ) -> None:
        if components.dim() != 2 or mean.shape != components.shape[1:]:
            raise InputError(
                f"KernelPCA needs mean (k*k,) and components (n, k*k), got "
                f"{tuple(mean.shape)} and {tuple(components.shape)}"
            )
        self.mean = mean.double()
        self.components = components.double()
        self.explained = explained.double()

    @property
    def kernel_size(self) -> int:
        return round(self.mean.numel() ** 0.5)

    @property
    def num_components(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, kernels: torch.Tensor | np.ndarray, num_components: int = 15) -> KernelPCA:
        """Fit to kernels ``(N, k*k)`` or ``(N, k, k)`` (exact SVD of the centred kernels)."""
        data = torch.as_tensor(np.asarray(kernels) if isinstance(kernels, np.ndarray) else kernels)
        data = data.double().reshape(data.shape[0], -1)
        if data.shape[0] < 2 or not 1 <= num_components <= data.shape[1]:
            raise InputError(
                f"KernelPCA.fit needs at least 2 kernels and 1 <= num_components <= k*k, got "
                f"{data.shape[0]} kernels of {data.shape[1]} taps and {num_components}"
            )
        mean = data.mean(0)
        _, singular, vh = torch.linalg.svd(data - mean, full_matrices=False)
        variance = singular**2
        explained = variance / variance.sum().clamp(min=1e-300)
        return cls(mean, vh[:num_components], explained[:num_components])

    @classmethod
    def fit_degradation(
        cls,
        draw: Callable[[np.random.Generator], np.ndarray],
        num_kernels: int = 5000,
        num_components: int = 15,
        seed: int = 0,
    ) -> KernelPCA:
        """Fit to ``num_kernels`` kernels drawn by ``draw(rng) -> (k, k)`` (e.g. a
        degradation's kernel sampler), from a generator seeded by ``seed``."""
        rng = np.random.default_rng(seed)
        kernels = np.stack([np.asarray(draw(rng), np.float64).ravel() for _ in range(num_kernels)])
        return cls.fit(kernels, num_components)

    def encode(self, kernels: torch.Tensor) -> torch.Tensor:
        """Field ``(B, k*k, H, W)`` (or kernels ``(N, k*k)``) -> codes ``(B, n, H, W)``."""
        basis = self.components.to(kernels)
        mean = self.mean.to(kernels).reshape(*((1, -1) + (1,) * (kernels.dim() - 2)))
        return torch.einsum("nk,bk...->bn...", basis, kernels - mean)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, n, H, W)`` (or ``(N, n)``) -> kernels ``(B, k*k, H, W)``."""
        basis = self.components.to(codes)
        mean = self.mean.to(codes).reshape(*((1, -1) + (1,) * (codes.dim() - 2)))
        return torch.einsum("nk,bn...->bk...", basis, codes) + mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "components": self.components, "explained": self.explained}

    #: Names of the basis' tensors as a module's buffers (:meth:`register_buffers`).
    BUFFERS: tuple[str, ...] = ("pca_mean", "pca_components", "pca_explained")

    def register_buffers(self, module: nn.Module) -> None:
        """Store the basis in ``module``'s buffers :attr:`BUFFERS` (copies), so that its
        checkpoints carry the basis."""
        for name, tensor in zip(self.BUFFERS, self.state_dict().values(), strict=True):
            module.register_buffer(name, tensor.clone())

    @classmethod
    def buffers_missing(cls, state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
        """The names of :attr:`BUFFERS` that ``state`` (a module or a state dict) lacks."""
        return [name for name in cls.BUFFERS if cls._tensors(state).get(name) is None]

    @classmethod
    def from_buffers(cls, state: Mapping[str, torch.Tensor] | nn.Module) -> KernelPCA:
        """The basis held in the buffers :attr:`BUFFERS` of a module or a state dict."""
        tensors = cls._tensors(state)
        return cls(*(tensors[name] for name in cls.BUFFERS))

    @classmethod
    def _tensors(cls, state: Mapping[str, torch.Tensor] | nn.Module) -> Mapping[str, Any]:
        if isinstance(state, Mapping):
            return state
        return {name: getattr(state, name, None) for name in cls.BUFFERS}

    def save(self, path: str | Path) -> None:
        """Save to a ``.pt`` file (tensors only; loads with ``weights_only=True``)."""
        with atomic_path(path) as temp:
            torch.save(self.state_dict(), temp)

    @classmethod
    def load(cls, path: str | Path) -> KernelPCA:
        """Load a basis written by :meth:`save`."""
        state = read_checkpoint(path)
        missing = {"mean", "components", "explained"} - set(state)
        if missing:
            raise InputError(f"{path}: not a KernelPCA basis (missing {sorted(missing)})")
        return cls(state["mean"], state["components"], state["explained"])
