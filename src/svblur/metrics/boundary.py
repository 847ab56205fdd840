"""Blur-map error near depth discontinuities.

Where depth jumps, the blur jumps too, and an estimator that only looks at local image
statistics smears the jump; this is where the CMOS paper argues that semantics help.
The boundary region is made of every pixel that has a 4-neighbour whose depth differs
by more than ``threshold`` relative to the nearer of the two, dilated by ``radius``
pixels (a ``(2 radius + 1)`` square, i.e. Chebyshev distance). Relative jumps make the
test scale-free; a slanted plane changes depth slowly between neighbours and is not
marked, except very close to its horizon.

Errors are pooled over all region pixels of the split (not averaged per image), since
the region's size varies from image to image and can be empty:

* ``boundary_mae``: mean absolute sigma error in HR pixels;
* ``boundary_psnr``: PSNR of the pooled MSE under the "sigma/5, range 1" convention of
  :func:`svblur.metrics.blur_psnr` (sigma / ``blur_norm``, clipped to ``[0, 1]``).

Use ``region="all"`` for the same statistics over every pixel (a like-for-like global
figure) and ``region="interior"`` for the complement of the boundary region.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from .functional import normalize_blur

__all__ = [
    "BoundaryBlurError",
    "boundary_blur_error",
    "depth_boundary_mask",
    "depth_discontinuities",
]

Region = Literal["boundary", "interior", "all"]
_REGIONS = ("boundary", "interior", "all")


def depth_discontinuities(depth: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Pixels on either side of a depth jump.

    Args:
        depth: Depth ``(B, 1, H, W)`` (any positive unit).
        threshold: Relative jump ``|z_p - z_q| / min(z_p, z_q)`` above which the
            4-neighbours ``p, q`` are both marked.

    Returns:
        Boolean mask ``(B, 1, H, W)``.
    """
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    z = depth.double()
    edges = torch.zeros_like(z, dtype=torch.bool)
    for dim in (-1, -2):
        a = z.narrow(dim, 0, z.shape[dim] - 1)
        b = z.narrow(dim, 1, z.shape[dim] - 1)
        jump = (a - b).abs() > threshold * torch.minimum(a, b).clamp(min=1e-12)
        n = z.shape[dim] - 1
        edges.narrow(dim, 0, n).logical_or_(jump)
        edges.narrow(dim, 1, n).logical_or_(jump)
    return edges


def depth_boundary_mask(
    depth: torch.Tensor, threshold: float = 0.1, radius: int = 3
) -> torch.Tensor:
    """Depth discontinuities dilated by ``radius`` pixels (square), ``(B, 1, H, W)`` bool."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    edges = depth_discontinuities(depth, threshold)
    if radius == 0:
        return edges
    k = 2 * radius + 1
    return F.max_pool2d(edges.float(), k, stride=1, padding=radius) > 0


def _region_mask(
    depth: torch.Tensor | None, shape: torch.Size, region: Region, threshold: float, radius: int
) -> torch.Tensor | None:
    if region not in _REGIONS:
        raise ValueError(f"region must be one of {_REGIONS}, got {region!r}")
    if region == "all":
        return None
    if depth is None:
        raise ValueError(f"region={region!r} needs a depth map")
    if depth.shape != shape:
        raise ValueError(
            f"depth {tuple(depth.shape)} must have the blur maps' shape {tuple(shape)}"
        )
    mask = depth_boundary_mask(depth, threshold, radius)
    return mask if region == "boundary" else ~mask


def boundary_blur_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    depth: torch.Tensor | None,
    threshold: float = 0.1,
    radius: int = 3,
    blur_norm: float = 5.0,
    region: Region = "boundary",
) -> dict[str, torch.Tensor]:
    """Pooled blur-map errors over a depth-defined region of a batch.

    Args:
        pred: Predicted sigma ``(B, 1, H, W)`` in HR pixels.
        target: Ground-truth sigma ``(B, 1, H, W)``.
        depth: Depth ``(B, 1, H, W)``; may be ``None`` for ``region="all"``.
        threshold: Relative depth jump, see :func:`depth_discontinuities`.
        radius: Dilation of the discontinuities in pixels.
        blur_norm: Divisor of the PSNR convention.
        region: ``"boundary"``, ``"interior"`` (its complement) or ``"all"``.

    Returns:
        Float64 scalars ``abs_sum`` (sigma px), ``sq_sum`` (normalized sigma), ``count``,
        and from them ``mae`` and ``psnr`` (NaN when the region is empty).
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(
            f"blur maps must both be (B, 1, H, W), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    mask = _region_mask(depth, pred.shape, region, threshold, radius)
    p, t = pred.detach().double(), target.detach().double()
    abs_err = (p - t).abs()
    sq_err = (normalize_blur(p, blur_norm) - normalize_blur(t, blur_norm)).pow(2)
    if mask is not None:
        abs_err, sq_err = abs_err[mask], sq_err[mask]
    abs_sum, sq_sum = abs_err.sum(), sq_err.sum()
    count = torch.tensor(float(abs_err.numel()), dtype=torch.float64, device=pred.device)
    return {
        "abs_sum": abs_sum,
        "sq_sum": sq_sum,
        "count": count,
        "mae": abs_sum / count if count > 0 else count.new_tensor(math.nan),
        "psnr": _psnr(sq_sum, count),
    }


def _psnr(sq_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    if count <= 0:
        return count.new_tensor(math.nan)
    mse = sq_sum / count
    # Cap like the per-image metrics: an exact region would otherwise give inf.
    return (10.0 * torch.log10(1.0 / mse.clamp(min=1e-10))).clamp(max=100.0)


class BoundaryBlurError(Metric):
    """Blur-map error pooled over the pixels near depth discontinuities of a split.

    ``update(pred, target, depth)`` with ``(B, 1, H, W)`` tensors; ``compute()`` returns
    the MAE in sigma pixels (``statistic="mae"``, lower is better) or the pooled PSNR in
    dB under the "sigma/5, range 1" convention (``statistic="psnr"``, higher is better).
    NaN when no region pixel was seen.

    Args:
        statistic: ``"mae"`` or ``"psnr"``.
        region: ``"boundary"``, ``"interior"`` or ``"all"`` (ignores depth).
        threshold: Relative depth jump that marks a discontinuity.
        radius: Dilation of the discontinuities in HR pixels.
        blur_norm: Divisor of the PSNR convention.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(
        self,
        statistic: Literal["mae", "psnr"] = "mae",
        region: Region = "boundary",
        threshold: float = 0.1,
        radius: int = 3,
        blur_norm: float = 5.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if statistic not in ("mae", "psnr"):
            raise ValueError(f"statistic must be 'mae' or 'psnr', got {statistic!r}")
        if region not in _REGIONS:
            raise ValueError(f"region must be one of {_REGIONS}, got {region!r}")
        self.statistic = statistic
        self.region = region
        self.threshold = float(threshold)
        self.radius = int(radius)
        self.blur_norm = float(blur_norm)
        for name in ("abs_sum", "sq_sum", "count"):
            self.add_state(
                name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        return self.statistic == "psnr"

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, depth: torch.Tensor | None = None
    ) -> None:
        stats = boundary_blur_error(
            pred, target, depth, self.threshold, self.radius, self.blur_norm, self.region
        )
        self.abs_sum += stats["abs_sum"].to(self.abs_sum)
        self.sq_sum += stats["sq_sum"].to(self.sq_sum)
        self.count += stats["count"].to(self.count)

    def compute(self) -> torch.Tensor:
        if self.count <= 0:
            return torch.tensor(math.nan)
        if self.statistic == "mae":
            return (self.abs_sum / self.count).float()
        return _psnr(self.sq_sum, self.count).float()
