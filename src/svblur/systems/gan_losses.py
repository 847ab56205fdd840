"""Losses of GAN-trained super-resolution (Real-ESRGAN, PBaSR): perceptual and adversarial.

The pixel loss is plain L1 (:func:`torch.nn.functional.l1_loss`, or ``torch.nn.L1Loss`` in
a config). Real-ESRGAN weights the three terms 1 (L1), 1 (perceptual) and 0.1 (GAN);
the weights belong to the training system, these losses are unweighted.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from svblur.checkpoints import read_checkpoint
from svblur.errors import CheckpointError, InputError

__all__ = [
    "REAL_ESRGAN_LAYER_WEIGHTS",
    "VGG19_FILENAME",
    "GANLoss",
    "PerceptualLoss",
    "default_vgg19_path",
]

GANKind = Literal["vanilla", "hinge"]

#: Real-ESRGAN's perceptual layers and weights (``options/train_realesrgan_x4plus.yml``):
#: VGG19 conv outputs *before* the ReLU, L1 criterion, ImageNet input normalization.
REAL_ESRGAN_LAYER_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}
)

#: File name of torchvision's ImageNet VGG19 weights (the torch hub cache's name for them).
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
_VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILENAME}"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# (channels, convs) of VGG19's five blocks ("configuration E")
_VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def default_vgg19_path() -> Path:
    """Where :class:`PerceptualLoss` looks for VGG19 weights by default.

    ``torch.hub.get_dir() / "checkpoints" / "vgg19-dcbb9e9d.pth"``: where torchvision's
    ``vgg19(weights="IMAGENET1K_V1")`` keeps the file once downloaded.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


def _vgg19_layers() -> list[tuple[str, int, int, int]]:
    """``(name, torchvision index, in channels, out channels)`` of VGG19's feature layers.

    Names as BasicSR: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``; the index is the
    layer's position in torchvision's ``vgg19().features`` (channels are 0 for non-convs).
    """
    layers: list[tuple[str, int, int, int]] = []
    index, channels_in = 0, 3
    for block, (channels, convs) in enumerate(_VGG19_BLOCKS, 1):
        for i in range(1, convs + 1):
            layers.append((f"conv{block}_{i}", index, channels_in, channels))
            layers.append((f"relu{block}_{i}", index + 1, 0, 0))
            index, channels_in = index + 2, channels
        layers.append((f"pool{block}", index, 0, 0))
        index += 1
    return layers


def _read_vgg19_state(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise InputError(
            f"VGG19 weights not found at {path}. PerceptualLoss never downloads: put "
            f"torchvision's {VGG19_FILENAME} ({_VGG19_URL}) at {default_vgg19_path()} (the "
            f"torch hub cache) or pass weights_path=...; pretrained=False builds a randomly "
            f"initialized VGG19 (for tests only)"
        )
    try:
        state = read_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(f"cannot read the VGG19 weights: {error}") from None
    if not isinstance(state, Mapping):
        raise InputError(f"{path} does not hold a state dict (torchvision's VGG19 weights)")
    return state


class PerceptualLoss(nn.Module):
    """VGG19 perceptual loss: weighted L1 between feature maps of SR and HR (Real-ESRGAN).

    ``sum_l w_l * mean|phi_l(sr) - phi_l(hr)|`` where ``phi_l`` is VGG19's layer ``l`` on
    the ImageNet-normalized image (``(x - mean) / std``, inputs RGB in ``[0, 1]``). Layer
    names follow BasicSR: ``conv{b}_{i}`` is the conv output before its ReLU,
    ``relu{b}_{i}`` after it. The HR features are computed without autograd.

    The VGG weights are frozen parameters (``requires_grad=False``, so a DDP wrapper
    neither reduces their gradients nor broadcasts them every step) that are *not* part of
    the state dict: a checkpoint of a system holding this loss does not carry 80 MB of
    fixed ImageNet weights, and loading one neither needs nor restores them. Only the
    layers up to the deepest one used are kept.

    Args:
        weights_path: torchvision's VGG19 state dict (``vgg19-dcbb9e9d.pth``); ``None``:
            :func:`default_vgg19_path` (the torch hub cache). Nothing is ever downloaded:
            a missing file raises :class:`~svblur.errors.InputError` saying where to put it.
        layer_weights: Layer name -> weight; ``None``: :data:`REAL_ESRGAN_LAYER_WEIGHTS`.
        pretrained: ``False`` builds a randomly initialized VGG19 (Kaiming normal, fan-out,
            zero bias, from a fixed seed) and reads no file: for tests.

    Shape:
        ``sr (B, 3, H, W), hr (B, 3, H, W) -> ()``.
    """

    def __init__(
        self,
        weights_path: str | PathLike[str] | None = None,
        layer_weights: Mapping[str, float] | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        weights = dict(REAL_ESRGAN_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        all_layers = _vgg19_layers()
        names = [name for name, *_ in all_layers if not name.startswith("pool")]
        unknown = sorted(set(weights) - set(names))
        if not weights or unknown:
            raise ValueError(
                f"layer_weights must name VGG19 layers among {names}, got {sorted(weights)}"
            )
        self.layer_weights = {name: float(weight) for name, weight in weights.items()}
        last = max(i for i, (name, *_) in enumerate(all_layers) if name in weights)
        self.layers = all_layers[: last + 1]
        where = Path(weights_path) if weights_path is not None else default_vgg19_path()
        state = _read_vgg19_state(where) if pretrained else {}
        generator = torch.Generator().manual_seed(0)
        for name, index, channels_in, channels_out in self.layers:
            if not name.startswith("conv"):
                continue
            shape = (channels_out, channels_in, 3, 3)
            if pretrained:
                weight, bias = self._stored(state, index, shape, where)
            else:
                weight = torch.empty(shape)
                nn.init.kaiming_normal_(
                    weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
                bias = torch.zeros(channels_out)
            self.register_parameter(f"{name}_weight", nn.Parameter(weight, requires_grad=False))
            self.register_parameter(f"{name}_bias", nn.Parameter(bias, requires_grad=False))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), False)

    @staticmethod
    def _stored(
        state: Mapping[str, Any], index: int, shape: tuple[int, ...], where: Path
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias of torchvision's ``features.<index>`` conv, shapes checked."""
        tensors = []
        for key, expected in (
            (f"features.{index}.weight", shape),
            (f"features.{index}.bias", shape[:1]),
        ):
            value = state.get(key)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                raise InputError(
                    f"{where} is not torchvision's VGG19 state dict: {key} should be a tensor "
                    f"of shape {expected}, found {found}"
                )
            tensors.append(value.detach().float().clone())
        return tensors[0], tensors[1]

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG19 features of ``x (B, 3, H, W)`` in ``[0, 1]`` for the weighted layers."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"PerceptualLoss expects RGB images (B, 3, H, W), got {tuple(x.shape)}"
            )
        x = (x.to(self.mean.dtype) - self.mean) / self.std
        out = {}
        for name, *_ in self.layers:
            if name.startswith("conv"):
                weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
                x = F.conv2d(x, weight, bias, padding=1)
            elif name.startswith("relu"):
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2, 2)
            if name in self.layer_weights:
                out[name] = x
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The weighted sum of per-layer mean absolute feature differences (a scalar)."""
        if sr.shape != hr.shape:
            raise ValueError(f"sr and hr must have the same shape, got {sr.shape} and {hr.shape}")
        sr_features = self.features(sr)
        with torch.no_grad():
            hr_features = self.features(hr.detach())
        terms = [
            weight * F.l1_loss(sr_features[name].float(), hr_features[name].float())
            for name, weight in self.layer_weights.items()
        ]
        return torch.stack(terms).sum()

    # The VGG weights are fixed data, not state: kept out of state dicts (see class docstring).
    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        pass

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        pass


class GANLoss(nn.Module):
    """Adversarial loss on per-pixel (or per-patch) logits, optionally averaged over a mask.

    Per element, with ``D`` the logits:

    - vanilla: discriminator ``softplus(-D)`` (real) / ``softplus(D)`` (fake), generator
      ``softplus(-D)`` (non-saturating); Real-ESRGAN's;
    - hinge: discriminator ``relu(1 - D)`` (real) / ``relu(1 + D)`` (fake), generator ``-D``

    (vanilla is binary cross entropy with logits against 1 / 0; a generator step calls
    with ``target_is_real=True``). The per-element loss is averaged over all elements, or,
    with ``mask``, over the masked region: ``sum(loss * m) / sum(m)``. An all-zero mask
    gives 0 (the released code gives NaN for hinge and the unmasked mean for vanilla).
    Computed in float32 whatever the autocast precision.

    Unmasked hinge is PBaSR's Eq. 1: the discriminator's loss
    ``mean relu(1 - D(HR)) + mean relu(1 + D(SR))``, each mean over the whole ``W H C``
    (and the batch). Eq. 1 as printed drops the ``max(0, .)``; the paper calls the loss a
    hinge loss (Sec. 3.3) and the released ``GANLoss`` / ``MaskedGANLoss`` (gan_type
    ``hinge``) clamp with a ReLU as here. The paper gives no generator term; ``-mean D(SR)``
    is the released code's (and BasicSR's). The released ``MaskedGANLoss`` averages over a
    mask as ``mask=`` does here.

    Args:
        kind: ``"vanilla"`` (Real-ESRGAN) or ``"hinge"`` (PBaSR's Eq. 1).
    """

    def __init__(self, kind: GANKind = "vanilla") -> None:
        super().__init__()
        if kind not in ("vanilla", "hinge"):
            raise ValueError(f"kind must be 'vanilla' or 'hinge', got {kind!r}")
        self.kind = kind

    def per_element(
        self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool
    ) -> torch.Tensor:
        """The unreduced loss, same shape as ``logits`` (see the class docstring)."""
        logits = logits.float()
        if self.kind == "vanilla":
            return F.softplus(-logits) if target_is_real else F.softplus(logits)
        if for_discriminator:
            return F.relu(1 - logits) if target_is_real else F.relu(1 + logits)
        if not target_is_real:
            raise ValueError("the generator's hinge loss is -D: call it with target_is_real=True")
        return -logits

    def forward(
        self,
        logits: torch.Tensor,
        target_is_real: bool,
        for_discriminator: bool,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the scalar loss.

        Args:
            logits: Discriminator output, e.g. ``(B, 1, H, W)``.
            target_is_real: Whether ``logits`` should say "real".
            for_discriminator: The discriminator's loss (``True``) or the generator's.
            mask: Weights broadcastable to ``logits`` (bool or float, e.g. ``(B, 1, H, W)``
                1 in the blurred region); ``None``: the plain mean.
        """
        loss = self.per_element(logits, target_is_real, for_discriminator)
        if mask is None:
            return loss.mean()
        try:
            broadcast = torch.broadcast_shapes(mask.shape, loss.shape)
        except RuntimeError:
            broadcast = None
        if broadcast != loss.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the logits' "
                f"{tuple(loss.shape)}"
            )
        weights = mask.to(loss.dtype).expand_as(loss)
        total = weights.sum()
        return (loss * weights).sum() / torch.where(total > 0, total, torch.ones_like(total))
