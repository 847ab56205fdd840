"""What the pixel-space :class:`~svblur.models.DiffusionSR` and the
:class:`~svblur.models.LatentDiffusionSR` share: the condition estimator, the input checks,
the sampling schedulers, the padding to the size multiple and the tiled reverse-diffusion
loop. Each network keeps what differs: its encoders, its denoiser and its tile windows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from svblur.errors import InputError
from svblur.ops.tiles import tile_starts, tile_weights

from .depth import resize_depth

SAMPLERS = ("ddim", "dpm_solver", "ddpm")

#: A tile of the working grid: ``(rows, cols)`` slices and its weight ``(1, 1, th, tw)``.
Tile = tuple[tuple[slice, slice], torch.Tensor]


def check_sampler(name: str) -> None:
    """Raise an :class:`InputError` unless ``name`` is one of :data:`SAMPLERS`."""
    if name not in SAMPLERS:
        raise InputError(f"sampler must be 'ddim', 'dpm_solver' or 'ddpm', got {name!r}")


def make_scheduler(name: str, config: Any, **dpm_solver_options: Any) -> Any:
    """A fresh ``name`` scheduler from a diffusers scheduler ``config``."""
    check_sampler(name)
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpm_solver":
        return DPMSolverMultistepScheduler.from_config(config, **dpm_solver_options)
    return DDPMScheduler.from_config(config)


def sampling_tiles(
    size: Sequence[int],
    tile_size: int | None,
    overlap: int,
    per_lr_pixel: float,
    unit: int,
    smooth: bool = False,
) -> list[Tile]:
    """Tiles of the working grid ``size``: side ``tile_size`` LR pixels (a multiple of
    ``unit`` grid pixels), ramps across the overlap (``smooth``: separable smoothsteps,
    else linear); ``tile_size=None``: one tile."""
    height, width = int(size[0]), int(size[1])
    if tile_size is None:
        return [((slice(0, height), slice(0, width)), torch.ones(1, 1, height, width))]
    tile = max(unit, int(tile_size * per_lr_pixel) // unit * unit)
    ramp = max(0, min(round(overlap * per_lr_pixel), tile - 1))
    th, tw = min(tile, height), min(tile, width)
    tiles = []
    for top in tile_starts(height, th, min(ramp, th - 1)):
        for left in tile_starts(width, tw, min(ramp, tw - 1)):
            edges = (top > 0, top + th < height, left > 0, left + tw < width)
            if smooth:
                rows = _smoothstep(tile_weights((th, 1), ramp, (*edges[:2], False, False))[:, 0])
                cols = _smoothstep(tile_weights((1, tw), ramp, (False, False, *edges[2:]))[0])
                weight = rows[:, None] * cols[None, :]
            else:
                weight = tile_weights((th, tw), ramp, edges)
            window = (slice(top, top + th), slice(left, left + tw))
            tiles.append((window, weight.clamp(min=1e-3)[None, None]))
    return tiles


class ConditionedDiffusion(nn.Module):
    """Base of the diffusion SR networks conditioned on kernels and depth.

    Subclasses set ``scale``, ``kernel_size``, ``levels`` (UNet levels), ``vae_factor``,
    ``estimator`` (or ``None``), ``freeze_estimator``, ``sampler`` and ``sample_steps``, and
    give ``condition_inputs``, ``denoise``, ``decode_image``, :meth:`predict_epsilon`,
    :meth:`make_sampler` and :meth:`tile_context`.
    """

    scale: int
    kernel_size: int
    levels: int
    vae_factor: int
    estimator: nn.Module | None
    freeze_estimator: bool
    sampler: str
    sample_steps: int

    #: The key of :meth:`condition_inputs` that holds the working grid (the image the
    #: denoiser works on, or its latent).
    working_key = "image"
    #: What the working grid is called in error messages.
    working_grid = "working-space"
    #: Blend tiles with smoothstep ramps (else linear ones).
    smooth_tiles = False

    def __init__(self, condition: str, estimator: nn.Module | None, sampler: str) -> None:
        """Check the options that both networks take (the subclass keeps them)."""
        super().__init__()
        if condition not in ("ground_truth", "svkr"):
            raise ValueError(f"condition must be 'ground_truth' or 'svkr', got {condition!r}")
        if condition == "svkr" and estimator is None:
            raise ValueError("condition='svkr' needs an estimator (an SVKR)")
        check_sampler(sampler)

    @property
    def size_multiple(self) -> int:
        """HR sizes must be multiples of this (the VAE's and the UNet's down-samplings)."""
        return self.vae_factor * 2 ** (self.levels - 1)

    def estimate_conditions(
        self, lr: torch.Tensor, depth: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Kernels and depth from the estimator (``condition="svkr"``).

        Args:
            lr: ``(B, 3, h, w)`` in ``[0, 1]``.
            depth: The data set's depth, handed to the estimator (read by
                :class:`~svblur.models.GroundTruthDepth` only).

        Returns:
            ``{"kernels": (B, k*k, H, W), "depth": (B, 1, H, W)}``.
        """
        if self.estimator is None:
            raise InputError(
                f"this {type(self).__name__} has no condition estimator (it was trained "
                "with condition=ground_truth): pass kernels and depth, or train with "
                "model.condition=svkr"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_estimator):
            out = self.estimator(lr, depth=depth)
        return {"kernels": out["kernels"], "depth": out["depth"]}

    def check_conditions(
        self, lr: torch.Tensor, depth: torch.Tensor, kernels: torch.Tensor
    ) -> None:
        """Raise an :class:`InputError` unless the shapes fit :meth:`condition_inputs`."""
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise InputError(f"lr must be (B, 3, h, w), got {tuple(lr.shape)}")
        taps = self.kernel_size**2
        if kernels.dim() != 4 or kernels.shape[1] != taps:
            raise InputError(
                f"kernels must be (B, {taps}, H, W) for kernel_size={self.kernel_size}, got "
                f"{tuple(kernels.shape)}; set model.net.kernel_size to the data's kernel size"
            )
        if depth.dim() != 4 or depth.shape[1] != 1:
            raise InputError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")
        if not lr.shape[0] == depth.shape[0] == kernels.shape[0]:
            raise InputError(
                f"lr, depth and kernels must have the same batch size, got {lr.shape[0]}, "
                f"{depth.shape[0]} and {kernels.shape[0]}"
            )
        hr_size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        multiple = self.size_multiple
        if hr_size[0] % multiple or hr_size[1] % multiple:
            raise InputError(
                f"HR size {hr_size} must be a multiple of {multiple} (the VAE's and the "
                "UNet's down-samplings); crop the LR image to a multiple of "
                f"{multiple // math.gcd(multiple, self.scale)} pixels or use "
                f"{type(self).__name__}.sample (pads)"
            )

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        lr: torch.Tensor,
        depth: torch.Tensor,
        kernels: torch.Tensor,
    ) -> dict[str, Any]:
        """Predict the noise (training); see the subclass docstring for shapes."""
        inputs = self.condition_inputs(lr, depth, kernels)
        grid = inputs[self.working_key]
        if noisy.shape != grid.shape:
            raise InputError(
                f"noisy input {tuple(noisy.shape)} does not match the {self.working_grid} "
                f"size {tuple(grid.shape)} of the LR image"
            )
        return self.predict_epsilon(noisy, timesteps, inputs)

    def predict_epsilon(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """:meth:`forward` once the inputs are checked: ``{"epsilon", "features"}``."""
        raise NotImplementedError

    def make_sampler(self, name: str | None = None) -> Any:
        """A fresh sampling scheduler (``name``: default :attr:`sampler`)."""
        raise NotImplementedError

    def tile_context(self, crop: dict[str, torch.Tensor]) -> tuple[Any, ...]:
        """What :meth:`denoise` takes after the noisy input and the timesteps, for one
        tile's crop of :meth:`condition_inputs` (computed once per tile)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        lr: torch.Tensor,
        depth: torch.Tensor | None = None,
        kernels: torch.Tensor | None = None,
        steps: int | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        tile_size: int | None = None,
        tile_overlap: int = 8,
        eta: float = 0.0,
        **options: Any,
    ) -> torch.Tensor:
        """Super-resolve ``lr`` by reverse diffusion (call ``.eval()`` first).

        Args:
            lr: ``(B, 3, h, w)`` in ``[0, 1]``, any size (padded by reflection to
                :attr:`size_multiple` / ``scale`` and cropped back).
            depth: Relative depth ``(B, 1, *, *)`` in ``[0, 1]``; ``None``: estimated
                (with ``kernels``) by the estimator.
            kernels: Kernel field ``(B, k*k, *, *)``; ``None``: estimated.
            steps: Sampling steps (default :attr:`sample_steps`).
            seed: Seed of the CPU generator that draws all noise, when ``generator`` is
                not given. The same seed gives the same image (on the same device).
            generator: A CPU ``torch.Generator`` to draw the noise from instead.
            sampler: ``ddim``, ``dpm_solver`` or ``ddpm`` (default :attr:`sampler`).
            tile_size: Tile side in LR pixels (``None``: the whole working grid at once).
            tile_overlap: Overlap of neighbouring tiles in LR pixels.
            eta: DDIM's eta (0: deterministic given the starting noise).
            options: Passed on to :meth:`condition_inputs` and :meth:`decode_image`.

        Returns:
            ``(B, 3, scale * h, scale * w)`` in ``[0, 1]``.
        """
        lr, depth, kernels, generator, hr_size = self._prepare_sampling(
            lr, depth, kernels, seed, generator, tile_size, tile_overlap
        )
        inputs = self.condition_inputs(lr, depth, kernels, **options)
        like = inputs[self.working_key]
        per_lr_pixel = self.scale / self.vae_factor  # working-grid pixels per LR pixel
        unit = 2 ** (self.levels - 1)
        tiles = [
            (window, weight.to(lr.device, like.dtype))
            for window, weight in sampling_tiles(
                like.shape[-2:], tile_size, tile_overlap, per_lr_pixel, unit, self.smooth_tiles
            )
        ]
        contexts = [
            self.tile_context({k: v[(..., *w)] for k, v in inputs.items()}) for w, _ in tiles
        ]

        def predict(index: int, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return self.denoise(x, timesteps, *contexts[index])

        x = self._reverse_diffusion(
            self.make_sampler(sampler), like, tiles, predict, generator, steps, eta
        )
        return self.decode_image(x, **options)[..., : hr_size[0], : hr_size[1]]

    def _prepare_sampling(
        self,
        lr: torch.Tensor,
        depth: torch.Tensor | None,
        kernels: torch.Tensor | None,
        seed: int | None,
        generator: torch.Generator | None,
        tile_size: int | None,
        tile_overlap: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator, tuple[int, int]]:
        """:meth:`sample`'s set-up: the conditions (estimated where absent), all padded by
        reflection to the size multiple, the noise generator and the HR size to crop to."""
        if tile_size is not None and not 0 <= tile_overlap < tile_size:
            raise InputError(
                f"tile_overlap must be in [0, tile_size), got {tile_overlap} with tile_size "
                f"{tile_size} (LR pixels)"
            )
        if depth is None or kernels is None:
            estimated = self.estimate_conditions(lr)
            depth = estimated["depth"] if depth is None else depth
            kernels = estimated["kernels"] if kernels is None else kernels
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(0 if seed is None else int(seed))
        height, width = lr.shape[-2:]
        hr_size = (height * self.scale, width * self.scale)
        lr_multiple = self.size_multiple // math.gcd(self.size_multiple, self.scale)
        pad_h, pad_w = (-height) % lr_multiple, (-width) % lr_multiple
        if pad_h or pad_w:
            lr = _pad(lr, pad_h, pad_w)
            padded_hr = ((height + pad_h) * self.scale, (width + pad_w) * self.scale)
            depth = _pad_to_grid(resize_depth(depth, hr_size), padded_hr)
            kernels = _pad_to_grid(resize_depth(kernels, hr_size), padded_hr)
        return lr, depth, kernels, generator, hr_size

    def _reverse_diffusion(
        self,
        scheduler: Any,
        like: torch.Tensor,
        tiles: Sequence[Tile],
        predict: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
        generator: torch.Generator,
        steps: int | None,
        eta: float,
    ) -> torch.Tensor:
        """Denoise noise shaped like ``like`` with ``scheduler``; ``predict(index, x,
        timesteps)`` is the denoiser on tile ``index``, whose predictions are blended by
        the tiles' weights."""
        scheduler.set_timesteps(int(steps or self.sample_steps), device=like.device)
        noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        x = noise.to(device=like.device, dtype=like.dtype) * scheduler.init_noise_sigma
        options: dict[str, Any] = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            prediction = torch.zeros_like(x)
            total = torch.zeros_like(x[:, :1])
            timesteps = t.to(x.device).expand(x.shape[0])
            for index, (window, weight) in enumerate(tiles):
                at = (slice(None), slice(None), *window)
                prediction[at] += predict(index, model_input[at], timesteps) * weight
                total[at] += weight
            x = scheduler.step(prediction / total, t, x, generator=generator, **options)
            x = x.prev_sample
        return x


def _smoothstep(ramp: torch.Tensor) -> torch.Tensor:
    """Smoothstep of a linear ramp in ``[0, 1]`` (zero slope at both ends)."""
    return ramp * ramp * (3 - 2 * ramp)


def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _pad_to_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _pad(x, size[0] - x.shape[-2], size[1] - x.shape[-1])
