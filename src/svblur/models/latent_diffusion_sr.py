"""SSR's diffusion SR as the paper describes it: a pretrained latent diffusion prior,
frozen, steered through AMF by the LR image, the depth map and the kernel field.

:class:`LatentDiffusionSR` wraps a Stable Diffusion ``UNet2DConditionModel`` and its
``AutoencoderKL`` (SSR and StableSR start from Stable Diffusion 2.1-base), read from a
local diffusers folder by :meth:`LatentDiffusionSR.from_pretrained`. What it adds:

- **LR encoder.** The LR image, upscaled to the output size by MATLAB bicubic
  (:func:`svblur.degradation.imresize`), is encoded into the latent space by the VAE and
  then by a time-aware half UNet (:class:`TimeAwareEncoder`: input blocks, middle block,
  feature-translate blocks, as StableSR's encoder), which gives features at every
  resolution level of the UNet. It is the widest encoder (SSR: the LR image is the primary
  modality).
- **Depth and kernel encoders.** Smaller half UNets without a timestep
  (:class:`~svblur.models.ConditionEncoder`) take the relative depth and the kernel field,
  both resized to the latent grid; the field ``(k*k, H, W)`` is first compressed per pixel
  by a learned 1x1 convolution (as in :class:`~svblur.models.DiffusionSR`).
- **Fusion (Eq. 3).** At every level a :class:`~svblur.nn.MultiModalAMF` fuses the three
  modalities: each modality's AMF rescales and shifts the batch-normalised LR features
  (our choice of ``F_in``: the primary modality's features; SSR does not name the map
  AMF normalises), and the three outputs are averaged.
- **Injection.** The fused map of a level modulates the residual branch of every
  ``ResnetBlock2D`` of that level (down, middle and up blocks), SPADE-style,
  ``h * (1 + gamma) + beta`` (:class:`SPADEInjection`), as StableSR modulates its residual
  blocks. It runs as a forward hook on each block's ``conv2`` (the last layer of the
  residual branch): diffusers' UNet is used unchanged, its code neither copied nor edited.
  Unlike StableSR's SPADE the branch is not normalised first: a normalisation would change
  the pretrained UNet at initialisation.
- **Zero initialisation (our choice).** The last layers of every injection (the two convs
  giving ``gamma`` and ``beta``) start at zero, as ControlNet's "zero convolutions": at
  initialisation :meth:`~LatentDiffusionSR.predict_noise` equals
  ``unet(latents, t, encoder_hidden_states=prompt_embedding).sample`` exactly, and training
  starts from the pretrained prior.
- **Cross-attention.** The UNet's cross-attention receives a fixed embedding, the buffer
  ``prompt_embedding`` (kept in checkpoints): the empty prompt encoded by the folder's
  ``text_encoder/`` (with its ``tokenizer/``; needs ``transformers``) when it has one,
  else zeros.

**Frozen.** The UNet and the VAE are in eval mode (kept through ``train()``), have
``requires_grad=False`` and are left out of :meth:`~torch.nn.Module.state_dict`: a
checkpoint holds the trainable parts (encoders, AMFs, injections), the prompt embedding
and the SVKR, and the frozen weights are re-read from the pretrained folder, whose path
the checkpoint records (as ``pretrained``). Loading a state dict without them is
strict about everything else.

**Sampling.** DDIM or DPM-Solver++ (or DDPM) built from the folder's scheduler config,
then VAE decoding. Large images are denoised in overlapping latent tiles at every step
(each tile's prediction weighted by a linear ramp across the overlap,
:func:`svblur.ops.tiles.tile_weights`); the starting noise is one tensor drawn for the
whole latent, so every tile sees the same noise, and the VAE encodes and decodes with
its own tiling (``enable_tiling``). The same seed gives the same image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    UNet2DConditionModel,
)
from torch import nn

from svblur.degradation import imresize
from svblur.errors import InputError
from svblur.nn import MultiModalAMF

from .depth import resize_depth
from .diffusion_sampling import ConditionedDiffusion, make_scheduler
from .diffusion_sr import (
    MODALITIES,
    Condition,
    ConditionEncoder,
    Sampler,
)
from .latent_conditioning import SPADEInjection, TimeAwareEncoder
from .sd_folder import empty_prompt, load_frozen, resolve_folder, scheduler_config

__all__ = ["LatentDiffusionSR", "SPADEInjection", "TimeAwareEncoder"]

_FROZEN = ("unet", "vae")


def _resnet_sites(unet: UNet2DConditionModel) -> list[tuple[str, nn.Module, int]]:
    """``(name, block, level)`` of every residual block of the UNet's down, middle and up
    blocks; level ``l`` works at ``1 / 2**l`` of the latent size."""
    last = len(unet.config.block_out_channels) - 1
    blocks = [(f"down_blocks.{i}", block, i) for i, block in enumerate(unet.down_blocks)]
    if unet.mid_block is not None:
        blocks.append(("mid_block", unet.mid_block, last))
    blocks += [(f"up_blocks.{i}", block, last - i) for i, block in enumerate(unet.up_blocks)]
    return [
        (f"{name}.resnets.{j}", resnet, level)
        for name, block, level in blocks
        for j, resnet in enumerate(block.resnets)
    ]


# ---------------------------------------------------------------------- the network


class LatentDiffusionSR(ConditionedDiffusion):
    """SSR's diffusion SR on a frozen, pretrained Stable Diffusion (see the module docstring).

    Build it with :meth:`from_pretrained` (or Hydra: ``_target_:
    svblur.models.LatentDiffusionSR`` with ``pretrained: DIR``). Training:
    :meth:`encode_image` gives the scaled latent ``x0``, :attr:`noise_scheduler` (DDPM,
    from the folder's scheduler config) noises it and :meth:`forward` predicts the noise
    (the UNet's target: the noise for an epsilon model such as SD 2.1-base).
    Inference: :meth:`sample`.

    With ``condition="svkr"`` the network carries its condition estimator (an
    :class:`~svblur.models.SVKR`), used by :meth:`estimate_conditions` (and so by
    ``svblur-predict``) and, with ``freeze_estimator``, frozen for real. With
    ``condition="ground_truth"`` the caller passes kernels and depth (an oracle when they
    are the data's true ones) and ``estimator`` is not kept.

    Args:
        pretrained: A local diffusers Stable Diffusion folder (``unet/``, ``vae/``,
            ``scheduler/``; optional ``text_encoder/`` + ``tokenizer/``), or a hub id with
            ``allow_download=True``.
        scale: SR factor.
        kernel_size: Side ``k`` of the kernel field's kernels (``k*k`` channels).
        encoder_channels: Width per UNet level of each condition encoder, by modality
            (``kernel``, ``depth``, ``lr``); ``None``: half the UNet's widths for ``lr``,
            a quarter for ``kernel`` and ``depth`` (multiples of ``norm_num_groups``).
        encoder_layers: Residual blocks per level of the LR encoder (StableSR: 2); the
            depth and kernel encoders have one.
        encoder_attention: Self-attention in the LR encoder's input blocks.
        encoder_mid_attention: Self-attention in the LR encoder's middle block.
        attention_head_dim: Channels per attention head of the LR encoder.
        norm_num_groups: GroupNorm groups of the encoders; ``None``: the UNet's.
        kernel_code_channels: Channels of the learned per-pixel kernel code.
        amf_hidden: Hidden width of the AMF MLPs (SSR: 128).
        injection_hidden: Hidden width of each :class:`SPADEInjection` (StableSR: 128).
        sampler: Default sampler: ``ddim`` (eta 0: deterministic), ``dpm_solver``
            (DPM-Solver++ multistep) or ``ddpm``.
        sample_steps: Default number of sampling steps.
        timestep_spacing: How sampling picks its timesteps; ``None``: the folder's
            scheduler config (SD 2.1-base: ``leading``).
        use_text_encoder: Encode the empty prompt with the folder's text encoder when it has
            one (else, and when ``False``, the prompt embedding is zeros).
        allow_download: Let a hub id in ``pretrained`` be downloaded (never by default).
        condition: ``ground_truth`` or ``svkr`` (see above).
        estimator: The condition estimator (kept for ``condition="svkr"``).
        freeze_estimator: Freeze the estimator.
        pretrained_folder: The pretrained folder as older checkpoints record it (from
            before :func:`svblur.checkpoints.load_network` kept a local folder in
            ``pretrained``); used when ``pretrained`` is not a path.

    Shape:
        ``forward(noisy (B, C, H/f, W/f), timesteps (B,), lr (B, 3, h, w), depth (B, 1, *, *),
        kernels (B, k*k, *, *))`` -> ``{"epsilon": (B, C, H/f, W/f), "features": {modality:
        [L x (B, C_l, H/f/2**l, W/f/2**l)]}}``, with ``H, W = scale * h, scale * w``, ``f``
        the VAE's down-sampling factor and ``C`` its latent channels.
    """

    working_key = "lr"
    working_grid = "latent"

    def __init__(
        self,
        pretrained: str | Path | bool | None = None,
        scale: int = 4,
        kernel_size: int = 21,
        encoder_channels: Mapping[str, Sequence[int]] | None = None,
        encoder_layers: int = 2,
        encoder_attention: bool = False,
        encoder_mid_attention: bool = True,
        attention_head_dim: int = 64,
        norm_num_groups: int | None = None,
        kernel_code_channels: int = 16,
        amf_hidden: int = 128,
        injection_hidden: int = 128,
        sampler: Sampler = "ddim",
        sample_steps: int = 50,
        timestep_spacing: str | None = None,
        use_text_encoder: bool = True,
        allow_download: bool = False,
        condition: Condition = "ground_truth",
        estimator: nn.Module | None = None,
        freeze_estimator: bool = True,
        pretrained_folder: str | None = None,
    ) -> None:
        super().__init__(condition, estimator, sampler)
        source = pretrained if isinstance(pretrained, (str, Path)) else pretrained_folder
        if not source:
            raise InputError(
                "LatentDiffusionSR: no pretrained folder; set model.net.pretrained=DIR, a "
                "local diffusers Stable Diffusion folder (unet/, vae/, scheduler/). Loading a "
                "checkpoint: its recorded folder is gone; put the folder back at the path "
                "its record names"
            )
        try:
            folder = resolve_folder(source, allow_download)
        except InputError as error:
            if source is pretrained:
                raise
            raise InputError(
                f"{error} (this is the folder a checkpoint records for its frozen UNet and "
                "VAE: put the Stable Diffusion folder back at that path)"
            ) from None
        #: The local pretrained folder (absolute); checkpoints record it.
        self.pretrained_folder = str(folder)

        # --- the frozen prior
        self.unet: UNet2DConditionModel = load_frozen(UNet2DConditionModel, folder, "unet")
        self.vae: AutoencoderKL = load_frozen(AutoencoderKL, folder, "vae")
        for part in (self.unet, self.vae):
            part.requires_grad_(False)
            part.eval()
        unet_config, vae_config = self.unet.config, self.vae.config
        latent_channels = int(vae_config.latent_channels)
        if not unet_config.in_channels == unet_config.out_channels == latent_channels:
            raise InputError(
                f"pretrained: the UNet takes {unet_config.in_channels} channels and gives "
                f"{unet_config.out_channels}, the VAE's latent has {latent_channels}; "
                "expected a text-to-image Stable Diffusion folder"
            )
        if unet_config.get("addition_embed_type") is not None:
            raise InputError(
                "pretrained: UNets with added embeddings (SDXL) are not supported; use a "
                "Stable Diffusion 1.x / 2.x folder"
            )
        self.vae_factor = 2 ** (len(vae_config.block_out_channels) - 1)
        self.latent_scale = float(vae_config.scaling_factor)
        self.levels = len(unet_config.block_out_channels)
        self.register_buffer(
            "prompt_embedding",
            empty_prompt(folder, use_text_encoder, int(unet_config.cross_attention_dim)),
        )

        # --- schedules (the folder's config)
        self.scheduler_config = scheduler_config(folder)
        if timestep_spacing is not None:
            self.scheduler_config["timestep_spacing"] = timestep_spacing
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self.prediction_type = str(self.noise_scheduler.config.prediction_type)

        # --- condition estimator (SVKR)
        self.scale = int(scale)
        self.kernel_size = int(kernel_size)
        self.sampler = sampler
        self.sample_steps = int(sample_steps)
        self.condition = condition
        self.freeze_estimator = freeze_estimator
        self.estimator = estimator if condition == "svkr" else None
        if self.estimator is not None and freeze_estimator:
            self.estimator.requires_grad_(False)
            self.estimator.eval()

        # --- condition encoders and fusion
        groups = int(norm_num_groups or unet_config.norm_num_groups)
        widths = self._encoder_widths(encoder_channels, groups)
        self.kernel_code = nn.Conv2d(self.kernel_size**2, kernel_code_channels, 1)
        self.encoders = nn.ModuleDict(
            {
                "lr": TimeAwareEncoder(
                    latent_channels,
                    widths["lr"],
                    encoder_layers,
                    groups,
                    encoder_attention,
                    encoder_mid_attention,
                    attention_head_dim,
                ),
                "depth": ConditionEncoder(1, widths["depth"], 1, groups),
                "kernel": ConditionEncoder(kernel_code_channels, widths["kernel"], 1, groups),
            }
        )
        self.fusion = nn.ModuleList(
            MultiModalAMF(
                widths["lr"][level], {m: widths[m][level] for m in MODALITIES}, amf_hidden
            )
            for level in range(self.levels)
        )

        # --- injections: one per residual block of the UNet, hooked on its conv2
        sites = _resnet_sites(self.unet)
        #: UNet residual blocks modulated, as ``(name, level)``.
        self.injection_sites = [(name, level) for name, _, level in sites]
        self.injections = nn.ModuleList(
            SPADEInjection(resnet.conv2.out_channels, widths["lr"][level], injection_hidden)
            for _, resnet, level in sites
        )
        for index, (_, resnet, _) in enumerate(sites):
            resnet.conv2.register_forward_hook(partial(self._inject, index))
        self._fused: list[torch.Tensor] | None = None
        self._load_prefix = ""

        # --- checkpoints: the frozen weights stay in the pretrained folder
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_remember_prefix)
        self.register_load_state_dict_post_hook(_frozen_not_missing)

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> LatentDiffusionSR:
        """A network on the Stable Diffusion folder ``path`` (``options``: see the class)."""
        return cls(pretrained=path, **options)

    def _encoder_widths(
        self, given: Mapping[str, Sequence[int]] | None, groups: int
    ) -> dict[str, list[int]]:
        unet_widths = [int(c) for c in self.unet.config.block_out_channels]
        if given is None:

            def part(c: int, divisor: int) -> int:
                return max(groups, c // divisor // groups * groups)

            given = {
                "lr": [part(c, 2) for c in unet_widths],
                "depth": [part(c, 4) for c in unet_widths],
                "kernel": [part(c, 4) for c in unet_widths],
            }
        widths = {name: [int(c) for c in values] for name, values in given.items()}
        if sorted(widths) != sorted(MODALITIES) or any(
            len(v) != self.levels for v in widths.values()
        ):
            raise ValueError(
                f"encoder_channels needs the modalities {list(MODALITIES)}, each with one "
                f"width per UNet level ({self.levels}), got {widths}"
            )
        return widths

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> LatentDiffusionSR:
        """Set training mode; the UNet, the VAE and a frozen estimator stay in eval mode."""
        super().train(mode)
        self.unet.eval()
        self.vae.eval()
        if self.estimator is not None and self.freeze_estimator:
            self.estimator.eval()
        return self

    def frozen_modules(self) -> list[nn.Module]:
        """The modules that never train: the UNet, the VAE and a frozen estimator."""
        frozen: list[nn.Module] = [self.unet, self.vae]
        if self.estimator is not None and self.freeze_estimator:
            frozen.append(self.estimator)
        return frozen

    # ------------------------------------------------------------------ latent space
    @contextlib.contextmanager
    def _vae_tiling(self, enabled: bool) -> Iterator[None]:
        """The VAE's own tiling (``enable_tiling``) on or off, restored afterwards."""

        def switch(on: bool) -> None:
            if on:
                self.vae.enable_tiling()
            else:
                self.vae.disable_tiling()

        previous = bool(self.vae.use_tiling)
        switch(enabled)
        try:
            yield
        finally:
            switch(previous)

    def encode_image(
        self, image: torch.Tensor, scaled: bool = False, tiled: bool = False
    ) -> torch.Tensor:
        """An image's scaled VAE latent (the mode of the posterior).

        Args:
            image: ``(B, 3, H, W)`` in ``[0, 1]`` (``[-1, 1]`` with ``scaled=True``).
            scaled: The image is already in ``[-1, 1]``.
            tiled: Encode with the VAE's tiling (large images).
        """
        image = image if scaled else 2 * image - 1
        with torch.no_grad(), self._vae_tiling(tiled):
            latent = self.vae.encode(image.to(self.vae.dtype)).latent_dist.mode()
        return (latent * self.latent_scale).to(image.dtype)

    def decode_image(self, latents: torch.Tensor, tiled: bool = False) -> torch.Tensor:
        """Scaled latents -> ``(B, 3, H, W)`` image in ``[0, 1]``."""
        with torch.no_grad(), self._vae_tiling(tiled):
            image = self.vae.decode((latents / self.latent_scale).to(self.vae.dtype)).sample
        return ((image.to(latents.dtype) + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ conditions
    def condition_inputs(
        self, lr: torch.Tensor, depth: torch.Tensor, kernels: torch.Tensor, tiled: bool = False
    ) -> dict[str, torch.Tensor]:
        """The encoders' inputs on the latent grid.

        Args:
            lr: ``(B, 3, h, w)`` in ``[0, 1]``; ``scale * h`` and ``scale * w`` must be
                multiples of :attr:`size_multiple` (:meth:`sample` pads).
            depth: Relative depth ``(B, 1, *, *)`` in ``[0, 1]``, any size (resized).
            kernels: Kernel field ``(B, k*k, *, *)``, any grid (resized).
            tiled: Encode the LR image with the VAE's tiling.

        Returns:
            ``{"lr": (B, C, H/f, W/f) latent, "depth": (B, 1, H/f, W/f) in [-1, 1],
            "kernel": (B, kernel_code_channels, H/f, W/f)}``.
        """
        self.check_conditions(lr, depth, kernels)
        taps = self.kernel_size**2
        upscaled = 2 * imresize(lr, self.scale).clamp(0, 1) - 1
        latent = self.encode_image(upscaled, scaled=True, tiled=tiled)
        grid = latent.shape[-2:]
        code = self.kernel_code(resize_depth(kernels.to(lr.dtype), grid) * taps)
        relative = 2 * resize_depth(depth.to(lr.dtype), grid) - 1
        return {"lr": latent, "depth": relative, "kernel": code}

    def encode_static(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """The features that do not depend on the timestep: depth and kernel encoders'."""
        return {name: self.encoders[name](inputs[name]) for name in ("depth", "kernel")}

    def encode_conditions(
        self,
        inputs: Mapping[str, torch.Tensor],
        timesteps: torch.Tensor,
        static: Mapping[str, list[torch.Tensor]] | None = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Encoder features by modality, one per UNet level (``static``: the depth and
        kernel features, when already computed)."""
        static = static if static is not None else self.encode_static(inputs)
        return {"lr": self.encoders["lr"](inputs["lr"], timesteps), **static}

    # ------------------------------------------------------------------ denoiser
    def _inject(
        self, index: int, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor
    ) -> torch.Tensor | None:
        """Forward hook on a UNet residual block's ``conv2``: modulate its output."""
        if self._fused is None:  # the UNet called on its own
            return None
        return self.injections[index](output, self._fused[self.injection_sites[index][1]])

    def _run_unet(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        features: Mapping[str, Sequence[torch.Tensor]],
    ) -> torch.Tensor:
        """The UNet's prediction with every level modulated by the fused features."""
        self._fused = [
            fusion(features["lr"][level], {m: features[m][level] for m in MODALITIES})
            for level, fusion in enumerate(self.fusion)
        ]
        prompt = self.prompt_embedding.expand(latents.shape[0], -1, -1).to(latents.dtype)
        try:
            return self.unet(latents, timesteps, encoder_hidden_states=prompt).sample
        finally:
            self._fused = None

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        inputs: Mapping[str, torch.Tensor],
        static: Mapping[str, list[torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """The UNet's prediction for ``latents`` at ``timesteps`` given the encoders' inputs
        (:meth:`condition_inputs`, on the same grid)."""
        timesteps = _batch_timesteps(timesteps, latents)
        features = self.encode_conditions(inputs, timesteps, static)
        return self._run_unet(latents, timesteps, features)

    def predict_epsilon(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """:meth:`forward` once the inputs are checked: the noise and the encoders' features."""
        timesteps = _batch_timesteps(timesteps, noisy)
        features = self.encode_conditions(inputs, timesteps)
        return {"epsilon": self._run_unet(noisy, timesteps, features), "features": features}

    def predict_noise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        lr: torch.Tensor,
        kernels: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The conditioned UNet's noise prediction.

        Args:
            latents: Noisy scaled latents ``(B, C, H/f, W/f)``.
            timesteps: ``(B,)`` or a scalar.
            lr: ``(B, 3, h, w)`` in ``[0, 1]`` with ``scale * h = H``.
            kernels: Kernel field ``(B, k*k, *, *)`` at the LR or HR grid; ``None``:
                estimated by the estimator (``condition="svkr"``).
            depth: Relative depth ``(B, 1, *, *)``; ``None``: estimated.

        Returns:
            ``(B, C, H/f, W/f)``, at initialisation exactly ``unet(latents, timesteps,
            encoder_hidden_states=prompt_embedding).sample``.
        """
        if kernels is None or depth is None:
            estimated = self.estimate_conditions(lr)
            kernels = estimated["kernels"] if kernels is None else kernels
            depth = estimated["depth"] if depth is None else depth
        return self(latents, timesteps, lr, depth, kernels)["epsilon"]

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, name: str | None = None) -> Any:
        """A fresh sampling scheduler from the folder's scheduler config."""
        return make_scheduler(
            name or self.sampler, self.scheduler_config, algorithm_type="dpmsolver++"
        )

    def tile_context(self, crop: dict[str, torch.Tensor]) -> tuple[Any, ...]:
        """One sampling tile's encoder inputs and its timestep-free features."""
        return crop, self.encode_static(crop)

    def sample(self, *args: Any, vae_tiling: bool = True, **kwargs: Any) -> torch.Tensor:
        """:meth:`ConditionedDiffusion.sample` in latent space; ``vae_tiling``: encode and
        decode with the VAE's own tiling (default)."""
        return super().sample(*args, tiled=vae_tiling, **kwargs)


# ---------------------------------------------------------------------- helpers


def _batch_timesteps(timesteps: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """Timesteps as a ``(B,)`` tensor on ``like``'s device."""
    timesteps = torch.as_tensor(timesteps, device=like.device)
    return timesteps.expand(like.shape[0]) if timesteps.dim() == 0 else timesteps


def _drop_frozen(
    module: LatentDiffusionSR, state: dict[str, Any], prefix: str, metadata: Any
) -> None:
    """State-dict hook: leave the frozen UNet and VAE out (they stay in the folder)."""
    frozen = tuple(f"{prefix}{name}." for name in _FROZEN)
    for key in [k for k in state if k.startswith(frozen)]:
        del state[key]


def _remember_prefix(module: LatentDiffusionSR, state: Any, prefix: str, *args: Any) -> None:
    module._load_prefix = prefix


def _frozen_not_missing(module: LatentDiffusionSR, incompatible: Any) -> None:
    """Load hook: the frozen weights are not expected in a state dict (see the module
    docstring); everything else loads strictly."""
    frozen = tuple(f"{module._load_prefix}{name}." for name in _FROZEN)
    incompatible.missing_keys[:] = [
        k for k in incompatible.missing_keys if not k.startswith(frozen)
    ]
