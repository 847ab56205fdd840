"""GIA as a standalone building block: shapes, ablation flags, parameter counts, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svblur.nn import GIA, PooledBatchNorm2d, default_groups, flow_warp, reflect_pad_to_multiple
from svblur.nn.blocks import _reflect_pad_indices
from svblur.nn.flow import base_grid
from svblur.nn.gia import SpatialInteraction

VARIANTS = {  # paper Tab. 5 names -> (flow, channel, spatial)
    "none": (False, False, False),
    "F": (True, False, False),
    "FC": (True, True, False),
    "FCS": (True, True, True),
    "CS": (False, True, True),
    "FS": (True, False, True),
}


def conv_bn(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + 2 * cout


def gia_param_count(ca: int, c: int, r: int, area: int, flow: bool, ch: bool, sp: bool) -> int:
    """Trainable parameters of GIA(ca, c, groups=r, window area), written out by hand."""
    if flow:  # reduce_src 1x1, reduce_ref 1x1, flow 3x3 (2C -> 2), project 3x3 (Ca -> C)
        total = ca * c + c * c + 2 * c * 2 * 9 + ca * c * 9
    else:  # 1x1 projection only when the channel counts differ
        total = ca * c if ca != c else 0
    if ch:  # 2 scalars, 2 x (embed 3x3, squeeze 1x1, MLP r^2 -> C -> C, out 3x3)
        mlp = r * r * c + c + c * c + c
        total += 2 + 2 * (conv_bn(c, c, 3) + conv_bn(c, c, 1) + mlp + conv_bn(c, c, 3))
    if sp:  # 2 scalars, 2 x (embed, window embed, out: 3x3; gate C -> 1, reduce P -> 1)
        total += 2 + 2 * (3 * conv_bn(c, c, 3) + (c + 1) + (area + 1))
    streams = int(ch) + int(sp)
    if streams:
        total += 2 * conv_bn(streams * c, c, 3)
    return total


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_formula_matches_released_gia_sizes():
    # Released GIA_m.0 (36 -> 36, r 6) and GIA_s.0 (36 -> 18, r 3), summed from the TSV.
    assert gia_param_count(36, 36, 6, 300, True, True, True) == 188_456
    assert gia_param_count(36, 18, 3, 300, True, True, True) == 51_116


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gia_two_maps_of_different_channels_and_sizes(variant):
    flow, ch, sp = VARIANTS[variant]
    gia = GIA(24, 16, groups=4, window_size=(5, 6), flow=flow, channel=ch, spatial=sp)
    assert count(gia) == gia_param_count(24, 16, 4, 30, flow, ch, sp)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2, 24, 7, 9, generator=gen, requires_grad=True)
    b = torch.randn(2, 16, 13, 18, generator=gen, requires_grad=True)
    out_a, out_b = gia(a, b)
    assert out_a.shape == out_b.shape == (2, 16, 13, 18)
    merged = gia.merge(a, b)
    assert isinstance(merged, torch.Tensor) and merged.shape == (2, 16, 13, 18)
    torch.testing.assert_close(merged, out_a + out_b)
    (merged.square().mean() + out_a.mean()).backward()
    assert torch.isfinite(merged).all()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is not None for p in gia.parameters())


def test_none_and_flow_only_semantics():
    a, b = torch.randn(2, 8, 6, 7), torch.randn(2, 8, 6, 7)
    none = GIA(8, 8, flow=False, channel=False, spatial=False)
    assert count(none) == 0
    out_a, out_b = none(a, b)
    assert out_a is a and out_b is b
    flow_only = GIA(8, 8, flow=True, channel=False, spatial=False).eval()
    out_a, out_b = flow_only(a, b)
    assert out_b is b  # "F": only a is (flow-)aligned
    torch.testing.assert_close(out_a, flow_only.align(a, b))
    # "none" across scales/channels: 1x1 projection + bilinear resize, then the sum.
    cross = GIA(12, 8, flow=False, channel=False, spatial=False)
    coarse = torch.randn(2, 12, 3, 4)
    expected = F.interpolate(cross.align.project(coarse), size=(6, 7), mode="bilinear") + b
    torch.testing.assert_close(cross.merge(coarse, b), expected)


def test_tiny_maps_and_batch_one_train():
    gia = GIA(6, 6, groups=2).train()  # window 15 x 20 on 1 x 1 .. 7 x 11 maps
    # (A 1 x 1 map needs batch 2 in training: any BatchNorm needs two values per channel.)
    for batch, size in ((2, (1, 1)), (1, (2, 3)), (1, (3, 2)), (1, (7, 11))):
        a = torch.randn(batch, 6, *size, requires_grad=True)
        out_a, out_b = gia(a, torch.randn(batch, 6, *size))
        (out_a.sum() + out_b.sum()).backward()
        assert out_a.shape == (batch, 6, *size) and torch.isfinite(out_a).all()
        assert torch.isfinite(a.grad).all()


def test_batch_one_training_uses_running_stats_of_pooled_vector():
    bn = PooledBatchNorm2d(4)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    before = bn.running_mean.clone()
    x = torch.randn(1, 4, 1, 1)
    y = bn.train()(x)
    torch.testing.assert_close(y, bn.eval()(x))
    assert torch.equal(bn.running_mean, before)
    # With more than one value per channel it is plain BatchNorm2d (batch statistics).
    x2 = torch.randn(3, 4, 1, 1)
    reference = torch.nn.BatchNorm2d(4).train()
    reference.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn.train()(x2), reference(x2))


def test_reflect_padding_matches_released_and_extends_periodically():
    x = torch.randn(2, 3, 11, 17)
    torch.testing.assert_close(
        reflect_pad_to_multiple(x, (15, 20)), F.pad(x, (0, 3, 0, 4), mode="reflect")
    )
    assert reflect_pad_to_multiple(x, (11, 17)) is x
    small = torch.randn(1, 2, 3, 4)
    padded = reflect_pad_to_multiple(small, (15, 20))
    expected = np.pad(small.numpy(), ((0, 0), (0, 0), (0, 12), (0, 16)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)
    line = torch.randn(1, 1, 1, 5)  # a size-1 dimension is replicated
    expected = np.pad(line.numpy(), ((0, 0), (0, 0), (0, 3), (0, 0)), mode="edge")
    expected = np.pad(expected, ((0, 0), (0, 0), (0, 0), (0, 3)), mode="reflect")
    np.testing.assert_array_equal(reflect_pad_to_multiple(line, (4, 4)).numpy(), expected)


def test_traced_reflect_padding_gathers_the_same_values_as_the_loop():
    """The index path (``_reflect_pad_indices``, what a trace records) equals the eager
    F.pad loop exactly: padding within the size, padding several times the size, size 1,
    no padding."""
    sizes = (1, 2, 3, 4, 5, 7, 11, 16, 23, 40)
    multiples = ((1, 1), (4, 5), (15, 20), (7, 3), (40, 1), (2, 64))
    x = torch.randn(2, 3, 40, 40)
    for height in sizes:
        for width in sizes:
            part = x[..., :height, :width]
            for multiple in multiples:
                expected = reflect_pad_to_multiple(part, multiple)
                rows = _reflect_pad_indices(height, multiple[0])
                cols = _reflect_pad_indices(width, multiple[1])
                got = part.index_select(2, rows).index_select(3, cols)
                assert torch.equal(got, expected), (height, width, multiple)
    # periodic reflection of 0..3, written out: 0 1 2 3 2 1 0 1 2 3 2 1 ...
    assert _reflect_pad_indices(4, 13).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert _reflect_pad_indices(1, 5).tolist() == [0] * 5


def test_a_trace_pads_windows_and_crops_every_size():
    """Traced once, the padding and GIA's spatial stream (pad, split into windows, merge,
    crop) follow the input's size: sizes that pad less, more than the size, or not at all
    give the eager results."""
    pad = torch.jit.trace(
        lambda t: reflect_pad_to_multiple(t, (15, 20)), torch.randn(1, 2, 9, 13), check_trace=False
    )
    spatial = SpatialInteraction(4, window_size=(4, 5)).eval()
    with torch.no_grad():
        for module in spatial.modules():  # gates and interactions away from their zero init
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        spatial.s_a.fill_(0.7)
        spatial.s_b.fill_(-0.4)
        example = (torch.randn(1, 4, 9, 13), torch.randn(1, 4, 9, 13))
        traced = torch.jit.trace(spatial, example, check_trace=False)
    for height, width in ((9, 13), (1, 1), (2, 7), (15, 20), (16, 41), (30, 3)):
        x = torch.randn(2, 2, height, width)
        assert torch.equal(pad(x), reflect_pad_to_multiple(x, (15, 20))), (height, width)
        a, b = torch.randn(2, 4, height, width), torch.randn(2, 4, height, width)
        with torch.no_grad():
            for got, want in zip(traced(a, b), spatial(a, b)):
                assert got.shape == (2, 4, height, width)
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_flow_warp_grid_convention():
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(2, 2, 5, 7)
    # grid_sample at the pixel centres: exact up to float32 rounding of the grid
    torch.testing.assert_close(flow_warp(x, zero), x, atol=1e-5, rtol=0)
    up = flow_warp(x, torch.zeros(2, 2, 9, 13))
    torch.testing.assert_close(
        up, F.interpolate(x, size=(9, 13), mode="bilinear", align_corners=True), atol=1e-5, rtol=0
    )
    # One unit of flow moves by 2 / out_w in normalized coordinates (released convention).
    shift = torch.zeros(2, 2, 5, 7)
    shift[:, 0] = 7 / 3  # 7/3 / out_w = 1/3 = 2 / (w - 1): one pixel to the right
    moved = flow_warp(x, shift)
    torch.testing.assert_close(moved[..., :-1], x[..., 1:], atol=1e-5, rtol=0)
    assert base_grid(5, 7, x.device, x.dtype) is base_grid(5, 7, x.device, x.dtype)


def test_default_groups_and_errors():
    assert [default_groups(c) for c in (18, 36, 64, 72, 144)] == [3, 6, 8, 8, 12]
    with pytest.raises(ValueError, match="groups"):
        GIA(8, 18, groups=4)
    with pytest.raises(ValueError, match="window_size"):
        GIA(8, 8, groups=2, window_size=(0, 4))
    gia = GIA(8, 6, groups=2)
    with pytest.raises(ValueError, match="channels"):
        gia(torch.randn(1, 6, 4, 4), torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gia(torch.randn(8, 4, 4), torch.randn(1, 6, 4, 4))


def test_factorized_affinity_equals_explicit_matrix():
    gia = GIA(8, 8, groups=2, window_size=(4, 5)).eval()
    with torch.no_grad():
        gia.spatial.s_a.fill_(0.7)
        gia.spatial.s_b.fill_(-0.4)
    a, b = torch.randn(2, 8, 9, 11), torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        fast = gia(a, b)
        gia.spatial.materialize_affinity = True
        explicit = gia(a, b)
    for x, y in zip(fast, explicit):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
