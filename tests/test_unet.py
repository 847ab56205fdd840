import pytest
import torch

from svblur.models import UNetBlurSeg


@pytest.mark.parametrize("size", [(16, 16), (24, 32), (33, 47)])
def test_unet_shapes_odd_sizes_and_backward(size):
    net = UNetBlurSeg(num_classes=5, encoder_name="resnet18")
    lr = torch.rand(2, 3, *size)
    out = net(lr)
    h, w = size
    assert out["blur"].shape == (2, 1, 4 * h, 4 * w)
    assert out["seg"].shape == (2, 5, 4 * h, 4 * w)
    (out["blur"].mean() + out["seg"].mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(v).all() for v in out.values())


def test_unet_single_task_and_bad_input():
    net = UNetBlurSeg(num_classes=3, tasks=["blur"])
    assert set(net(torch.rand(1, 3, 16, 16))) == {"blur"}
    with pytest.raises(ValueError, match="3-channel"):
        net(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        net(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="tasks"):
        UNetBlurSeg(num_classes=3, tasks=["depth"])


def test_unet_trains_with_batch_size_one():
    net = UNetBlurSeg(num_classes=3).train()
    out = net(torch.rand(1, 3, 16, 16))
    out["blur"].mean().backward()
    assert out["seg"].shape == (1, 3, 64, 64)
