import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from svblur.metrics import BlurPSNR, BlurSSIM, MeanIoU, blur_psnr, blur_ssim, mean_iou


def _maps(seed: int, b: int = 3, h: int = 40, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, h, w, generator=g) * 4.0
    pred = (target + 0.3 * torch.randn(b, 1, h, w, generator=g)).clamp(min=0)
    return pred, target


def test_blur_psnr_matches_skimage_per_image():
    pred, target = _maps(0)
    ours = blur_psnr(pred, target, blur_norm=5.0)
    for i in range(pred.shape[0]):
        p = np.clip(pred[i, 0].double().numpy() / 5.0, 0, 1)
        t = np.clip(target[i, 0].double().numpy() / 5.0, 0, 1)
        ref = peak_signal_noise_ratio(t, p, data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)


def test_blur_ssim_matches_skimage_gaussian_window():
    pred, target = _maps(1)
    ours = blur_ssim(pred, target, blur_norm=5.0)
    for i in range(pred.shape[0]):
        p = np.clip(pred[i, 0].double().numpy() / 5.0, 0, 1)
        t = np.clip(target[i, 0].double().numpy() / 5.0, 0, 1)
        ref = structural_similarity(
            t, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        # skimage and torchmetrics crop the border differently; agree closely.
        assert ours[i].item() == pytest.approx(ref, abs=2e-2)


def test_metric_classes_average_per_image_and_merge_batches():
    pred, target = _maps(2, b=4)
    psnr, ssim = BlurPSNR(5.0), BlurSSIM(5.0)
    psnr.update(pred[:1], target[:1])
    psnr.update(pred[1:], target[1:])
    ssim.update(pred[:2], target[:2])
    ssim.update(pred[2:], target[2:])
    assert psnr.compute().item() == pytest.approx(blur_psnr(pred, target).mean().item(), rel=1e-6)
    assert ssim.compute().item() == pytest.approx(blur_ssim(pred, target).mean().item(), rel=1e-6)


def test_perfect_blur_prediction_is_capped_not_infinite():
    _, target = _maps(3)
    metric = BlurPSNR(5.0)
    metric.update(target, target)
    assert metric.compute().item() == pytest.approx(100.0)


def test_blur_metric_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        blur_psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def _reference_miou(pred: np.ndarray, target: np.ndarray, k: int, ignore: int = 255) -> float:
    ious = []
    valid = target != ignore
    for c in range(k):
        inter = np.sum((pred == c) & (target == c) & valid)
        union = np.sum(((pred == c) | (target == c)) & valid)
        if union > 0:
            ious.append(inter / union)
    return float(np.mean(ious))


def test_miou_matches_reference_with_ignore_and_accumulates():
    g = torch.Generator().manual_seed(0)
    k = 5
    target = torch.randint(0, k, (4, 16, 20), generator=g)
    target[:, :3] = 255
    pred = target.clone()
    flip = torch.rand(target.shape, generator=g) < 0.3
    pred[flip] = torch.randint(0, k, (int(flip.sum()),), generator=g)
    pred[target == 255] = 0
    logits = torch.nn.functional.one_hot(pred, k).permute(0, 3, 1, 2).float()
    ref = _reference_miou(pred.numpy(), target.numpy(), k)
    assert mean_iou(logits, target, k).item() == pytest.approx(ref, rel=1e-9)
    metric = MeanIoU(k)
    metric.update(logits[:2], target[:2])
    metric.update(logits[2:], target[2:])
    assert metric.compute().item() == pytest.approx(ref, rel=1e-6)


def test_miou_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        mean_iou(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 7), 3)
