"""ESRGAN-family weights in and out of svblur (``svblur-convert``, :mod:`svblur.checkpoints.esrgan`).

The files are built here from the layouts as their projects document them, written out by
hand (not from svblur's key map):

- BasicSR / Real-ESRGAN ``RRDBNet`` (``basicsr/archs/rrdbnet_arch.py``): ``conv_first``,
  ``body.{i}.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``, ``conv_up2``,
  ``conv_hr``, ``conv_last``; x2 / x1 pixel-unshuffle the input (``conv_first`` takes
  ``3 * 4`` / ``3 * 16`` channels);
- ESRGAN's ``RRDBNet_arch.py``: ``conv_first``, ``RRDB_trunk.{i}.RDB{1,2,3}.conv{1..5}``,
  ``trunk_conv``, ``upconv1``, ``upconv2``, ``HRconv``, ``conv_last``;
- ESRGAN's old layout (``transer_RRDB_models.py`` maps it to the one above):
  ``model.0``, ``model.1.sub.{i}.RDB{j}.conv{k}.0``, ``model.1.sub.{B}`` (trunk conv),
  ``model.3``, ``model.6`` (upsampling convs), ``model.8`` (HR conv), ``model.10`` (last);
- Real-ESRGAN's ``UNetDiscriminatorSN``: ``conv0``, ``conv1..8`` with spectral norm
  (``weight_orig``, ``weight_u``, ``weight_v``), ``conv9``;
- PBaSR's ``ParallelNet_ncb``: ``general_branch.*``, ``defocus_branch.*``, ``combinet.*``.

The reference forward (:func:`esrgan_forward`) follows ESRGAN's architecture on BasicSR's
names with ``torch.nn.functional`` only.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from svblur.checkpoints import (
    ESRGAN_KINDS,
    convert_esrgan,
    detect_esrgan_kind,
    load_network,
    load_weights,
    network_record,
)
from svblur.cli.convert import main as convert_main
from svblur.cli.predict import predict
from svblur.errors import InputError
from svblur.models import RRDBNet, UNetDiscriminatorSN

from .test_predict import _predict_cfg

NF, NB, GC = 8, 2, 4  # tiny features, blocks, growth


# ---------------------------------------------------------------------------- the layouts


def _convs(convs: list[tuple[str, int, int]], seed: int, dtype=torch.float32) -> dict:
    """``{name.weight, name.bias}`` of 3x3 convs ``(name, in, out)`` with random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, cin, cout in convs:
        state[f"{name}.weight"] = (
            torch.randn(cout, cin, 3, 3, generator=gen) / math.sqrt(9 * cin)
        ).to(dtype)
        state[f"{name}.bias"] = (0.1 * torch.randn(cout, generator=gen)).to(dtype)
    return state


def _dense(prefix: str, suffix: str = "") -> list[tuple[str, int, int]]:
    """The five convs of one residual dense block: conv1-4 add GC channels, conv5 -> NF."""
    convs = [(f"{prefix}.conv{k}{suffix}", NF + (k - 1) * GC, GC) for k in range(1, 5)]
    return [*convs, (f"{prefix}.conv5{suffix}", NF + 4 * GC, NF)]


def basicsr_state(seed: int = 0, in_channels: int = 3, dtype=torch.float32) -> dict:
    """BasicSR's RRDBNet (Real-ESRGAN x4plus; ``in_channels`` 12 / 48 for x2 / x1)."""
    convs = [("conv_first", in_channels, NF)]
    for i in range(NB):
        for j in (1, 2, 3):
            convs += _dense(f"body.{i}.rdb{j}")
    convs += [("conv_body", NF, NF), ("conv_up1", NF, NF), ("conv_up2", NF, NF)]
    convs += [("conv_hr", NF, NF), ("conv_last", NF, 3)]
    return _convs(convs, seed, dtype)


def esrgan_state(seed: int = 0) -> dict:
    """ESRGAN's RRDBNet_arch.py (x4)."""
    convs = [("conv_first", 3, NF)]
    for i in range(NB):
        for j in (1, 2, 3):
            convs += _dense(f"RRDB_trunk.{i}.RDB{j}")
    convs += [("trunk_conv", NF, NF), ("upconv1", NF, NF), ("upconv2", NF, NF)]
    convs += [("HRconv", NF, NF), ("conv_last", NF, 3)]
    return _convs(convs, seed)


def old_esrgan_state(seed: int = 0) -> dict:
    """ESRGAN's old layout (x4): one nn.Sequential, convs of the blocks wrapped in ``.0``."""
    convs = [("model.0", 3, NF)]
    for i in range(NB):
        for j in (1, 2, 3):
            convs += _dense(f"model.1.sub.{i}.RDB{j}", suffix=".0")
    convs += [(f"model.1.sub.{NB}", NF, NF), ("model.3", NF, NF), ("model.6", NF, NF)]
    convs += [("model.8", NF, NF), ("model.10", NF, 3)]
    return _convs(convs, seed)


def discriminator_state(seed: int = 0) -> dict:
    """Real-ESRGAN's UNetDiscriminatorSN: channels F, 2F, 4F, 8F, 4F, 2F, F, F, F, 1."""
    gen = torch.Generator().manual_seed(seed)
    f = NF
    normed = [(f, 2 * f, 4), (2 * f, 4 * f, 4), (4 * f, 8 * f, 4), (8 * f, 4 * f, 3)]
    normed += [(4 * f, 2 * f, 3), (2 * f, f, 3), (f, f, 3), (f, f, 3)]
    state = {"conv0.weight": torch.randn(f, 3, 3, 3, generator=gen), "conv0.bias": torch.randn(f)}
    for i, (cin, cout, k) in enumerate(normed, start=1):
        state[f"conv{i}.weight_orig"] = torch.randn(cout, cin, k, k, generator=gen)
        state[f"conv{i}.weight_u"] = F.normalize(torch.randn(cout, generator=gen), dim=0)
        state[f"conv{i}.weight_v"] = F.normalize(torch.randn(cin * k * k, generator=gen), dim=0)
    state["conv9.weight"] = torch.randn(1, f, 3, 3, generator=gen)
    state["conv9.bias"] = torch.randn(1, generator=gen)
    return state


def esrgan_forward(p: dict, x: torch.Tensor, unshuffle: int = 1) -> torch.Tensor:
    """ESRGAN on BasicSR's names: conv_first, RRDBs (three residual dense blocks, residuals
    scaled by 0.2), conv_body + skip, two ``nearest x2 -> conv -> LeakyReLU 0.2``, conv_hr
    + LeakyReLU, conv_last; BasicSR's x2 / x1 first pixel-unshuffle by 2 / 4."""

    def conv(name, t):
        return F.conv2d(t, p[f"{name}.weight"], p[f"{name}.bias"], padding=1)

    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    if unshuffle > 1:  # (b, c, h, s, w, s) -> (b, c, s, s, h, w), as BasicSR's pixel_unshuffle
        b, c, hh, ww = x.shape
        x = x.view(b, c, hh // unshuffle, unshuffle, ww // unshuffle, unshuffle)
        x = x.permute(0, 1, 3, 5, 2, 4).reshape(
            b, c * unshuffle**2, hh // unshuffle, ww // unshuffle
        )
    fea = conv("conv_first", x)
    trunk = fea
    for i in range(NB):
        rrdb_in = trunk
        for j in (1, 2, 3):
            feats = [trunk]
            for k in range(1, 5):
                feats.append(lrelu(conv(f"body.{i}.rdb{j}.conv{k}", torch.cat(feats, 1))))
            trunk = conv(f"body.{i}.rdb{j}.conv5", torch.cat(feats, 1)) * 0.2 + feats[0]
        trunk = trunk * 0.2 + rrdb_in
    fea = fea + conv("conv_body", trunk)
    for n in (1, 2):
        fea = lrelu(conv(f"conv_up{n}", F.interpolate(fea, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", fea)))


def convert(tmp_path: Path, obj, *options: str, name: str = "in.pth") -> tuple[Path, str]:
    """Save ``obj``, run ``svblur-convert`` on it; the output path and the report."""
    src, dst = tmp_path / name, tmp_path / f"out_{name}"
    torch.save(obj, src)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert convert_main([str(src), str(dst), *options]) == 0
    return dst, stdout.getvalue()


def built(path: Path, dtype=torch.float32) -> nn.Module:
    """The network a converted file records, with its weights (``load_weights``, strict)."""
    record = torch.load(path, weights_only=True)["svblur"]
    kwargs = {k: v for k, v in record["net"].items() if not k.startswith("_")}
    cls = {
        "svblur.models.RRDBNet": RRDBNet,
        "svblur.models.UNetDiscriminatorSN": UNetDiscriminatorSN,
    }
    net = cls[record["net"]["_target_"]](**kwargs).to(dtype)
    load_weights(net, path)
    return net


# ---------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("make", "wrap", "kind"),
    [
        (basicsr_state, "params_ema", "basicsr_rrdbnet"),
        (basicsr_state, "params", "basicsr_rrdbnet"),
        (basicsr_state, None, "basicsr_rrdbnet"),
        (esrgan_state, None, "esrgan_rrdbnet"),
        (old_esrgan_state, "module.", "old_esrgan_rrdbnet"),
        (discriminator_state, "params", "unet_discriminator"),
    ],
)
def test_each_kind_is_detected_converted_and_printed(tmp_path, make, wrap, kind):
    state = make()
    if wrap == "module.":
        obj = {f"module.{k}": v for k, v in state.items()}
    else:
        obj = state if wrap is None else {wrap: state}
    out, report = convert(tmp_path, obj)
    assert f"detected  {kind} ({ESRGAN_KINDS[kind]})" in report
    assert detect_esrgan_kind(state) == kind
    net = built(out)
    checkpoint = torch.load(out, weights_only=True)
    record = checkpoint["svblur"]
    assert record["converted_from"] == kind and record["system"] == "svblur-convert"
    if kind == "unet_discriminator":
        assert record["kind"] == "discriminator" and isinstance(net, UNetDiscriminatorSN)
        assert checkpoint["state_dict"].keys() == state.keys()
        assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in state.items())
    else:
        assert record["kind"] == "gan_sr"
        assert record["net"] == {
            "_target_": "svblur.models.RRDBNet", "in_channels": 3, "out_channels": 3,
            "num_features": NF, "num_blocks": NB, "growth_channels": GC, "scale": 4,
        }  # fmt: skip
        assert f"{sum(p.numel() for p in net.parameters()):,} parameters" in report


def test_the_three_generator_layouts_hold_the_same_network(tmp_path):
    """The same values in ESRGAN's, its old and BasicSR's layout convert to one state dict
    (the layouts' names are matched in the order the documented tables list them)."""
    basicsr = basicsr_state(seed=3)
    order = list(basicsr)  # conv_first, the blocks, conv_body, conv_up1/2, conv_hr, conv_last
    converted = {}
    for name, make in (("esrgan", esrgan_state), ("old", old_esrgan_state)):
        other = make()
        assert len(other) == len(order)
        same_values = {key: basicsr[order[n]] for n, key in enumerate(other)}
        converted[name] = convert_esrgan(same_values).state_dict
    reference = convert_esrgan(basicsr).state_dict
    for state in converted.values():
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)


# ---------------------------------------------------------------------------- float64 equality


@pytest.mark.parametrize(("in_channels", "scale", "unshuffle"), [(3, 4, 1), (12, 2, 2), (48, 1, 4)])
def test_converted_basicsr_file_computes_the_documented_esrgan_in_float64(
    tmp_path, in_channels, scale, unshuffle
):
    state = basicsr_state(seed=1, in_channels=in_channels, dtype=torch.float64)
    out, report = convert(tmp_path, {"params_ema": state})
    net = built(out, torch.float64).eval()
    config = torch.load(out, weights_only=True)["svblur"]["net"]
    assert config["scale"] == scale and config.get("pixel_unshuffle", False) == (unshuffle > 1)
    assert net.conv_first.in_channels == in_channels and f"scale={scale}" in report
    lr = torch.rand(2, 3, 8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = esrgan_forward(state, lr, unshuffle)
        got = net(lr)
    assert got.shape == (2, 3, 8 * scale, 12 * scale)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if unshuffle > 1:  # sides not multiples of the unshuffle factor: padded, then cropped
        with torch.no_grad():
            odd = net(lr[..., :7, :11])
        assert odd.shape == (2, 3, 7 * scale, 11 * scale) and torch.isfinite(odd).all()


def test_pixel_unshuffle_keeps_the_default_network():
    plain = RRDBNet(num_features=NF, num_blocks=1, growth_channels=GC)
    x4 = RRDBNet(num_features=NF, num_blocks=1, growth_channels=GC, pixel_unshuffle=True)
    assert plain.state_dict().keys() == x4.state_dict().keys()
    x2 = RRDBNet(num_features=NF, num_blocks=1, growth_channels=GC, scale=2)
    assert not hasattr(x2, "conv_up2") and x2.conv_first.in_channels == 3
    with pytest.raises(ValueError, match="scale <= 4"):
        RRDBNet(scale=8, pixel_unshuffle=True)


# ---------------------------------------------------------------------------- back to BasicSR


def test_round_trip_and_to_basicsr_write_the_documented_names(tmp_path):
    state = basicsr_state(seed=2)
    out, _ = convert(tmp_path, {"params_ema": state}, name="x4plus.pth")
    back, report = convert(tmp_path, torch.load(out, weights_only=True), "--to", "basicsr")
    assert "BasicSR's layout, under 'params_ema'" in report
    written = torch.load(back, weights_only=True)
    assert list(written) == ["params_ema"] and written["params_ema"].keys() == state.keys()
    assert all(torch.equal(written["params_ema"][k], v) for k, v in state.items())
    # PBaSR's export, a plain RRDBNet state dict (and an x2 with pixel_unshuffle)
    merged = RRDBNet(
        num_features=NF, num_blocks=NB, growth_channels=GC, scale=2, pixel_unshuffle=True
    )
    back, _ = convert(tmp_path, merged.state_dict(), "--to", "basicsr", name="export.pth")
    params = torch.load(back, weights_only=True)["params_ema"]
    assert params.keys() == basicsr_state(in_channels=12).keys()
    assert params["conv_first.weight"].shape[1] == 12
    torch.testing.assert_close(
        params["body.1.rdb3.conv5.weight"], merged.body[1].dense3.conv5.weight
    )
    # the old layout, rewritten in BasicSR's
    back, _ = convert(tmp_path, old_esrgan_state(), "--to", "basicsr", name="old.pth")
    assert torch.load(back, weights_only=True)["params_ema"].keys() == state.keys()


def test_an_rrdbnet_without_basicsrs_two_stages_has_no_basicsr_layout(tmp_path, capsys):
    x2 = RRDBNet(num_features=NF, num_blocks=1, growth_channels=GC, scale=2)
    src = tmp_path / "x2.pth"
    torch.save(x2.state_dict(), src)
    with pytest.raises(SystemExit) as info:
        convert_main([str(src), str(tmp_path / "o.pth"), "--to", "basicsr"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(src) in err and "1 upsampling stage" in err and "pixel_unshuffle=True" in err
    assert not (tmp_path / "o.pth").exists()


def test_the_discriminator_goes_both_ways_and_out_of_a_gan_checkpoint(tmp_path):
    state = discriminator_state()
    out, _ = convert(tmp_path, {"params": state}, name="netD.pth")
    assert isinstance(built(out), UNetDiscriminatorSN)
    # svblur-predict names what the file is and what to do with it
    from svblur.errors import InputError
    from svblur.inference import load_for_prediction

    with pytest.raises(InputError, match="GAN discriminator .*anchor_discriminator_ckpt"):
        load_for_prediction(out)
    back, _ = convert(tmp_path, torch.load(out, weights_only=True), "--to", "basicsr")
    written = torch.load(back, weights_only=True)
    assert list(written) == ["params"] and written["params"].keys() == state.keys()
    # a GANSRTask checkpoint: --part discriminator takes its discriminator
    generator = RRDBNet(num_features=NF, num_blocks=1, growth_channels=GC)
    config = {"_target_": "svblur.models.RRDBNet", "num_features": NF, "num_blocks": 1,
              "growth_channels": GC}  # fmt: skip
    record = {**network_record("GANSRTask", config, "gan_sr"), "average_of": ["net."]}
    lightning = {
        "state_dict": {
            **{f"net.{k}": v for k, v in generator.state_dict().items()},
            **{f"discriminator.{k}": v for k, v in state.items()},
        },
        "svblur": record,
    }
    back, report = convert(
        tmp_path, lightning, "--part", "discriminator", "--to", "basicsr", name="gan.ckpt"
    )
    assert "detected  unet_discriminator" in report
    assert torch.load(back, weights_only=True)["params"].keys() == state.keys()
    back, report = convert(tmp_path, lightning, "--to", "basicsr", name="gan2.ckpt")
    params = torch.load(back, weights_only=True)["params_ema"]
    assert "body.0.rdb1.conv1.weight" in params and "detected  svblur_rrdbnet" in report


# ---------------------------------------------------------------------------- PBaSR's release


def pbasr_released(combinet_offset: float = 0.0) -> tuple[dict, dict, dict]:
    """A ParallelNet_ncb file (``{"params": ...}``) and its two branches."""
    general, defocus = basicsr_state(seed=10), basicsr_state(seed=11)
    combinet = {k: 0.5 * general[k] + 0.5 * defocus[k] + combinet_offset for k in general}
    params = {f"general_branch.{k}": v for k, v in general.items()}
    params.update({f"defocus_branch.{k}": v for k, v in defocus.items()})
    params.update({f"combinet.{k}": v for k, v in combinet.items()})
    return {"params": params}, general, defocus


def test_released_pbasr_converts_to_its_deployed_generator_and_to_both_branches(tmp_path):
    released, general, defocus = pbasr_released()
    out, report = convert(tmp_path, released, name="PBaSR_ESRGAN.pth")
    assert "detected  pbasr_esrgan" in report and "combinet equals" in report
    net = built(out)
    for key, value in net.state_dict().items():  # the combinet: the mean of the branches
        basicsr_key = key.replace(".dense", ".rdb")
        torch.testing.assert_close(value, (general[basicsr_key] + defocus[basicsr_key]) / 2)
    # --branches: PBaSRTask's general.* and blur.*; load_network rebuilds their mean
    out, report = convert(tmp_path, released, "--branches", name="PBaSR_branches.pth")
    checkpoint = torch.load(out, weights_only=True)
    record = checkpoint["svblur"]
    assert record["system"] == "PBaSRTask" and record["average_of"] == ["general.", "blur."]
    kwargs = {k: v for k, v in record["net"].items() if not k.startswith("_")}
    branches = nn.ModuleDict({"general": RRDBNet(**kwargs), "blur": RRDBNet(**kwargs)})
    load_weights(branches, out)
    torch.testing.assert_close(
        branches["general"].body[1].dense2.conv3.weight, general["body.1.rdb2.conv3.weight"]
    )
    torch.testing.assert_close(branches["blur"].conv_hr.bias, defocus["conv_hr.bias"])
    merged = load_network(out).net
    torch.testing.assert_close(
        merged.conv_last.weight, (general["conv_last.weight"] + defocus["conv_last.weight"]) / 2
    )
    # the deployed generator back to BasicSR's layout
    back, _ = convert(tmp_path, released, "--to", "basicsr", name="PBaSR_basicsr.pth")
    assert torch.load(back, weights_only=True)["params_ema"].keys() == general.keys()


def test_a_combinet_that_is_not_the_branch_mean_is_refused_naming_the_file(tmp_path, capsys):
    released, _, _ = pbasr_released(combinet_offset=1e-3)
    src = tmp_path / "PBaSR_ESRGAN.pth"
    torch.save(released, src)
    with pytest.raises(SystemExit):
        convert_main([str(src), str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert f"{src}: combinet is not the mean" in err and "--branches" in err
    assert not (tmp_path / "o.pth").exists()
    _, report = convert(tmp_path, released, "--branches", name="b.pth")  # branches need no combinet
    assert "combinet differs" in report


# ---------------------------------------------------------------------------- prediction, errors


def test_svblur_predict_runs_a_converted_real_esrgan_file(tmp_path):
    state = basicsr_state(seed=4, in_channels=12)  # an x2plus
    out, _ = convert(tmp_path, {"params_ema": state}, name="x2plus.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (16, 18, 3), dtype=np.uint8)  # one tile
    Image.fromarray(rgb).save(photos / "p.png")
    cfg = _predict_cfg(tmp_path, [f"ckpt={out}", f"input={photos}", f"output={tmp_path / 'sr'}"])
    summary = predict(cfg)
    assert summary["kind"] == "gan_sr" and summary["processed"] == ["p.png"]
    with torch.no_grad():
        lr = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
        expected = esrgan_forward(state, lr, unshuffle=2)[0].clamp(0, 1)
    expected = (expected.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    got = np.asarray(Image.open(tmp_path / "sr" / "p_sr.png"))
    assert got.shape == (32, 36, 3) and np.abs(got.astype(int) - expected).max() <= 1


def test_the_moved_load_weights_alias_loads_a_converted_file(tmp_path):
    import svblur.models

    out, _ = convert(tmp_path, esrgan_state())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        alias = svblur.models.load_weights
    net = RRDBNet(num_features=NF, num_blocks=NB, growth_channels=GC)
    alias(net, out)
    torch.testing.assert_close(net.conv_body.weight, esrgan_state()["trunk_conv.weight"])


@pytest.mark.parametrize(
    ("obj", "options", "message"),
    [
        ({"foo.weight": torch.zeros(2)}, [], "no released CMOS .* and no ESRGAN-family keys"),
        ({"foo.weight": torch.zeros(2)}, ["--to", "basicsr"], "no ESRGAN-family keys"),
        (
            {k: v for k, v in basicsr_state().items() if "conv_hr" not in k},
            [],
            r"2 keys missing, e.g. \['conv_hr.bias'",
        ),
        (
            {**basicsr_state(), "conv_hr.weight": torch.zeros(NF, NF, 1, 1)},
            [],
            "conv_hr.weight: shape",
        ),
        (basicsr_state(), ["--branches"], "--branches applies to the released PBaSR-ESRGAN"),
        (basicsr_state(), ["--part", "cmos"], "--part cmos selects a network of a stage-3"),
        (
            {"params": {"general_branch.x": torch.zeros(1), "defocus_branch.x": torch.zeros(1)}},
            [],
            r"\(general_branch\): no RRDBNet keys",
        ),
    ],
)
def test_bad_files_are_answered_in_one_line_naming_the_file(
    tmp_path, capsys, obj, options, message
):
    src = tmp_path / "weights.pth"
    torch.save(obj, src)
    with pytest.raises(SystemExit) as info:
        convert_main([str(src), str(tmp_path / "o.pth"), *options])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"svblur-convert: error: {src}"), lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o.pth").exists()
    with pytest.raises(InputError):
        convert_main([str(src), str(tmp_path / "o.pth"), *options, "--debug"])


def test_converted_real_esrgan_files_are_anchors_of_pbasr(tmp_path):
    """The converted generator and discriminator start both PBaSR branches
    (``model.anchor_ckpt``, ``model.anchor_discriminator_ckpt``)."""
    from svblur.systems import PBaSRTask

    from .test_pbasr_parts import _gan_system

    generator = basicsr_state(seed=5)
    out_g, _ = convert(tmp_path, {"params_ema": generator}, name="RealESRGAN_x4plus.pth")
    out_d, _ = convert(tmp_path, {"params": discriminator_state()}, name="netD.pth")
    system = _gan_system(PBaSRTask, anchor_ckpt=str(out_g), anchor_discriminator_ckpt=str(out_d))
    system.load_anchor()
    for branch in (system.general, system.blur):
        torch.testing.assert_close(
            branch.body[0].dense1.conv1.weight, generator["body.0.rdb1.conv1.weight"]
        )
    for discriminator in (system.discriminator, system.blur_discriminator):
        torch.testing.assert_close(
            discriminator.conv3.weight_orig, discriminator_state()["conv3.weight_orig"]
        )


def test_released_pbasr_branches_start_each_pbasr_branch_from_its_own_weights(tmp_path):
    """``--branches`` as ``model.anchor_ckpt``: the general branch from ``general_branch``,
    the blur branch from ``defocus_branch`` (not one generator copied into both)."""
    from svblur.systems import PBaSRTask

    from .test_pbasr_parts import _gan_system

    released, general, defocus = pbasr_released()
    out, _ = convert(tmp_path, released, "--branches", name="PBaSR_branches.pth")
    system = _gan_system(PBaSRTask, anchor_ckpt=str(out))
    system.load_anchor()
    key = "body.0.rdb1.conv1.weight"
    torch.testing.assert_close(system.general.body[0].dense1.conv1.weight, general[key])
    torch.testing.assert_close(system.blur.body[0].dense1.conv1.weight, defocus[key])
    assert not torch.equal(general[key], defocus[key])
