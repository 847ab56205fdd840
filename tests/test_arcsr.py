"""ArcSR: DMConv, KGConv and the network, against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

import svblur.nn.arcsr as arcsr_layers
from svblur.models.arcsr import ArcSR
from svblur.nn.arcsr import (
    ChannelAttention,
    DMBlock,
    DMConv,
    KernelConcatConv,
    KGBlock,
    KGConv,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randomize(module: nn.Module, seed: int = 0) -> None:
    gen = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)


def _tiny_arcsr(**kwargs) -> ArcSR:
    config = {
        "num_features": 8,
        "kernel_size": 3,
        "num_kg_blocks": 2,
        "unet_channels": (8, 16),
        "dm_blocks_per_level": 1,
    }
    return ArcSR(**(config | kwargs))


# --------------------------------------------------------------------------- DMConv
def _zero_offsets(conv: DMConv) -> None:
    with torch.no_grad():
        conv.offset[-1].weight.zero_()
        conv.offset[-1].bias.zero_()


@pytest.mark.parametrize("split_index", [0, 2, 3])
def test_dmconv_with_zero_offsets_is_a_plain_convolution(split_index):
    conv = DMConv(16, split_index).double()
    _randomize(conv)
    _zero_offsets(conv)
    x = torch.randn(2, 16, 7, 9, generator=_gen(1), dtype=torch.float64)
    part = x[:, 4 * split_index : 4 * split_index + 4]
    expected = F.conv2d(part, conv.deform.weight, conv.deform.bias, padding=1)
    torch.testing.assert_close(conv.deformable_part(x), expected)


def test_dmconv_v2_with_zero_offsets_halves_the_taps():
    # DCN v2: a zero mask logit is sigmoid(0) = 0.5 on every tap.
    conv = DMConv(8, 1, modulated=True).double()
    _randomize(conv)
    _zero_offsets(conv)
    x = torch.randn(1, 8, 6, 5, generator=_gen(2), dtype=torch.float64)
    expected = F.conv2d(x[:, 2:4], 0.5 * conv.deform.weight, conv.deform.bias, padding=1)
    torch.testing.assert_close(conv.deformable_part(x), expected)


def test_dmconv_offsets_move_the_sampling_grid():
    # An offset of +1 row on every tap samples x[y + i] instead of x[y + i - 1].
    conv = DMConv(8, 0).double()
    _randomize(conv)
    _zero_offsets(conv)
    with torch.no_grad():
        conv.offset[-1].bias[0::2] = 1.0  # torchvision layout: (dy, dx) per tap
    x = torch.randn(2, 8, 6, 7, generator=_gen(3), dtype=torch.float64)
    part = F.pad(x[:, :2], (1, 1, 0, 2))
    expected = F.conv2d(part, conv.deform.weight, conv.deform.bias)
    torch.testing.assert_close(conv.deformable_part(x), expected)
    plain = F.conv2d(x[:, :2], conv.deform.weight, conv.deform.bias, padding=1)
    assert (conv.deformable_part(x) - plain).abs().max() > 0.1


@pytest.mark.parametrize("split_index", range(4))
def test_dmconv_deforms_its_quarter_in_place(split_index):
    # Identity fusion and zero offsets: the output is x with quarter split_index convolved.
    conv = DMConv(12, split_index).double()
    _randomize(conv)
    _zero_offsets(conv)
    with torch.no_grad():
        conv.fusion.weight.copy_(torch.eye(12, dtype=torch.float64)[:, :, None, None])
        conv.fusion.bias.zero_()
    x = torch.randn(1, 12, 5, 6, generator=_gen(4), dtype=torch.float64)
    part = slice(3 * split_index, 3 * split_index + 3)
    expected = x.clone()
    expected[:, part] = F.conv2d(x[:, part], conv.deform.weight, conv.deform.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)


def test_dmconv_rejects_bad_splits():
    with pytest.raises(ValueError, match="multiple|1/4"):
        DMConv(10, 0)
    with pytest.raises(ValueError, match="split_index"):
        DMConv(8, 4)


def test_dmconv_parameter_count():
    # offsets: 3x3 conv 3C/4 -> C/4, 3x3 conv C/4 -> 2*9; deformable 3x3 C/4 -> C/4;
    # fusion 1x1 C -> C; all with biases.
    c, q = 32, 8
    expected = (3 * q * q * 9 + q) + (q * 18 * 9 + 18) + (q * q * 9 + q) + (c * c + c)
    assert _count(DMConv(c, 1)) == expected
    assert _count(DMConv(c, 1, modulated=True)) == expected + q * 9 * 9 + 9


def test_dmblock_deforms_a_different_quarter_with_each_conv():
    block = DMBlock(16).double()
    convs = [m for m in block.body if isinstance(m, DMConv)]
    assert [c.split_index for c in convs] == [0, 1, 2, 3]
    assert len({(c.part.start, c.part.stop) for c in convs}) == 4
    _randomize(block)
    x = torch.randn(1, 16, 6, 6, generator=_gen(5), dtype=torch.float64)
    manual = x
    for i, conv in enumerate(convs):
        manual = conv(F.relu(manual) if i else manual)
    torch.testing.assert_close(block(x), x + manual)


def test_dmblock_without_deformation_uses_plain_convolutions():
    block = DMBlock(16, deformable=False)
    kinds = [type(m) for m in block.modules()]
    assert DMConv not in kinds and DeformConv2d not in kinds
    assert kinds.count(nn.Conv2d) == 4
    assert _count(block) == 4 * (16 * 16 * 9 + 16)


# --------------------------------------------------------------------------- KGConv
def _kgconv_loop(x, kernels, weight, bias):
    """The kernel-guided convolution summed term by term (float64 reference)."""
    out_channels, in_channels, k, _ = weight.shape
    height, width = x.shape[-2:]
    xpad = F.pad(x, (k // 2,) * 4)
    out = bias.view(1, -1, 1, 1).repeat(x.shape[0], 1, height, width)
    for o in range(out_channels):
        for c in range(in_channels):
            for i in range(k):
                for j in range(k):
                    window = xpad[:, c, i : i + height, j : j + width]
                    out[:, o] += weight[o, c, i, j] * kernels[:, i * k + j] * window
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("max_chunk_bytes", [1, 2**20])
def test_kgconv_matches_the_per_pixel_formula(k, max_chunk_bytes):
    conv = KGConv(3, 4, k, max_chunk_bytes=max_chunk_bytes).double()
    gen = _gen(k)
    x = torch.randn(2, 3, 5, 8, generator=gen, dtype=torch.float64)
    kernels = torch.randn(2, k * k, 5, 8, generator=gen, dtype=torch.float64)
    inputs = x.clone(), kernels.clone()
    expected = _kgconv_loop(x, kernels, conv.weight.detach(), conv.bias.detach())
    torch.testing.assert_close(conv(x, kernels), expected)
    assert torch.equal(x, inputs[0]) and torch.equal(kernels, inputs[1])  # not overwritten


@pytest.mark.parametrize("k", [1, 3, 5])
def test_kgconv_with_all_ones_kernels_is_conv2d(k):
    conv = KGConv(4, 6, k).double()
    x = torch.randn(2, 4, 7, 6, generator=_gen(7), dtype=torch.float64)
    ones = torch.ones(2, k * k, 7, 6, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=k // 2)
    torch.testing.assert_close(conv(x, ones), expected)


@pytest.mark.parametrize("max_chunk_bytes", [1, 2**20])
def test_kgconv_gradcheck(max_chunk_bytes):
    conv = KGConv(2, 3, 3, max_chunk_bytes=max_chunk_bytes).double()
    gen = _gen(8)
    x = torch.randn(2, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(2, 9, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_()
    bias = conv.bias.detach().clone().requires_grad_()

    def apply(x, kernels, weight, bias):
        return torch.func.functional_call(conv, {"weight": weight, "bias": bias}, (x, kernels))

    assert torch.autograd.gradcheck(apply, (x, kernels, weight, bias))


def test_kgconv_gradients_of_one_input_only():
    conv = KGConv(2, 2, 3).double()
    x = torch.randn(1, 2, 4, 4, generator=_gen(9), dtype=torch.float64)
    kernels = torch.rand(1, 9, 4, 4, generator=_gen(10), dtype=torch.float64)
    kernels.requires_grad_()
    conv.requires_grad_(False)
    conv(x, kernels).square().sum().backward()
    reference = kernels.detach().clone().requires_grad_()
    _kgconv_loop(x, reference, conv.weight, conv.bias).square().sum().backward()
    torch.testing.assert_close(kernels.grad, reference.grad)


def test_kgconv_gathers_bounded_chunks_in_both_passes(monkeypatch):
    sizes: list[int] = []
    gather = arcsr_layers.iter_patch_rows

    def recording(*args, **kwargs):
        for rows, patches in gather(*args, **kwargs):
            sizes.append(patches.numel() * patches.element_size())
            yield rows, patches

    monkeypatch.setattr(arcsr_layers, "iter_patch_rows", recording)
    gen = _gen(11)
    x = torch.randn(2, 4, 12, 10, generator=gen, requires_grad=True)
    kernels = torch.rand(2, 9, 12, 10, generator=gen, requires_grad=True)
    row_bytes = 2 * 4 * 9 * 10 * 4  # B * C * k*k * W * itemsize
    chunked = KGConv(4, 5, 3, max_chunk_bytes=3 * row_bytes)
    whole = KGConv(4, 5, 3)
    whole.load_state_dict(chunked.state_dict())
    out = chunked(x, kernels)
    out.square().sum().backward()
    grads = x.grad.clone(), kernels.grad.clone(), chunked.weight.grad.clone()
    assert len(sizes) == 2 * 4 and max(sizes) == 3 * row_bytes  # forward + backward
    x.grad = kernels.grad = None
    reference = whole(x, kernels)
    reference.square().sum().backward()
    torch.testing.assert_close(out, reference)
    for got, expected in zip(grads, (x.grad, kernels.grad, whole.weight.grad)):
        torch.testing.assert_close(got, expected)


def test_kgconv_rejects_mismatched_kernels():
    conv = KGConv(3, 3, 3)
    with pytest.raises(ValueError, match="k\\*k"):
        conv(torch.rand(1, 3, 5, 5), torch.rand(1, 25, 5, 5))


def test_kgblock_and_concat_ablation():
    block = KGBlock(6, 3).double()
    x = torch.randn(1, 6, 5, 5, generator=_gen(12), dtype=torch.float64)
    kernels = torch.rand(1, 9, 5, 5, generator=_gen(13), dtype=torch.float64)
    a, b, c = block.convs
    expected = x + c(F.relu(b(F.relu(a(x, kernels)), kernels)), kernels)
    torch.testing.assert_close(block(x, kernels), expected)

    concat = KGBlock(6, 3, kernel_guided=False)
    assert all(isinstance(m, KernelConcatConv) for m in concat.convs)
    # The kernels become 9 more input channels of each 3x3 conv: 9 * 6 * 9 weights more.
    assert _count(concat) - _count(block) == 3 * 9 * 6 * 9
    conv = concat.convs[0].conv
    y = concat.convs[0](x.float(), kernels.float())
    expected = F.conv2d(torch.cat([x, kernels], 1).float(), conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(y, expected)


def test_channel_attention_is_conv_pool_fc_gate():
    attention = ChannelAttention(6).double()
    x = torch.randn(2, 6, 4, 5, generator=_gen(14), dtype=torch.float64)
    pooled = F.conv2d(x, attention.conv.weight, attention.conv.bias, padding=1).mean((2, 3))
    gate = torch.sigmoid(pooled @ attention.fc.weight.T + attention.fc.bias)
    torch.testing.assert_close(attention(x), x * gate[:, :, None, None])


# --------------------------------------------------------------------------- ArcSR
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 17, 23)])
def test_arcsr_outputs_sr_and_normalized_kernels(shape):
    torch.manual_seed(0)
    net = _tiny_arcsr().eval()
    lr = torch.rand(*shape, generator=_gen(15))
    with torch.no_grad():
        out = net(lr)
    b, _, h, w = shape
    assert set(out) == {"sr", "kernels"}
    assert out["sr"].shape == (b, 3, 4 * h, 4 * w)
    assert out["kernels"].shape == (b, 9, h, w)
    assert torch.isfinite(out["sr"]).all()
    assert (out["kernels"] >= 0).all()
    torch.testing.assert_close(out["kernels"].sum(1), torch.ones(b, h, w))


def test_arcsr_defaults_follow_the_paper():
    net = ArcSR()
    kinds = [type(m) for m in net.modules()]
    assert kinds.count(KGBlock) == 8 and kinds.count(KGConv) == 8 * 3
    assert kinds.count(ChannelAttention) == 8
    # Three U-Net levels: 3 encoder and 2 decoder stages of 2 DMBlocks of 4 DMConvs.
    assert kinds.count(DMBlock) == 5 * 2 and kinds.count(DMConv) == 5 * 2 * 4
    assert kinds.count(DeformConv2d) == 40
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 16, generator=_gen(16)))
    assert out["sr"].shape == (1, 3, 64, 64) and out["kernels"].shape == (1, 25, 16, 16)


def test_arcsr_batch_items_are_independent():
    torch.manual_seed(0)
    net = _tiny_arcsr(scale=2).eval()
    lr = torch.rand(3, 3, 17, 19, generator=_gen(17))
    with torch.no_grad():
        full, single = net(lr), net(lr[1:2])
    for key in ("sr", "kernels"):
        torch.testing.assert_close(full[key][1:2], single[key], rtol=1e-4, atol=1e-5)


def test_arcsr_uniform_kernels_make_kgconvs_plain_convolutions():
    # A zero kernel head gives uniform kernels 1 / ks**2; the gain ks**2 turns them into
    # all-ones guides, so each KGConv is F.conv2d with its own weights.
    torch.manual_seed(0)
    net = _tiny_arcsr(kernel_size=5)
    with torch.no_grad():
        net.kernel_head.weight.zero_()
        net.kernel_head.bias.zero_()
    seen = []
    net.kg_blocks[0].convs[0].register_forward_hook(lambda m, args, out: seen.append((args, out)))
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 16, generator=_gen(18)))
    torch.testing.assert_close(out["kernels"], torch.full_like(out["kernels"], 1 / 25))
    (x, guide), y = seen[0]
    torch.testing.assert_close(guide, torch.ones_like(guide))
    conv = net.kg_blocks[0].convs[0]
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=2))


def test_arcsr_ablations_change_the_layers_as_the_paper_describes():
    full = _tiny_arcsr()
    no_dm = _tiny_arcsr(dmconv=False)
    no_kg = _tiny_arcsr(kgconv=False)
    baseline = _tiny_arcsr(dmconv=False, kgconv=False)

    def kinds(net):
        return [type(m) for m in net.modules()]

    for net in (full, no_kg):
        assert DMConv in kinds(net) and DeformConv2d in kinds(net)
    for net in (no_dm, baseline):
        assert DMConv not in kinds(net) and DeformConv2d not in kinds(net)
    for net in (full, no_dm):
        assert KGConv in kinds(net) and KernelConcatConv not in kinds(net)
    for net in (no_kg, baseline):
        assert KGConv not in kinds(net) and kinds(net).count(KernelConcatConv) == 2 * 3
    # Concatenation: 9 kernel channels more in each of the 6 3x3 convs of 8 features.
    concat_cost = 2 * 3 * (9 * 8 * 9)
    assert _count(no_kg) - _count(full) == concat_cost
    assert _count(baseline) - _count(no_dm) == concat_cost
    # Plain convolutions: each of the 3 stages x 1 block x 4 DMConvs becomes a 3x3 conv.
    plain = sum(4 * (c * c * 9 + c) for c in (8, 16, 8))
    dm = sum(4 * _count(DMConv(c, 0)) for c in (8, 16, 8))
    assert _count(no_dm) - _count(full) == plain - dm
    for net in (no_dm, no_kg, baseline):
        with torch.no_grad():
            out = net(torch.rand(1, 3, 16, 18))
        assert out["sr"].shape == (1, 3, 64, 72) and out["kernels"].shape == (1, 9, 16, 18)


def test_arcsr_gradients_reach_every_branch():
    torch.manual_seed(0)
    net = _tiny_arcsr(modulated=True)
    out = net(torch.rand(2, 3, 16, 16, generator=_gen(19)))
    F.l1_loss(out["sr"], torch.zeros_like(out["sr"])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    dm = net.encoder[0][0].body[0]
    assert dm.offset[-1].weight.grad.abs().sum() > 0  # the offsets can learn
    assert net.kernel_head.weight.grad.abs().sum() > 0  # the kernels are trained by L1 on SR
    assert net.kg_blocks[-1].convs[-1].weight.grad.abs().sum() > 0


def test_arcsr_training_steps_reduce_the_l1_loss():
    torch.manual_seed(0)
    net = _tiny_arcsr()
    gen = _gen(20)
    hr = F.interpolate(torch.rand(2, 3, 8, 8, generator=gen), size=(64, 64), mode="bilinear")
    lr = F.avg_pool2d(hr, 4)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = F.l1_loss(net(lr)["sr"], hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_arcsr_rejects_unbatched_input():
    with pytest.raises(ValueError, match="unsqueeze"):
        _tiny_arcsr()(torch.rand(3, 16, 16))


@pytest.mark.parametrize("modulated", [False, True])
def test_arcsr_runs_under_bf16_autocast_on_cpu(modulated):
    # torchvision's CPU deform_conv2d has no bf16 kernel; DMConv runs it in float32.
    torch.manual_seed(0)
    net = _tiny_arcsr(modulated=modulated)
    lr = torch.rand(1, 3, 16, 16, generator=_gen(21))
    reference = net(lr)["sr"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(lr)
    assert out["sr"].dtype == torch.bfloat16
    error = (out["sr"].float() - reference).abs().max() / reference.abs().max()
    assert error < 0.03
    out["sr"].float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
