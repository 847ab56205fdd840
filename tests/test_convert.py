"""Converter tests, and numerical equality with a reference written like the released code.

The reference below (``ref_*``) re-implements the authors' released CMOS forward directly on
a state dict with the *released* key names, step by step as their code does it (window
partition with permute/contiguous copies, explicit affinity maps fed to a 1x1 conv,
``repeat``-built flow grids, ``scale_factor`` upsampling, ...). svblur's modules, loaded
through :func:`from_official_cmos`, must reproduce it to float32 rounding wherever the
released code runs.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from svblur.checkpoints import (
    from_official_cmos,
    official_to_svblur_key,
    svblur_to_official_key,
    to_official_cmos,
)
from svblur.models.cmos import CMOS
from svblur.nn import GIA

# Names and shapes of the released state dict (see tests/data/README.md).
TSV = Path(__file__).resolve().parent / "data" / "cmos_state_dict.tsv"


def official_shapes() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in TSV.read_text().splitlines()[1:] if line.strip()]
    return {
        key: () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
        for key, shape in rows
    }


def random_official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A released-format state dict with random values of the TSV's shapes."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(("running_mean", ".bias")):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 and ("bn" in key or "last_layer.1" in key):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 and shape[0] == 1:  # c1/c2/s1/s2 scalars (released: zeros)
            state[key] = 0.5 + 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    return state


# ----------------------------------------------------------------------------------------
# Reference: the released forward, on released key names.
# ----------------------------------------------------------------------------------------


def ref_bn(p, pre, x, training):
    return F.batch_norm(
        x,
        p[pre + ".running_mean"].clone(),
        p[pre + ".running_var"].clone(),
        p[pre + ".weight"],
        p[pre + ".bias"],
        training,
        0.1,
        1e-5,
    )


def ref_convmodule(p, pre, x, act, training, padding=1):
    y = ref_bn(p, pre + ".bn", F.conv2d(x, p[pre + ".conv.weight"], padding=padding), training)
    return F.leaky_relu(y, 0.01) if act else y


def ref_aligned(p, pre, h_feature, low_feature, upsample):
    h_orig = h_feature
    size = low_feature.shape[2:]
    low_feature = F.conv2d(low_feature, p[pre + ".down_l.weight"])
    h_feature = F.conv2d(h_feature, p[pre + ".down_h.weight"])
    if upsample:
        h_feature = F.interpolate(h_feature, size=size, mode="bilinear", align_corners=True)
    flow = F.conv2d(torch.cat([h_feature, low_feature], 1), p[pre + ".flow_make.weight"], padding=1)
    out_h, out_w = size
    n = h_orig.shape[0]
    norm = torch.tensor([[[[out_w, out_h]]]]).type_as(h_orig)
    hh = torch.linspace(-1.0, 1.0, out_h).view(-1, 1).repeat(1, out_w)
    ww = torch.linspace(-1.0, 1.0, out_w).repeat(out_h, 1)
    grid = torch.cat((ww.unsqueeze(2), hh.unsqueeze(2)), 2).repeat(n, 1, 1, 1).type_as(h_orig)
    grid = grid + flow.permute(0, 2, 3, 1) / norm
    warped = F.grid_sample(h_orig, grid, align_corners=True)
    return F.conv2d(warped, p[pre + ".conv_last.weight"], padding=1)


def ref_channel(p, pre, x1, x2, r, training):
    feats, atts = [], []
    for i, x in ((1, x1), (2, x2)):
        feat = ref_convmodule(p, f"{pre}.channel_att{i}.conv_bn_relu", x, True, training)
        att = torch.mean(feat, dim=(2, 3), keepdim=True)
        att = ref_convmodule(p, f"{pre}.channel_att{i}.conv_1x1", att, False, training, 0)
        feats.append(feat)
        atts.append(att)
    b, c = atts[0].shape[:2]
    s1 = atts[0].view(b, r, c // r)
    s2 = atts[1].view(b, r, c // r)
    aff = torch.bmm(s2, s1.permute(0, 2, 1)).view(b, -1)
    outs = []
    for i in (1, 2):
        m = F.linear(aff, p[f"{pre}.mlp{i}.0.weight"], p[f"{pre}.mlp{i}.0.bias"])
        m = F.linear(F.relu(m), p[f"{pre}.mlp{i}.2.weight"], p[f"{pre}.mlp{i}.2.bias"])
        re_att = torch.sigmoid(atts[i - 1] + p[f"{pre}.c{i}"] * F.relu(m)[..., None, None])
        outs.append(ref_convmodule(p, f"{pre}.smooth{i}", feats[i - 1] * re_att, False, training))
    return outs


def ref_window_partition(x, ws):
    b, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).contiguous()
    x = x.view(b, h // ws[0], ws[0], w // ws[1], ws[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws[0], ws[1], c)


def ref_window_reverse(windows, ws, h, w):
    b = int(windows.shape[0] / (h * w / ws[0] / ws[1]))
    x = windows.permute(0, 2, 3, 1).contiguous()
    x = x.view(b, h // ws[0], w // ws[1], ws[0], ws[1], -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1).permute(0, 3, 1, 2)


def ref_spatial(p, pre, x1, x2, ws, training):
    f1 = ref_convmodule(p, pre + ".conv_first1", x1, True, training)
    f2 = ref_convmodule(p, pre + ".conv_first2", x2, True, training)
    _, _, h0, w0 = f1.shape
    ph = (ws[0] - h0 % ws[0]) % ws[0]
    pw = (ws[1] - w0 % ws[1]) % ws[1]
    f1 = F.pad(f1, (0, pw, 0, ph), "reflect")
    f2 = F.pad(f2, (0, pw, 0, ph), "reflect")
    _, _, hp, wp = f1.shape
    w1 = ref_window_partition(f1, ws).permute(0, 3, 1, 2).contiguous()
    w2 = ref_window_partition(f2, ws).permute(0, 3, 1, 2).contiguous()
    c1 = ref_convmodule(p, pre + ".conv_after_window1", w1, True, training)
    c2 = ref_convmodule(p, pre + ".conv_after_window2", w2, True, training)
    b, c, h, w = c1.shape
    aff = torch.bmm(c1.view(b, c, -1).permute(0, 2, 1), c2.view(b, c, -1))
    m1 = aff.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
    m2 = aff.view(b, -1, h, w)
    outs = []
    for i, win, m in ((1, w1, m1), (2, w2, m2)):
        gate = F.conv2d(win, p[f"{pre}.conv{i}.weight"], p[f"{pre}.conv{i}.bias"])
        red = F.conv2d(m, p[f"{pre}.conv_redu{i}.weight"], p[f"{pre}.conv_redu{i}.bias"])
        weighted = win * torch.sigmoid(gate + p[f"{pre}.s{i}"] * red)
        full = ref_window_reverse(weighted, ws, hp, wp)[:, :, :h0, :w0]
        outs.append(ref_convmodule(p, f"{pre}.smooth{i}", full, False, training))
    return outs


def ref_gia(p, pre, x1, x2, r, ws, upsample, merge, training=False):
    x1 = ref_aligned(p, pre + ".upsample_layer", x1, x2, upsample)
    ch1, ch2 = ref_channel(p, pre + ".channel", x1, x2, r, training)
    sp1, sp2 = ref_spatial(p, pre + ".spatial", x1, x2, ws, training)
    out1 = ref_convmodule(p, pre + ".smooth2", torch.cat([ch1, sp1], 1), False, training)
    out2 = ref_convmodule(p, pre + ".smooth1", torch.cat([ch2, sp2], 1), False, training)
    return out1 + out2 if merge else (out1, out2)


def ref_basic_block(p, pre, x, training):
    out = F.relu(
        ref_bn(p, pre + ".bn1", F.conv2d(x, p[pre + ".conv1.weight"], padding=1), training)
    )
    out = ref_bn(p, pre + ".bn2", F.conv2d(out, p[pre + ".conv2.weight"], padding=1), training)
    return F.relu(out + x)


def ref_cmos_from_features(p, x, training=False, r=(3, 6, 8, 12), ws=(15, 20)):
    """Released CMOS forward after the backbone: ``x`` are the four backbone features."""
    tasks = ("seg", "blur")

    def head(s, inputs):
        out = {}
        for t in tasks:
            y = inputs[t]
            for i in (0, 1):
                y = ref_basic_block(p, f"heads.{s}.refinement.{t}.{i}", y, training)
            out["features_" + t] = y
            if s == 0:
                w, b = p[f"heads.0.decoders.{t}.weight"], p[f"heads.0.decoders.{t}.bias"]
                out[t] = F.conv2d(y, w, b)
        return out

    x_scale, x_bs = {}, {}
    for i in (3, 2, 1):
        x_scale[i] = head(i, x_bs[i + 1] if i != 3 else {t: x[3] for t in tasks})
        hb, hs = ref_gia(
            p, f"GIA_m.{i - 1}", x_scale[i]["features_blur"], x_scale[i]["features_seg"],
            r[i], ws, False, False, training,
        )  # fmt: skip
        x_bs[i] = {
            "seg": ref_gia(p, f"GIA_s.{i - 1}", hs, x[i - 1], r[i - 1], ws, True, True, training),
            "blur": ref_gia(p, f"GIA_b.{i - 1}", hb, x[i - 1], r[i - 1], ws, True, True, training),
        }
    x_scale[0] = head(0, x_bs[1])
    feats = {}
    for i in range(4):
        feats[i] = dict(
            zip(
                ("blur", "seg"),
                ref_gia(
                    p,
                    f"GIA_l.{i}",
                    x_scale[i]["features_blur"],
                    x_scale[i]["features_seg"],
                    r[i],
                    ws,
                    False,
                    False,
                    training,
                ),  # fmt: skip
            )
        )
    out = {}
    for t in tasks:
        ms = [feats[i][t] for i in range(4)]
        size = ms[0].shape[2:]
        cat = torch.cat([ms[0]] + [F.interpolate(m, size, mode="bilinear") for m in ms[1:]], 1)
        pre = f"predict.{t}.last_layer"
        y = F.conv2d(cat, p[pre + ".0.weight"], p[pre + ".0.bias"])
        y = F.relu(ref_bn(p, pre + ".1", y, training))
        y = F.conv2d(y, p[pre + ".3.weight"], p[pre + ".3.bias"])
        out[t] = F.interpolate(y, scale_factor=4, mode="bilinear")
        out["aux_" + t] = F.interpolate(x_scale[0][t], scale_factor=4, mode="bilinear")
    return out


# ----------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return random_official_state()


@pytest.fixture(scope="module")
def loaded(official) -> CMOS:
    model = CMOS(num_classes=40)
    model.load_state_dict(from_official_cmos(official), strict=True)
    return model.eval()


def test_every_released_key_maps_and_shapes_agree():
    shapes = official_shapes()
    assert len(shapes) == 2482
    ours = CMOS(num_classes=40).state_dict()
    mapped = {official_to_svblur_key(k): v for k, v in shapes.items()}
    assert set(mapped) == set(ours)  # none left over, none missing
    for key, shape in mapped.items():
        assert tuple(ours[key].shape) == shape, key
    assert {svblur_to_official_key(k) for k in ours} == set(shapes)


def test_random_released_state_loads_strictly_with_prefixes(official):
    for prefix in ("", "cmos.", "module.cmos.", "module."):
        converted = from_official_cmos({prefix + k: v for k, v in official.items()})
        CMOS(num_classes=40).load_state_dict(converted, strict=True)
    assert to_official_cmos(from_official_cmos(official)).keys() == official.keys()


def test_unknown_missing_and_misshaped_keys_raise(official):
    for bad in ("GIA_m.0.spatial.conv3.weight", "GIA_l.9.smooth1.conv.weight", "foo.weight"):
        with pytest.raises(KeyError, match=bad.replace(".", r"\.")):
            from_official_cmos({**official, "cmos." + bad: torch.zeros(1)})
    partial = dict(official)
    del partial["GIA_s.1.spatial.s2"]
    with pytest.raises(KeyError, match="missing"):
        from_official_cmos(partial)
    wrong = {**official, "GIA_b.0.smooth1.conv.weight": torch.zeros(18, 18, 3, 3)}
    with pytest.raises(ValueError, match="GIA_b.0.smooth1"):
        from_official_cmos(wrong)


def test_other_class_count_converts():
    state = {k: v for k, v in random_official_state(1).items()}
    for key in [
        k for k in state if k.startswith(("predict.seg.last_layer.3", "heads.0.decoders.seg"))
    ]:
        state[key] = state[key][:19]
    model = CMOS(num_classes=19)
    model.load_state_dict(from_official_cmos(state), strict=True)


def test_round_trip_gives_identical_outputs(loaded):
    twin = CMOS(num_classes=40)
    twin.load_state_dict(from_official_cmos(to_official_cmos(loaded.state_dict(), "cmos.")))
    twin.eval()
    lr = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = loaded(lr), twin(lr)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("training", [False, True])
def test_outputs_match_released_reference(official, loaded, training):
    """Same weights, same input: svblur == released forward (eval, and train-mode BN, B=2).

    64 x 96 is a size the released code handles (1/8 scale 8 x 12: reflect padding of 7
    rows and 8 columns into a single 15 x 20 window; 5 x 5 windows at scale 0), so padding,
    windows, flow and heads are all exercised.

    In float64 both compute the same function (agreement ~1e-11 of the output range). In
    float32 the random weights amplify rounding (summation order: oneDNN channels-last
    kernels, factorized affinity), so there we require svblur's deviation from the float64
    result to be of the same order as the released computation's own float32 deviation.
    """
    lr = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    results = {}
    for dtype in (torch.float64, torch.float32):
        model = copy.deepcopy(loaded).to(dtype).train(training)
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in official.items()}
        x = lr.to(dtype)
        with torch.no_grad():
            ours = model(x)
            feats = model.backbone((x - model.mean) / model.std)
            ref = ref_cmos_from_features(state, feats, training)
        results[dtype] = (ours, ref)
    ours64, truth = results[torch.float64]
    ours32, ref32 = results[torch.float32]
    assert set(ours64) == set(truth) == {"blur", "seg", "aux_blur", "aux_seg"}
    for key in truth:
        assert ours64[key].shape == truth[key].shape == ours32[key].shape
        scale = truth[key].abs().max().item()
        torch.testing.assert_close(ours64[key], truth[key], rtol=0, atol=1e-9 * scale, msg=key)
        err_ours = (ours32[key].double() - truth[key]).abs()
        err_ref = (ref32[key].double() - truth[key]).abs()
        assert err_ours.mean() <= 4 * err_ref.mean() + 1e-7, key
        assert err_ours.max() <= 10 * err_ref.max() + 1e-6, key


@pytest.mark.parametrize(
    ("size_a", "size_b", "window"),
    [
        ((15, 20), (30, 40), (15, 20)),
        ((12, 19), (23, 37), (15, 20)),
        ((8, 11), (8, 11), (15, 20)),
        ((9, 9), (9, 9), (4, 5)),
    ],
)
def test_gia_matches_released_reference(size_a, size_b, window):
    """A standalone GIA with released weights equals the released GIA (merge and pair)."""
    state = random_official_state(2)
    # GIA_s.0: a has 36 channels, b 18, groups 3; the window (conv_redu) is 15 x 20.
    gia_state = {k: v for k, v in state.items() if k.startswith("GIA_s.0.")}
    if window != (15, 20):
        area = window[0] * window[1]
        for i in (1, 2):
            gia_state[f"GIA_s.0.spatial.conv_redu{i}.weight"] = torch.randn(1, area, 1, 1) / 9
    gia = GIA(36, 18, groups=3, window_size=window).eval()
    skip = len("scale_gia.seg.0.")
    gia.load_state_dict(
        {official_to_svblur_key(k)[skip:]: v for k, v in gia_state.items()}, strict=True
    )
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, 36, *size_a, generator=gen), torch.randn(2, 18, *size_b, generator=gen)
    with torch.no_grad():
        out_a, out_b = gia(a, b)
        merged = gia.merge(a, b)
        ref_a, ref_b = ref_gia(gia_state, "GIA_s.0", a, b, 3, window, size_a != size_b, False)
    torch.testing.assert_close(out_a, ref_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_b, ref_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, ref_a + ref_b, rtol=1e-5, atol=1e-5)


def test_cli_converts_atomically(tmp_path, official):
    src, dst = tmp_path / "CMOS_NYUv2_BSR.pth", tmp_path / "out" / "cmos_svblur.pth"
    extra = {"RRDB_trunk.0.SFT.mul_conv1.weight": torch.zeros(1)}  # stage-3 file: RRDB keys
    torch.save({**{"module.cmos." + k: v for k, v in official.items()}, **extra}, src)
    result = subprocess.run(
        [sys.executable, "-m", "svblur.cli.convert", str(src), str(dst)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2482" in result.stdout and "15,975,866" in result.stdout
    assert "1 non-CMOS" in result.stdout
    state = torch.load(dst, weights_only=True)
    CMOS(num_classes=40).load_state_dict(state, strict=True)
    assert not list(dst.parent.glob("*.tmp*"))
