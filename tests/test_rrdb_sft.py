"""RRDB-SFT and BlindSR networks; conversion of the released RRDB-SFT / BlindSR weights.

The reference ``ref_rrdb_sft`` runs the released RRDB-SFT forward (MANet's SFT / RRDB code
path with CMOS's GIA prior) directly on a state dict with the *released* key names; the
GIA part reuses the released-style GIA of ``tests/test_convert.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from svblur.checkpoints import (
    CheckpointMismatchError,
    detect_official_kind,
    from_official_blind_sr,
    from_official_cmos,
    from_official_rrdb_sft,
    load_weights,
    official_to_svblur_rrdb_sft_key,
    svblur_to_official_rrdb_sft_key,
    to_official_blind_sr,
    to_official_rrdb_sft,
)
from svblur.cli.convert import main as convert_main
from svblur.models import CMOS, RRDBSFT, BlindSR

from .test_convert import random_official_state as random_official_cmos
from .test_convert import ref_gia

# Names and shapes of the released state dict (see tests/data/README.md).
TSV = Path(__file__).resolve().parent / "data" / "rrdb_sft_state_dict.tsv"


def tiny_rrdb(**kwargs) -> RRDBSFT:
    args = dict(
        num_features=8,
        num_blocks=2,
        growth_channels=4,
        prior_channels=8,
        gia_groups=2,
        window_size=(8, 8),
    )
    args.update(kwargs)
    return RRDBSFT(**args)


def official_shapes() -> dict[str, tuple[int, ...]]:
    rows = [line.split("\t") for line in TSV.read_text().splitlines()[1:] if line.strip()]
    return {k: () if s == "scalar" else tuple(int(v) for v in s.split("x")) for k, s in rows}


def random_official_rrdb(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(3)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(("running_mean", ".bias")):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 and shape[0] == 1:  # c1/c2/s1/s2
            state[key] = 0.5 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # BN weights
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    return state


def ref_rrdb_sft(p, lr, blur, seg, scale=4):
    """Released forward: prior (convs, GIA merge at HR, nearest 1/4), SFT-RRDB trunk."""

    def conv(x, name):
        return F.conv2d(x, p[name + ".weight"], p[name + ".bias"], padding=1)

    def lrelu(x):
        return F.leaky_relu(x, 0.2)

    blur_code = conv(blur, "blur_conv")
    seg_code = conv(seg.unsqueeze(1).to(blur.dtype), "seg_conv")  # released: .float()
    code = ref_gia(p, "fuse", blur_code, seg_code, 8, (15, 20), False, True)
    code = F.interpolate(code, scale_factor=1 / scale, mode="nearest")
    fea = conv(lr, "conv_first")
    x = fea
    for i in range(10):
        pre = f"RRDB_trunk.{i}"
        cat = torch.cat([x, code], 1)
        mul = torch.sigmoid(conv(lrelu(conv(cat, pre + ".SFT.mul_conv1")), pre + ".SFT.mul_conv2"))
        add = conv(lrelu(conv(cat, pre + ".SFT.add_conv1")), pre + ".SFT.add_conv2")
        out = x * mul + add
        for j in (1, 2, 3):
            rdb = f"{pre}.RDB{j}"
            x1 = lrelu(conv(out, rdb + ".conv1"))
            x2 = lrelu(conv(torch.cat((out, x1), 1), rdb + ".conv2"))
            x3 = lrelu(conv(torch.cat((out, x1, x2), 1), rdb + ".conv3"))
            x4 = lrelu(conv(torch.cat((out, x1, x2, x3), 1), rdb + ".conv4"))
            x5 = conv(torch.cat((out, x1, x2, x3, x4), 1), rdb + ".conv5")
            out = x5 * 0.2 + out
        x = out * 0.2 + x
    fea = fea + conv(x, "trunk_conv")
    return F.pixel_shuffle(conv(fea, "upsampler.0"), scale)


# ---------------------------------------------------------------------------- network


@pytest.mark.parametrize("encoding", ["index", "onehot", "probs", "none"])
@pytest.mark.parametrize("fuse", ["hr", "lr"])
def test_forward_backward_shapes_and_odd_sizes(encoding, fuse):
    net = tiny_rrdb(seg_encoding=encoding, num_classes=5, fuse_resolution=fuse)
    lr = torch.rand(2, 3, 7, 9)
    blur = torch.rand(2, 1, 28, 36) * 3
    labels = torch.randint(0, 5, (2, 28, 36))
    labels[0, :3] = 255  # ignore label
    seg = labels if encoding != "probs" else torch.rand(2, 5, 28, 36).softmax(1)
    out = net(lr, blur, seg)
    assert out.shape == (2, 3, 28, 36)
    assert torch.isfinite(out).all()
    out.mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_prior_depends_on_both_maps_and_none_ignores_semantics():
    torch.manual_seed(0)
    net = tiny_rrdb().eval()
    for module in net.modules():  # make the learnable GIA scalars non-zero
        for name in ("c_a", "c_b", "s_a", "s_b"):
            if hasattr(module, name):
                getattr(module, name).data.fill_(0.5)
    lr, blur = torch.rand(1, 3, 8, 8), torch.rand(1, 1, 32, 32)
    seg = torch.randint(0, 4, (1, 32, 32))
    with torch.no_grad():
        base = net(lr, blur, seg)
        assert not torch.allclose(base, net(lr, blur * 2, seg))
        assert not torch.allclose(base, net(lr, blur, (seg + 1) % 4))
    blind = tiny_rrdb(seg_encoding="none").eval()
    with torch.no_grad():
        torch.testing.assert_close(blind(lr, blur, seg), blind(lr, blur, None))


def test_input_errors_say_what_to_pass():
    net = tiny_rrdb()
    lr = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        net(lr, torch.rand(1, 1, 8, 8), torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="probs"):
        net(lr, torch.rand(1, 1, 32, 32), torch.rand(1, 32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        RRDBSFT(seg_encoding="onehot")


def test_released_architecture_size():
    net = RRDBSFT(prior_channels=64)
    assert len(net.state_dict()) == 498
    assert sum(p.numel() for p in net.parameters()) == 8_960_592


def test_blind_sr_encodings_and_frozen_estimator_mode():
    cmos = CMOS(num_classes=4, window_size=(4, 5))
    net = BlindSR(cmos, tiny_rrdb(seg_encoding="probs", num_classes=4))
    out = net(torch.rand(1, 3, 16, 20))
    assert out["sr"].shape == (1, 3, 64, 80) and out["seg"].shape == (1, 4, 64, 80)
    net.train()
    assert net.training and net.sr.training
    assert not any(m.training for m in net.estimator.modules())
    assert not any(p.requires_grad for p in net.estimator.parameters())
    assert out["blur"].grad_fn is None  # no autograd through the frozen estimator


# ---------------------------------------------------------------------------- conversion


def test_every_released_rrdb_key_maps_and_shapes_agree():
    shapes = official_shapes()
    assert len(shapes) == 498
    ours = RRDBSFT(prior_channels=64).state_dict()
    mapped = {official_to_svblur_rrdb_sft_key(k): v for k, v in shapes.items()}
    assert set(mapped) == set(ours)
    for key, shape in mapped.items():
        assert tuple(ours[key].shape) == shape, key
    assert {svblur_to_official_rrdb_sft_key(k) for k in ours} == set(shapes)


def test_converted_rrdb_matches_released_reference():
    official = random_official_rrdb()
    net = RRDBSFT(prior_channels=64)
    net.load_state_dict(from_official_rrdb_sft({"module." + k: v for k, v in official.items()}))
    net.eval()
    gen = torch.Generator().manual_seed(1)
    lr = torch.rand(1, 3, 15, 20, generator=gen)
    blur = torch.rand(1, 1, 60, 80, generator=gen) * 4
    seg = torch.randint(0, 40, (1, 60, 80), generator=gen)
    with torch.no_grad():
        ours = net(lr, blur, seg)
        ref = ref_rrdb_sft(official, lr, blur, seg)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert to_official_rrdb_sft(from_official_rrdb_sft(official)).keys() == official.keys()


def test_rrdb_conversion_errors_name_the_key():
    official = random_official_rrdb()
    with pytest.raises(KeyError, match=r"RRDB_trunk\.0\.SFT\.foo"):
        from_official_rrdb_sft({**official, "RRDB_trunk.0.SFT.foo.weight": torch.zeros(1)})
    partial = {k: v for k, v in official.items() if k != "RRDB_trunk.3.RDB2.conv4.bias"}
    with pytest.raises(KeyError, match="missing"):
        from_official_rrdb_sft(partial)
    wrong = {**official, "trunk_conv.weight": torch.zeros(64, 64, 1, 1)}
    with pytest.raises(ValueError, match="trunk_conv"):
        from_official_rrdb_sft(wrong)


def test_blind_sr_file_converts_and_cli_detects_all_three_kinds(tmp_path, capsys):
    rrdb = random_official_rrdb()
    cmos = random_official_cmos()
    stage3 = {**{"cmos." + k: v for k, v in cmos.items()}, **rrdb}
    assert detect_official_kind(stage3) == "blind_sr"
    assert detect_official_kind(rrdb) == "rrdb_sft"
    assert detect_official_kind({"cmos." + k: v for k, v in cmos.items()}) == "cmos"
    converted = from_official_blind_sr(stage3)
    with torch.device("meta"):
        model = BlindSR(CMOS(num_classes=40), RRDBSFT(prior_channels=64))
    assert set(converted) == set(model.state_dict())
    assert to_official_blind_sr(converted).keys() == stage3.keys()
    converters = {
        "blind_sr": from_official_blind_sr,
        "rrdb_sft": from_official_rrdb_sft,
        "cmos": from_official_cmos,
    }
    files = {
        "blind_sr": stage3,
        "rrdb_sft": rrdb,
        "cmos": {"module.cmos." + k: v for k, v in cmos.items()},
    }
    for kind, state in files.items():
        src, dst = tmp_path / f"{kind}.pth", tmp_path / f"{kind}_svblur.pth"
        torch.save(state, src)
        capsys.readouterr()
        assert convert_main([str(src), str(dst)]) == 0
        stdout = capsys.readouterr().out
        assert f"detected  {kind}" in stdout, stdout
        out = torch.load(dst, weights_only=True)
        expected = converters[kind](state)
        assert out.keys() == expected.keys()
        assert all(torch.equal(out[k], expected[k]) for k in expected), kind
    # load_weights converts a released file on the fly, into the matching (sub)module
    sr = RRDBSFT(prior_channels=64)
    load_weights(sr, tmp_path / "blind_sr.pth")  # the RRDB-SFT part of a stage-3 file
    torch.testing.assert_close(sr.trunk_conv.weight, rrdb["trunk_conv.weight"])


def test_load_weights_lightning_checkpoints_and_mismatch_messages(tmp_path):
    net = tiny_rrdb()
    lightning_ckpt = {"state_dict": {"net." + k: v for k, v in net.state_dict().items()}}
    torch.save(lightning_ckpt, tmp_path / "stage2.ckpt")
    other = tiny_rrdb()
    load_weights(other, tmp_path / "stage2.ckpt")
    for key, value in other.state_dict().items():
        torch.testing.assert_close(value, net.state_dict()[key])
    with pytest.raises(CheckpointMismatchError, match=r"trunk\.1\.") as info:
        load_weights(tiny_rrdb(num_blocks=1), tmp_path / "stage2.ckpt")
    assert "unexpected" in str(info.value)
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_weights(tiny_rrdb(prior_channels=4, gia_groups=2), tmp_path / "stage2.ckpt")
    with pytest.raises(FileNotFoundError):
        load_weights(net, tmp_path / "missing.ckpt")
    # A pickled object that is not plain tensors is refused (weights_only=True).
    torch.save({"state_dict": {"x": object()}}, tmp_path / "bad.ckpt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|not allowed"):
        load_weights(net, tmp_path / "bad.ckpt")
    # BlindSR: a stage-1 checkpoint loads into its estimator, the svblur BlindSR state too
    cmos = CMOS(num_classes=4, window_size=(4, 5))
    torch.save(
        {"state_dict": {"net." + k: v for k, v in cmos.state_dict().items()}}, tmp_path / "s1.ckpt"
    )
    blind = BlindSR(CMOS(num_classes=4, window_size=(4, 5)), tiny_rrdb())
    conv = "backbone.conv1.weight"
    assert not torch.equal(blind.estimator.state_dict()[conv], cmos.state_dict()[conv])
    load_weights(blind.estimator, tmp_path / "s1.ckpt")
    loaded = blind.estimator.state_dict()
    for key, value in cmos.state_dict().items():
        assert torch.equal(loaded[key], value), key
    twin = BlindSR(CMOS(num_classes=4, window_size=(4, 5)), tiny_rrdb())
    load_weights(twin, blind.state_dict())
    loaded = twin.state_dict()
    for key, value in blind.state_dict().items():
        assert torch.equal(loaded[key], value), key
