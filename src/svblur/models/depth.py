"""Depth estimators behind one interface, for SSR's kernel estimation and refinement (SVKR).

Every estimator is a :class:`DepthEstimator`: ``estimator(image) -> (B, 1, H, W)`` depth at
the image's size. Estimators that infer depth from the image give relative depth,
normalized per image to ``[0, 1]`` with 0 the nearest and 1 the farthest pixel
(:func:`normalize_depth`): only the order and the relative spacing of depths carry over
between them, which is all a kernel estimator can rely on when it is trained on one source
of depth and run on another. The data set's own depth can also be given in forms that
keep its scale (:data:`DEPTH_FORMS`).

- :class:`GroundTruthDepth`: the data set's depth (``batch["depth"]``, in mm), passed at call
  time as ``estimator(image, depth=...)``; the image only sets the output size. By default
  as the signed defocus about the camera model's focus (``form="defocus"``), what the
  kernels of ``degradation=gaussian_sv`` are a function of.
- :class:`SMPDepthNet`: a U-Net from segmentation-models-pytorch with a timm encoder,
  randomly initialized, to be trained on the data set's depth.
- :class:`HFDepth`: a Hugging Face ``transformers`` depth model (DPT, Depth Anything; SSR
  uses MiDaS) read from a local folder; ``transformers`` is an optional dependency and
  nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from svblur.degradation import (
    DEFAULT_FOCUS_QUANTILE,
    MM_PER_M,
    focus_at_quantile,
    signed_defocus,
)
from svblur.errors import InputError
from svblur.nn import reflect_pad_to_multiple

from .unet import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DEFOCUS_SCALE",
    "DEPTH_FORMS",
    "DepthEstimator",
    "GroundTruthDepth",
    "HFDepth",
    "SMPDepthNet",
    "dpt_input_size",
    "normalize_depth",
    "resize_depth",
]

HF_EXTRA_HINT = "install the optional extra: pip install 'svblur[depth]' (adds transformers)"

DepthForm = Literal["defocus", "metric", "minmax"]

#: What :class:`GroundTruthDepth` multiplies the defocus (1/m) by, in px * m: about the
#: middle aperture of ``degradation=gaussian_sv``'s camera (24-36), so that the input is
#: about the blur in HR pixels and spans the range where the kernels change (|defocus| up
#: to ~0.15 1/m before sigma reaches its cap) with values of order 1, which a network
#: learns from far faster than from the raw 1/m. A fixed constant: the scale is kept.
DEFOCUS_SCALE = 30.0

#: The forms :class:`GroundTruthDepth` gives the data set's depth (mm) in.
DEPTH_FORMS: dict[str, str] = {
    "defocus": (
        "signed defocus 1/z_f - 1/z in 1/m about the focus z_f at a depth quantile of the "
        "image (svblur.degradation.signed_defocus, focus_at_quantile), times a fixed "
        "defocus_scale (px * m): keeps the scale and passes the camera model's focus on"
    ),
    "metric": "depth in metres: keeps the scale, carries no focus",
    "minmax": (
        "normalized per image to [0, 1] (normalize_depth): relative depth, as image-based "
        "estimators give it"
    ),
}


def normalize_depth(depth: torch.Tensor) -> torch.Tensor:
    """Per-image min-max normalization: ``(d - min) / (max - min)`` over each image.

    Args:
        depth: ``(B, 1, H, W)`` (or ``(B, C, H, W)``: the extrema are taken over all of
            ``C, H, W``).

    Returns:
        Same shape, each image in ``[0, 1]`` with its nearest pixel 0 and its farthest 1; an
        image of constant depth becomes all zeros.
    """
    if depth.dim() != 4:
        raise InputError(
            f"depth must be (B, 1, H, W), got shape {tuple(depth.shape)}; add the channel "
            "dimension with depth.unsqueeze(1)"
        )
    flat = depth.flatten(1)
    low = flat.amin(1).view(-1, 1, 1, 1)
    span = flat.amax(1).view(-1, 1, 1, 1) - low
    return (depth - low) / torch.where(span > 0, span, torch.ones_like(span))


def resize_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a depth map: area averaging when it shrinks in both directions (e.g. an HR
    map to the LR grid; exact block means for integer factors), else bilinear
    (``align_corners=False``).

    Args:
        depth: ``(B, 1, H, W)``.
        size: Target ``(h, w)``.

    Returns:
        ``(B, 1, h, w)``; ``depth`` itself when it already has that size.
    """
    height, width = depth.shape[-2:]
    if (height, width) == tuple(size):
        return depth
    if size[0] <= height and size[1] <= width:
        return F.adaptive_avg_pool2d(depth, size)
    return F.interpolate(depth, size=size, mode="bilinear", align_corners=False)


def _check_image(image: torch.Tensor, name: str) -> None:
    if image.dim() != 4:
        raise InputError(
            f"{name} expects a batch of images (B, C, H, W), got shape {tuple(image.shape)}; "
            "add a batch dimension with image.unsqueeze(0)"
        )


class DepthEstimator(nn.Module):
    """Interface of SSR's depth estimators: image -> depth.

    Subclasses implement :meth:`forward`. The result is ``(B, 1, H, W)`` at the image's
    size: relative depth normalized per image to ``[0, 1]`` (0 nearest, 1 farthest, see
    :func:`normalize_depth`) for estimators that infer it from the image, the form it is
    built with for :class:`GroundTruthDepth`. ``depth`` is the data set's depth for
    estimators that read it (:class:`GroundTruthDepth`); estimators that infer depth from
    the image ignore it, so a caller such as :class:`~svblur.models.SVKR` can pass the
    batch's depth to any of them.
    """

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Estimate the depth of ``image``.

        Args:
            image: ``(B, 3, H, W)`` RGB in ``[0, 1]``.
            depth: The data set's depth ``(B, 1, H', W')`` in mm, any size, or ``None``.

        Returns:
            ``(B, 1, H, W)`` depth (relative, in ``[0, 1]``, unless the estimator says
            otherwise).
        """
        raise NotImplementedError


class GroundTruthDepth(DepthEstimator):
    """The data set's depth as the estimate (an upper bound for SVKR, and for training).

    ``forward(image, depth)`` gives ``depth`` (mm) in ``form`` (:data:`DEPTH_FORMS`) at the
    image's size (:func:`resize_depth`; the focus of ``"defocus"`` is taken from the map
    before resizing, the ``"minmax"`` normalization after it); the image sets only the
    size. It has no parameters.

    - ``"defocus"`` (default): ``defocus_scale`` times the signed defocus ``1 / z_f - 1 /
      z`` in 1/m (:func:`~svblur.degradation.signed_defocus`) about the focus ``z_f`` at
      the depth quantile ``focus_quantile`` of each map
      (:func:`~svblur.degradation.focus_at_quantile`), the focus rule of the camera model
      of ``degradation=gaussian_sv`` (:class:`~svblur.degradation.GaussianFieldBlur`), so
      its kernels are a function of this input (the two quantiles must agree); it keeps
      the scale (doubling every depth halves it). Its focus is that of the map it is
      given: give it the map the degradation saw (the same crop).
    - ``"metric"``: depth in metres.
    - ``"minmax"``: normalized per image to ``[0, 1]`` (:func:`normalize_depth`), the
      relative depth image-based estimators give.

    Args:
        form: ``"defocus"``, ``"metric"`` or ``"minmax"``.
        focus_quantile: The focus of ``"defocus"``, a depth quantile in ``[0, 1]``.
        defocus_scale: What ``"defocus"`` multiplies the defocus by (px * m).

    Example:
        >>> import torch
        >>> depth = torch.tensor([[[[1000.0, 4000.0], [2000.0, 5000.0]]]])
        >>> GroundTruthDepth(defocus_scale=1.0)(torch.rand(1, 3, 2, 2), depth=depth).flatten().tolist()
        [-0.5, 0.25, 0.0, 0.30000001192092896]
        >>> GroundTruthDepth("minmax")(torch.rand(1, 3, 2, 2), depth=depth).flatten().tolist()
        [0.0, 0.75, 0.25, 1.0]
    """

    def __init__(
        self,
        form: DepthForm = "defocus",
        focus_quantile: float = DEFAULT_FOCUS_QUANTILE,
        defocus_scale: float = DEFOCUS_SCALE,
    ) -> None:
        super().__init__()
        if form not in DEPTH_FORMS:
            raise ValueError(f"form must be one of {sorted(DEPTH_FORMS)}, got {form!r}")
        if not 0.0 <= focus_quantile <= 1.0:
            raise ValueError(f"focus_quantile must be in [0, 1], got {focus_quantile!r}")
        if not defocus_scale > 0:
            raise ValueError(f"defocus_scale must be positive, got {defocus_scale!r}")
        self.form = form
        self.focus_quantile = float(focus_quantile)
        self.defocus_scale = float(defocus_scale)

    def extra_repr(self) -> str:
        return (
            f"form={self.form!r}, focus_quantile={self.focus_quantile}, "
            f"defocus_scale={self.defocus_scale}"
        )

    def _scaled(self, depth: torch.Tensor) -> torch.Tensor:
        """``"metric"`` or ``"defocus"`` of ``(B, 1, H, W)`` mm at the map's own size."""
        if self.form == "metric":
            return depth / MM_PER_M
        if (depth <= 0).any():
            raise InputError("GroundTruthDepth(form='defocus') needs positive depths in mm")
        focus = focus_at_quantile(depth, self.focus_quantile).view(-1, 1, 1, 1)
        return self.defocus_scale * signed_defocus(depth, focus)

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        _check_image(image, "GroundTruthDepth")
        if depth is None:
            raise InputError(
                "GroundTruthDepth needs the data set's depth: call it as "
                "estimator(image, depth=batch['depth']) (or svkr(lr, depth=batch['depth']))"
            )
        if depth.dim() == 3:
            depth = depth.unsqueeze(1)
        if depth.dim() != 4 or depth.shape[1] != 1 or depth.shape[0] != image.shape[0]:
            raise InputError(
                f"depth must be (B, 1, H, W) with the image's batch size {image.shape[0]}, "
                f"got {tuple(depth.shape)}"
            )
        size = (image.shape[-2], image.shape[-1])
        if self.form == "minmax":
            return normalize_depth(resize_depth(depth.to(image.dtype), size))
        return resize_depth(self._scaled(depth.float()), size).to(image.dtype)


class SMPDepthNet(DepthEstimator):
    """A trainable monocular depth network: segmentation-models-pytorch U-Net, one output.

    The image is normalized with ImageNet statistics, padded (reflect) to a multiple of
    ``2 ** encoder_depth`` and to at least twice that (so that BatchNorm sees more than one
    value per channel at the bottleneck), passed through the U-Net (random initialization,
    ``encoder_weights=None``: nothing is downloaded), cropped back and normalized per image
    (:func:`normalize_depth`). Because of that normalization the network learns depth up to
    an affine map per image; train it with e.g. ``F.l1_loss(net(hr),
    normalize_depth(batch["depth"]))``.

    Args:
        encoder_name: A segmentation-models-pytorch encoder; ``"tu-<name>"`` takes a timm
            model (e.g. ``"tu-resnet18"``, ``"tu-mobilenetv3_small_050"``).
        encoder_depth: Encoder stages (3 to 5).
        decoder_channels: Decoder widths, one per stage.
        in_channels: Image channels.

    Shape:
        ``(B, in_channels, H, W)`` in ``[0, 1]``, any ``H, W`` -> ``(B, 1, H, W)`` in ``[0, 1]``.
    """

    def __init__(
        self,
        encoder_name: str = "tu-resnet18",
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != encoder_depth:
            raise ValueError(
                f"decoder_channels needs one width per encoder stage ({encoder_depth}), got "
                f"{tuple(decoder_channels)}"
            )
        self.multiple = 2**encoder_depth
        self.unet = smp.Unet(
            encoder_name=encoder_name,
            encoder_depth=encoder_depth,
            encoder_weights=None,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=1,
        )
        mean = torch.tensor(IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels)
        std = torch.tensor(IMAGENET_STD if in_channels == 3 else (0.5,) * in_channels)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        _check_image(image, "SMPDepthNet")
        height, width = image.shape[-2:]
        x = reflect_pad_to_multiple((image - self.mean) / self.std, (self.multiple,) * 2)
        least = 2 * self.multiple
        extra_h, extra_w = max(0, least - x.shape[-2]), max(0, least - x.shape[-1])
        if extra_h or extra_w:
            x = F.pad(x, (0, extra_w, 0, extra_h), mode="replicate")
        return normalize_depth(self.unet(x)[..., :height, :width])


def dpt_input_size(
    size: tuple[int, int],
    target: tuple[int, int],
    multiple: int = 1,
    keep_aspect_ratio: bool = False,
) -> tuple[int, int]:
    """Network input size of DPT-style depth models (the rule of their image processors).

    Each side is scaled to the target; with ``keep_aspect_ratio`` both sides use the
    factor closer to 1 (the image changes as little as possible). Each side is then
    rounded to the nearest multiple of ``multiple`` (at least one ``multiple``).

    Args:
        size: Image ``(H, W)``.
        target: The processor's ``(height, width)``.
        multiple: The processor's ``ensure_multiple_of`` (Depth Anything: 14).
        keep_aspect_ratio: The processor's ``keep_aspect_ratio``.

    Returns:
        ``(height, width)`` of the network input.
    """
    scale_h, scale_w = target[0] / size[0], target[1] / size[1]
    if keep_aspect_ratio:
        scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h

    def constrain(value: float) -> int:
        return max(multiple, int(round(value / multiple)) * multiple)

    return constrain(scale_h * size[0]), constrain(scale_w * size[1])


class HFDepth(DepthEstimator):
    """A Hugging Face ``transformers`` depth model from a local folder (DPT, Depth Anything).

    The folder is what ``save_pretrained`` writes for the model and its image processor
    (``config.json``, weights, ``preprocessor_config.json``); it is read with
    ``local_files_only=True``, so nothing is downloaded. The processor's settings are
    applied in torch (differentiable, on the image's device): bicubic resize to
    :func:`dpt_input_size`, then ``(x - image_mean) / image_std``. The prediction is
    resized back to the image (bicubic) and normalized per image; relative models (MiDaS,
    DPT, Depth Anything) predict inverse depth, so ``output="disparity"`` turns it into
    relative depth as ``1 - normalize(disparity)`` (order-preserving; disparity is only
    known up to an affine map, so ``1 / disparity`` is not defined). Metric models:
    ``output="depth"``.

    Args:
        path: Local folder of the model.
        output: What the model predicts: ``"disparity"`` (relative inverse depth) or
            ``"depth"``.
        trainable: Fine-tune the model; by default its parameters are frozen and it stays
            in eval mode (gradients still reach the input image).

    Raises:
        InputError: The folder does not exist, or ``transformers`` is not installed
            (optional extra ``svblur[depth]``), or the folder holds no depth model.
    """

    def __init__(
        self,
        path: str | Path,
        output: Literal["disparity", "depth"] = "disparity",
        trainable: bool = False,
    ) -> None:
        super().__init__()
        if output not in ("disparity", "depth"):
            raise ValueError(f"output must be 'disparity' or 'depth', got {output!r}")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise InputError(
                f"HFDepth: model folder {str(folder)!r} not found; save a depth model there "
                "with model.save_pretrained(folder) and processor.save_pretrained(folder) "
                "(svblur never downloads it)"
            )
        try:
            transformers: Any = importlib.import_module("transformers")
        except ImportError:
            raise InputError(f"HFDepth needs the transformers package: {HF_EXTRA_HINT}") from None
        try:
            self.model = transformers.AutoModelForDepthEstimation.from_pretrained(
                str(folder), local_files_only=True
            )
            processor = transformers.AutoImageProcessor.from_pretrained(
                str(folder), local_files_only=True
            )
        except (OSError, ValueError) as error:
            raise InputError(
                f"HFDepth: {str(folder)!r} holds no loadable transformers depth model ({error})"
            ) from None
        self.output = output
        self.trainable = bool(trainable)
        size = getattr(processor, "size", None) or {}
        side = size.get("shortest_edge")
        self.target = (int(size.get("height", side or 384)), int(size.get("width", side or 384)))
        self.multiple = int(getattr(processor, "ensure_multiple_of", 1) or 1)
        self.keep_aspect_ratio = bool(getattr(processor, "keep_aspect_ratio", False))
        mean = getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)
        std = getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        if not self.trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> HFDepth:
        """Set the mode; a frozen model stays in eval mode."""
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        _check_image(image, "HFDepth")
        size = (image.shape[-2], image.shape[-1])
        net_size = dpt_input_size(size, self.target, self.multiple, self.keep_aspect_ratio)
        x = F.interpolate(image, size=net_size, mode="bicubic", antialias=True)
        x = (x - self.mean.to(x)) / self.std.to(x)
        predicted = self.model(pixel_values=x).predicted_depth
        if predicted.dim() == 3:
            predicted = predicted.unsqueeze(1)
        predicted = F.interpolate(predicted.to(image.dtype), size=size, mode="bicubic")
        # normalize(-d) = 1 - normalize(d), and all zeros for a constant map
        return normalize_depth(-predicted if self.output == "disparity" else predicted)
