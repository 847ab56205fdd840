"""SR metrics on the whole image and apart on its blurred and sharp regions (ReBlurSR).

ReBlurSR's point is that SR should keep intended blur: a method may sharpen the blurred
background (worse) while it restores the subject (better), and a whole-image score mixes
the two. :func:`region_scores` therefore gives every metric three times, keyed
``"<region>/<metric>"`` for the regions of :data:`REGIONS`: ``all``, ``blurred``
(``blur_mask`` = 1) and ``sharp`` (``blur_mask`` = 0).

Definitions (``sr`` and ``hr`` are clamped to ``[0, 1]`` and, with ``quantize``, rounded to
8 bits first, as saved PNGs):

* ``psnr_y``, ``ssim_y``: the BasicSR convention of :mod:`svblur.metrics.sr` (Y channel,
  ``crop_border`` removed, float64); ``all`` is exactly :func:`~svblur.metrics.psnr_y` /
  :func:`~svblur.metrics.ssim_y`. A region's PSNR uses the mean squared error over the
  region's pixels (after the crop); a region's SSIM is the mean of the SSIM map over the
  windows centred on the region's pixels.
* ``gmsd``, ``vif``, ``vsi`` (:func:`piq.gmsd`, :func:`piq.vif_p`, :func:`piq.vsi`, float32,
  whole image, no crop) give one score per image, not a map. Their region score is the
  whole-image score of the SR image with the *other* region replaced by the reference,
  ``where(region, sr, hr)``: only the errors inside the region count, measured in the
  context of the whole image (filters that straddle the border see both). The other region
  contributes perfect agreement, so a region score lies between the whole-image score and
  the perfect one (GMSD 0; VIF, VSI 1), the closer to perfect the smaller the region:
  compare methods region by region, not one region with the other. A region that fills
  the image gives the ``all`` score.
* ``lpips``, ``dists`` (piq's networks, see :func:`local_perceptual_metrics`; float32, whole
  image, no crop) average over space inside the network, and their region score keeps the
  network and restricts that average to the region. Each VGG16 feature position is
  weighted by the share of the region among the pixels it stands for: the mask, 1 inside,
  average-pooled to the layer's size (:func:`torch.nn.functional.adaptive_avg_pool2d`).

  - LPIPS is a sum over five layers of the spatial mean of a distance map (squared
    differences of unit-normalised features, weighted per channel and summed over
    channels); region LPIPS is the sum over the layers of each map's weighted mean over
    the region (the spatial LPIPS map, averaged over the region's pixels layer by layer).
  - DISTS compares, per channel of six layers (the image and five VGG16 stages), the two
    images' feature means, variances and covariance over space; region DISTS computes
    these statistics over the region only (weighted means). Images whose shorter side
    exceeds 256 pixels are first resized to 256 (bilinear, as piq) and the mask with them
    (by area).

  With weights of 1 everywhere (``all``) both are piq's scores (to rounding). A feature
  position sees the image through its receptive field (wider in deeper layers), so errors
  in the other region near the border count too. Unlike the reference-filled scores above, these are means over the
  region, not diluted by its size: a small region scores as badly as its content is.

An image whose region is empty (a mask of all ones has no ``sharp`` pixel) scores NaN
there, and :class:`RegionMetrics` leaves NaNs out of the mean over images. Without a mask
(``blur_mask=None``, a general test set) only ``all`` is scored.

LPIPS and DISTS need weight files that piq fetches with
:func:`torch.hub.load_state_dict_from_url` (its own file and torchvision's VGG16);
:func:`local_perceptual_metrics` builds them only from files already on this machine and
never downloads.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import piq
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from svblur.errors import InputError

from .metrics import PerImageMean
from .sr import _gaussian_window, _prepare, psnr_y, rgb_to_y, ssim_y

__all__ = [
    "DEFAULT_REGION_METRICS",
    "HIGHER_IS_BETTER",
    "PERCEPTUAL_METRICS",
    "REGIONS",
    "RegionMetrics",
    "local_perceptual_metrics",
    "perceptual_weight_files",
    "region_masks",
    "region_scores",
]

log = logging.getLogger(__name__)

#: The regions scored, in order: the whole image, ``blur_mask`` = 1, ``blur_mask`` = 0.
REGIONS: tuple[str, ...] = ("all", "blurred", "sharp")
#: The metrics that need no learned weights, the default of :func:`region_scores`.
DEFAULT_REGION_METRICS: tuple[str, ...] = ("psnr_y", "ssim_y", "gmsd", "vif", "vsi")
#: The learned metrics (piq's LPIPS and DISTS), built by :func:`local_perceptual_metrics`.
PERCEPTUAL_METRICS: tuple[str, ...] = ("lpips", "dists")
#: Direction of every metric name.
HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr_y": True,
    "ssim_y": True,
    "gmsd": False,
    "vif": True,
    "vsi": True,
    "lpips": False,
    "dists": False,
}

_PIQ_SCORES: dict[str, Callable[..., torch.Tensor]] = {
    "gmsd": piq.gmsd,
    "vif": piq.vif_p,
    "vsi": piq.vsi,
}
_SSIM_HALF_WINDOW = 5  # the 11 x 11 SSIM window of svblur.metrics.sr


def region_masks(blur_mask: torch.Tensor, shape: torch.Size | Sequence[int]) -> torch.Tensor:
    """``blur_mask`` as booleans ``(B, 1, H, W)``, True = blurred (values >= 0.5).

    Args:
        blur_mask: ``(B, 1, H, W)`` or ``(B, H, W)``, 1 = blurred.
        shape: The images' shape ``(B, C, H, W)``, which the mask must match.

    Raises:
        ValueError: The mask's batch or spatial size differs from the images'.
    """
    mask = blur_mask[:, None] if blur_mask.dim() == 3 else blur_mask
    batch, _, height, width = shape
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape) != (batch, 1, height, width):
        raise ValueError(
            f"blur_mask must be (B, 1, H, W) or (B, H, W) matching the images {tuple(shape)}, "
            f"got {tuple(blur_mask.shape)}"
        )
    return mask >= 0.5


def _masked_mean(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` over ``region`` (both ``(B, 1, H, W)``); NaN where empty."""
    count = region.flatten(1).sum(1)
    total = (values * region).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def _ssim_map_255(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The SSIM map of ``(B, 1, H, W)`` images in ``[0, 255]``: ``(B, 1, H - 10, W - 10)``,
    entry ``(i, j)`` for the window centred on pixel ``(i + 5, j + 5)`` (as
    :func:`svblur.metrics.ssim_y`, which averages this map)."""
    if min(pred.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11 x 11 pixels, got {pred.shape[-2:]}")
    window = _gaussian_window(pred.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(pred, window), F.conv2d(target, window)
    var_x = F.conv2d(pred * pred, window) - mu_x**2
    var_y = F.conv2d(target * target, window) - mu_y**2
    cov = F.conv2d(pred * target, window) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )


def _fidelity_scores(
    sr: torch.Tensor,
    hr: torch.Tensor,
    blurred: torch.Tensor,
    crop_border: int,
    quantize: bool,
    metrics: Sequence[str],
) -> dict[str, torch.Tensor]:
    """PSNR-Y / SSIM-Y of the three regions (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    if "psnr_y" not in metrics and "ssim_y" not in metrics:
        return out
    pred, target = _prepare(sr, hr, crop_border, quantize)
    y_pred, y_target = rgb_to_y(pred), rgb_to_y(target)
    region = blurred.to(y_pred.device)
    if crop_border:
        region = region[..., crop_border:-crop_border, crop_border:-crop_border]
    regions = {"blurred": region, "sharp": ~region}
    if "psnr_y" in metrics:
        out["all/psnr_y"] = psnr_y(sr, hr, crop_border, quantize)
        error = (y_pred - y_target).pow(2)
        for name, pixels in regions.items():
            out[f"{name}/psnr_y"] = 10.0 * torch.log10(255.0**2 / _masked_mean(error, pixels))
    if "ssim_y" in metrics:
        out["all/ssim_y"] = ssim_y(sr, hr, crop_border, quantize)
        ssim_map = _ssim_map_255(y_pred, y_target)
        h = _SSIM_HALF_WINDOW
        for name, pixels in regions.items():
            out[f"{name}/ssim_y"] = _masked_mean(ssim_map, pixels[..., h:-h, h:-h])
    return out


def _with_reference_outside(
    sr: torch.Tensor, hr: torch.Tensor, region: torch.Tensor
) -> torch.Tensor:
    """``sr`` inside ``region``, ``hr`` elsewhere: errors outside the region vanish."""
    return torch.where(region, sr, hr)


def _pooled_weights(inside: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The share of ``inside`` ``(B, 1, H, W)`` (float, 1 = in the region) among the pixels
    that each position of a ``size`` feature map stands for: ``(B, 1, h, w)``."""
    if tuple(inside.shape[-2:]) == tuple(size):
        return inside
    return F.adaptive_avg_pool2d(inside, tuple(size))


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over space of ``values`` ``(B, C, h, w)`` with ``weights`` ``(B, 1, h, w)``:
    ``(B, C, 1, 1)``."""
    return (values * weights).sum((2, 3), keepdim=True) / weights.sum((2, 3), keepdim=True)


def _lpips_by_region(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, regions: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """piq's LPIPS of ``x`` against ``y`` over each region (see the module docstring)."""
    distances = network.compute_distance(network.get_features(x), network.get_features(y))
    maps = [(d * w.to(d)).sum(1, keepdim=True) for d, w in zip(distances, network.weights)]
    return [
        sum(_weighted_mean(m, _pooled_weights(inside, m.shape[-2:])) for m in maps).flatten()
        for inside in regions
    ]


def _dists_by_region(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, regions: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """piq's DISTS of ``x`` against ``y`` over each region (see the module docstring)."""
    shorter = min(x.shape[-2:])
    if shorter > 256:  # as piq.DISTS.forward
        x, y = (
            F.interpolate(
                i, scale_factor=256 / shorter, recompute_scale_factor=False, mode="bilinear"
            )
            for i in (x, y)
        )
        regions = [F.interpolate(r, size=x.shape[-2:], mode="area") for r in regions]
    features_x, features_y = network.get_features(x), network.get_features(y)
    layers = len(features_x)
    mean_weights, texture_weights = network.weights[:layers], network.weights[layers:]
    eps = 1e-6  # piq's
    scores = []
    for inside in regions:
        total = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, alpha, beta in zip(features_x, features_y, mean_weights, texture_weights):
            weights = _pooled_weights(inside, fx.shape[-2:])
            mean_x, mean_y = _weighted_mean(fx, weights), _weighted_mean(fy, weights)
            var_x = _weighted_mean((fx - mean_x) ** 2, weights)
            var_y = _weighted_mean((fy - mean_y) ** 2, weights)
            cov = _weighted_mean(fx * fy, weights) - mean_x * mean_y
            means = (2 * mean_x * mean_y + eps) / (mean_x**2 + mean_y**2 + eps)
            textures = (2 * cov + eps) / (var_x + var_y + eps)
            total = total + (means * alpha.to(means)).sum((1, 2, 3))
            total = total + (textures * beta.to(textures)).sum((1, 2, 3))
        scores.append(1 - total)
    return scores


_PERCEPTUAL_BY_REGION = {"lpips": _lpips_by_region, "dists": _dists_by_region}


def region_scores(
    sr: torch.Tensor,
    hr: torch.Tensor,
    blur_mask: torch.Tensor | None,
    crop_border: int = 4,
    metrics: Sequence[str] = DEFAULT_REGION_METRICS,
    perceptual: Mapping[str, nn.Module] | None = None,
    quantize: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-image scores on the whole image and on its blurred and sharp regions.

    Args:
        sr: SR images ``(B, 3, H, W)``, RGB in ``[0, 1]``.
        hr: HR images ``(B, 3, H, W)``, RGB in ``[0, 1]``.
        blur_mask: ``(B, 1, H, W)`` or ``(B, H, W)``, 1 = blurred; ``None``: no regions,
            the ``all`` scores only.
        crop_border: Pixels removed on each side for PSNR / SSIM (the SR scale).
        metrics: Names among :data:`DEFAULT_REGION_METRICS`.
        perceptual: Learned metrics by name (``"lpips"``, ``"dists"``): piq's
            :class:`piq.LPIPS` / :class:`piq.DISTS` modules, as
            :func:`local_perceptual_metrics` returns them; moved to the images' device.
        quantize: Round both images to 8 bits first (as saved PNGs).

    Returns:
        ``"<region>/<metric>"`` -> ``(B,)`` scores for every region of :data:`REGIONS`
        (``all`` only without a mask); NaN for an image whose region is empty. PSNR / SSIM
        in float64, the others in float32; identical images give PSNR ``inf``.

    Raises:
        ValueError: Unknown metric names, shapes that differ, or images too small (SSIM
            needs 11 x 11 pixels after the crop, VIF 41 x 41).
    """
    unknown = sorted(set(metrics) - set(DEFAULT_REGION_METRICS))
    if unknown:
        raise ValueError(
            f"unknown region metrics {unknown}; choose from {list(DEFAULT_REGION_METRICS)} "
            f"(LPIPS and DISTS come through `perceptual`)"
        )
    perceptual = dict(perceptual or {})
    unknown = sorted(set(perceptual) - set(PERCEPTUAL_METRICS))
    if unknown:
        raise ValueError(
            f"unknown perceptual metrics {unknown}; expected {list(PERCEPTUAL_METRICS)}"
        )
    if blur_mask is None:
        # every pixel "blurred": that region is the whole image and costs nothing more
        whole = torch.ones_like(sr[:, :1])
        scores = region_scores(sr, hr, whole, crop_border, metrics, perceptual, quantize)
        return {key: value for key, value in scores.items() if key.startswith("all/")}
    blurred = region_masks(blur_mask, sr.shape)
    out = _fidelity_scores(sr, hr, blurred, crop_border, quantize, metrics)

    scored: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        name: functools.partial(_PIQ_SCORES[name], data_range=1.0, reduction="none")
        for name in metrics
        if name in _PIQ_SCORES
    }
    if not scored and not perceptual:
        return out
    x, y = (image.detach().float().clamp(0.0, 1.0) for image in (sr, hr))
    if quantize:
        x, y = (x * 255.0).round() / 255.0, (y * 255.0).round() / 255.0
    region = blurred.to(x.device)
    pixels = region.flatten(1).sum(1)
    total = region[0].numel()
    counts = {"blurred": pixels, "sharp": total - pixels}
    with torch.no_grad():
        for name, score in scored.items():
            whole = score(x, y).reshape(-1).float()
            out[f"all/{name}"] = whole
            for region_name, inside in (("blurred", region), ("sharp", ~region)):
                count = counts[region_name]
                # a region filling the image scores as the image; an empty one, NaN
                values = torch.where(count == total, whole, torch.nan)
                todo = (count > 0) & (count < total)
                if todo.any():
                    rows = todo.nonzero().flatten()
                    filled = _with_reference_outside(x[rows], y[rows], inside[rows])
                    values[rows] = score(filled, y[rows]).reshape(-1).float()
                out[f"{region_name}/{name}"] = values
        weights = [torch.ones_like(region, dtype=x.dtype), region.to(x.dtype)]
        weights.append(1 - weights[1])
        for name, network in perceptual.items():
            network.to(x.device)
            by_region = _PERCEPTUAL_BY_REGION[name](network, x, y, weights)
            for region_name, values in zip(REGIONS, by_region):
                values = values.float()
                if region_name != "all":
                    values = torch.where(counts[region_name] > 0, values, torch.nan)
                out[f"{region_name}/{name}"] = values
    return out


class RegionMetrics(Metric):
    """Means over images of :func:`region_scores`, per region and metric (DDP-safe).

    Each ``"<region>/<metric>"`` keeps a sum and a count that reduce by sum across
    processes; NaN scores (an empty region) are left out, and PSNR is capped at
    ``psnr_cap`` per image (a perfect image has infinite PSNR), as
    :class:`~svblur.metrics.metrics.PerImageMean` does. :meth:`compute` returns a dict
    (NaN for a key no image had), ready for ``LightningModule.log_dict`` under a prefix,
    e.g. ``test/sr/blurred/psnr_y``. Directions: :data:`HIGHER_IS_BETTER`.

    The learned modules in ``perceptual`` are held outside the module tree, so they
    neither enter checkpoints nor follow ``.to()``; :func:`region_scores` moves them to the
    images' device. A batch without a mask (a general test set) counts towards ``all``
    only.

    Args:
        crop_border: Pixels removed on each side for PSNR / SSIM (the SR scale).
        metrics: Names among :data:`DEFAULT_REGION_METRICS`.
        perceptual: Learned metrics by name, from :func:`local_perceptual_metrics`.
        quantize: Round to 8 bits first.
        psnr_cap: Largest PSNR counted per image (dB).
        **kwargs: For :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(
        self,
        crop_border: int = 4,
        metrics: Sequence[str] = DEFAULT_REGION_METRICS,
        perceptual: Mapping[str, nn.Module] | None = None,
        quantize: bool = True,
        psnr_cap: float = 100.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        unknown = sorted(set(metrics) - set(DEFAULT_REGION_METRICS))
        if unknown:
            raise ValueError(
                f"unknown region metrics {unknown}; choose from {list(DEFAULT_REGION_METRICS)}"
            )
        self.crop_border = int(crop_border)
        self.metrics = tuple(metrics)
        self._perceptual = dict(perceptual or {})
        self.quantize = bool(quantize)
        self.psnr_cap = float(psnr_cap)
        names = [*self.metrics, *self._perceptual]
        self.keys: list[str] = [f"{region}/{name}" for name in names for region in REGIONS]
        size = len(self.keys)
        self.add_state("total", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: torch.Tensor, hr: torch.Tensor, blur_mask: torch.Tensor | None) -> None:
        """Add a batch: ``sr``, ``hr`` ``(B, 3, H, W)``, ``blur_mask`` ``(B, 1, H, W)`` or
        ``None`` (no regions: ``all`` only)."""
        scores = region_scores(
            sr,
            hr,
            blur_mask,
            self.crop_border,
            self.metrics,
            self._perceptual,
            self.quantize,
        )
        totals, counts = [], []
        for key in self.keys:
            if key not in scores:  # a region of a batch without a mask
                totals.append(self.total.new_zeros(()))
                counts.append(self.count.new_zeros(()))
                continue
            values = scores[key].double()
            if key.endswith("/psnr_y"):
                values = values.clamp(max=self.psnr_cap)
            valid = ~torch.isnan(values)
            totals.append(values[valid].sum())
            counts.append(valid.sum())
        self.total += torch.stack(totals).to(self.total)
        self.count += torch.stack(counts).to(self.count)

    def compute(self) -> dict[str, torch.Tensor]:
        """``"<region>/<metric>"`` -> mean over the images that had the region (float32)."""
        means = torch.where(self.count > 0, self.total / self.count.clamp(min=1), torch.nan).float()
        return {key: means[i] for i, key in enumerate(self.keys)}


# ------------------------------------------------------------- LPIPS / DISTS, offline
def _weight_urls(name: str) -> tuple[str, ...]:
    """The URLs piq's ``name`` metric loads with :func:`torch.hub.load_state_dict_from_url`:
    its own weights and torchvision's ImageNet VGG16 (``vgg16(pretrained=True)``)."""
    from torchvision.models import VGG16_Weights

    own = {"lpips": piq.LPIPS._weights_url, "dists": piq.DISTS._weights_url}[name]
    return own, VGG16_Weights.IMAGENET1K_V1.url


def perceptual_weight_files(name: str) -> tuple[str, ...]:
    """The weight file names that piq's ``"lpips"`` or ``"dists"`` needs (as the hub cache
    names them: the URLs' last parts)."""
    if name not in PERCEPTUAL_METRICS:
        raise ValueError(f"name must be one of {list(PERCEPTUAL_METRICS)}, got {name!r}")
    return tuple(os.path.basename(url) for url in _weight_urls(name))


def _search_folders(weights_dir: str | os.PathLike[str] | None) -> list[Path]:
    folders = []
    if weights_dir is not None:
        folders += [Path(weights_dir), Path(weights_dir) / "checkpoints"]
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    return folders


@contextmanager
def _offline_hub(files: Mapping[str, Path]) -> Iterator[None]:
    """A hub cache that holds exactly ``files`` (name -> path), and no downloads.

    piq and torchvision load weights with :func:`torch.hub.load_state_dict_from_url`, which
    looks in ``torch.hub.get_dir()/checkpoints`` and downloads what is missing. Within this
    context that folder is a temporary one linking to ``files``, and a download raises
    :class:`~svblur.errors.InputError`. Both patches are undone on exit (they are process
    global: build metrics from one thread).
    """
    with tempfile.TemporaryDirectory(prefix="svblur-hub-") as hub:
        checkpoints = Path(hub) / "checkpoints"
        checkpoints.mkdir()
        for name, path in files.items():
            (checkpoints / name).symlink_to(Path(path).resolve())

        def refuse(url: str, dst: str, *args: object, **kwargs: object) -> None:
            raise InputError(
                f"svblur does not download weights: {os.path.basename(url)} is not on this "
                f"machine (from {url})"
            )

        with (
            mock.patch.object(torch.hub, "get_dir", lambda: hub),
            mock.patch.object(torch.hub, "download_url_to_file", refuse),
            warnings.catch_warnings(),
        ):
            # torchvision warns that piq's vgg16(pretrained=True) is deprecated.
            warnings.simplefilter("ignore", UserWarning)
            yield


def _build(name: str) -> nn.Module:
    """piq's ``name`` metric, per image (``reduction="none"``), in eval mode."""
    factory = {"lpips": piq.LPIPS, "dists": piq.DISTS}[name]
    return factory(reduction="none").eval()


def local_perceptual_metrics(
    weights_dir: str | os.PathLike[str] | None = None, names: Sequence[str] | None = None
) -> dict[str, nn.Module]:
    """piq's LPIPS and DISTS, built only from weight files already on this machine.

    Each needs its own file and torchvision's VGG16 (:func:`perceptual_weight_files`:
    ``lpips_weights.pt`` or ``dists_weights.pt``, and ``vgg16-397923af.pth``). A file is
    looked for in ``weights_dir``, then ``weights_dir/checkpoints``, then the torch hub
    cache (``torch.hub.get_dir()/checkpoints``, where piq would download it). Nothing is
    ever downloaded.

    Args:
        weights_dir: A folder holding the weight files; ``None``: the hub cache only.
        names: The metrics wanted; ``None``: those whose files are here, and one log line
            names the others and the files they lack.

    Returns:
        Name -> piq module (``reduction="none"``, eval mode), for :func:`region_scores`.

    Raises:
        InputError: ``names`` asks for a metric whose files are missing; the message names
            each file, the folders searched and where the file comes from.
        ValueError: An unknown name.
    """
    explicit = names is not None
    wanted = tuple(PERCEPTUAL_METRICS if names is None else names)
    unknown = sorted(set(wanted) - set(PERCEPTUAL_METRICS))
    if unknown:
        raise ValueError(
            f"unknown perceptual metrics {unknown}; expected {list(PERCEPTUAL_METRICS)}"
        )
    folders = _search_folders(weights_dir)
    searched = ", ".join(str(f) for f in folders)
    built: dict[str, nn.Module] = {}
    missing: dict[str, list[str]] = {}
    for name in wanted:
        found: dict[str, Path] = {}
        for url in _weight_urls(name):
            filename = os.path.basename(url)
            path = next((f / filename for f in folders if (f / filename).is_file()), None)
            if path is None:
                missing.setdefault(name, []).append(f"{filename} (from {url})")
            else:
                found[filename] = path
        if name not in missing:
            with _offline_hub(found):
                built[name] = _build(name)
    if missing and explicit:
        lines = "; ".join(
            f"{name.upper()} lacks {', '.join(files)}" for name, files in missing.items()
        )
        raise InputError(
            f"{lines}. Searched {searched}. svblur does not download weights: put the files "
            "in one of these folders (or give their folder as the weights folder)"
        )
    if missing:
        lacking = sorted({file.split(" ")[0] for files in missing.values() for file in files})
        log.info(
            "%s skipped: weights not on this machine (missing %s in %s); svblur does not "
            "download them",
            ", ".join(name.upper() for name in missing),
            ", ".join(lacking),
            searched,
        )
    return built


class SRPerceptual(PerImageMean):
    """Mean over images of a learned perceptual distance (piq's LPIPS or DISTS; lower is
    better) of SR images in ``[0, 1]`` against HR, a border of ``crop_border`` removed.

    The piq module (from :func:`local_perceptual_metrics`) is kept outside the module tree:
    its weights are not saved in checkpoints, and it follows the inputs' device.
    """

    higher_is_better = False

    def __init__(self, network: nn.Module, crop_border: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crop_border = int(crop_border)
        self._network = [network.eval()]  # a list: not registered as a submodule

    def _measure(
        self, network: nn.Module, pred: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-image scores ``(B,)`` of the cropped images, both clamped to ``[0, 1]``."""
        return network(pred, target).reshape(-1)

    def _score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        network = self._network[0]
        if next(network.parameters(), pred).device != pred.device:
            self._network[0] = network = network.to(pred.device)
        border = self.crop_border
        if border:
            pred = pred[..., border:-border, border:-border]
            target = target[..., border:-border, border:-border]
        with torch.no_grad():
            return self._measure(network, pred.clamp(0, 1), target.clamp(0, 1))
