"""The trivial SR baseline by region of the blur mask, and the mean over test groups."""

from __future__ import annotations

import math

import pytest
import torch

from svblur.degradation.resize import imresize
from svblur.experiments.baselines import _group_mean, bicubic_scores
from svblur.metrics.regions import region_scores


def _batches(masked: bool) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(2):
        hr = torch.rand(2, 3, 32, 40, generator=g)
        batch = {"hr": hr, "lr": imresize(hr, 0.25).clamp(0, 1)}
        if masked:
            mask = torch.zeros(2, 1, 32, 40)
            mask[..., :, :20] = 1.0  # the left half blurred
            batch["blur_mask"] = mask
        out.append(batch)
    return out


def test_bicubic_scores_by_region_match_region_scores() -> None:
    batches = _batches(masked=True)
    scores = bicubic_scores(batches, scale=4)
    for region in ("all", "blurred", "sharp"):
        for metric in ("psnr_y", "ssim_y", "gmsd"):
            per_image = torch.cat(
                [
                    region_scores(
                        imresize(b["lr"], 4).clamp(0, 1), b["hr"], b["blur_mask"], 4, [metric]
                    )[f"{region}/{metric}"]
                    for b in batches
                ]
            )
            assert scores[f"sr/{region}/{metric}"] == pytest.approx(
                float(per_image.double().mean()), rel=1e-5
            ), (region, metric)
    # the whole-image PSNR-Y by region is the plain SR metric
    assert scores["sr/all/psnr_y"] == pytest.approx(scores["sr/psnr_y"], abs=1e-3)
    assert scores["sr/blurred/psnr_y"] != pytest.approx(scores["sr/sharp/psnr_y"], abs=1e-3)


def test_bicubic_scores_without_masks_have_no_regions() -> None:
    assert not any(k.count("/") == 2 for k in bicubic_scores(_batches(masked=False), scale=4))


def test_group_mean_skips_groups_without_a_region() -> None:
    general = {"sr/psnr_y": 20.0, "sr/all/psnr_y": 20.0}
    blur = {"sr/psnr_y": 24.0, "sr/all/psnr_y": 24.0, "sr/blurred/psnr_y": 23.0}
    mean = _group_mean([general, blur])
    assert mean == {"sr/psnr_y": 22.0, "sr/all/psnr_y": 22.0, "sr/blurred/psnr_y": 23.0}
    assert math.isnan(_group_mean([{"a": math.nan}, {"a": math.nan}])["a"])
