"""Blur error near depth discontinuities, against hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from svblur.metrics import (
    BoundaryBlurError,
    boundary_blur_error,
    depth_boundary_mask,
    depth_discontinuities,
)

# Depth (mm) of a 3 x 4 image: a far block (2) top right, a slanted 5 % step bottom right.
DEPTH = torch.tensor(
    [
        [1.0, 1.0, 2.0, 2.0],
        [1.0, 1.0, 2.0, 2.0],
        [1.0, 1.0, 1.0, 1.05],
    ]
).view(1, 1, 3, 4)
# By hand, threshold 10 %: jumps 1|2 in rows 0 and 1 (columns 1-2) and 2|1, 2|1.05 between
# rows 1 and 2 (columns 2, 3); 1|1.05 is a 5 % change and is not marked.
EDGES = torch.tensor(
    [
        [0, 1, 1, 0],
        [0, 1, 1, 1],
        [0, 0, 1, 1],
    ],
    dtype=torch.bool,
).view(1, 1, 3, 4)


def test_discontinuities_match_hand_marked_pixels():
    assert torch.equal(depth_discontinuities(DEPTH, threshold=0.1), EDGES)
    # A 1 % threshold also marks the 5 % step.
    assert depth_discontinuities(DEPTH, threshold=0.01)[0, 0, 2, 2:].all()
    # radius 0 is the bare edge set.
    assert torch.equal(depth_boundary_mask(DEPTH, 0.1, radius=0), EDGES)


def test_dilation_radius_on_a_single_step():
    depth = torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0]).view(1, 1, 1, 8)
    assert depth_boundary_mask(depth, radius=0)[0, 0, 0].nonzero().flatten().tolist() == [3, 4]
    assert depth_boundary_mask(depth, radius=1)[0, 0, 0].nonzero().flatten().tolist() == [
        2,
        3,
        4,
        5,
    ]
    assert depth_boundary_mask(depth, radius=3)[0, 0, 0].all()


def test_boundary_mae_and_psnr_by_hand():
    target = torch.zeros(1, 1, 3, 4)
    pred = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    stats = boundary_blur_error(pred, target, DEPTH, threshold=0.1, radius=0)
    # Boundary pixels hold 1, 2, 5, 6, 7, 10, 11: sum 42 over 7 pixels.
    assert stats["count"].item() == 7
    assert stats["mae"].item() == pytest.approx(6.0)
    interior = boundary_blur_error(pred, target, DEPTH, radius=0, region="interior")
    # The other pixels: 0, 3, 4, 8, 9 -> 24 / 5.
    assert interior["mae"].item() == pytest.approx(24 / 5)
    everything = boundary_blur_error(pred, target, None, region="all")
    assert everything["mae"].item() == pytest.approx(5.5)

    # PSNR under "sigma/5, range 1": an error of 0.5 sigma is 0.1 -> MSE 0.01 -> 20 dB.
    target = torch.full((1, 1, 3, 4), 2.0)
    pred = target + 0.5 * EDGES.float()
    stats = boundary_blur_error(pred, target, DEPTH, radius=0, blur_norm=5.0)
    assert stats["psnr"].item() == pytest.approx(20.0)
    assert stats["mae"].item() == pytest.approx(0.5)


def test_metric_pools_pixels_over_batches():
    target = torch.zeros(1, 1, 3, 4)
    pred_a = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    pred_b = torch.ones(1, 1, 3, 4)
    metric = BoundaryBlurError("mae", radius=0)
    metric.update(pred_a, target, DEPTH)
    metric.update(pred_b, target, DEPTH)
    # (42 + 7) / 14 pixels, not the mean of the per-batch MAEs (6 and 1).
    assert metric.compute().item() == pytest.approx(49 / 14)
    assert metric.higher_is_better is False
    assert BoundaryBlurError("psnr").higher_is_better is True


def test_empty_region_gives_nan_and_bad_inputs_raise():
    flat = torch.full((1, 1, 4, 4), 3.0)
    metric = BoundaryBlurError("mae")
    metric.update(torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), flat)
    assert math.isnan(metric.compute().item())
    with pytest.raises(ValueError, match="needs a depth map"):
        boundary_blur_error(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), None)
    with pytest.raises(ValueError, match="depth"):
        boundary_blur_error(
            torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 5)
        )
    with pytest.raises(ValueError, match="statistic"):
        BoundaryBlurError("rmse")
