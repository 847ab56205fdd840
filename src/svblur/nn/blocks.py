"""Small convolutional building blocks shared by the networks.

The parameter names (``conv``/``bn`` in :class:`ConvBN`, ``conv1``/``bn1``/``conv2``/``bn2``
in :class:`BasicBlock`) follow the usual mmcv / torchvision layout, so checkpoints written by
those code bases map onto these modules key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "ConvBN", "PooledBatchNorm2d", "reflect_pad_to_multiple"]


class PooledBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that also works in training mode on a single pooled vector.

    In training mode ``nn.BatchNorm2d`` needs more than one value per channel: on a globally
    pooled ``(1, C, 1, 1)`` tensor (batch size 1) there are no batch statistics and PyTorch
    raises. This subclass behaves exactly like ``nn.BatchNorm2d`` in every other case. When it
    is training and sees one value per channel, it normalizes with its running estimates
    (the same affine map it applies in eval mode) and leaves those estimates unchanged,
    because a single sample carries no information about the batch variance.

    Eval-mode outputs, and training-mode outputs for ``B * H * W > 1``, are those of
    ``nn.BatchNorm2d``; the state dict is the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(B, C, H, W)``."""
        single_value = x.shape[0] * x.shape[2] * x.shape[3] == 1
        if self.training and single_value and self.running_mean is not None:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        return super().forward(x)


class ConvBN(nn.Sequential):
    """Convolution without bias, BatchNorm (eps 1e-5) and an optional LeakyReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; padding keeps the spatial size (``kernel_size // 2``).
        negative_slope: Slope of the LeakyReLU; ``None`` for no activation.
        norm: BatchNorm class (``nn.BatchNorm2d`` or :class:`PooledBatchNorm2d`).

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        negative_slope: float | None = None,
        norm: type[nn.BatchNorm2d] = nn.BatchNorm2d,
    ) -> None:
        layers: dict[str, nn.Module] = {
            "conv": nn.Conv2d(
                in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
            ),
            "bn": norm(out_channels, eps=1e-5),
        }
        if negative_slope is not None:
            layers["act"] = nn.LeakyReLU(negative_slope, inplace=True)
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)


class BasicBlock(nn.Module):
    """ResNet basic block with identity shortcut: conv3x3-BN-ReLU-conv3x3-BN, + x, ReLU.

    Args:
        channels: Input and output channels.

    Shape:
        ``(B, channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape ``(B, C, H, W)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def reflect_pad_to_multiple(x: torch.Tensor, multiple: tuple[int, int]) -> torch.Tensor:
    """Pad the bottom and right of ``x`` by reflection up to a multiple of ``multiple``.

    Where the padding is smaller than the size (the only case ``F.pad(..., "reflect")``
    accepts) this is exactly ``F.pad(x, (0, pad_w, 0, pad_h), "reflect")``. Larger paddings,
    e.g. a 15 x 20 window on a 2 x 3 feature map, continue the reflection periodically (the
    mirror image of the mirror image, ...), which is what repeated reflect padding gives; a
    dimension of size 1 is replicated.

    Eager code pads with ``F.pad`` (as many calls as the padding needs, none without
    padding). While ``torch.jit.trace`` records the function (the ONNX export), it gathers
    rows and columns at indices computed from the traced size instead
    (``_reflect_pad_indices``), so that the recorded graph pads every input size the
    same way; the values are the same.

    Args:
        x: Tensor of shape ``(B, C, H, W)``.
        multiple: ``(mh, mw)``.

    Returns:
        Tensor of shape ``(B, C, ceil(H / mh) * mh, ceil(W / mw) * mw)``.
    """
    height, width = x.shape[-2:]
    if torch.jit.is_tracing():
        rows = _reflect_pad_indices(height, multiple[0], x.device)
        cols = _reflect_pad_indices(width, multiple[1], x.device)
        return x.index_select(-2, rows).index_select(-1, cols)
    pad_h = (multiple[0] - height % multiple[0]) % multiple[0]
    pad_w = (multiple[1] - width % multiple[1]) % multiple[1]
    # Shape-only control flow: one F.pad call whenever the released code's padding works.
    while pad_h > 0 or pad_w > 0:
        cur_h, cur_w = x.shape[-2:]
        step_h = min(pad_h, cur_h - 1)
        step_w = min(pad_w, cur_w - 1)
        if (pad_h > 0 and step_h == 0) or (pad_w > 0 and step_w == 0):
            # A size-1 dimension has nothing to reflect: replicate it once, then continue.
            rep_h = pad_h if cur_h == 1 else 0
            rep_w = pad_w if cur_w == 1 else 0
            x = F.pad(x, (0, rep_w, 0, rep_h), mode="replicate")
            pad_h -= rep_h
            pad_w -= rep_w
            continue
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h -= step_h
        pad_w -= step_w
    return x


def _reflect_pad_indices(
    size: int | torch.Tensor, multiple: int, device: torch.device | None = None
) -> torch.Tensor:
    """The source index of every position of one dimension padded by
    :func:`reflect_pad_to_multiple`.

    Periodic reflection: position ``i`` reads ``i mod 2(size - 1)``, mirrored back into
    ``[0, size)`` when it lands past the end; a dimension of size 1 reads index 0
    everywhere. Only tensor arithmetic on ``size``, so that under ``torch.jit.trace``
    (where shapes are 0-dim tensors) the indices follow the traced size.

    Args:
        size: Length of the dimension (an int, or a 0-dim integer tensor while tracing).
        multiple: The padded length is the next multiple of this.
        device: Device of the indices.

    Returns:
        Integer tensor of shape ``(ceil(size / multiple) * multiple,)`` with values in
        ``[0, size)``.
    """
    size = torch.as_tensor(size, device=device)
    padded = torch.div(size + multiple - 1, multiple, rounding_mode="floor") * multiple
    positions = torch.arange(padded, device=device)
    period = (2 * size - 2).clamp(min=1)  # size 1: period 1, every position reads index 0
    phase = torch.remainder(positions, period)
    return torch.where(phase < size, phase, period - phase)
