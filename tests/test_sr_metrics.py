"""SR metrics against an independent reference (scikit-image), and their conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from svblur.metrics import SRPSNR, SRSSIM, psnr_rgb, psnr_y, rgb_to_y, ssim_y


def pair(seed: int = 0, shape=(3, 3, 40, 52)):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen)
    pred = (target + 0.05 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return pred, target


def reference_y(img: torch.Tensor, crop: int) -> np.ndarray:
    rgb = (img.permute(1, 2, 0).double().numpy() * 255).round() / 255  # 8-bit, as saved
    return rgb2ycbcr(rgb)[..., 0][crop:-crop, crop:-crop]


def test_y_channel_psnr_and_ssim_match_scikit_image():
    pred, target = pair()
    ours_psnr, ours_ssim = psnr_y(pred, target, crop_border=4), ssim_y(pred, target, 4)
    assert ours_psnr.dtype == torch.float64 and ours_psnr.shape == (3,)
    for i in range(3):
        y_pred, y_true = reference_y(pred[i], 4), reference_y(target[i], 4)
        assert float(ours_psnr[i]) == pytest.approx(
            peak_signal_noise_ratio(y_true, y_pred, data_range=255), abs=1e-6
        )
        ref_ssim = structural_similarity(
            y_true,
            y_pred,
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert float(ours_ssim[i]) == pytest.approx(ref_ssim, abs=1e-6)


def test_bt601_luma_range_and_border_crop():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert float(rgb_to_y(white).max()) == pytest.approx(235.0, abs=1e-3)
    assert float(rgb_to_y(black).min()) == pytest.approx(16.0)
    pred, target = pair(1, (1, 3, 24, 24))
    damaged = pred.clone()
    damaged[..., :4, :] = 1 - damaged[..., :4, :]  # only the cropped border differs
    assert float(psnr_y(damaged, target, 4)) == pytest.approx(float(psnr_y(pred, target, 4)))
    assert float(psnr_y(damaged, target, 0)) < float(psnr_y(pred, target, 0))
    with pytest.raises(ValueError, match="crop_border"):
        psnr_y(pred, target, crop_border=12)


def test_metric_classes_average_images_in_float64_and_ignore_input_dtype():
    pred, target = pair(2)
    metric_psnr, metric_ssim = SRPSNR(crop_border=4), SRSSIM(crop_border=4)
    for i in range(3):  # one image per update: the mean is over images
        metric_psnr.update(pred[i : i + 1].half(), target[i : i + 1].bfloat16())
        metric_ssim.update(pred[i : i + 1], target[i : i + 1])
    half_pred = pred.half().float()
    expected = psnr_y(half_pred, target.bfloat16().float(), 4).mean()
    assert float(metric_psnr.compute()) == pytest.approx(float(expected), rel=1e-6)
    assert float(metric_ssim.compute()) == pytest.approx(
        float(ssim_y(pred, target).mean()), rel=1e-6
    )
    rgb = SRPSNR(crop_border=4, y_channel=False)
    rgb.update(pred, target)
    assert float(rgb.compute()) == pytest.approx(float(psnr_rgb(pred, target).mean()), rel=1e-6)
    assert SRPSNR.higher_is_better and SRSSIM.higher_is_better
