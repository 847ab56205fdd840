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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
)
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from torch import nn

from svblur.degradation import imresize
from svblur.errors import InputError
from svblur.nn import MultiModalAMF

from .depth import resize_depth
from .diffusion_sampling import ConditionedDiffusion, make_scheduler

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


def down_blocks(
    channels: Sequence[int],
    layers_per_block: int,
    norm_num_groups: int,
    temb_channels: int | None = None,
    attention_head_dim: int | None = None,
) -> nn.ModuleList:
    """A half UNet's input blocks: one diffusers ``DownBlock2D`` per level (an
    ``AttnDownBlock2D`` with ``attention_head_dim``), down-sampling between levels."""
    return nn.ModuleList(
        get_down_block(
            "AttnDownBlock2D" if attention_head_dim else "DownBlock2D",
            num_layers=layers_per_block,
            in_channels=channels[max(level - 1, 0)],
            out_channels=width,
            temb_channels=temb_channels,
            add_downsample=level < len(channels) - 1,
            resnet_eps=1e-5,
            resnet_act_fn="silu",
            resnet_groups=norm_num_groups,
            attention_head_dim=min(attention_head_dim or _ATTENTION_HEAD_DIM, width),
            downsample_padding=1,
        )
        for level, width in enumerate(channels)
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
        self.blocks = down_blocks(channels, layers_per_block, norm_num_groups)
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


class DiffusionSR(ConditionedDiffusion):
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

    smooth_tiles = True

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
        super().__init__(condition, estimator, sampler)
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

    # ------------------------------------------------------------------ conditions
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
        self.check_conditions(lr, depth, kernels)
        taps = self.kernel_size**2
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

    def predict_epsilon(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """:meth:`forward` once the inputs are checked: the noise and the encoders' features."""
        features = self.encode_conditions(inputs)
        return {
            "epsilon": self.denoise(noisy, timesteps, inputs["image"], features),
            "features": features,
        }

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, name: str | None = None) -> Any:
        """A fresh sampling scheduler sharing the training schedule's configuration."""
        return make_scheduler(name or self.sampler, self.noise_scheduler.config)

    def tile_context(self, crop: dict[str, torch.Tensor]) -> tuple[Any, ...]:
        """The upsampled LR image and the condition features of one sampling tile."""
        return crop["image"], self.encode_conditions(crop)
