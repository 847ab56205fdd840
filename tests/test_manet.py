"""MANet: mutual affine convolution, shapes, gradients, parameter count, and the Hydra app."""

from __future__ import annotations

import math

import pytest
import torch

from svblur.cli.train import train
from svblur.models import MAConv, MANet


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def net() -> MANet:
    torch.manual_seed(0)
    return MANet().eval()


@pytest.mark.parametrize("size", [(16, 20), (15, 17), (7, 9), (1, 1), (33, 8)])
def test_output_is_an_hr_sigma_map_for_any_size(net, size):
    lr = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(lr)
    assert set(out) == {"blur"}  # the stage-1 estimator contract shared with CMOS
    assert out["blur"].shape == (2, 1, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out["blur"]).all()


def test_scale_and_batch_independence():
    torch.manual_seed(0)
    net = MANet(scale=2).eval()
    lr = torch.rand(3, 3, 12, 14)
    with torch.no_grad():
        full = net(lr)["blur"]
        single = net(lr[1:2])["blur"]
    assert full.shape == (3, 1, 24, 28)
    torch.testing.assert_close(full[1:2], single, rtol=1e-4, atol=1e-5)


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(0)
    net = MANet()
    out = net(torch.rand(2, 3, 12, 15))["blur"]
    out.abs().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert net.head.weight.grad.abs().sum() > 0


def test_parameter_count_is_exact():
    # Default MANet: channels (64, 128, 128), one MABlock per level and stage.
    assert _trainable(MANet()) == 1_128_161

    # Independently from the layer formulas: a C -> C MAConv with two splits has, per
    # split, a 1x1 conv C/2 -> C/4, a 1x1 conv C/4 -> C (scale and shift of C/2
    # channels) and a 3x3 conv C/2 -> C/2, all with biases.
    def maconv(c: int) -> int:
        h, q = c // 2, c // 4
        return 2 * ((h * q + q) + (q * c + c) + (9 * h * h + h))

    def block(c: int) -> int:
        return 2 * maconv(c)

    net = MANet()
    assert _trainable(net.encoder) == block(64) + 2 * block(128)
    assert _trainable(net.decoder) == block(64) + block(128)
    head, tail = 3 * 9 * 64 + 64, 64 * 9 + 1
    up = (128 * 128 * 16 + 128) + (128 * 64 * 16 + 64)
    total = head + _trainable(net.encoder) + _trainable(net.down) + up
    total += _trainable(net.decoder) + tail
    assert total == 1_128_161


def test_maconv_modulates_each_split_from_the_others():
    torch.manual_seed(0)
    conv = MAConv(8, 6, splits=2).eval()
    x = torch.rand(1, 8, 5, 5)
    y = conv(x)
    assert y.shape == (1, 6, 5, 5)
    # Changing only the second split's input changes the first split's output
    # (through the affine transform), which a grouped convolution would not.
    x2 = x.clone()
    x2[:, 4:] += 1.0
    y2 = conv(x2)
    assert not torch.allclose(y[:, :3], y2[:, :3])
    with pytest.raises(ValueError, match="splits >= 2"):
        MAConv(8, 8, splits=1)
    with pytest.raises(ValueError, match="one entry per level"):
        MANet(channels=(32, 64), num_blocks=(1,))


def test_model_manet_fast_dev_run_logs_blur_and_boundary_metrics(make_cfg):
    metrics = train(make_cfg("train", ["model=manet", "debug=fdr", "data.real_fraction=0"]))
    for key in ("test/blur/psnr", "test/blur/ssim", "test/blur/mae", "test/blur/boundary_mae"):
        assert math.isfinite(metrics[key]), key
    assert "test/seg/miou" not in metrics
    assert "train/loss/blur" in metrics and "train/loss/aux_blur" not in metrics


def test_manet_drives_blind_sr_with_a_blur_only_rrdb_sft():
    from svblur.models import RRDBSFT
    from svblur.models.blind_sr import BlindSR

    sr = RRDBSFT(
        num_features=8,
        num_blocks=1,
        growth_channels=4,
        prior_channels=8,
        seg_encoding="none",
        gia_groups=2,
        window_size=(4, 4),
    )
    model = BlindSR(MANet(), sr)
    out = model(torch.rand(1, 3, 12, 16))
    assert out["sr"].shape == (1, 3, 48, 64) and "seg" not in out
    with pytest.raises(KeyError, match="seg_encoding='none'"):
        BlindSR(
            MANet(),
            RRDBSFT(
                num_features=8,
                num_blocks=1,
                growth_channels=4,
                prior_channels=8,
                gia_groups=2,
                window_size=(4, 4),
            ),
        )(torch.rand(1, 3, 12, 16))
