"""CMOS network: shapes at many sizes, gradients, parameter counts per ablation, inputs."""

from __future__ import annotations

import pytest
import torch

from svblur.models.backbones import HRNetBackbone
from svblur.models.cmos import CMOS, parse_gia_variant

from .test_gia import gia_param_count

CHANNELS = (18, 36, 72, 144)
GROUPS = (3, 6, 8, 12)
AREA = 15 * 20
BACKBONE = 3_860_720  # timm hrnet_w18_small_v2 features (= the TSV's backbone.* weights)


def basic_block(c: int) -> int:
    return 2 * (9 * c * c + 2 * c)


def expected_params(num_classes=40, tasks=("blur", "seg"), aux=True, gia="FCS") -> int:
    """Trainable parameters of a CMOS configuration, written out by hand."""
    flow, ch, sp = ("F" in gia, "C" in gia, "S" in gia) if gia != "none" else (False,) * 3
    outs = {"blur": 1, "seg": num_classes}
    total = BACKBONE
    width = sum(CHANNELS)
    for t in tasks:
        total += sum(2 * basic_block(c) for c in CHANNELS)  # heads
        total += (CHANNELS[0] + 1) * outs[t] if aux else 0  # auxiliary 1x1 conv
        total += width * width + width + 2 * width + width * outs[t] + outs[t]  # HRNet head
        total += sum(  # cross-scale GIAs: scale s + 1 into s
            gia_param_count(CHANNELS[s + 1], CHANNELS[s], GROUPS[s], AREA, flow, ch, sp)
            for s in range(3)
        )
    if len(tasks) == 2:  # task-to-task GIAs: stage 2 at scales 1..3, stage 3 at 0..3
        total += sum(
            gia_param_count(CHANNELS[s], CHANNELS[s], GROUPS[s], AREA, flow, ch, sp)
            for s in (1, 2, 3, 0, 1, 2, 3)
        )
    return total


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def cmos() -> CMOS:
    torch.manual_seed(0)
    return CMOS(num_classes=40)


def test_released_parameter_count(cmos):
    assert expected_params() == 15_975_866
    assert count(cmos) == 15_975_866
    assert count(cmos.backbone) == BACKBONE
    assert cmos.backbone.channels == list(CHANNELS)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"gia": "none"}, 6_034_446),
        ({"gia": "F"}, 6_923_178),
        ({"gia": "FC"}, 11_034_944),
        ({"gia": "FCS"}, 15_975_866),
        ({"tasks": ("blur",)}, 5_978_500),
        ({"tasks": ("seg",)}, 5_989_810),
        ({"aux": False}, 15_975_087),
    ],
)
def test_ablation_parameter_counts(kwargs, expected):
    assert expected_params(**kwargs) == expected  # the formula, by hand
    with torch.device("meta"):
        model = CMOS(num_classes=40, **kwargs)
    assert count(model) == expected


@pytest.mark.parametrize(("batch", "size"), [(1, (16, 16)), (2, (16, 16)), (2, (33, 47))])
def test_shapes_gradients_and_batch_one_training(cmos, batch, size):
    model = cmos.train()
    gen = torch.Generator().manual_seed(1)
    out = model(torch.rand(batch, 3, *size, generator=gen))
    h, w = size
    assert set(out) == {"blur", "seg", "aux_blur", "aux_seg"}
    for key, value in out.items():
        channels = 1 if key.endswith("blur") else 40
        assert value.shape == (batch, channels, 4 * h, 4 * w), key
        assert torch.isfinite(value).all(), key
    model.zero_grad()
    sum(v.square().mean() for v in out.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad
    # With the GIA scalars c, s at their initial 0, the channel MLPs and the spatial
    # affinity branch (window embedding, reduction) get zero gradient (they enter multiplied
    # by 0); every other parameter gets signal.
    gated = ("mlp_", ".reduce_", ".window_embed_")
    zero = [
        n
        for n, p in model.named_parameters()
        if not any(g in n for g in gated) and p.grad.abs().sum() == 0
    ]
    assert not zero
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_gated_parameters_train_once_scalars_move(cmos):
    model = cmos.train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".c_a", ".c_b", ".s_a", ".s_b")):
                p.fill_(0.5)
    model.zero_grad()
    out = model(torch.rand(2, 3, 16, 24))
    (out["blur"].square().mean() + out["seg"].square().mean()).backward()
    gated = [
        n
        for n, _ in model.named_parameters()
        if any(g in n for g in ("mlp_", ".reduce_", ".window_embed_"))
    ]
    assert gated and all(model.get_parameter(n).grad.abs().sum() > 0 for n in gated)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".c_a", ".c_b", ".s_a", ".s_b")):
                p.zero_()


def test_full_size_forward_eval(cmos):
    model = cmos.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 120, 160))
    assert out["blur"].shape == (1, 1, 480, 640) and out["seg"].shape == (1, 40, 480, 640)
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize(
    ("kwargs", "keys"),
    [
        ({"tasks": ("blur",)}, {"blur", "aux_blur"}),
        ({"tasks": ["seg"], "gia": "FC"}, {"seg", "aux_seg"}),
        ({"aux": False, "gia": "none"}, {"blur", "seg"}),
        ({"gia": "F", "num_classes": 5}, {"blur", "seg", "aux_blur", "aux_seg"}),
    ],
)
def test_variants_run_forward_and_backward(kwargs, keys):
    model = CMOS(**kwargs).train()
    out = model(torch.rand(1, 3, 17, 21))
    assert set(out) == keys
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    if "seg" in out:
        assert out["seg"].shape[1] == kwargs.get("num_classes", 40)


def test_bad_inputs_and_arguments(cmos):
    with pytest.raises(ValueError, match="3-channel"):
        cmos(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\).*unsqueeze"):
        cmos(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="tasks"):
        CMOS(tasks=("depth",))
    with pytest.raises(ValueError, match="gia"):
        CMOS(gia="FX")
    with pytest.raises(ValueError, match="groups"):
        CMOS(groups=(3, 6, 8))
    assert parse_gia_variant("none") == {"flow": False, "channel": False, "spatial": False}
    assert parse_gia_variant("fc") == {"flow": True, "channel": True, "spatial": False}


def test_backbone_from_local_checkpoint(tmp_path):
    source = HRNetBackbone()
    path = tmp_path / "hrnet.pth"
    state = {"module." + k: v for k, v in source.state_dict().items()}
    state["classifier.weight"] = torch.zeros(3)  # classification leftovers are ignored
    torch.save(state, path)
    model = CMOS(pretrained=path, tasks=("blur",))
    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)
    with pytest.raises(KeyError, match="missing"):
        torch.save({"conv1.weight": source.conv1.weight}, path)
        HRNetBackbone(pretrained=path)
    with pytest.raises(ValueError, match="pretrained"):
        HRNetBackbone(pretrained=True)
    # The stem keeps the input resolution: branches at 1, 1/2, 1/4, 1/8 (ceil for odd sizes).
    feats = source.eval()(torch.rand(1, 3, 33, 47))
    assert [tuple(f.shape[-2:]) for f in feats] == [(33, 47), (17, 24), (9, 12), (5, 6)]


def test_bf16_autocast_and_float64():
    model = CMOS(num_classes=3).eval()
    lr = torch.rand(1, 3, 16, 24)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(lr)
    assert all(torch.isfinite(v.float()).all() for v in out.values())
    with torch.no_grad():
        out32 = model(lr)
        out64 = model.double()(lr.double())
    assert out64["seg"].dtype == torch.float64 and out64["seg"].shape == (1, 3, 64, 96)
    for key, value in out32.items():  # the same function: float32 rounding apart
        scale = value.abs().max().item()
        torch.testing.assert_close(out64[key].float(), value, rtol=0, atol=1e-3 * scale)


def test_forward_traces_as_one_graph():
    """No data-dependent Python control flow: dynamo captures the forward without breaks."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(CMOS(num_classes=3).eval())(torch.rand(1, 3, 16, 24))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1
    torch._dynamo.reset()


def test_init_blur_bias_starts_the_blur_outputs_at_sigma():
    net = CMOS(num_classes=3, window_size=(4, 5), channels_last=False)
    final, aux = net.output_heads["blur"].classifier, net.aux_heads["blur"]
    weights = final.weight.clone(), aux.weight.clone()
    seg_bias = net.output_heads["seg"].classifier.bias.clone()
    net.init_blur_bias(2.5)
    assert torch.all(final.bias == 2.5) and torch.all(aux.bias == 2.5)
    torch.testing.assert_close(final.weight, 0.1 * weights[0])
    torch.testing.assert_close(aux.weight, 0.1 * weights[1])
    torch.testing.assert_close(net.output_heads["seg"].classifier.bias, seg_bias, rtol=0, atol=0)
    with torch.no_grad():
        out = net.eval()(torch.rand(2, 3, 16, 20))
    # near the constant: the scaled-down weights move the map little around the bias
    assert abs(float(out["blur"].mean()) - 2.5) < 0.5
