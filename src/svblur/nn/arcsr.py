"""ArcSR's layers: deformable mutual and kernel-guided convolutions.

Liu and Hao, "Customized Treatment per Pixel for Blind Image Super-Resolution" (ArcSR).
No code was released; these layers are written from the paper's description (Sec. 3.2),
and every choice the paper leaves open is a constructor argument whose default is named
in the class docstring.

- :class:`DMConv` (deformable mutual convolution, Fig. 1b) splits the channels 1/4 : 3/4,
  predicts deformable-convolution offsets from the 3/4 part with two convolutions,
  deforms the 1/4 part with them (``torchvision.ops.deform_conv2d``), and fuses the
  concatenation with one more convolution. :class:`DMBlock` stacks four of them, each
  deforming a different quarter, around a skip connection.
- :class:`KGConv` (kernel-guided convolution, Fig. 1c) scales a ``k x k`` convolution's
  weights at every pixel by that pixel's estimated ``k x k`` kernel.
  :class:`KGBlock` is three of them around a skip connection; :class:`ChannelAttention`
  follows each block in the SR branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from svblur.ops.patches import iter_patch_rows

__all__ = [
    "ChannelAttention",
    "DMBlock",
    "DMConv",
    "KGBlock",
    "KGConv",
    "KernelConcatConv",
]

#: Default bound on one row chunk's gathered patches in :class:`KGConv` (bytes), on CPU
#: and on other devices. On CPU small chunks are faster as well as smaller: one KGConv
#: 64 -> 64, k = 5, on 180 x 320 took 0.26 s forward and 0.76 s forward + backward with
#: 4 MiB chunks, 0.43 s and 1.40 s with 64 MiB (one thread; freshly mapped large
#: buffers are paid in page faults). On GPUs larger chunks mean fewer kernel launches.
KGCONV_CHUNK_BYTES = {"cpu": 4 * 2**20, "other": 64 * 2**20}


def _check_odd(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1 or value % 2 != 1:
        raise ValueError(f"{name} must be a positive odd integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- DMConv
class DMConv(nn.Module):
    """Deformable mutual convolution (ArcSR Sec. 3.2.2, Fig. 1b).

    With ``q = channels // 4`` the input is split along the channels into the quarter
    ``F_s = x[:, split_index * q : (split_index + 1) * q]`` and the other ``3q`` channels
    ``F^_s``. Two convolutions on ``F^_s`` (``offset_kernel_size``, ReLU between) give the
    offsets (and, for DCN v2, the modulation mask) of a ``kernel_size`` deformable
    convolution ``q -> q`` applied to ``F_s`` by ``torchvision.ops.deform_conv2d``. The
    deformed quarter is put back in its place and a fusion convolution mixes all
    channels::

        out = fusion(cat(x[:, :start], deform(F_s, offsets(F^_s)), x[:, stop:]))

    Choices where the paper is silent:

    - ``split_index`` names the quarter that is deformed (0 to 3); a :class:`DMBlock`
      uses each quarter once.
    - ``offset_channels = channels // 4`` hidden channels between the offset convs.
    - DCN v1 (offsets only, ``modulated=False``): the paper mentions offsets only.
      ``modulated=True`` adds a sigmoid mask (DCN v2).
    - The last offset conv starts at zero, so at initialization the deformable conv is a
      plain convolution (and a v2 mask is 0.5 everywhere), the usual DCN start.
    - ``fusion_kernel_size = 1``: the paper fuses "the information within channels"; the
      deformable conv already provides the spatial context.

    Args:
        channels: Input and output channels, a multiple of 4.
        split_index: Which quarter of the channels is deformed, in ``[0, 4)``.
        kernel_size: Odd size of the deformable convolution.
        offset_channels: Hidden channels of the offset branch (default ``channels // 4``).
        offset_kernel_size: Odd size of both offset convolutions.
        fusion_kernel_size: Odd size of the fusion convolution.
        modulated: DCN v2 (offsets and a modulation mask) instead of DCN v1.
        offset_groups: Offset groups of the deformable convolution (divides ``q``).

    Shape:
        ``(B, channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        split_index: int,
        kernel_size: int = 3,
        offset_channels: int | None = None,
        offset_kernel_size: int = 3,
        fusion_kernel_size: int = 1,
        modulated: bool = False,
        offset_groups: int = 1,
    ) -> None:
        super().__init__()
        if channels < 4 or channels % 4:
            raise ValueError(f"DMConv splits channels 1/4 : 3/4; got channels={channels}")
        if not 0 <= split_index < 4:
            raise ValueError(f"split_index is the deformed quarter, in [0, 4); got {split_index}")
        kernel_size = _check_odd("kernel_size", kernel_size)
        offset_kernel_size = _check_odd("offset_kernel_size", offset_kernel_size)
        fusion_kernel_size = _check_odd("fusion_kernel_size", fusion_kernel_size)
        quarter = channels // 4
        if offset_groups < 1 or quarter % offset_groups:
            raise ValueError(
                f"offset_groups must divide channels // 4 = {quarter}, got {offset_groups}"
            )
        hidden = int(offset_channels or quarter)
        self.channels = channels
        self.split_index = int(split_index)
        self.modulated = bool(modulated)
        self.part = slice(split_index * quarter, (split_index + 1) * quarter)
        taps = offset_groups * kernel_size**2
        self.num_offsets = 2 * taps
        self.offset = nn.Sequential(
            nn.Conv2d(
                channels - quarter, hidden, offset_kernel_size, padding=offset_kernel_size // 2
            ),
            nn.ReLU(inplace=True),
            nn.Conv2d(
                hidden,
                self.num_offsets + (taps if modulated else 0),
                offset_kernel_size,
                padding=offset_kernel_size // 2,
            ),
        )
        nn.init.zeros_(self.offset[-1].weight)
        nn.init.zeros_(self.offset[-1].bias)
        self.deform = DeformConv2d(quarter, quarter, kernel_size, padding=kernel_size // 2)
        self.fusion = nn.Conv2d(
            channels, channels, fusion_kernel_size, padding=fusion_kernel_size // 2
        )

    def offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Offsets and mask predicted from the other three quarters of ``x``.

        Args:
            x: ``(B, channels, H, W)``.

        Returns:
            ``offset`` ``(B, 2 * offset_groups * k*k, H, W)`` in torchvision's layout and
            ``mask`` ``(B, offset_groups * k*k, H, W)`` in ``(0, 1)``, or ``None`` (DCN v1).
        """
        rest = torch.cat([x[:, : self.part.start], x[:, self.part.stop :]], dim=1)
        out = self.offset(rest)
        if not self.modulated:
            return out, None
        return out[:, : self.num_offsets], torch.sigmoid(out[:, self.num_offsets :])

    def deformable_part(self, x: torch.Tensor) -> torch.Tensor:
        """The deformable convolution of the split quarter, ``(B, channels // 4, H, W)``.

        Inputs of another dtype than the weights (bf16 / fp16 under autocast) are
        convolved in the weights' dtype and cast back: torchvision's CPU kernel has no
        reduced-precision version, and its CUDA autocast rule also computes in float32.
        """
        offset, mask = self.offsets(x)
        part = x[:, self.part]
        dtype = self.deform.weight.dtype
        if part.dtype == dtype:
            return self.deform(part, offset, mask)
        mask = mask.to(dtype) if mask is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return self.deform(part.to(dtype), offset.to(dtype), mask).to(part.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the deformable mutual convolution to ``x`` ``(B, channels, H, W)``."""
        deformed = self.deformable_part(x)
        joined = torch.cat([x[:, : self.part.start], deformed, x[:, self.part.stop :]], dim=1)
        return self.fusion(joined)


class DMBlock(nn.Module):
    """Deformable mutual block: ``num_convs`` DMConvs, ReLU between, plus a skip.

    ``x + DMConv_3(relu(DMConv_2(relu(DMConv_1(relu(DMConv_0(x)))))))``, where DMConv
    ``i`` deforms quarter ``i % 4`` (the paper: "different DMconv in one DMblock split the
    channel with different indexes"). With ``deformable=False`` every DMConv is a plain
    ``kernel_size`` convolution ``channels -> channels`` (the "w/o DMconv" ablation).

    Args:
        channels: Input and output channels (a multiple of 4 when deformable).
        num_convs: DMConvs in the block (4 in the paper).
        deformable: DMConvs (``True``) or plain convolutions (``False``).
        kernel_size: Size of the deformable (or plain) convolutions.
        offset_channels: See :class:`DMConv`.
        offset_kernel_size: See :class:`DMConv`.
        fusion_kernel_size: See :class:`DMConv`.
        modulated: See :class:`DMConv`.

    Shape:
        ``(B, channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        num_convs: int = 4,
        deformable: bool = True,
        kernel_size: int = 3,
        offset_channels: int | None = None,
        offset_kernel_size: int = 3,
        fusion_kernel_size: int = 1,
        modulated: bool = False,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        kernel_size = _check_odd("kernel_size", kernel_size)
        layers: list[nn.Module] = []
        for i in range(num_convs):
            if i:
                layers.append(nn.ReLU(inplace=True))
            if deformable:
                layers.append(
                    DMConv(
                        channels,
                        i % 4,
                        kernel_size,
                        offset_channels,
                        offset_kernel_size,
                        fusion_kernel_size,
                        modulated,
                    )
                )
            else:
                layers.append(nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` ``(B, channels, H, W)``."""
        return x + self.body(x)


# --------------------------------------------------------------------------- KGConv
class _KernelGuidedConv(torch.autograd.Function):
    """``out = bias + W.view(O, C*k*k) @ (patches * kernels)`` chunk by chunk.

    Only the inputs are saved for the backward pass, which gathers each chunk's patches
    again (the recomputation ``torch.utils.checkpoint`` would do) and folds their
    gradient back onto the padded input: under autograd the ``k*k``-fold patches of one
    chunk exist at a time, in the forward and in the backward pass alike.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        kernels: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        max_chunk_bytes: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, kernels, weight)
        ctx.max_chunk_bytes = max_chunk_bytes
        batch, channels, height, width = x.shape
        out_channels, _, k, _ = weight.shape
        matrix = weight.reshape(out_channels, channels * k * k)
        out = x.new_empty(batch, out_channels, height, width)
        for rows, patches in iter_patch_rows(x, k, "zeros", max_chunk_bytes):
            # No graph is recorded inside forward, and F.unfold returned a new tensor.
            scaled = patches.mul_(kernels[:, None, :, rows]).view(batch, channels * k * k, -1)
            out[:, :, rows] = (matrix @ scaled).view(batch, out_channels, -1, width)
        if bias is not None:
            out += bias.view(1, -1, 1, 1)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, kernels, weight = ctx.saved_tensors
        need_x, need_kernels, need_weight, need_bias = ctx.needs_input_grad[:4]
        batch, channels, height, width = x.shape
        out_channels, _, k, _ = weight.shape
        radius, taps = k // 2, channels * k * k
        matrix = weight.reshape(out_channels, taps)
        grad_kernels = torch.empty_like(kernels) if need_kernels else None
        grad_matrix = torch.zeros_like(matrix) if need_weight else None
        padded = (batch, channels, height + 2 * radius, width + 2 * radius)
        grad_xpad = x.new_zeros(padded) if need_x else None
        for rows, patches in iter_patch_rows(x, k, "zeros", ctx.max_chunk_bytes):
            guide = kernels[:, None, :, rows]
            grad = grad_out[:, :, rows].reshape(batch, out_channels, -1)
            if grad_matrix is not None:
                scaled = torch.mul(patches, guide).view(batch, taps, -1)
                grad_matrix += (grad @ scaled.transpose(1, 2)).sum(0)
                del scaled
            if not (need_x or need_kernels):
                continue
            # One mm per image into a contiguous buffer: a batched matmul with the
            # transposed weight would return a transposed result and copy it.
            grad_patches = torch.empty_like(patches)
            flat = grad_patches.view(batch, taps, -1)
            for b in range(batch):
                torch.mm(matrix.t(), grad[b], out=flat[b])
            if grad_kernels is not None:
                grad_kernels[:, :, rows] = patches.mul_(grad_patches).sum(1)
            if grad_xpad is not None:
                # Adjoint of the gather: patches[b, c, i*k + j, y - y0, x] is
                # xpad[b, c, y + i, x + j], so F.fold sums the taps back onto the rows
                # y0 : y1 + k - 1 of the padded input.
                window = (rows.stop - rows.start + k - 1, width + 2 * radius)
                folded = F.fold(grad_patches.mul_(guide).view(batch, taps, -1), window, k)
                grad_xpad[:, :, rows.start : rows.stop + k - 1] += folded
        grad_x = None
        if grad_xpad is not None:
            grad_x = grad_xpad[:, :, radius : radius + height, radius : radius + width]
        grad_weight = grad_matrix.view_as(weight) if grad_matrix is not None else None
        grad_bias = grad_out.sum((0, 2, 3)) if need_bias else None
        return grad_x, grad_kernels, grad_weight, grad_bias, None


class KGConv(nn.Module):
    """Kernel-guided convolution (ArcSR Sec. 3.2.3, Fig. 1c).

    Each pixel's ``k x k`` kernel scales the convolution weights at that pixel::

        out[b, o, y, x] = bias[o] + sum_{c, i, j} W[o, c, i, j] * kernels[b, i*k + j, y, x]
                                                   * xpad[b, c, y + i, x + j]

    with ``xpad`` the input zero-padded by ``k // 2`` (a cross-correlation, as
    ``F.conv2d``; an all-ones kernel field gives ``F.conv2d(x, W, bias, padding=k // 2)``).

    No weight per pixel is built: the neighbourhoods are gathered a chunk of rows at a
    time by :func:`svblur.degradation.fields.iter_patch_rows`, scaled by the kernels and
    contracted with ``W.view(O, C*k*k)``. The backward pass is explicit and gathers each
    chunk again instead of keeping it, so forward and training memory are bounded by
    about two chunks of ``max_chunk_bytes`` plus the input, output and their gradients
    (first-order gradients only). This is what ``torch.utils.checkpoint`` per chunk would
    give, without autograd's per-chunk gradient of the whole padded input.

    Args:
        in_channels: Input channels ``C``.
        out_channels: Output channels ``O``.
        kernel_size: Odd size ``k`` of the convolution and of the guiding kernels.
        bias: Learn a bias.
        max_chunk_bytes: Bound on one chunk's patches ``B * C * k*k * rows * W * itemsize``
            (a chunk has at least one row); ``None``: 4 MiB on CPU, 64 MiB elsewhere
            (:data:`KGCONV_CHUNK_BYTES`).

    Shape:
        ``x (B, C, H, W)``, ``kernels (B, k*k, H, W)`` (row-major taps, as
        :func:`svblur.degradation.apply_kernel_field` takes them) ``-> (B, O, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        max_chunk_bytes: int | None = None,
    ) -> None:
        super().__init__()
        k = _check_odd("kernel_size", kernel_size)
        if max_chunk_bytes is not None and max_chunk_bytes <= 0:
            raise ValueError(f"max_chunk_bytes must be positive or None, got {max_chunk_bytes}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = k
        self.max_chunk_bytes = None if max_chunk_bytes is None else int(max_chunk_bytes)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialize as ``nn.Conv2d`` does (Kaiming-uniform weight, uniform bias)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size**2)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` ``(B, C, H, W)`` guided by ``kernels`` ``(B, k*k, H, W)``."""
        taps = self.kernel_size**2
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"KGConv expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        expected = (x.shape[0], taps, *x.shape[-2:])
        if tuple(kernels.shape) != expected:
            raise ValueError(
                f"KGConv with kernel_size {self.kernel_size} expects kernels of shape "
                f"(B, k*k, H, W) = {expected} for x {tuple(x.shape)}, got {tuple(kernels.shape)}"
            )
        dtype = x.dtype
        bias = self.bias.to(dtype) if self.bias is not None else None
        chunk = self.max_chunk_bytes
        if chunk is None:
            chunk = KGCONV_CHUNK_BYTES["cpu" if x.device.type == "cpu" else "other"]
        return _KernelGuidedConv.apply(x, kernels.to(dtype), self.weight.to(dtype), bias, chunk)


class KernelConcatConv(nn.Module):
    """The paper's ablation stand-in for :class:`KGConv`: concatenate, then convolve.

    ``conv(cat(x, kernels))`` with a ``kernel_size`` convolution ``C + k*k -> O`` (ArcSR
    Sec. 4.3, "w/o KGconv"): the kernels enter as extra input channels, which costs
    ``O * k*k * kernel_size**2`` more weights than a :class:`KGConv`.

    Args:
        in_channels: Feature channels ``C``.
        out_channels: Output channels ``O``.
        kernel_size: Odd size of the convolution.
        kernel_channels: Channels of the kernel field (default ``kernel_size**2``).

    Shape:
        ``x (B, C, H, W)``, ``kernels (B, kernel_channels, H, W) -> (B, O, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        kernel_channels: int | None = None,
    ) -> None:
        super().__init__()
        k = _check_odd("kernel_size", kernel_size)
        self.kernel_channels = int(kernel_channels or k * k)
        self.conv = nn.Conv2d(in_channels + self.kernel_channels, out_channels, k, padding=k // 2)

    def forward(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Convolve the concatenation of ``x`` and ``kernels``."""
        return self.conv(torch.cat([x, kernels.to(x.dtype)], dim=1))


class KGBlock(nn.Module):
    """Kernel-guided block: ``num_convs`` KGConvs, ReLU between, plus a skip.

    ``x + KGConv_2(relu(KGConv_1(relu(KGConv_0(x, k)), k)), k)`` (ArcSR: "the KGblock
    consists sequentially of a couple of KGconvs and adopts the skip-connection
    mechanism"). With ``kernel_guided=False`` each KGConv is a :class:`KernelConcatConv`
    (the "w/o KGconv" ablation).

    Args:
        channels: Input and output channels.
        kernel_size: Odd size of the convolutions and of the guiding kernels.
        num_convs: Convolutions in the block (3 in the paper).
        kernel_guided: :class:`KGConv` (``True``) or :class:`KernelConcatConv` (``False``).
        max_chunk_bytes: See :class:`KGConv`.

    Shape:
        ``x (B, channels, H, W)``, ``kernels (B, k*k, H, W) -> (B, channels, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        num_convs: int = 3,
        kernel_guided: bool = True,
        max_chunk_bytes: int | None = None,
    ) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.convs = nn.ModuleList(
            KGConv(channels, channels, kernel_size, max_chunk_bytes=max_chunk_bytes)
            if kernel_guided
            else KernelConcatConv(channels, channels, kernel_size)
            for _ in range(num_convs)
        )

    def forward(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` guided by ``kernels``."""
        out = x
        for i, conv in enumerate(self.convs):
            if i:
                out = F.relu(out)
            out = conv(out, kernels)
        return x + out


class ChannelAttention(nn.Module):
    """Channel attention: ``x * sigmoid(FC(avg_pool(conv(x))))``.

    ArcSR (Sec. 3.2.1): attention "with a convolutional layer, an average pooling layer,
    and a full connection layer", multiplied with the given features. The paper is silent
    on the gate; a sigmoid (as in squeeze-and-excitation / RCAN) keeps the weights in
    ``(0, 1)``. The FC layer is one ``channels -> channels`` linear map.

    Args:
        channels: Feature channels.
        kernel_size: Odd size of the convolution.

    Shape:
        ``(B, channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        kernel_size = _check_odd("kernel_size", kernel_size)
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.fc = nn.Linear(channels, channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel weights ``(B, channels)`` in ``(0, 1)``."""
        return torch.sigmoid(self.fc(self.conv(x).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reweight the channels of ``x``."""
        return x * self.attention(x)[:, :, None, None]
