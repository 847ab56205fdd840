"""SSR's diffusion SR: a conditional denoising UNet modulated by AMF at every level.

The denoiser is built from ``diffusers`` parts (``get_down_block``/``get_up_block``,
``UNetMidBlock2D``, ``Timesteps``/``TimestepEmbedding``); the noise schedules are
``diffusers`` schedulers (DDPM for training; DDIM, DPM-Solver++ or DDPM for sampling).
SSR (following StableSR) fine-tunes Stable Diffusion 2.1 in latent space; here the default
is a small UNet trained from scratch in pixel space, with an optional frozen
``AutoencoderKL`` read from a local folder for latent space.

Choices where SSR is silent (each is a constructor argument):

- **Input.** The noisy HR image (or latent) concatenated with the LR image upscaled to HR
  by MATLAB bicubic (:func:`svblur.degradation.imresize`; in latent space its VAE latent).
  Images are mapped to ``[-1, 1]``. The network predicts the noise (epsilon).
- **Conditions.** Three "half UNet" encoders (StableSR's input blocks, middle block and
  feature-translate blocks; :class:`ConditionEncoder`), one per modality: the upscaled LR
  image (its latent in latent space; the widest encoder), the relative depth map and the
  kernel field, each resized to the working grid (HR, or the latent's). The kernel field
  ``(k*k, H, W)`` is compressed per pixel by a learned 1x1 convolution to
  ``kernel_code_channels`` (a learned linear code, where MANet uses a fixed PCA basis),
  after scaling by ``k*k`` so that a flat kernel reads as ones. The encoders do not see
  the timestep (StableSR's does), so sampling encodes the conditions once per image.
- **AMF sites.** A :class:`~svblur.nn.MultiModalAMF` on the input of every down block
  (levels ``0 .. L-1``) and of every up block (levels ``L-1 .. 0``), each modulated by the
  encoders' features of that level.
- **Tiles.** Large images are denoised in overlapping tiles at every step
  (MultiDiffusion-style): each tile's noise prediction is weighted by a smooth window
  (smoothstep ramps across the overlap, 1 inside) and the weighted mean is handed to the
  scheduler, which steps the whole image at once. The starting noise is drawn once for
  the whole (padded) image, so a pixel gets the same noise whatever tile covers it, and
  neighbouring tiles agree on every intermediate image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
)
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from torch import nn

from svblur.degradation import imresize
from svblur.errors import InputError
from svblur.nn import MultiModalAMF
from svblur.ops.tiles import tile_starts, tile_weights

from .depth import resize_depth

__all__ = ["ConditionEncoder", "DiffusionSR", "load_local_vae"]

Sampler = Literal["ddim", "dpm_solver", "ddpm"]
Condition = Literal["ground_truth", "svkr"]
MODALITIES = ("kernel", "depth", "lr")
_ATTENTION_HEAD_DIM = 8


def load_local_vae(path: str | Path) -> AutoencoderKL:
    """An ``AutoencoderKL`` from a local folder (``save_pretrained`` output), never downloaded.

    Raises:
        InputError: No such folder, or it holds no loadable ``AutoencoderKL``.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(
            f"vae_path: no folder at '{folder}'; give a local folder written by "
            "AutoencoderKL.save_pretrained (config.json and weights). svblur never downloads "
            "a VAE: fetch one yourself (e.g. the 'vae' folder of Stable Diffusion 2.1-base)"
        )
    try:
        return AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise InputError(
            f"vae_path: '{folder}' holds no loadable AutoencoderKL ({error}); expected the "
            "files AutoencoderKL.save_pretrained writes (config.json and weights)"
        ) from None


def _check_groups(channels: Sequence[int], groups: int, what: str) -> None:
    bad = [c for c in channels if c % groups]
    if bad:
        raise ValueError(
            f"{what}: every width must be a multiple of norm_num_groups={groups}, got "
            f"{list(channels)}; change the widths or norm_num_groups"
        )


class ConditionEncoder(nn.Module):
    """StableSR-style "half UNet" for one condition: features at every UNet level.

    ``conv_in`` then one ``DownBlock2D`` per level (input blocks), a ``UNetMidBlock2D``
    without attention at the last level (middle block) and a 1x1 convolution per level
    (feature-translate blocks). No timestep input.

    Args:
        in_channels: Input channels.
        channels: Width per level (its length is the number of levels).
        layers_per_block: Residual blocks per level.
        norm_num_groups: GroupNorm groups (must divide every width).

    Shape:
        ``(B, in_channels, H, W)`` -> list of ``(B, channels[l], H / 2**l, W / 2**l)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        _check_groups(channels, norm_num_groups, "ConditionEncoder")
        self.channels = channels
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for level, width in enumerate(channels):
            self.blocks.append(
                get_down_block(
                    "DownBlock2D",
                    num_layers=layers_per_block,
                    in_channels=channels[max(level - 1, 0)],
                    out_channels=width,
                    temb_channels=None,
                    add_downsample=level < len(channels) - 1,
                    resnet_eps=1e-5,
                    resnet_act_fn="silu",
                    resnet_groups=norm_num_groups,
                    attention_head_dim=_ATTENTION_HEAD_DIM,
                    downsample_padding=1,
                )
            )
        self.middle = UNetMidBlock2D(
            channels[-1],
            temb_channels=None,
            resnet_eps=1e-5,
            resnet_groups=norm_num_groups,
            add_attention=False,
        )
        self.translate = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.conv_in(x)
        features = []
        for block in self.blocks:
            hidden, states = block(hidden)
            features.append(states[len(block.resnets) - 1])  # before downsampling
        features[-1] = self.middle(features[-1])
        return [conv(f) for conv, f in zip(self.translate, features)]


class DiffusionSR(nn.Module):
    """Conditional diffusion SR with AMF (SSR), pixel space by default.

    See the module docstring for the design. Training: :meth:`encode_image` gives ``x0``,
    :attr:`noise_scheduler` (``DDPMScheduler``) noises it, and :meth:`forward` predicts
    the noise. Inference: :meth:`sample`.

    With ``condition="svkr"`` the network carries its condition estimator (an
    :class:`~svblur.models.SVKR`, or any module ``estimator(lr, depth=None) -> {"kernels",
    "depth", ...}``), used by :meth:`estimate_conditions` (and so by ``svblur-predict``);
    with ``freeze_estimator`` it is frozen for real (no gradients, eval mode kept through
    ``train()``). With ``condition="ground_truth"`` the caller passes kernels and depth and
    ``estimator`` is not kept (a config may name one for both cases).

    Args:
        scale: SR factor.
        kernel_size: Side ``k`` of the kernel field's kernels (``k*k`` channels).
        block_channels: UNet width per level (``L`` levels, ``L-1`` down-samplings).
        layers_per_block: Residual blocks per down block (up blocks get one more).
        down_block_types: ``diffusers`` down-block names, one per level (default
            ``DownBlock2D``; e.g. ``AttnDownBlock2D`` adds self-attention).
        up_block_types: ``diffusers`` up-block names, one per level (default ``UpBlock2D``).
        mid_attention: Self-attention in the UNet's middle block.
        norm_num_groups: GroupNorm groups of the UNet and the encoders.
        encoder_channels: Width per level of each condition encoder, by modality
            (``kernel``, ``depth``, ``lr``); default: the UNet's widths for ``lr``, half of
            them for ``kernel`` and ``depth``.
        kernel_code_channels: Channels of the learned per-pixel kernel code.
        amf_hidden: Hidden width of the AMF MLPs (SSR: 128).
        num_train_timesteps: Diffusion steps of the training schedule.
        beta_schedule: ``diffusers`` beta schedule (``linear``, ``scaled_linear``, ...).
        beta_start: First beta.
        beta_end: Last beta.
        timestep_spacing: How sampling picks its timesteps (``trailing`` starts at the
            last training step, better at few steps; ``leading``, ``linspace``).
        sampler: Default sampler: ``ddim`` (eta 0: deterministic), ``dpm_solver``
            (DPM-Solver++ multistep) or ``ddpm``.
        sample_steps: Default number of sampling steps.
        vae_path: Local folder of an ``AutoencoderKL`` (latent space); ``None``: pixel space.
        condition: ``ground_truth`` or ``svkr`` (see above).
        estimator: The condition estimator (kept for ``condition="svkr"``).
        freeze_estimator: Freeze the estimator.

    Shape:
        ``forward(noisy (B, C, H', W'), timesteps (B,), lr (B, 3, h, w), depth (B, 1, *),
        kernels (B, k*k, *, *))`` -> ``{"epsilon": (B, C, H', W'), "features": {modality:
        [L x (B, C_l, H'/2**l, W'/2**l)]}}`` with ``C, H', W' = 3, H, W`` in pixel space
        (``H, W = scale * h, scale * w``) or the latent's.
    """

    def __init__(
        self,
        scale: int = 4,
        kernel_size: int = 21,
        block_channels: Sequence[int] = (32, 64),
        layers_per_block: int = 1,
        down_block_types: Sequence[str] | None = None,
        up_block_types: Sequence[str] | None = None,
        mid_attention: bool = False,
        norm_num_groups: int = 8,
        encoder_channels: Mapping[str, Sequence[int]] | None = None,
        kernel_code_channels: int = 16,
        amf_hidden: int = 128,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        timestep_spacing: str = "trailing",
        sampler: Sampler = "ddim",
        sample_steps: int = 20,
        vae_path: str | None = None,
        condition: Condition = "ground_truth",
        estimator: nn.Module | None = None,
        freeze_estimator: bool = True,
    ) -> None:
        super().__init__()
        if condition not in ("ground_truth", "svkr"):
            raise ValueError(f"condition must be 'ground_truth' or 'svkr', got {condition!r}")
        if condition == "svkr" and estimator is None:
            raise ValueError("condition='svkr' needs an estimator (an SVKR)")
        self._check_sampler(sampler)
        channels = [int(c) for c in block_channels]
        levels = len(channels)
        _check_groups(channels, norm_num_groups, "DiffusionSR.block_channels")
        down_types = list(down_block_types or ["DownBlock2D"] * levels)
        up_types = list(up_block_types or ["UpBlock2D"] * levels)
        if len(down_types) != levels or len(up_types) != levels:
            raise ValueError(
                f"down_block_types and up_block_types need one entry per level ({levels})"
            )
        if encoder_channels is None:
            half = [max(norm_num_groups, c // 2) for c in channels]
            encoder_channels = {"kernel": half, "depth": half, "lr": channels}
        encoder_channels = {k: [int(c) for c in v] for k, v in encoder_channels.items()}
        if sorted(encoder_channels) != sorted(MODALITIES) or any(
            len(v) != levels for v in encoder_channels.values()
        ):
            raise ValueError(
                f"encoder_channels needs the modalities {list(MODALITIES)}, each with one "
                f"width per level ({levels}), got {encoder_channels}"
            )
        self.scale = int(scale)
        self.kernel_size = int(kernel_size)
        self.levels = levels
        self.sampler = sampler
        self.sample_steps = int(sample_steps)
        self.condition = condition
        self.freeze_estimator = freeze_estimator

        # --- latent space (optional, frozen)
        self.vae = load_local_vae(vae_path) if vae_path else None
        if self.vae is not None:
            self.vae.requires_grad_(False)
            self.vae.eval()
            image_channels = int(self.vae.config.latent_channels)
            self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.latent_scale = float(self.vae.config.scaling_factor)
        else:
            image_channels, self.vae_factor, self.latent_scale = 3, 1, 1.0
        self.image_channels = image_channels

        # --- condition estimator (stage 3 with SVKR)
        self.estimator = estimator if condition == "svkr" else None
        if self.estimator is not None and freeze_estimator:
            self.estimator.requires_grad_(False)
            self.estimator.eval()

        # --- condition encoders
        taps = self.kernel_size**2
        self.kernel_code = nn.Conv2d(taps, kernel_code_channels, 1)
        inputs = {"kernel": kernel_code_channels, "depth": 1, "lr": image_channels}
        self.encoders = nn.ModuleDict(
            {
                name: ConditionEncoder(inputs[name], encoder_channels[name], 1, norm_num_groups)
                for name in MODALITIES
            }
        )

        # --- denoising UNet
        time_dim = 4 * channels[0]
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_dim)
        self.conv_in = nn.Conv2d(2 * image_channels, channels[0], 3, padding=1)

        def cond_at(level: int) -> dict[str, int]:
            return {name: encoder_channels[name][level] for name in MODALITIES}

        self.down_blocks = nn.ModuleList()
        self.down_fusion = nn.ModuleList()
        for level, (block_type, width) in enumerate(zip(down_types, channels)):
            in_width = channels[max(level - 1, 0)]
            self.down_fusion.append(MultiModalAMF(in_width, cond_at(level), amf_hidden))
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers_per_block,
                    in_channels=in_width,
                    out_channels=width,
                    temb_channels=time_dim,
                    add_downsample=level < levels - 1,
                    resnet_eps=1e-5,
                    resnet_act_fn="silu",
                    resnet_groups=norm_num_groups,
                    attention_head_dim=_ATTENTION_HEAD_DIM,
                    downsample_padding=1,
                )
            )
        self.mid_block = UNetMidBlock2D(
            channels[-1],
            temb_channels=time_dim,
            resnet_eps=1e-5,
            resnet_groups=norm_num_groups,
            add_attention=mid_attention,
            attention_head_dim=_ATTENTION_HEAD_DIM,
        )
        self.up_blocks = nn.ModuleList()
        self.up_fusion = nn.ModuleList()
        reversed_channels = channels[::-1]
        out_width = reversed_channels[0]
        for index, block_type in enumerate(up_types):
            prev_width = out_width
            out_width = reversed_channels[index]
            in_width = reversed_channels[min(index + 1, levels - 1)]
            self.up_fusion.append(
                MultiModalAMF(prev_width, cond_at(levels - 1 - index), amf_hidden)
            )
            self.up_blocks.append(
                get_up_block(
                    block_type,
                    num_layers=layers_per_block + 1,
                    in_channels=in_width,
                    out_channels=out_width,
                    prev_output_channel=prev_width,
                    temb_channels=time_dim,
                    add_upsample=index < levels - 1,
                    resnet_eps=1e-5,
                    resnet_act_fn="silu",
                    resnet_groups=norm_num_groups,
                    attention_head_dim=_ATTENTION_HEAD_DIM,
                    resolution_idx=index,
                )
            )
        self.norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=1e-5)
        self.conv_out = nn.Conv2d(channels[0], image_channels, 3, padding=1)

        # --- noise schedule (DDPM for training; samplers share its config)
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type="epsilon",
            clip_sample=self.vae is None,
            timestep_spacing=timestep_spacing,
        )

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> DiffusionSR:
        """Set training mode; the VAE and a frozen estimator stay in eval mode."""
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()
        if self.estimator is not None and self.freeze_estimator:
            self.estimator.eval()
        return self

    @property
    def size_multiple(self) -> int:
        """HR sizes must be multiples of this (UNet down-samplings times the VAE's)."""
        return self.vae_factor * 2 ** (self.levels - 1)

    # ------------------------------------------------------------------ conditions
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
                "this DiffusionSR has no condition estimator (it was trained with "
                "condition=ground_truth): pass kernels and depth, or train with "
                "model.condition=svkr"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_estimator):
            out = self.estimator(lr, depth=depth)
        return {"kernels": out["kernels"], "depth": out["depth"]}

    def condition_inputs(
        self, lr: torch.Tensor, depth: torch.Tensor, kernels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The UNet's concatenated input and the encoders' inputs, on the working grid.

        Args:
            lr: ``(B, 3, h, w)`` in ``[0, 1]``; ``scale * h`` and ``scale * w`` must be
                multiples of :attr:`size_multiple`.
            depth: Relative depth ``(B, 1, *, *)`` in ``[0, 1]``, any size (resized).
            kernels: Kernel field ``(B, k*k, *, *)``, any grid (resized).

        Returns:
            ``{"image", "lr", "depth", "kernel"}``, each ``(B, C, H', W')``.
        """
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
                f"HR size {hr_size} must be a multiple of {multiple} (UNet levels and VAE); "
                "crop the LR image to a multiple of "
                f"{multiple // math.gcd(multiple, self.scale)} pixels or use "
                "DiffusionSR.sample (pads)"
            )
        upscaled = 2 * imresize(lr, self.scale).clamp(0, 1) - 1
        image = self.encode_image(upscaled, scaled=True)
        grid = image.shape[-2:]
        code = self.kernel_code(resize_depth(kernels.to(lr.dtype), grid) * taps)
        relative = 2 * resize_depth(depth.to(lr.dtype), grid) - 1
        return {"image": image, "lr": image, "depth": relative, "kernel": code}

    def encode_conditions(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> dict[str, list[torch.Tensor]]:
        """Encoder features by modality, one per UNet level."""
        return {name: self.encoders[name](inputs[name]) for name in MODALITIES}

    def encode_image(self, image: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        """An HR image in the working space: ``2 x - 1`` (pixel) or its scaled VAE latent.

        Args:
            image: ``(B, 3, H, W)`` in ``[0, 1]`` (``[-1, 1]`` with ``scaled=True``).
            scaled: The image is already in ``[-1, 1]``.
        """
        image = image if scaled else 2 * image - 1
        if self.vae is None:
            return image
        with torch.no_grad():
            latent = self.vae.encode(image.to(self.vae.dtype)).latent_dist.mode()
        return (latent * self.latent_scale).to(image.dtype)

    def decode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Working space -> ``(B, 3, H, W)`` image in ``[0, 1]``."""
        if self.vae is not None:
            with torch.no_grad():
                x = self.vae.decode((x / self.latent_scale).to(self.vae.dtype)).sample.to(x.dtype)
        return ((x + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ denoiser
    def denoise(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        image: torch.Tensor,
        features: Mapping[str, Sequence[torch.Tensor]],
    ) -> torch.Tensor:
        """Predict the noise of ``noisy`` at ``timesteps`` given the encoded conditions."""
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(noisy.shape[0])
        temb = self.time_embedding(self.time_proj(timesteps.to(noisy.device)).to(noisy.dtype))
        hidden = self.conv_in(torch.cat([noisy, image.to(noisy.dtype)], 1))

        def at(level: int) -> dict[str, torch.Tensor]:
            return {name: features[name][level] for name in MODALITIES}

        skips: tuple[torch.Tensor, ...] = (hidden,)
        for level, (fusion, block) in enumerate(zip(self.down_fusion, self.down_blocks)):
            hidden = fusion(hidden, at(level))
            hidden, states = block(hidden, temb)
            skips += states
        hidden = self.mid_block(hidden, temb)
        for index, (fusion, block) in enumerate(zip(self.up_fusion, self.up_blocks)):
            hidden = fusion(hidden, at(self.levels - 1 - index))
            count = len(block.resnets)
            hidden = block(hidden, skips[-count:], temb)
            skips = skips[:-count]
        return self.conv_out(F.silu(self.norm_out(hidden)))

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        lr: torch.Tensor,
        depth: torch.Tensor,
        kernels: torch.Tensor,
    ) -> dict[str, Any]:
        """Predict the noise (training); see the class docstring for shapes."""
        inputs = self.condition_inputs(lr, depth, kernels)
        if noisy.shape != inputs["image"].shape:
            raise InputError(
                f"noisy input {tuple(noisy.shape)} does not match the working-space size "
                f"{tuple(inputs['image'].shape)} of the LR image"
            )
        features = self.encode_conditions(inputs)
        return {
            "epsilon": self.denoise(noisy, timesteps, inputs["image"], features),
            "features": features,
        }

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def _check_sampler(name: str) -> None:
        if name not in ("ddim", "dpm_solver", "ddpm"):
            raise InputError(f"sampler must be 'ddim', 'dpm_solver' or 'ddpm', got {name!r}")

    def make_sampler(self, name: str | None = None) -> Any:
        """A fresh sampling scheduler sharing the training schedule's configuration."""
        name = name or self.sampler
        self._check_sampler(name)
        config = self.noise_scheduler.config
        if name == "ddim":
            return DDIMScheduler.from_config(config)
        if name == "dpm_solver":
            return DPMSolverMultistepScheduler.from_config(config)
        return DDPMScheduler.from_config(config)

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
            tile_size: Tile side in LR pixels (``None``: the whole image at once).
            tile_overlap: Overlap of neighbouring tiles in LR pixels.
            eta: DDIM's eta (0: deterministic given the starting noise).

        Returns:
            ``(B, 3, scale * h, scale * w)`` in ``[0, 1]``.
        """
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
        inputs = self.condition_inputs(lr, depth, kernels)
        x_shape = inputs["image"].shape
        grid_scale = self.scale / self.vae_factor  # working-grid pixels per LR pixel
        tiles = self._tiles(x_shape[-2:], tile_size, tile_overlap, grid_scale)
        cached = []
        for (top, left, th, tw), weight in tiles:
            crop = {k: v[..., top : top + th, left : left + tw] for k, v in inputs.items()}
            weight = weight.to(device=lr.device, dtype=crop["image"].dtype)
            cached.append((crop["image"], self.encode_conditions(crop), weight))

        scheduler = self.make_sampler(sampler)
        scheduler.set_timesteps(int(steps or self.sample_steps), device=lr.device)
        noise = torch.randn(x_shape, generator=generator, dtype=torch.float32)
        x = noise.to(device=lr.device, dtype=inputs["image"].dtype) * scheduler.init_noise_sigma
        step_kwargs: dict[str, Any] = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            epsilon = torch.zeros_like(x)
            total = torch.zeros_like(x[:, :1])
            for ((top, left, th, tw), _), (image, features, weight) in zip(tiles, cached):
                window = (slice(None), slice(None), slice(top, top + th), slice(left, left + tw))
                tile_t = t.to(x.device).expand(x.shape[0])
                predicted = self.denoise(model_input[window], tile_t, image, features)
                epsilon[window] += predicted * weight
                total[window] += weight
            epsilon = epsilon / total
            x = scheduler.step(epsilon, t, x, generator=generator, **step_kwargs).prev_sample
        return self.decode_image(x)[..., : hr_size[0], : hr_size[1]]

    def _tiles(
        self,
        size: tuple[int, int] | torch.Size,
        tile_size: int | None,
        overlap: int,
        grid_scale: float,
    ) -> list[tuple[tuple[int, int, int, int], torch.Tensor]]:
        """Tiles ``(top, left, height, width)`` on the working grid with their windows."""
        height, width = int(size[0]), int(size[1])
        unit = 2 ** (self.levels - 1)
        if tile_size is None:
            return [((0, 0, height, width), torch.ones(1, 1, height, width))]
        tile = max(unit, int(tile_size * grid_scale) // unit * unit)
        ramp = max(0, min(round(overlap * grid_scale), tile - 1))
        th, tw = min(tile, height), min(tile, width)
        tiles = []
        tops = tile_starts(height, th, min(ramp, th - 1))
        lefts = tile_starts(width, tw, min(ramp, tw - 1))
        for top in tops:
            for left in lefts:
                rows = _smooth(
                    tile_weights((th, 1), ramp, (top > 0, top + th < height, False, False))[:, 0]
                )
                cols = _smooth(
                    tile_weights((1, tw), ramp, (False, False, left > 0, left + tw < width))[0]
                )
                window = (rows[:, None] * cols[None, :]).clamp(min=1e-3)
                tiles.append(((top, left, th, tw), window[None, None]))
        return tiles


def _smooth(ramp: torch.Tensor) -> torch.Tensor:
    """Smoothstep of a linear ramp in ``[0, 1]`` (zero slope at both ends)."""
    return ramp * ramp * (3 - 2 * ramp)


def _pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _pad_to_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _pad(x, size[0] - x.shape[-2], size[1] - x.shape[-1])
