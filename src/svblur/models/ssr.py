"""SSR's spatially variant kernel refinement (SVKR, Alg. 1) and its kernel PCA basis.

SVKR alternates three networks: a monocular depth estimator ``DE`` (a
:class:`~svblur.models.DepthEstimator`), a depth-informed kernel estimator ``KE``
(:class:`~svblur.models.DKENet`) and a non-blind SR network ``NBSR`` conditioned on the
kernel field (:class:`~svblur.models.RRDBSFT` with ``kernel_channels``). Depth estimated
from a sharper SR image gives better kernels, which give a sharper SR image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from svblur.degradation import GaussianFieldBlur, KernelPCA, gaussian_kernel, imresize

from .depth import DepthEstimator

__all__ = ["SVKR", "ConstantDepth", "fit_kernel_pca"]

Update = Literal["alg1", "eq2"]


def fit_kernel_pca(
    blur: GaussianFieldBlur,
    num_kernels: int = 5000,
    num_components: int = 15,
    seed: int = 0,
    depth_guided: bool | None = None,
) -> KernelPCA:
    """Fit a :class:`~svblur.degradation.KernelPCA` basis to the kernels ``blur`` draws.

    Each kernel is drawn the way :class:`~svblur.degradation.GaussianFieldBlur` draws a
    pixel's kernel, with ``theta`` uniform in ``[0, pi)`` and ``sigma_y = aspect *
    sigma_x``, ``aspect`` uniform in ``blur.aspect_bounds`` (``1`` for isotropic blur):

    - depth-guided, ``model="camera"``: ``sigma_x = blur.cap * u`` with ``u`` uniform in
      ``[0, 1]`` (the camera's ``clip(A |1/z_f - 1/z|, 0, cap)`` over a scene; its
      true distribution depends on the depth maps, uniform is the stand-in);
    - depth-guided, ``model="linear"``: ``sigma_max`` uniform in ``sigma_range`` and
      ``sigma_x = sigma_max * u`` (the pixel's distance from the focal plane relative to
      the scene's largest); this also covers space-invariant draws (``u = 1``);
    - without depth: as :func:`~svblur.degradation.gaussian_field` draws its Gaussians,
      ``sigma_x`` uniform in ``[sigma_range[0], sigma_max]``, ``sigma_y = sigma_x`` when the
      blur is isotropic, else uniform in ``[sigma_range[0], sigma_x]``. The smooth blends
      between those Gaussians are not drawn: they are convex combinations of them, close
      to the span the basis captures.

    Args:
        blur: The degradation (its ``kernel_size``, ``model``, ``sigma_range``, ``cap``,
            ``aspect_bounds``).
        num_kernels: Kernels drawn.
        num_components: Basis size ``n`` (MANet: 15).
        seed: Seed of the generator the kernels are drawn from.
        depth_guided: Which of the draws above; ``None``: ``blur.depth_guided``.

    Returns:
        The fitted basis (``k*k`` taps, ``n`` components).
    """
    size = int(blur.kernel_size)
    low, high = (float(v) for v in blur.sigma_range)
    aspect_low, aspect_high = blur.aspect_bounds
    guided = blur.depth_guided if depth_guided is None else depth_guided
    camera = guided and blur.model == "camera"

    def draw(rng: np.random.Generator) -> np.ndarray:
        if camera:
            sigma_x = blur.cap * float(rng.uniform())
            sigma_y = float(rng.uniform(aspect_low, aspect_high)) * sigma_x
        elif guided:
            sigma_max = float(rng.uniform(low, high)) if high > low else low
            sigma_x = sigma_max * float(rng.uniform())
            aspect = float(rng.uniform(aspect_low, aspect_high))
            sigma_y = aspect * sigma_x
        else:
            sigma_max = float(rng.uniform(low, high)) if high > low else low
            sigma_x = float(rng.uniform(low, sigma_max))
            sigma_y = sigma_x if blur.isotropic else low + (sigma_x - low) * float(rng.uniform())
        theta = float(rng.uniform(0.0, math.pi))
        return gaussian_kernel(size, sigma_x, sigma_y, theta)

    return KernelPCA.fit_degradation(draw, num_kernels, num_components, seed)


class ConstantDepth(DepthEstimator):
    """No depth: every pixel at the same depth (all zeros, what :func:`normalize_depth
    <svblur.models.depth.normalize_depth>` makes of a constant map, and the defocus of a
    scene all at the focal plane).

    The "without depth" variant of SSR's kernel estimation (the paper's Table 2 idea): a
    DKENet trained or run with it sees no depth information. It has no parameters.

    Shape:
        ``image (B, C, H, W) -> (B, 1, H, W)`` zeros of the image's dtype.
    """

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        if image.dim() != 4:
            raise ValueError(
                f"ConstantDepth expects a batch of images (B, C, H, W), got {tuple(image.shape)}"
            )
        return image.new_zeros(image.shape[0], 1, image.shape[-2], image.shape[-1])


class SVKR(nn.Module):
    """Spatially variant kernel refinement (SSR, Alg. 1): depth, kernels and SR in turn.

    ``I[0]`` is the LR image upscaled bicubically (:func:`svblur.degradation.imresize`,
    clamped to ``[0, 1]``): Alg. 1 starts from ``I[0] = LR``, and the upscaled image is that
    image at the size every later ``I[t]`` has. Then ``D[0] = DE(I[0])``, ``K[0] =
    KE(LR, D[0])``, and for ``t = 0 .. T-1``::

        D[t+1] = DE(I[t])
        E[t+1] = KE(LR, D[t+1])                                  (the fresh estimate)
        K[t+1] = gamma * E[t+1] + (1 - gamma) * K[t]             (update="alg1", Alg. 1)
        K[t+1] = gamma * E[t+1] + (1 - gamma) * E[t]             (update="eq2", Eq. 2)
        I[t+1] = NBSR(LR, K[t+1])

    with ``E[0] = K[0]``. Eq. 2 as printed, ``K[t+1] = gamma K[t] + (1 - gamma) K[t-1]``,
    would never take a new estimate in; it is read as blending the two latest *estimates*
    (a two-tap filter), where Alg. 1 blends the new estimate with the running blend (an
    exponential moving average). Both rules start alike: at ``t = 0``, ``D[1] = DE(I[0]) =
    D[0]`` and so ``E[1] = K[0]`` and ``K[1] = K[0]`` (computed once, not re-estimated);
    they first differ at ``t = 2``. Blends of kernels that sum to 1 sum to 1.

    The SR network gets the kernel field (``RRDBSFT(kernel_channels=k*k)``), or, with
    ``pca``, its per-pixel PCA code as MANet's RRDB-SFT takes it
    (``RRDBSFT(kernel_channels=pca.num_components)``): the field is averaged to the LR grid
    and encoded, ``pca.encode(avg_pool(K))`` (``= avg_pool(pca.encode(K))``, encoding is
    affine). The basis is stored in buffers (saved with the state dict).

    The depth estimator sees ``I[t]`` clamped to ``[0, 1]`` (the SR output is not clamped).
    Gradients flow through the whole loop (nothing is detached); freeze or detach parts in
    the training system as the schedule requires.

    Args:
        kernel_estimator: ``KE(lr (B, 3, h, w), depth (B, 1, H, W)) -> (B, k*k, H, W)``
            normalized kernels, e.g. :class:`~svblur.models.DKENet`.
        depth_estimator: ``DE(image, depth=None) -> (B, 1, H, W)`` depth in the form the
            kernel estimator was trained on, a :class:`~svblur.models.DepthEstimator`.
        sr_net: ``NBSR(lr, kernels=...) -> (B, 3, H, W)``, e.g. an
            :class:`~svblur.models.RRDBSFT` with ``kernel_channels`` set.
        iterations: ``T`` (SSR: 3), at least 1.
        gamma: Weight of the new estimate (SSR: 0.9), in ``[0, 1]``.
        update: ``"alg1"`` or ``"eq2"`` (see above).
        pca: Kernel basis, or the path of one saved by :meth:`KernelPCA.save
            <svblur.degradation.KernelPCA.save>` (for configs), or the number of its
            components ``n``: zero buffers of the basis' shapes, to be filled by
            ``load_state_dict`` (rebuilding a saved SVKR without refitting); ``None``: the
            SR network gets the field itself.
        scale: SR factor; ``None``: ``sr_net.scale`` (else ``kernel_estimator.scale``).

    Shape:
        ``lr (B, 3, h, w)`` in ``[0, 1]`` -> ``{"sr": (B, 3, H, W), "kernels": (B, k*k, H, W),
        "depth": (B, 1, H, W), "sr_steps": [T x (B, 3, H, W)], "kernel_steps": [T x (B, k*k,
        H, W)]}`` with ``H, W = scale * h, scale * w``: the last SR image ``I[T]``, kernels
        ``K[T]`` and depth ``D[T]``, and every ``I[1..T]`` and ``K[1..T]`` (``sr_steps[-1]
        is sr``, ``kernel_steps[-1] is kernels``).
    """

    def __init__(
        self,
        kernel_estimator: nn.Module,
        depth_estimator: DepthEstimator,
        sr_net: nn.Module,
        iterations: int = 3,
        gamma: float = 0.9,
        update: Update = "alg1",
        pca: KernelPCA | str | Path | int | None = None,
        scale: int | None = None,
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(
                f"iterations must be >= 1 (each one runs the SR net), got {iterations}"
            )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if update not in ("alg1", "eq2"):
            raise ValueError(f"update must be 'alg1' or 'eq2', got {update!r}")
        scale = scale or getattr(sr_net, "scale", None) or getattr(kernel_estimator, "scale", None)
        if not scale:
            raise ValueError("SVKR needs the SR factor: pass scale=... (sr_net has no .scale)")
        self.kernel_estimator = kernel_estimator
        self.depth_estimator = depth_estimator
        self.sr_net = sr_net
        self.iterations = int(iterations)
        self.gamma = float(gamma)
        self.update = update
        self.scale = int(scale)
        code_channels = getattr(sr_net, "kernel_channels", None)
        if isinstance(pca, (str, Path)):
            pca = KernelPCA.load(pca)
        elif isinstance(pca, int) and not isinstance(pca, bool):
            taps = getattr(kernel_estimator, "kernel_size", None)
            if not taps or pca < 1:
                raise ValueError(
                    "pca=<number of components> needs a kernel estimator with .kernel_size "
                    f"and a positive count, got {pca}"
                )
            zeros = torch.zeros(int(taps) ** 2, dtype=torch.float64)
            pca = KernelPCA(zeros, zeros.repeat(pca, 1), zeros.new_zeros(pca))
        if pca is None:
            for name in KernelPCA.BUFFERS:
                self.register_buffer(name, None)
        else:
            if code_channels is not None and code_channels != pca.num_components:
                raise ValueError(
                    f"sr_net takes {code_channels} kernel channels but the PCA basis has "
                    f"{pca.num_components} components: build it with "
                    f"RRDBSFT(kernel_channels={pca.num_components})"
                )
            pca.register_buffers(self)

    @property
    def pca(self) -> KernelPCA | None:
        """The kernel basis (from the buffers), or ``None``."""
        if self.pca_components is None:
            return None
        return KernelPCA.from_buffers(self)

    def initial_image(self, lr: torch.Tensor) -> torch.Tensor:
        """``I[0]``: ``lr`` upscaled by ``scale`` (MATLAB bicubic), clamped to ``[0, 1]``."""
        return imresize(lr, self.scale).clamp(0.0, 1.0)

    def sr_condition(self, kernels: torch.Tensor, lr_size: tuple[int, int]) -> torch.Tensor:
        """What the SR network is conditioned on: the field, or its PCA code on the LR grid
        ``(B, n, h, w)``."""
        pca = self.pca
        if pca is None:
            return kernels
        return pca.encode(F.adaptive_avg_pool2d(kernels, lr_size))

    def blend(
        self, estimate: torch.Tensor, kernels: torch.Tensor, previous_estimate: torch.Tensor
    ) -> torch.Tensor:
        """``K[t+1]`` from ``E[t+1]``, ``K[t]`` and ``E[t]`` by the ``update`` rule."""
        older = kernels if self.update == "alg1" else previous_estimate
        return self.gamma * estimate + (1.0 - self.gamma) * older

    def forward(
        self, lr: torch.Tensor, depth: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Run ``iterations`` refinement steps.

        Args:
            lr: ``(B, 3, h, w)`` in ``[0, 1]``.
            depth: The data set's depth ``(B, 1, H', W')``, handed to the depth estimator
                (read only by :class:`~svblur.models.GroundTruthDepth`).

        Returns:
            ``{"sr", "kernels", "depth", "sr_steps", "kernel_steps"}``, see the class
            docstring.
        """
        if lr.dim() != 4:
            raise ValueError(
                f"SVKR expects a batch of LR images (B, 3, h, w), got shape {tuple(lr.shape)}"
            )
        lr_size = (lr.shape[-2], lr.shape[-1])
        image = self.initial_image(lr)
        depth_map = self.depth_estimator(image, depth=depth)
        kernels = self.kernel_estimator(lr, depth_map)  # K[0] = E[0]
        estimate = kernels
        steps: list[torch.Tensor] = []
        kernel_steps: list[torch.Tensor] = []
        for t in range(self.iterations):
            if t > 0:  # at t = 0, D[1] = D[0] and E[1] = K[0] = K[1]
                depth_map = self.depth_estimator(image.clamp(0.0, 1.0), depth=depth)
                new_estimate = self.kernel_estimator(lr, depth_map)
                kernels = self.blend(new_estimate, kernels, estimate)
                estimate = new_estimate
            image = self.sr_net(lr, kernels=self.sr_condition(kernels, lr_size))
            steps.append(image)
            kernel_steps.append(kernels)
        return {
            "sr": image,
            "kernels": kernels,
            "depth": depth_map,
            "sr_steps": steps,
            "kernel_steps": kernel_steps,
        }
